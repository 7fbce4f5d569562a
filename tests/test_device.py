"""Device-resident statistics: calibration and coverage accumulate on the batches' device.

On the CPU the tests count the copies to the CPU (they must not grow with the number of batches); with CUDA
they check that GPU batches give the same thresholds and coverage as CPU batches (skipped without CUDA).
"""
from contextlib import contextmanager

import pytest
import torch

from planted import planted_logits, ring_map
from segcal.conformal.evaluation import CoverageAccumulator
from segcal.pipeline.calibrate import make_conformal

METHODS = ["image", "pixel", "kandinsky-kmeans", "kandinsky-annuli", "local"]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _data(n=48):
    return planted_logits(n, ring_map((12, 16), [3, 6]), [0.5, 2, 4], [1, 1, 2], seed=11)


@contextmanager
def cpu_copies():
    """Count the explicit moves to the host, ``Tensor.cpu()``, ``Tensor.to("cpu")`` and ``Tensor.numpy()`` (a list
    of one int); moves to another tensor's device (``labels.to(scores.device)``) follow the batches instead."""
    calls = [0]
    original = {name: getattr(torch.Tensor, name) for name in ("cpu", "to", "numpy")}

    def counting(name):
        def wrapper(self, *args, **kwargs):
            if name != "to" or any(isinstance(a, str) and a.startswith("cpu") for a in (*args, kwargs.get("device"))):
                calls[0] += 1
            return original[name](self, *args, **kwargs)
        return wrapper
    for name in original:
        setattr(torch.Tensor, name, counting(name))
    try:
        yield calls
    finally:
        for name, fn in original.items():
            setattr(torch.Tensor, name, fn)


def _batches(logits, labels, size):
    return [(logits[i:i + size], labels[i:i + size]) for i in range(0, len(logits), size)]


@pytest.mark.parametrize("method", METHODS)
def test_copies_to_the_cpu_do_not_grow_with_the_batches(method):
    logits, labels = _data()
    counts = []
    for size in (24, 4):  # 2 batches, then 12
        with cpu_copies() as calls:
            cp = make_conformal(method, 2).fit(_batches(logits, labels, size))
            acc = CoverageAccumulator(cp, [0.1])
            for batch in _batches(logits, labels, size):
                acc.update(*batch)
            acc.compute()
        counts.append(calls[0])
    assert counts[0] == counts[1], counts


def test_every_coverage_statistic_moves_with_the_accumulator():
    logits, labels = _data()
    acc = CoverageAccumulator(make_conformal("pixel", 2).fit([(logits[:24], labels[:24])]), [0.1])
    acc.to("meta")  # a device without data: shows where every tensor went
    tensors = [v for k, v in vars(acc).items() if isinstance(v, torch.Tensor) and k != "levels"]  # compute's
    tensors += [acc.covered_hist.total(), acc.size_hist.total(), acc.covered_hist._recent]
    assert len(tensors) >= 10 and all(t.device.type == "meta" for t in tensors)


@cuda
@pytest.mark.parametrize("method", METHODS)
def test_cuda_batches_give_the_cpu_thresholds_and_coverage(method):
    logits, labels = _data()
    cal, test = _batches(logits[:32], labels[:32], 8), (logits[32:], labels[32:])
    on_cpu = make_conformal(method, 2).fit(cal)
    with cpu_copies() as calls:
        on_gpu = make_conformal(method, 2).fit([(x.cuda(), y.cuda()) for x, y in cal])
    assert calls[0] < 50  # a handful of moves after the pass, not one per batch and statistic
    assert torch.equal(on_gpu.thresholds(0.1), on_cpu.thresholds(0.1))
    results = []
    for cp, device in ((on_cpu, "cpu"), (on_gpu, "cuda")):
        acc = CoverageAccumulator(cp, [0.1, 0.2])
        acc.update(test[0].to(device), test[1].to(device))
        results.append(acc.compute())
    assert torch.equal(results[0].coverage.nan_to_num(-1), results[1].coverage.nan_to_num(-1))
    assert torch.equal(results[0].full_fraction, results[1].full_fraction)
