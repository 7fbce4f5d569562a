"""BinnedStats: bin indices, hand-computed ECE/MCE, empty cells, merging, pooling."""
import math

import pytest
import torch

from segcal.stats.binned import (
    BinnedStats,
    equal_width_bins,
    logit_bin_edges,
    logit_bins,
)


def test_equal_width_bins_edges_and_extremes():
    conf = torch.tensor([0.0, 0.1, 0.25, 0.2499, 0.5, 0.75, 0.999, 1.0])
    # 4 bins [0, .25), [.25, .5), [.5, .75), [.75, 1]: 1.0 goes to the last bin, 0 to the first
    assert equal_width_bins(conf, 4).tolist() == [0, 0, 1, 0, 2, 3, 3, 3]


def test_logit_bins_are_monotone_and_match_edges():
    conf = torch.tensor([0.0, 1e-9, 0.3, 0.5, 0.9, 1 - 1e-6, 1.0])
    idx = logit_bins(conf, 64)
    assert idx.tolist() == sorted(idx.tolist())
    assert idx[0] == 0 and idx[-1] == 63 and idx[3] == 32
    edges = logit_bin_edges(64)
    inner = conf[1:-1].double()
    assert bool(((edges[idx[1:-1]] <= inner) & (inner < edges[idx[1:-1] + 1])).all())


def test_hand_computed_ece_mce_with_empty_bins():
    # 2 bins [0, .5), [.5, 1]; bin 0: conf .2, .4 with correct 1, 0 -> acc .5, conf .3
    # bin 1: conf .6, .8, 1.0 with correct 1, 1, 0 -> acc 2/3, conf .8
    conf = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0])
    correct = torch.tensor([1, 0, 1, 1, 0]).bool()
    stats = BinnedStats.from_samples(equal_width_bins(conf, 2), conf, correct, 2)
    assert stats.count.tolist() == [2, 3] and stats.correct_sum.tolist() == [1, 2]
    assert stats.count.dtype == stats.conf_sum.dtype == torch.float64
    expected = (2 * abs(0.5 - 0.3) + 3 * abs(2 / 3 - 0.8)) / 5
    assert math.isclose(stats.ece().item(), expected, rel_tol=1e-6)
    assert math.isclose(stats.mce().item(), 0.2, rel_tol=1e-6)
    # 10 bins: half of them empty; they contribute nothing and are NaN in the per-bin views
    stats10 = BinnedStats.from_samples(equal_width_bins(conf, 10), conf, correct, 10)
    assert stats10.count.tolist() == [0, 0, 1, 0, 1, 0, 1, 0, 1, 1]
    assert math.isclose(stats10.ece().item(), (0.8 + 0.4 + 0.4 + 0.2 + 1.0) / 5, rel_tol=1e-6)
    assert math.isclose(stats10.mce().item(), 1.0, rel_tol=1e-6)
    assert torch.isnan(stats10.accuracy()[0]) and torch.isnan(stats10.confidence()[0])


def test_confidence_zero_and_one_are_counted():
    conf = torch.tensor([0.0, 0.0, 1.0, 1.0])
    correct = torch.tensor([False, False, True, True])
    stats = BinnedStats.from_samples(equal_width_bins(conf, 15), conf, correct, 15)
    assert stats.count[0] == 2 and stats.count[-1] == 2
    assert stats.ece().item() == 0.0 and stats.mce().item() == 0.0


def test_empty_cells_are_nan_not_errors():
    stats = BinnedStats.zeros((3,), 5)
    assert torch.isnan(stats.ece()).all() and torch.isnan(stats.mce()).all() and torch.isnan(stats.rmsce()).all()
    assert stats.total().tolist() == [0, 0, 0]


def test_cells_merge_and_pool():
    torch.manual_seed(0)
    conf, correct = torch.rand(200), torch.rand(200) < 0.6
    cell = torch.randint(0, 4, (200,))
    bins = equal_width_bins(conf, 6)
    per_cell = BinnedStats.from_samples(bins, conf, correct, 6, cell, (4,))
    whole = BinnedStats.from_samples(bins, conf, correct, 6)
    pooled = per_cell.sum(0)
    assert all(torch.allclose(a, b) for a, b in zip(pooled.tensors(), whole.tensors()))
    for k in range(4):
        sel = cell == k
        alone = BinnedStats.from_samples(bins[sel], conf[sel], correct[sel], 6)
        assert all(torch.allclose(a[k], b) for a, b in zip(per_cell.tensors(), alone.tensors()))
    halves = [BinnedStats.from_samples(bins[s], conf[s], correct[s], 6) for s in (slice(0, 70), slice(70, None))]
    merged = halves[0] + halves[1]
    assert all(torch.allclose(a, b) for a, b in zip(merged.tensors(), whole.tensors()))
    assert torch.equal(halves[0].merge(halves[1]).count, whole.count)
    assert halves[0].all_reduce() is halves[0]  # no process group: a no-op


def test_shape_errors():
    with pytest.raises(ValueError, match="share one shape"):
        BinnedStats(torch.zeros(3, 5), torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="cannot merge"):
        BinnedStats.zeros((), 5) + BinnedStats.zeros((), 6)


def test_zero_weight_samples_leave_no_trace():
    torch.manual_seed(1)
    conf, correct = torch.rand(50), torch.rand(50) < 0.5
    keep = torch.rand(50) < 0.6
    bins = equal_width_bins(conf, 8)
    weighted = BinnedStats.zeros((), 8).add_samples_(bins, conf, correct, weight=keep.double())
    subset = BinnedStats.from_samples(bins[keep], conf[keep], correct[keep], 8)
    assert all(torch.allclose(a, b) for a, b in zip(weighted.tensors(), subset.tensors()))


def test_fractional_weights_give_weighted_means():
    stats = BinnedStats.zeros((), 2).add_samples_(
        torch.tensor([1, 1]), torch.tensor([0.6, 0.8]), torch.tensor([1, 0]), weight=torch.tensor([0.25, 0.25]))
    assert math.isclose(stats.confidence()[1].item(), 0.7, rel_tol=1e-6) and stats.accuracy()[1].item() == 0.5
    assert math.isclose(stats.ece().item(), 0.2, rel_tol=1e-6) and torch.isnan(stats.accuracy()[0])
