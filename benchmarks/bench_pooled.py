"""Imagewise (class-conditional, pooled) calibration vs TorchCP and a NumPy reference (issue 18, item 2).

The same synthetic logits (``--images`` × C × H × W, default 150 × 2 × 96 × 128 as in the issue) are calibrated
by segcal's ``ImagewiseCalibrator`` (streamed in batches of 8, batches checked), by TorchCP 1.2's
``ClassConditionalPredictor`` with the LAC score (all pixels as one tensor, when TorchCP is installed:
``pip install --no-deps torchcp``; its optional imports are stubbed here) and by a plain NumPy reference (sort
the true-class scores of each class, take the ⌈(n + 1)(1 − α)⌉-th). Each is timed best of ``--repeats`` in one
run; thresholds are compared.

    python benchmarks/bench_pooled.py                 # writes benchmarks/results/bench_pooled.json
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from segcal.conformal.calibrator import ImagewiseCalibrator

RESULTS = Path(__file__).parent / "results" / "bench_pooled.json"
ALPHA = 0.1


class _Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty modules for TorchCP's optional imports (graph, LLM and soft-sort parts it does not need here)."""

    roots = ("torchsort", "torch_geometric", "torchvision", "transformers", "gpytorch", "cvxpy")

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: type(attr, (), {})
        return module

    def exec_module(self, module) -> None:
        return None


def torchcp_predictor():
    """TorchCP's ClassConditionalPredictor with LAC, or ``None`` when TorchCP is not installed."""
    sys.meta_path.insert(0, _Stubs())
    try:
        from torchcp.classification.predictor import ClassConditionalPredictor
        from torchcp.classification.score import LAC
    except ImportError:
        return None
    finally:
        sys.meta_path.pop(0)
    return lambda: ClassConditionalPredictor(LAC(), alpha=ALPHA)


def data(n: int, c: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n, h, w), generator=g)
    logits = torch.randn(n, c, h, w, generator=g) + 2 * torch.nn.functional.one_hot(labels, c).permute(0, 3, 1, 2)
    return logits, labels


def best_of(repeats: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--size", default="96,128")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split(","))
    logits, labels = data(args.images, args.classes, h, w)
    batches = list(zip(logits.split(8), labels.split(8)))
    result = {"images": args.images, "classes": args.classes, "size": [h, w], "threads": args.threads}

    seconds, cp = best_of(args.repeats, lambda: ImagewiseCalibrator(args.classes).fit(batches))
    ours = cp.thresholds(ALPHA)[:, 0, 0].double()
    result["segcal_seconds"] = seconds

    def numpy_reference():
        p = torch.softmax(logits, 1).numpy()
        y = labels.numpy()
        s = 1 - np.take_along_axis(p, y[:, None], 1)[:, 0]
        out = []
        for c in range(args.classes):
            scores = np.sort(s[y == c])
            out.append(scores[int(np.ceil((scores.size + 1) * (1 - ALPHA))) - 1])
        return torch.tensor(out, dtype=torch.float64)

    result["numpy_seconds"], reference = best_of(args.repeats, numpy_reference)
    result["max_difference_numpy"] = float((ours - reference).abs().max())
    make = torchcp_predictor()
    if make is not None:
        flat_logits = logits.permute(0, 2, 3, 1).reshape(-1, args.classes)
        flat_labels = labels.flatten()

        def torchcp():
            predictor = make()
            predictor.calculate_threshold(flat_logits, flat_labels, ALPHA)
            return predictor.q_hat

        result["torchcp_seconds"], theirs = best_of(args.repeats, torchcp)
        result["max_difference_torchcp"] = float((ours - theirs.double().cpu()).abs().max())
        result["ratio_torchcp"] = seconds / result["torchcp_seconds"]
    result["ratio_numpy"] = seconds / result["numpy_seconds"]
    for key, value in result.items():
        print(f"{key:24s} {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
