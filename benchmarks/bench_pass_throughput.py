"""Throughput of `calibrate` and `evaluate` against a plain inference pass over the same split (issue 18).

Loads a trained checkpoint (``ccp_person`` by default, trained by ``ccp_calibration.py`` when absent), and times,
in one run:

* ``inference``: the model over the split (the same DataLoader and ``torch.inference_mode`` loop
  as the pipeline: :func:`segcal.pipeline.inference.run_model`) in one thread, nothing else;
* ``calibrate <method>``: the whole :func:`segcal.pipeline.calibrate.calibrate` (pass + fit);
* ``evaluate``: :func:`segcal.pipeline.evaluate.evaluate` with a calibrated bundle (calibration, segmentation and
  coverage metrics; no figures).

Each arm runs between two inference passes (inference, arm, inference, arm, ..., inference, every repeat), and
its ratio is the mean of those two inference times over the arm's time (1.0: the arm costs nothing beyond
inference; the goal is ≥ 0.9): on a shared machine whose speed drifts by tens of percent within minutes, a run
is compared with its neighbours in time. The reported ratio is the median over the repeats. On a CUDA machine the
model runs there (``--device auto``) and conformal calibration keeps its statistics on the GPU. ::

    python benchmarks/bench_pass_throughput.py --images 500 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from ccp_calibration import checkpoint
from segcal.io.atomic import atomic_write_text
from segcal.pipeline.calibrate import calibrate
from segcal.pipeline.evaluate import evaluate
from segcal.pipeline.sources import model_source

RESULTS = Path(__file__).parent / "results" / "bench_pass_throughput.json"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ccp"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="ccp_person")
    p.add_argument("--runs", type=Path, default=Path("/work/runs"))
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--split", default="cal")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default="temperature,image,pixel,kandinsky-kmeans,local,risk")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes of every arm (default: the run's data.num_workers)")
    p.add_argument("--device", default="auto", help="the model's device: auto (CUDA when there is one), cpu, cuda")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    ckpt = checkpoint(args.config, args.data, args.runs)
    overrides = [f"data.root={args.data}"] + ([] if args.workers is None else [f"data.num_workers={args.workers}"])
    source = model_source(ckpt, args.split, overrides, device=args.device).subset(args.images)
    methods = [m for m in args.methods.split(",") if m]
    bundle, _ = calibrate(source, "image", progress=False)  # what evaluate applies
    plain = replace(source, prefetch=0)  # the model over the split in one thread, nothing else
    inference = lambda: sum(1 for _ in plain)  # noqa: E731
    arms = {**{f"calibrate {m}": (lambda m=m: calibrate(source, m, progress=False)) for m in methods},
            "evaluate": lambda: evaluate(source, bundle, progress=False)}
    seconds: dict[str, list[float]] = {"inference": [], **{name: [] for name in arms}}
    paired: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):  # inference, arm, inference, arm, ..., inference
        before = timed(inference)
        seconds["inference"].append(before)
        for name, fn in arms.items():
            seconds[name].append(timed(fn))
            after = timed(inference)
            seconds["inference"].append(after)
            paired[name].append((before + after) / 2 / seconds[name][-1])  # against its neighbours in time
            before = after
    rows = {"inference": {"seconds": statistics.median(seconds["inference"]), "all": seconds["inference"],
                          "throughput_ratio": 1.0, "paired_ratios": []}}
    rows.update({name: {"seconds": statistics.median(t), "all": t, "throughput_ratio": statistics.median(paired[name]),
                        "paired_ratios": paired[name]} for name, t in seconds.items() if name in arms})
    result = {"config": args.config, "images": len(source), "image_size": list(source.image_size),
              "num_workers": source.datamodule.cfg.num_workers,
              "device": str(next(source.model.parameters()).device),
              "threads": torch.get_num_threads(), "rows": rows}
    print(f"{'':28s} {'median':>9s} {'ratio':>6s}   paired ratios")
    for name, row in rows.items():
        print(f"{name:28s} {row['seconds']:7.2f} s {row['throughput_ratio']:6.3f}   "
              + " ".join(f"{r:.3f}" for r in row["paired_ratios"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
