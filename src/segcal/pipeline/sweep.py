"""`segcal sweep`: conformal methods versus the number of calibration images (low-data regime).

The calibration pool (the ``cal`` split, disjoint from ``test``) is scored once into an exact
:class:`~segcal.conformal.accumulate.ScoreBank`, test class scores are cached once, then for
every ``n_cal`` and repeat one random subset of the pool calibrates every method (paired
comparison) — see :func:`segcal.conformal.sweep.calibration_sweep`. Writes
``sweep.json`` (records + mean ± std summary), ``sweep.csv`` and figures into ``out_dir``.
"""
from __future__ import annotations

import csv
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segcal.calibrated import CalibrationBundle
from segcal.conformal.accumulate import ScoreBank
from segcal.conformal.scores import get_score, scores_at_labels
from segcal.conformal.sweep import AT_90, summarise_sweep, sweep_cell
from segcal.io.atomic import atomic_write_text
from segcal.io.jsonio import write_json
from segcal.methods import CONFORMAL_METHODS, DEFAULT_N_CALS
from segcal.pipeline.calibrate import make_conformal
from segcal.pipeline.progress import log_line, track
from segcal.pipeline.sources import Stream
from segcal.pipeline.sweep_records import RECORDS_FILE, RecordLog
from segcal.plots.conformal import plot_sweep

SWEEP_METHODS = tuple(CONFORMAL_METHODS)


def check_sweep_args(methods: Sequence[str], n_cals: Sequence[int], repeats: int, pool_size: int) -> None:
    unknown = [m for m in methods if m not in CONFORMAL_METHODS]
    if unknown or not methods:
        raise ValueError(f"--methods must be a non-empty subset of {', '.join(CONFORMAL_METHODS)}; got {unknown}")
    if not n_cals or any(n < 1 for n in n_cals):
        raise ValueError(f"--n-cals must be positive integers, got {list(n_cals)}")
    too_big = [n for n in n_cals if n > pool_size]
    if too_big:
        raise ValueError(f"--n-cals {too_big} exceed the {pool_size} images of the calibration pool")
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")


def run_sweep(cal_source, test_source, out_dir: str | Path | None = None, *,
              methods: Sequence[str] = SWEEP_METHODS, n_cals: Sequence[int] = DEFAULT_N_CALS, repeats: int = 5,
              seed: int = 0, bundle: CalibrationBundle | None = None, params: dict[str, dict] | None = None,
              score: str = "lac", alphas: list[float] | None = None, restart: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Sweep ``methods`` over ``n_cals`` × ``repeats``; returns the ``sweep.json`` dict.

    ``bundle``: its recalibrator (if any) is applied to the logits first. ``params``: extra
    constructor arguments per method, e.g. ``{"kandinsky-kmeans": {"num_groups": "auto"}}``. ``score``: the
    conformity score of every method (``"lac"``, ``"aps"``, ``"raps"``).
    With ``out_dir``, every finished (n_cal, repeat) cell is appended to ``records.jsonl`` at once, and a
    sweep with the same settings resumes from it (the results equal an uninterrupted run);
    ``restart`` discards it.
    """
    start = time.time()
    n_cals = sorted({int(n) for n in n_cals})
    check_sweep_args(methods, n_cals, repeats, len(cal_source))
    if tuple(cal_source.image_size) != tuple(test_source.image_size):
        raise ValueError(f"calibration images are {tuple(cal_source.image_size)} but test images are "
                         f"{tuple(test_source.image_size)}: both must have the same size")
    bundle = bundle if bundle is not None else CalibrationBundle()
    head, ignore = cal_source.head, cal_source.ignore_index
    scores = get_score(score)
    pool = ScoreBank(cal_source.num_classes, tuple(cal_source.image_size))
    for s, y in track(Stream(cal_source, lambda b: scores_at_labels(scores(bundle.apply(b).logits, "logits", head),
                                                                    b.labels, ignore)),
                      "score calibration pool", enabled=progress):
        pool.update(s, y)
    test = list(track(Stream(test_source, lambda b: (scores(bundle.apply(b).logits, "logits", head), b.labels)),
                      "score test split", enabled=progress))
    params = params or {}
    factories = {m: (lambda m=m: make_conformal(m, cal_source.num_classes, head, ignore, seed,
                                                **{**params.get(m, {}), "score": score})) for m in methods}
    recalibration = None if bundle.recalibration is None else bundle.recalibration.method
    settings = {"methods": list(methods), "n_cals": n_cals, "repeats": repeats, "seed": seed, "params": params,
                "score": score,
                "alphas": alphas, "recalibration": recalibration, "calibration_pool": cal_source.describe(),
                "test": test_source.describe()}
    log = RecordLog(Path(out_dir) / RECORDS_FILE, settings) if out_dir is not None else None
    done = log.read() if log is not None and not restart else {}
    if log is not None and not done:
        log.begin()
    cells = [(n, r) for n in n_cals for r in range(repeats)]
    todo = [cell for cell in cells if cell not in done]
    if done and progress:
        log_line(f"sweep: resuming, {len(cells) - len(todo)} of {len(cells)} (n_cal, repeat) cells already done")
    for n, r in track(todo, f"sweep {len(methods)} methods", enabled=progress):
        done[(n, r)] = sweep_cell(pool, test, factories, n, r, seed, alphas)
        if log is not None:
            log.append(n, r, done[(n, r)])
    records = [rec for cell in cells for rec in done[cell]]
    summary = summarise_sweep(records)
    result = {**{k: v for k, v in settings.items() if k != "alphas"}, "summary": summary, "records": records,
              "figures": []}
    if out_dir is not None:
        out = Path(out_dir)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        result["figures"] = _figures(records, out)
        result["seconds"] = time.time() - start
        write_json(out / "sweep.json", result)
        atomic_write_text(out / "sweep.csv", summary_csv(summary))
    result["seconds"] = time.time() - start
    return result


def _figures(records: list[dict[str, Any]], out: Path) -> list[dict[str, str]]:
    path = out / "figures" / "sweep.png"
    at_90 = all(k in records[0] for k in AT_90)
    metrics = ("mean_ce", *AT_90[1:]) if at_90 else ("mean_ce", "mean_set_size")
    plot_sweep(records, metrics, path=path)
    size = "set size and full sets at 1 − α = 0.9" if at_90 else "set size"
    return [{"key": "sweep", "title": f"Coverage error, {size} vs number of calibration images",
             "path": str(path.relative_to(out)), "group": "sweep"}]


def summary_csv(summary: list[dict[str, Any]]) -> str:
    """The mean ± std table as CSV text (one row per method and n_cal)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(summary[0]) if summary else ["method"])
    writer.writeheader()
    writer.writerows(summary)
    return buf.getvalue()
