"""The per-pixel loops that benchmarks/bench_conformal.py times compute what the vectorised evaluation computes."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from coverage_loops import CropThresholds, loop_per_pixel, loop_per_pixel_and_level  # noqa: E402
from segcal.conformal.evaluation import CoverageAccumulator  # noqa: E402


def test_loops_agree_with_the_coverage_accumulator():
    g = torch.Generator().manual_seed(4)
    a, c, h, w, n = 5, 3, 4, 6, 9
    thr = torch.rand(a, c, h, w, generator=g).sort(0).values
    scores = torch.rand(n, c, h, w, generator=g)
    labels = torch.randint(0, c, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < 0.2] = 255
    acc = CoverageAccumulator(CropThresholds(thr), alphas=[0.9, 0.7, 0.5, 0.3, 0.1], min_test_labels=1)
    acc.update_scores(scores, labels)
    res = acc.compute()
    cov, sizes, empty, full = loop_per_pixel_and_level(thr.numpy(), scores.numpy(), labels.numpy())
    labelled = (labels < c).sum(0).double()
    assert torch.allclose(torch.from_numpy(cov).nan_to_num(-1), res.coverage.nan_to_num(-1))
    assert torch.allclose(torch.from_numpy(sizes).double() / labelled.clamp_min(1), res.set_size_map)
    assert torch.allclose(torch.from_numpy(empty).double() / labelled.sum(), res.empty_fraction)
    assert torch.allclose(torch.from_numpy(full).double() / labelled.sum(), res.full_fraction)
    cov2, sizes2 = loop_per_pixel(thr, scores, labels)
    assert torch.equal(cov2.nan_to_num(-1), res.coverage.nan_to_num(-1))
    assert torch.allclose(sizes2.double() / labelled.clamp_min(1), res.set_size_map)
