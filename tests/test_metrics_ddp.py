"""Two CPU processes on gloo: torchmetrics-synchronised CalibrationMetrics equal one process."""
import math

import torch

from ranks import run_ranks
from segcal.metrics.calibration import CalibrationMetrics
from segcal.stats.binned import BinnedStats, equal_width_bins

WORLD = 2


def make_data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, 8, 10, generator=g) * 2
    labels = torch.randint(0, 3, (6, 8, 10), generator=g)
    labels[1, :3] = 255
    return logits, labels


def new_metric():
    return CalibrationMetrics(3, kind="logits", class_maps=True, boundary_width=1)


def computed_on_rank(rank: int, world: int) -> dict:
    logits, labels = make_data()
    mine = slice(3 * rank, 3 * rank + 3)  # rank 0: images 0-2, rank 1: images 3-5
    metric = new_metric()
    for i in range(mine.start, mine.stop):
        metric.update(logits[i:i + 1], labels[i:i + 1])
    result = metric.compute()  # torchmetrics gathers and sums the states of both ranks
    conf, pred = logits[mine].softmax(1).max(1)
    stats = BinnedStats.from_samples(equal_width_bins(conf, 15), conf, pred == labels[mine], 15)
    stats.all_reduce()
    return {"result": result.to_dict(maps=True), "count": stats.count}


def test_two_gloo_processes_equal_single_process(tmp_path):
    got = run_ranks(computed_on_rank, tmp_path, world=WORLD)[0]
    logits, labels = make_data()
    single = new_metric()
    for i in range(6):
        single.update(logits[i:i + 1], labels[i:i + 1])
    want = single.compute().to_dict(maps=True)
    assert got["result"]["num_images"] == 6 and got["result"]["num_pixels"] == want["num_pixels"]
    assert _close(got["result"], want)
    conf, pred = logits.softmax(1).max(1)
    whole = BinnedStats.from_samples(equal_width_bins(conf, 15), conf, pred == labels, 15)
    assert torch.equal(got["count"], whole.count)


def _close(a, b) -> bool:
    """Recursive equality of to_dict() trees, floats to 1e-9 (None = NaN on both sides)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b
