"""Calibrating from saved predictions of many classes at high resolution (issue 18): peak memory and files.

Writes ``--images`` saved predictions of ``--classes`` classes at ``--size`` (default 12 × 19 × 512 × 1024, the
Cityscapes-like case of the issue; blocky labels, logits favouring the true class) and runs
``segcal calibrate --predictions DIR --method M [--param grid=G] [--max-memory GIB]`` for each method in a fresh
process, reporting its peak resident memory (the child's ``ru_maxrss``), wall time and checkpoint size, next to
the peak of a process that only imports segcal's CLI; a run refused up front is reported with its message.

    python benchmarks/large_predictions.py --methods image,pixel      # writes benchmarks/results/large_predictions.json
    python benchmarks/large_predictions.py --size 1024,2048 --max-memory 8 --methods pixel,kandinsky-kmeans:2,local:4
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segcal.data.prediction_writer import PredictionWriter

RESULTS = Path(__file__).parent / "results" / "large_predictions.json"


def write_folder(folder: Path, images: int, classes: int, h: int, w: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with PredictionWriter(folder, classes=[f"c{i}" for i in range(classes)], head="softmax", ignore_index=255,
                          source={"benchmark": "large_predictions"}) as writer:
        for i in range(images):
            y = torch.randint(0, classes, (h // 16, w // 16), generator=g).repeat_interleave(16, 0)
            y = y.repeat_interleave(16, 1)
            z = torch.randn(classes, h, w, generator=g) + 3 * torch.nn.functional.one_hot(y, classes).permute(2, 0, 1)
            writer.add(f"im{i:03d}", z.numpy(), y.numpy().astype(np.uint8))


def run(command: list[str], refusable: bool = False) -> tuple[float, float, str | None]:
    """``(peak RSS in GiB, seconds, refusal message or None)`` of ``command`` in a fresh process (its own rusage,
    from ``wait4``); exit code 2 with ``refusable`` is an up-front refusal, anything else non-zero an error."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code and not (refusable and code == 2):
        raise RuntimeError(f"{' '.join(command)} failed with exit code {code}: {err[-2000:]}")
    refusal = " ".join(err.split()) if code else None
    return usage.ru_maxrss / 2**20, time.perf_counter() - start, refusal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--size", default="512,1024")
    parser.add_argument("--methods", default="image,pixel", help="comma-separated METHOD or METHOD:GRID")
    parser.add_argument("--max-memory", type=float, help="--max-memory GIB of every run (default: none given)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split(","))
    segcal = [sys.executable, "-m", "segcal.cli.main"]
    result = {"images": args.images, "classes": args.classes, "size": [h, w], "max_memory": args.max_memory,
              "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "predictions"
        write_folder(folder, args.images, args.classes, h, w)
        result["import_only_gib"] = run([*segcal, "calibrate", "--list-params", "--method", "image"])[0]
        for spec in args.methods.split(","):  # each in a fresh process
            method, _, grid = spec.partition(":")
            out = Path(tmp) / f"{method}.pt"
            extra = (["--param", f"grid={grid}"] if grid else []) + (
                ["--max-memory", str(args.max_memory)] if args.max_memory else [])
            peak, seconds, refusal = run([*segcal, "calibrate", "--predictions", str(folder), "--method", method,
                                          "--out", str(out), "--no-progress", *extra], refusable=True)
            if refusal:
                result["methods"][spec] = {"refused": refusal, "peak_gib": peak, "seconds": seconds}
                print(f"{spec:10s} refused after {seconds:.1f} s (peak {peak:.2f} GiB): {refusal}", flush=True)
                continue
            result["methods"][spec] = {"peak_gib": peak, "seconds": seconds,
                                       "checkpoint_mb": out.stat().st_size / 1e6}
            print(f"{spec:10s} peak {peak:.2f} GiB  {seconds:.0f} s  checkpoint {out.stat().st_size / 1e6:.1f} MB",
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
