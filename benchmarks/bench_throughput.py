"""Training and inference throughput (images/s) of the segcal models at a stated size.

    python benchmarks/bench_throughput.py [--size 144 96] [--batch 8] [--steps 10] [--config ccp_person]

Measures, in one run and on one machine: data loading (synthetic, and CCP when present),
a training step (forward + backward + AdamW step) and inference (forward, no grad) for the
model of a built-in config. Writes benchmarks/results/bench_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from segcal.data.datamodule import build_datamodule
from segcal.io.atomic import atomic_write_text
from segcal.models.lightning import SegModel
from segcal.pipeline.config import load_experiment
from segcal.pipeline.configs import resolve_config

CCP = Path(__file__).resolve().parents[2] / "shared" / "data" / "ccp"


def timed(fn, repeats: int) -> float:
    """Seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def loading_rate(overrides: list[str], n: int) -> float:
    cfg = load_experiment(resolve_config("ccp_person"), overrides)
    dm = build_datamodule(cfg.data, seed=0)
    dm.setup()
    ds = dm.dataset("train", augment=True)
    start = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="ccp_person")
    ap.add_argument("--size", type=int, nargs=2, default=[144, 96], metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_throughput.json"))
    args = ap.parse_args()

    cfg = load_experiment(resolve_config(args.config), ["data.root=unused", f"data.image_size={args.size}"])
    model = SegModel.from_configs(cfg.model, cfg.loss, cfg.optim, cfg.data.num_classes, cfg.data.class_names)
    h, w = args.size
    x = torch.randn(args.batch, 3, h, w)
    y = torch.randint(0, cfg.data.num_classes, (args.batch, h, w))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step():
        opt.zero_grad()
        model.criterion(model(x), y).backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(x)

    model.train()
    t_train = timed(train_step, args.steps)
    model.eval()
    t_infer = timed(infer, args.steps)
    result = {
        "config": args.config, "model": {"arch": cfg.model.arch, "channels": cfg.model.channels},
        "image_size_hw": [h, w], "batch": args.batch, "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "device": "cpu",
        "train_images_per_s": args.batch / t_train, "infer_images_per_s": args.batch / t_infer,
        "synthetic_load_images_per_s": loading_rate(
            ["data.kind=synthetic", "data.remap=null", "data.classes=null", "data.synthetic.num_classes=2",
             f"data.synthetic.height={h}", f"data.synthetic.width={w}",
             "data.splits={train: 32, val: 8, cal: 8, test: 8}", "data.synthetic.num_images=64"], 64),
    }
    if (CCP / "images").is_dir():
        result["ccp_load_images_per_s"] = loading_rate([f"data.root={CCP}"], 64)
    for key, value in result.items():
        print(f"{key:32s} {value:.1f}" if isinstance(value, float) else f"{key:32s} {value}")
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
