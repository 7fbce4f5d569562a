"""CCP person turned into the sewer-pipe situation: coarse boxes for most images, true masks for a few.

Stages (each is skipped when its output exists, so an interrupted run resumes):
1. ``prepare-hybrid --simulate-boxes``: 100 BASELINE + 100 EVAL images keep their true (binary)
   masks; ``--max-coarse`` other images get their person mask replaced by its filled bounding box.
2. Train three starting points and refinements on 144x96 (``ccp_person`` config, last checkpoint):
   coarse boxes only; BASELINE only; ``_H1`` (boxes refined by the BASELINE model + BASELINE);
   ``_H2`` (refined again by the H1 model); ``_H1c`` (as H1, uncertain pixels p < 0.8 ignored).
3. Every model is scored on EVAL at full resolution (``P_rounds.csv``), and every set of training
   masks is scored against the true masks of the same images (pseudo-label quality).

    python benchmarks/ccp_refinement.py --work runs/ccp_refinement   # about an hour on 2 CPU threads

Writes ``benchmarks/results/ccp_refinement.json`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from segcal.configio import load_yaml
from segcal.data.files import read_mask
from segcal.metrics.segmentation import SegmentationMetrics
from segcal.pipeline.config import experiment_from_dict
from segcal.pipeline.configs import resolve_config
from segcal.pipeline.train import train
from segcal.refine.prepare import prepare_hybrid
from segcal.refine.project import Project
from segcal.refine.rounds import read_rounds, record_round
from segcal.refine.rules import RefineRule
from segcal.refine.run import refine_dataset

RESULTS = Path(__file__).parent / "results" / "ccp_refinement.json"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_on(folder: Path, work: Path, name: str, epochs: int, seed: int) -> Path:
    run = work / "runs" / name
    ckpt = run / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        return ckpt
    cfg = experiment_from_dict(load_yaml(resolve_config("ccp_person")), [
        f"name={name}", f"seed={seed}", f"data.root={folder}", "data.remap=null", "data.classes=null",
        "data.splits={train: 0.9, val: 0.1}", f"train.epochs={epochs}", f"train.checkpoint_every={epochs}",
        "train.progress=false", "train.vis_samples=4"])
    start = time.time()
    train(cfg, run)
    log(f"trained {name} on {folder.name} ({epochs} epochs) in {time.time() - start:.0f} s")
    return ckpt


def mask_quality(folder: Path, truth: Path, stems: list[str]) -> dict:
    """IoU / Dice / recall / precision of ``folder``'s masks of ``stems`` against the true binary masks."""
    metrics = SegmentationMetrics(2)
    ignored = total = 0
    for stem in stems:
        mask = read_mask(folder / "masks" / f"{stem}.png")
        unsure = mask == 255  # left out of the comparison, counted separately
        t = np.where(unsure, 255, read_mask(truth / f"{stem}.png") > 0).astype(np.int64)
        metrics.update(torch.from_numpy(np.where(unsure, 0, mask))[None], torch.from_numpy(t)[None])
        ignored, total = ignored + int(unsure.sum()), total + mask.size
    res = metrics.compute()
    return {m: float(res[m][1]) for m in ("iou", "dice", "recall", "precision")} | {
        "num_images": len(stems), "ignored_share": ignored / total}


def refine_once(ckpt: Path, project: Project, out: Path, rule: RefineRule) -> None:
    if not out.is_dir():
        start = time.time()
        refine_dataset(ckpt, project.prefix, out, rule, progress=False)
        log(f"refined -> {out.name} in {time.time() - start:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/work/shared/data/ccp")
    ap.add_argument("--work", default="runs/ccp_refinement")
    ap.add_argument("--baseline", type=int, default=100)
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--max-coarse", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=10, help="epochs for the coarse and hybrid models")
    ap.add_argument("--baseline-epochs", type=int, default=30, help="epochs for the small BASELINE model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="selection of the subsets and training seed")
    ap.add_argument("--results", default=str(RESULTS), help="JSON file for the results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data, work = Path(args.data), Path(args.work)
    if not (data / "images").is_dir():
        raise SystemExit(f"CCP not found at {data} (see its README); nothing to do")
    project = Project(work / "ccp")
    start = time.time()
    if not project.is_prepared():
        prepare_hybrid(data, project.prefix, n_baseline=args.baseline, n_eval=args.eval, seed=args.seed,
                       remap="binary", classes=["background", "person"], simulate_boxes=True,
                       max_coarse=args.max_coarse, progress=False)
        log(f"prepared {project.prefix}_{{BASELINE,EVAL,COARSE}}")
    e, eb = args.epochs, args.baseline_epochs
    plan = [  # (round name, run name, training folder, epochs, refine with: (model round, rule) or None)
        ("coarse boxes only", "coarse", project.coarse, e, None),
        ("BASELINE only", "baseline", project.baseline, eb, None),
        ("H1", "H1", project.hybrid(1), e, ("BASELINE only", RefineRule())),
        ("H2", "H2", project.hybrid(2), e, ("H1", RefineRule())),
        ("H1c (p<0.8 ignored)", "H1c", project.folder("H1c"), e,
         ("BASELINE only", RefineRule(confidence="probability", min_confidence=0.8))),
    ]
    ckpts: dict[str, Path] = {}
    done = {r["round"] for r in read_rounds(project.rounds_csv)}
    for name, run, folder, epochs, source in plan:
        if source is not None:
            refine_once(ckpts[source[0]], project, folder, source[1])
        ckpts[name] = train_on(folder, work, run, epochs, args.seed)
        if name not in done:
            record_round(ckpts[name], project.prefix, name, train_data=folder.name, progress=False)
            log(f"scored {name} on EVAL")
    rounds = {r["round"]: {m: r[m] for m in ("iou", "dice", "recall", "precision")} for r in
              read_rounds(project.rounds_csv)}
    coarse_names = sorted(p.stem for p in (project.coarse / "masks").iterdir())
    labels = {name: mask_quality(folder, data / "masks", coarse_names) for name, _, folder, _, _ in plan
              if folder != project.baseline}
    result = {"data": str(data), "image_size_hw": [144, 96], "seed": args.seed, "threads": args.threads,
              "sizes": {"baseline": args.baseline, "eval": args.eval, "coarse": len(coarse_names)},
              "epochs": e, "baseline_epochs": eb, "checkpoint": "last", "eval_metrics": rounds,
              "coarse_mask_quality": labels, "seconds": time.time() - start}
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2))
    print("\n| model trained on | EVAL IoU | Dice | recall | precision | its coarse-image masks: IoU vs truth |")
    print("|---|---|---|---|---|---|")
    for name, *_ in plan:
        r = rounds[name]
        quality = f"{labels[name]['iou']:.3f}" if name in labels else "(true masks)"
        print(f"| {name} | {r['iou']:.3f} | {r['dice']:.3f} | {r['recall']:.3f} | {r['precision']:.3f} | {quality} |")
    log(f"done in {time.time() - start:.0f} s; {results}")


if __name__ == "__main__":
    main()
