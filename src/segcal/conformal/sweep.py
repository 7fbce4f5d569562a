"""Low-data sweep: coverage error and set size versus the number of calibration images.

The model runs once: calibration-pool scores go into a :class:`ScoreBank` (exact, per image)
and test class scores are cached as ``(scores [N, C, H, W], labels [N, H, W])`` batches. Each
(n_cal, repeat) draws one random subset of the pool — the same subset for every method, so
methods are compared on paired data — and each method is calibrated on it and evaluated on
the cached test scores. The pool must be disjoint from the test images.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from segcal.batch import unpack_item
from segcal.conformal.accumulate import ScoreBank
from segcal.conformal.calibrator import ConformalCalibrator
from segcal.conformal.evaluation import MIN_TEST_LABELS, CoverageAccumulator, level_key
from segcal.conformal.scores import get_score
from segcal.methods import DEFAULT_N_CALS
from segcal.outputs import Head, Kind

SWEEP_METRICS = ("mean_ce", "mean_set_size", "full_fraction", "empty_fraction", "trivial_fraction")
AT_90 = tuple(level_key(m) for m in ("coverage", "mean_set_size", "multi_fraction", "full_fraction"))  # 0.9 on grid


def cache_test_scores(stream: Iterable[tuple[torch.Tensor, torch.Tensor]], kind: Kind = "logits",
                      head: Head = "softmax", score: str = "lac") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(class scores [N, C, H, W], labels [N, H, W]), ...]`` from prediction batches (``score``: a registered
    conformity score; the calibrators of the sweep must use the same)."""
    scores = get_score(score)
    return [(scores(p, kind, head), y) for p, y, _ in map(unpack_item, stream)]


def subset_seed(seed: int, n_cal: int, repeat: int) -> int:
    """The seed of the random calibration subset of one sweep cell (the one formula)."""
    return (seed * 7919 + repeat) * 1_000_003 + n_cal * 1_009


def sweep_cell(pool: ScoreBank, test_scores: Sequence[tuple[torch.Tensor, torch.Tensor]],
               methods: Mapping[str, Callable[[], ConformalCalibrator]], n_cal: int, repeat: int, seed: int = 0,
               alphas: Iterable[float] | None = None, min_test_labels: int = MIN_TEST_LABELS) -> list[dict[str, Any]]:
    """The records of one (n_cal, repeat): every method calibrated on the same random subset of ``pool``."""
    subset = pool.sample(n_cal, torch.Generator().manual_seed(subset_seed(seed, n_cal, repeat)))
    alphas = None if alphas is None else list(alphas)
    records = []
    for name, make in methods.items():
        cp = make().fit_bank(subset)
        acc = CoverageAccumulator(cp, alphas, min_test_labels)
        for s, y in test_scores:
            acc.update_scores(s, y)
        summary = acc.compute().summary()
        per_class = {f"mean_ce_c{k}": v for k, v in enumerate(summary.pop("mean_ce_per_class"))}
        records.append({**summary, **per_class, "method": name, "n_cal": n_cal, "repeat": repeat,
                        "num_groups": cp.num_groups_})
    return records


def calibration_sweep(pool: ScoreBank, test_scores: Sequence[tuple[torch.Tensor, torch.Tensor]],
                      methods: Mapping[str, Callable[[], ConformalCalibrator]],
                      n_cals: Sequence[int] = DEFAULT_N_CALS, repeats: int = 5, seed: int = 0,
                      alphas: Iterable[float] | None = None, min_test_labels: int = MIN_TEST_LABELS
                      ) -> list[dict[str, Any]]:
    """One record per (method, n_cal, repeat) (see :func:`sweep_cell`): the :meth:`CoverageResult.summary`
    numbers plus ``mean_ce_c{k}`` per class, ``n_cal``, ``repeat`` and the fitted number of groups.

    ``methods`` maps a name to a factory of unfitted calibrators.
    """
    too_big = [n for n in n_cals if not 1 <= n <= len(pool)]
    if too_big:
        raise ValueError(f"n_cal values {too_big} exceed the {len(pool)} images in the calibration pool")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    alphas = None if alphas is None else list(alphas)
    return [rec for n in n_cals for r in range(repeats)
            for rec in sweep_cell(pool, test_scores, methods, n, r, seed, alphas, min_test_labels)]


def summarise_sweep(records: Iterable[Mapping[str, Any]], metrics: Sequence[str] | None = None
                    ) -> list[dict[str, Any]]:
    """Mean and standard deviation over repeats per (method, n_cal): ``{metric}_mean`` / ``{metric}_std``.

    ``metrics`` default: :data:`SWEEP_METRICS`, :data:`AT_90` when present and every
    ``mean_ce_c{k}`` present. Missing values (``None``: no pixel with enough test labels) are skipped.
    """
    records = list(records)
    if metrics is None:
        present = {k for r in records for k in r}
        extra = sorted(k for k in present if k.startswith("mean_ce_c"))
        metrics = [*SWEEP_METRICS, *(k for k in AT_90 if k in present), *extra]
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["method"], int(r["n_cal"]))].append(r)
    rows = []
    for (method, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        row: dict[str, Any] = {"method": method, "n_cal": n, "repeats": len(rs)}
        for m in metrics:
            vals = torch.tensor([float(r[m]) for r in rs if r.get(m) is not None], dtype=torch.float64)
            row[f"{m}_mean"] = float(vals.mean()) if vals.numel() else None
            row[f"{m}_std"] = float(vals.std(unbiased=False)) if vals.numel() else None
        rows.append(row)
    return rows
