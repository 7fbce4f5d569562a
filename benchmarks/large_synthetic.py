"""Streaming many large synthetic images through conformal calibration (issue 18): peak memory and time.

Each method calibrates on ``--images`` synthetic images of ``--classes`` classes at ``--size`` (default
500 × 19 × 512 × 1024: Cityscapes-like), generated batch by batch from a seed (blocky labels, logits
favouring the true class), in a fresh process whose peak resident memory (``ru_maxrss`` from ``wait4``) is
reported with the wall time. With ``--check`` the pixelwise child runs in histogram mode from the first image (as
``auto`` does past 2**26 scores) and also keeps an int32 reference histogram of a 64 × 64 crop: the compact
per-pixel counts must equal it there (they are exact, so thresholds and CE are the same).

    python benchmarks/large_synthetic.py                                   # pixel, image, kmeans, local grid 2
    python benchmarks/large_synthetic.py --methods pixel --check           # + compact vs int32 thresholds
    python benchmarks/large_synthetic.py --size 1024,2048 --images 40 --methods kandinsky-kmeans:4,local:4
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "large_synthetic.json"
BATCH = 2
CROP = 64


def batches(images: int, classes: int, h: int, w: int, seed: int = 0):
    """``(logits [B, C, H, W], labels [B, H, W])`` batches, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, images, BATCH):
        n = min(BATCH, images - start)
        y = torch.randint(0, classes, (n, h // 16, w // 16), generator=g).repeat_interleave(16, 1)
        y = y.repeat_interleave(16, 2)
        z = torch.randn(n, classes, h, w, generator=g)
        z.scatter_add_(1, y.unsqueeze(1), torch.full((n, 1, h, w), 3.0))
        yield z, y


def child(method: str, grid: int, images: int, classes: int, h: int, w: int, check: bool) -> dict:
    """Calibrate in this process; the parent reads the peak memory."""
    from segcal.methods import CONFORMAL_METHODS
    from segcal.pipeline.calibrate import make_conformal

    params = {"grid": grid} if grid > 1 else {}
    cp = make_conformal(method, classes, "softmax", 255, 0, **params)
    if CONFORMAL_METHODS[method][0] == "local":
        cp.set_params(min_scores=50)
    if check:
        cp.set_params(mode="histogram")  # what auto mode switches to past 2**26 scores
    start = time.perf_counter()
    reference = None
    stream = batches(images, classes, h, w)
    if check:
        from segcal.conformal.scores import class_scores, scores_at_labels
        from segcal.stats.score_histogram import ScoreHistogram

        reference = ScoreHistogram(classes, (CROP, CROP))  # dense int32

        def with_reference(source):
            for z, y in source:
                s, labels = scores_at_labels(class_scores(z[..., :CROP, :CROP]), y[..., :CROP, :CROP])
                reference.update(s, labels)
                yield z, y
        stream = with_reference(stream)
    cp.fit(stream)
    q = cp.thresholds(0.1)
    out = {"calibrate_seconds": round(time.perf_counter() - start, 1), "n_cal": cp.n_cal_,
           "storage": cp.info_.get("storage")}
    if reference is not None:
        compact = cp.scores_  # per-pixel histogram [C, H·W, B] (compact counts)
        rows = torch.arange(CROP).view(-1, 1) * w + torch.arange(CROP)  # crop pixels in the full image
        counts = torch.stack([compact.class_counts(c)[rows.flatten()] for c in range(classes)])
        out["crop_counts_equal"] = bool(torch.equal(counts.view_as(reference.counts), reference.counts))
        out["compact_spilled_cells"] = int(compact._store.spill_index.numel())
        out["thresholds_finite_share"] = float((q < 1).float().mean())
    return out


def run(args: list[str]) -> tuple[float, float, dict]:
    """``(peak RSS GiB, seconds, child's JSON)`` of a fresh child process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"child {args} failed with exit code {os.waitstatus_to_exitcode(status)}")
    return usage.ru_maxrss / 2**20, time.perf_counter() - start, json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--size", default="512,1024")
    parser.add_argument("--methods", default="image,pixel,kandinsky-kmeans,local:2",
                        help="comma-separated METHOD or METHOD:GRID")
    parser.add_argument("--check", action="store_true", help="compare compact counts with int32 on a crop")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split(","))
    if args.child:
        method, _, grid = args.child.partition(":")
        print(json.dumps(child(method, int(grid or 1), args.images, args.classes, h, w, args.check)))
        return
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    for spec in args.methods.split(","):
        child_args = ["--child", spec, "--images", str(args.images), "--classes", str(args.classes),
                      "--size", args.size] + (["--check"] if args.check and spec == "pixel" else [])
        peak, seconds, info = run(child_args)
        key = f"{spec} {args.images}x{args.classes}x{h}x{w}"
        results["runs"][key] = {"peak_gib": round(peak, 3), "seconds": round(seconds, 1), **info}
        print(f"{key:40s} peak {peak:.2f} GiB  {seconds:.0f} s  {info}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
