"""Mask-level guarantees on CCP person (issue 13): FNR / FDR control and morphological margins over random splits.

Runs the ``ccp_person`` model (trained or reused like ``ccp_calibration.py``) once over the 500 ``cal`` and 200
``test`` images, then:

1. **Cost.** Times one inference pass over the 700 images, then ``RiskController`` (FNR) and
   ``MarginController`` (disk, with inner mask) fitted on the 500 cached calibration logits and evaluated
   (:class:`~segcal.pipeline.evaluate_risk.RiskEvaluation`) on the 200 test logits: overhead = (fit + evaluate)
   / inference, measured in one run.
2. **Guarantees.** Pools the 700 images, computes every image's losses once (:mod:`segcal.risk.losses`) and draws
   ``--splits`` random 500 / 200 calibration / test splits: per split, λ is chosen on the 500 and the realized
   test risk measured on the 200. Reported: mean ± std over splits of the test FNR and precision (CRC vs RCPS),
   of the FDR and recall (LTT), and the margins (λ, test coverage, band width and area).

    python benchmarks/ccp_risk.py --runs /work/runs          # --data: ../shared/data/ccp by default

Writes ``benchmarks/results/ccp_risk.json`` and prints markdown tables.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ccp_calibration import checkpoint
from peak_memory import PeakMemory
from segcal.outputs import hard_labels, to_probs
from segcal.pipeline.evaluate_risk import RiskEvaluation
from segcal.pipeline.sources import model_source
from segcal.risk import MarginController, RiskController
from segcal.risk.losses import margin_fnr_losses, margin_needs, step_losses, threshold_grid, threshold_losses
from segcal.risk.morphology import distance_to
from segcal.risk.procedures import select

RESULTS = Path(__file__).parent / "results" / "ccp_risk.json"
ALPHAS = (0.05, 0.1, 0.2)


def infer(ckpt: Path, data: str) -> tuple[dict[str, list], object, float]:
    """Batches of the cal and test splits and the seconds of the inference pass over both."""
    sources = {split: model_source(ckpt, split, [f"data.root={data}"], device="cpu") for split in ("cal", "test")}
    start = time.perf_counter()
    batches = {split: list(source) for split, source in sources.items()}
    return batches, sources["test"], time.perf_counter() - start


def cost(batches: dict[str, list], test_source, inference: float) -> dict[str, dict]:
    """Fit on the cal batches and evaluate on the test batches; seconds and overhead per controller."""
    out = {}
    for name, controller in (("risk fnr", RiskController(loss="fnr")),
                             ("margin disk + inner", MarginController(structure="disk", inner=True))):
        start = time.perf_counter()
        controller.fit(batches["cal"])
        fit = time.perf_counter() - start
        evaluation = RiskEvaluation(controller, examples=0)
        for batch in batches["test"]:
            evaluation.update(test_source, batch, batch.logits)
        evaluation.compute()
        total = time.perf_counter() - start
        out[name] = {"fit_seconds": fit, "evaluate_seconds": total - fit, "overhead": total / inference}
        print(f"{name:22s} fit {fit:.2f} s + evaluate {total - fit:.2f} s = {100 * total / inference:.1f}% of "
              f"inference ({inference:.1f} s)", flush=True)
    return out


def _cumulative(distance: torch.Tensor, cap: int) -> torch.Tensor:
    """Per image, pixels with ``ceil(distance) ≤ λ`` for λ = 0 … cap: ``[N, cap + 1]``."""
    d = distance.flatten(1).ceil().clamp(max=cap + 1).long()
    n = d.shape[0]
    rows = torch.arange(n).unsqueeze(1).expand_as(d)
    counts = torch.bincount((rows * (cap + 2) + d).flatten(), minlength=n * (cap + 2)).view(n, cap + 2)
    return counts[:, : cap + 1].cumsum(1).double()


def tables(batches: dict[str, list], cap: int = 60) -> dict[str, torch.Tensor]:
    """Per-image loss tables of the 700 pooled images (cal first)."""
    grid = threshold_grid(1001)
    out: dict[str, list] = {}
    for batch in batches["cal"] + batches["test"]:
        probs, labels = to_probs(batch.logits, "logits"), batch.labels
        for loss in ("fnr", "fdr"):
            out.setdefault(loss, []).append(threshold_losses(probs, labels, loss, grid, 1))
        pred = hard_labels(batch.logits) == 1
        pixels = float(pred[0].numel())
        for structure in ("square", "disk"):
            needs = margin_needs(pred, labels, 1, structure, inner=True)
            out.setdefault(f"{structure}_outer", []).append(needs["outer"])
            out.setdefault(f"{structure}_fnr", []).append(margin_fnr_losses(needs["truth_distance"],
                                                                            torch.arange(cap + 1.0)))
            out.setdefault(f"{structure}_inner", []).append(needs["inner"])
            outer_area = _cumulative(distance_to(pred, structure), cap) / pixels
            inner_area = 1 - _cumulative(distance_to(~pred, structure, outside=True), cap) / pixels
            out.setdefault(f"{structure}_outer_area", []).append(outer_area)
            out.setdefault(f"{structure}_inner_area", []).append(inner_area.clamp(min=0))
    return {k: torch.cat(v) for k, v in out.items()}


def _mean_std(values: list[float]) -> dict[str, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std())}


def splits(t: dict[str, torch.Tensor], n_splits: int, n_cal: int = 500, seed: int = 0) -> dict[str, dict]:
    """Mean ± std over random splits of the realized test quantities at the chosen λ."""
    g = torch.Generator().manual_seed(seed)
    grid, radii = threshold_grid(1001), torch.arange(61.0)
    records: dict[str, dict[str, list]] = {}

    def add(key: str, **values: float) -> None:
        for name, value in values.items():
            records.setdefault(key, {}).setdefault(name, []).append(value)

    for _ in range(n_splits):
        perm = torch.randperm(t["fnr"].shape[0], generator=g)
        cal, test = perm[:n_cal], perm[n_cal:]
        for alpha in ALPHAS:
            for procedure in ("crc", "rcps"):
                k = select(t["fnr"][cal], procedure, alpha, 0.1).index
                fnr = float(t["fnr"][test, k].mean())
                add(f"fnr {procedure} {alpha}", threshold=float(grid[k]), fnr=fnr,
                    precision=float(1 - t["fdr"][test, k].mean()), split_over_alpha=float(fnr > alpha))
            k = select(t["fdr"][cal], "ltt", alpha, 0.1, start="bottom").index
            add(f"fdr ltt {alpha}", threshold=float(grid[k]), fdr=float(t["fdr"][test, k].mean()),
                recall=float(1 - t["fnr"][test, k].mean()))
            for structure in ("square", "disk"):
                chosen = {}
                for side in ("outer", "inner"):
                    losses = step_losses(t[f"{structure}_{side}"], radii)
                    k = select(losses[cal], "crc", alpha).index
                    chosen[side] = k
                    add(f"margin {structure} {alpha}", **{f"{side}_margin": float(radii[k]),
                                                         f"{side}_ok": float(1 - losses[test, k].mean())})
                band = (t[f"{structure}_outer_area"][test, chosen["outer"]]
                        - t[f"{structure}_inner_area"][test, chosen["inner"]])
                both = (1 - step_losses(t[f"{structure}_outer"], radii)[test, chosen["outer"]]) * (
                    1 - step_losses(t[f"{structure}_inner"], radii)[test, chosen["inner"]])
                add(f"margin {structure} {alpha}", band_width=float(radii[chosen["outer"]] + radii[chosen["inner"]]),
                    band_area=float(band.mean()), band_ok=float(both.mean()))
                k = select(t[f"{structure}_fnr"][cal], "crc", alpha).index
                add(f"margin fnr {structure} {alpha}", margin=float(radii[k]), fnr=float(t[f"{structure}_fnr"][test, k]
                                                                                      .mean()),
                    outer_area=float(t[f"{structure}_outer_area"][test, k].mean()))
    return {key: {name: _mean_std(v) for name, v in values.items()} for key, values in records.items()}


def _cell(d: dict, digits: int = 3) -> str:
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def print_tables(result: dict) -> None:
    s = result["splits"]
    print(f"\nFNR control of person ({result['n_splits']} random 500 / 200 splits; δ = 0.1 for RCPS)\n")
    print("| α | CRC: test FNR | CRC: precision | RCPS: test FNR | RCPS: precision | RCPS: splits with FNR > α |")
    print("|---|---|---|---|---|---|")
    for alpha in ALPHAS:
        c, r = s[f"fnr crc {alpha}"], s[f"fnr rcps {alpha}"]
        print(f"| {alpha} | {_cell(c['fnr'])} | {_cell(c['precision'])} | {_cell(r['fnr'])} | "
              f"{_cell(r['precision'])} | {r['split_over_alpha']['mean']:.2f} |")
    print("\nFDR control (LTT, δ = 0.1)\n\n| α | test FDR | recall |\n|---|---|---|")
    for alpha in ALPHAS:
        f = s[f"fdr ltt {alpha}"]
        print(f"| {alpha} | {_cell(f['fdr'])} | {_cell(f['recall'])} |")
    print("\nMargins (CRC, each side at α)\n")
    print("| structure | α | outer λ | truth ⊆ outer | inner λ | inner ⊆ truth | both | band width | band area |")
    print("|---|---|---|---|---|---|---|---|---|")
    for structure in ("square", "disk"):
        for alpha in ALPHAS:
            m = s[f"margin {structure} {alpha}"]
            print(f"| {structure} | {alpha} | {_cell(m['outer_margin'], 1)} | {_cell(m['outer_ok'])} | "
                  f"{_cell(m['inner_margin'], 1)} | {_cell(m['inner_ok'])} | {_cell(m['band_ok'])} | "
                  f"{_cell(m['band_width'], 1)} | {_cell(m['band_area'])} |")
    print("\nOuter margin controlling the FNR (CRC)\n\n| structure | α | margin | test FNR | outer mask area |")
    print("|---|---|---|---|---|")
    for structure in ("square", "disk"):
        for alpha in ALPHAS:
            m = s[f"margin fnr {structure} {alpha}"]
            print(f"| {structure} | {alpha} | {_cell(m['margin'], 1)} | {_cell(m['fnr'])} | {_cell(m['outer_area'])} |")
    print("\nCost on top of one inference pass (500 cal + 200 test images)\n")
    for name, c in result["cost"].items():
        print(f"- {name}: fit {c['fit_seconds']:.2f} s + evaluate {c['evaluate_seconds']:.2f} s = "
              f"{100 * c['overhead']:.1f}% of {result['inference_seconds']:.1f} s")


def versus_mapie(batches: dict[str, list], alpha: float = 0.1, grid_size: int = 201, chunk: int = 10) -> dict:
    """MAPIE 1.6's SemanticSegmentationController (recall, CRC) on the 500 calibration images, fed ``chunk``
    images per ``compute_risks`` call as its docs advise, next to ours on the same thresholds: λ, seconds and
    peak RSS growth of each (:class:`PeakMemory`)."""
    import gc
    import warnings

    from mapie.risk_control import SemanticSegmentationController

    grid = threshold_grid(grid_size)
    probs = torch.cat([to_probs(b.logits, "logits")[:, 1:] for b in batches["cal"]]).double()
    truth = torch.cat([(b.labels == 1).unsqueeze(1) for b in batches["cal"]]).long()
    out = {}
    gc.collect()
    memory, start = PeakMemory(), time.perf_counter()
    theirs = SemanticSegmentationController(predict_function=lambda x: x, risk="recall", method="crc",
                                            target_level=1 - alpha, predict_params=grid.flip(0).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(0, len(probs), chunk):
            theirs.compute_risks(probs[i:i + chunk].numpy(), truth[i:i + chunk].numpy())
        theirs.compute_best_predict_param()
    out["mapie"] = {"threshold": float(theirs.best_predict_param[0]), "seconds": time.perf_counter() - start,
                    "peak_mib": memory.peak_mib()}
    del theirs
    gc.collect()
    memory, start = PeakMemory(), time.perf_counter()
    ours = RiskController(alpha=alpha, grid=grid_size, kind="probs").fit(
        [(torch.cat([1 - p, p], 1), y[:, 0]) for p, y in zip(probs.float().split(chunk), truth.split(chunk))])
    out["segcal"] = {"threshold": ours.threshold(), "seconds": time.perf_counter() - start,
                     "peak_mib": memory.peak_mib()}
    for name, r in out.items():
        print(f"{name:7s} threshold {r['threshold']:.6f}  {r['seconds']:.2f} s  peak RSS +{r['peak_mib']:.0f} MiB "
              f"({chunk} images per call)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ccp"))
    parser.add_argument("--runs", default="runs", type=Path)
    parser.add_argument("--splits", type=int, default=50)
    parser.add_argument("--print", dest="only_print", action="store_true", help="print the tables of the last run")
    parser.add_argument("--mapie", action="store_true", help="also run MAPIE's controller on the same images")
    args = parser.parse_args()
    if args.only_print:
        print_tables(json.loads(RESULTS.read_text()))
        return
    torch.set_num_threads(2)
    batches, test_source, inference = infer(checkpoint("ccp_person", args.data, args.runs), args.data)
    result = {"inference_seconds": inference, "cost": cost(batches, test_source, inference),
              "n_splits": args.splits}
    if args.mapie:
        result["mapie"] = versus_mapie(batches)
    t = tables(batches)
    result["splits"] = splits(t, args.splits)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print_tables(result)


if __name__ == "__main__":
    main()
