"""``local`` vs pixelwise and imagewise on CCP (issue 15): CE, coverage and full sets vs n_cal, and settings.

Trains (or reuses) ``ccp_person`` / ``ccp_parts`` like ``ccp_calibration.py``, scores the 500-image ``cal``
pool and the 200 ``test`` images once, then calibrates every method on the same random subsets (paired, the
sweep's seeds) and evaluates on the test images. Local variants are named ``local-m<min_scores>-s<split>``;
the plain ``local`` is the default setting. ::

    python benchmarks/ccp_local.py --runs /work/runs           # --data: ../shared/data/ccp by default
    python benchmarks/ccp_local.py --configs ccp_person --n-cals 10,50,200 --repeats 2 \
        --variants 50:0.5,100:0.5,100:0.75,200:0.5                       # the settings study
    python benchmarks/ccp_local.py --baselines kandinsky-kmeans --grids 2,4 --n-cals 10,50,200 --repeats 3 \
        --out benchmarks/results/ccp_grid.json                            # the calibration grid's effect

Writes ``benchmarks/results/ccp_local.json`` (every record, mean ± std per method and n_cal) and prints
markdown tables: mean CE ± std · full sets at 0.9 · coverage at 0.9.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ccp_calibration import checkpoint
from segcal.conformal.accumulate import ScoreBank
from segcal.conformal.local_calibrator import LocalCalibrator
from segcal.conformal.scores import get_score, scores_at_labels
from segcal.conformal.sweep import summarise_sweep, sweep_cell
from segcal.methods import DEFAULT_N_CALS
from segcal.pipeline.calibrate import make_conformal
from segcal.pipeline.sources import model_source

RESULTS = Path(__file__).parent / "results" / "ccp_local.json"


def scored(ckpt: Path, data: str, score: str = "lac") -> tuple[ScoreBank, list, int]:
    """The calibration pool (exact scores) and the cached test scores of a checkpoint, for ``score``."""
    cal = model_source(ckpt, "cal", [f"data.root={data}"], device="cpu")
    test = model_source(ckpt, "test", [f"data.root={data}"], device="cpu")
    pool = ScoreBank(cal.num_classes, tuple(cal.image_size))
    scores = get_score(score)
    for batch in cal:
        pool.update(*scores_at_labels(scores(batch.logits, "logits", cal.head), batch.labels, cal.ignore_index))
    tests = [(scores(b.logits, "logits", test.head), b.labels) for b in test]
    return pool, tests, cal.num_classes


def factories(num_classes: int, variants: list[tuple[int, float]], baselines: list[str], score: str = "lac",
              grids: tuple[int, ...] = ()) -> dict:
    out = {m: (lambda m=m: make_conformal(m, num_classes, score=score)) for m in baselines}
    out["local"] = lambda: LocalCalibrator(num_classes, score=score)
    for g in grids:  # the calibration grid: statistics on g × g blocks
        for m in [m for m in baselines if m.startswith("kandinsky")] + ["local"]:
            out[f"{m}-grid{g}"] = lambda m=m, g=g: make_conformal(m, num_classes, score=score, grid=g)
    for m, split in variants:
        out[f"local-m{m}-s{split:g}"] = lambda m=m, split=split: LocalCalibrator(num_classes, min_scores=m,
                                                                                   split=split, score=score)
    return out


def table(summary: list[dict], methods: list[str], sizes: bool = False) -> str:
    """Markdown: per n_cal and method, mean CE ± std · full sets · coverage at 0.9 (``sizes``: CE · mean set size
    · coverage at 0.9)."""
    n_cals = sorted({row["n_cal"] for row in summary})
    cell = {(r["method"], r["n_cal"]): r for r in summary}
    lines = ["| n_cal | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for n in n_cals:
        parts = []
        for m in methods:
            r = cell.get((m, n))
            if r is None:
                parts.append("–")
                continue
            middle = (f"{r['mean_set_size_at_0.9_mean']:.3f}" if sizes
                      else f"{100 * r['full_fraction_at_0.9_mean']:.1f}%")
            ce = f"{r['mean_ce_mean']:.4f} ± {r['mean_ce_std']:.4f}"
            parts.append(f"{ce} · {middle} · {r['coverage_at_0.9_mean']:.3f}")
        lines.append(f"| {n} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def print_tables(path: Path, sizes: bool = False) -> None:
    """The markdown tables of a results file."""
    middle = "mean set size" if sizes else "full sets"
    for config, result in json.loads(path.read_text()).items():
        score = result.get("score", "lac")
        print(f"\n## {config} (score {score}): mean CE ± std · {middle} at 0.9 · coverage at 0.9\n")
        print(table(result["summary"], result["methods"], sizes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ccp"))
    p.add_argument("--runs", default="/work/runs", type=Path)
    p.add_argument("--configs", default="ccp_person,ccp_parts")
    p.add_argument("--n-cals", default=",".join(map(str, DEFAULT_N_CALS)))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--baselines", default="pixel,image,kandinsky-kmeans")
    p.add_argument("--variants", default="", help="extra local settings min_scores:split,...")
    p.add_argument("--score", default="lac", help="conformity score of every method: lac, aps or raps")
    p.add_argument("--grids", default="", help="calibration grids of kandinsky-* and local to add, e.g. 2,4")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tables", action="store_true", help="only print the tables of --out")
    p.add_argument("--sizes", action="store_true", help="tables with the mean set size instead of full sets")
    args = p.parse_args()
    if args.tables:
        print_tables(args.out, args.sizes)
        return
    n_cals = [int(n) for n in args.n_cals.split(",")]
    variants = [(int(v.split(":")[0]), float(v.split(":")[1])) for v in args.variants.split(",") if v]
    baselines = [m for m in args.baselines.split(",") if m]
    results = {}
    for config in args.configs.split(","):
        start = time.time()
        pool, tests, num_classes = scored(checkpoint(config, args.data, args.runs), args.data, args.score)
        makers = factories(num_classes, variants, baselines, args.score,
                           tuple(int(g) for g in args.grids.split(",") if g))
        records = []
        for n in n_cals:
            for r in range(args.repeats):
                records += sweep_cell(pool, tests, makers, n, r)
                print(f"{config}: n_cal {n} repeat {r} done ({time.time() - start:.0f} s)", flush=True)
        summary = summarise_sweep(records)
        results[config] = {"n_cals": n_cals, "repeats": args.repeats, "methods": list(makers), "score": args.score,
                           "records": records, "summary": summary, "seconds": time.time() - start}
        print(f"\n## {config} ({time.time() - start:.0f} s): mean CE ± std · full sets at 0.9 · coverage at 0.9\n")
        print(table(summary, list(makers)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
