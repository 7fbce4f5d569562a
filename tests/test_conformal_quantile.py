"""Finite-sample conformal quantiles: exact mode = direct sort, histogram mode ≥ exact within the gap."""
import math

import numpy as np
import pytest
import torch

from planted import block_map, planted_logits
from segcal.conformal.accumulate import ScoreAccumulator, ScoreBank
from segcal.conformal.calibrator import ImagewiseCalibrator, KandinskyCalibrator, PixelwiseCalibrator
from segcal.conformal.quantile import SortedScores, conformal_rank, group_quantiles, grouped_sorted_values
from segcal.conformal.scores import label_scores
from segcal.stats.score_histogram import ScoreBins


def data(n=30, shape=(6, 7), seed=0):
    return planted_logits(n, block_map(shape), margin=[1, 3, 5, 7], noise=[2, 2, 3, 1], fg_prob=0.4, seed=seed)


def sort_based_quantile(values, level):
    """Direct computation: the ⌈(n+1)·level⌉-th smallest of the n values, 1 if that exceeds n."""
    n = values.numel()
    k = math.ceil(round((n + 1) * level, 9))
    if n == 0 or k > n:
        return 1.0
    return float(values.sort().values[k - 1])


def test_conformal_rank_and_trivial_threshold():
    n = torch.tensor([9, 8, 0, 19])
    k = conformal_rank(n, torch.tensor([0.9]))
    assert k.tolist() == [[9, 9, 1, 18]]  # 10·0.9 = 9 (no float round-up), ⌈9·0.9⌉ = 9 > 8 → trivial
    store = SortedScores.from_keys(torch.tensor([0] * 9 + [1] * 8 + [3] * 19),
                                   torch.rand(36, generator=torch.Generator().manual_seed(0)), 1, 4)
    q = group_quantiles(store, torch.tensor([0.9]))[0, 0]
    assert q[1] == 1.0 and q[2] == 1.0  # k > n and the empty group: trivial, never NaN
    assert q[0] == store.values[:9].max()


@pytest.mark.parametrize("alpha", [0.1, 0.137, 0.5, 0.93])
def test_exact_pixelwise_equals_direct_sort(alpha):
    logits, labels = data()
    labels[0, 0, :3] = 255
    cp = PixelwiseCalibrator(2, mode="exact").fit([(logits[:12], labels[:12]), (logits[12:], labels[12:])])
    thr = cp.thresholds(alpha)
    s, y = label_scores(logits, labels)
    for c in range(2):
        for i in range(6):
            for j in range(7):
                ref = sort_based_quantile(s[:, i, j][y[:, i, j] == c], 1 - alpha)
                assert thr[c, i, j].item() == ref


def test_exact_imagewise_and_groups_equal_direct_sort():
    logits, labels = data(seed=1)
    s, y = label_scores(logits, labels)
    imagewise = ImagewiseCalibrator(2, mode="exact").fit([(logits, labels)])
    for c in range(2):
        assert imagewise.thresholds(0.2)[c, 0, 0].item() == sort_based_quantile(s[y == c], 0.8)
    km = KandinskyCalibrator("kmeans", 2, mode="exact", split=0.5).fit([(logits, labels)])
    cal = torch.arange(30) % 2 == 0  # images of the threshold part (the other half fitted the groups)
    thr = km.thresholds(0.1)
    for c in range(2):
        gmap = km.group_map_[c]
        for g in gmap.unique():
            member = (gmap == g).expand(30, -1, -1) & (y == c) & cal.view(-1, 1, 1)
            assert bool((thr[c][gmap == g] == sort_based_quantile(s[member], 0.9)).all())


def test_histogram_thresholds_conservative_within_gap():
    logits, labels = data(n=40, seed=2)
    bins = ScoreBins()
    exact = PixelwiseCalibrator(2, mode="exact").fit([(logits, labels)])
    hist = PixelwiseCalibrator(2, mode="histogram", bins=bins).fit([(logits, labels)])
    for alpha in (0.05, 0.3, 0.6):
        te, th = exact.thresholds(alpha).double(), hist.thresholds(alpha).double()
        assert bool((th >= te).all())
        inner = (te > bins.inner_edges[0]) & (te <= bins.inner_edges[-1])
        gap = (th.logit() - te.logit())[inner]
        assert float(gap.max()) <= bins.max_logit_gap() + 1e-6


def test_any_alpha_uses_its_own_order_statistic_not_a_curve_index():
    logits, labels = data(n=60, seed=3)
    cp = ImagewiseCalibrator(2, mode="exact").fit([(logits, labels)])
    curves = cp.nc_curves()
    assert curves.shape == (100, 2, 6, 7) and bool((curves[1:] >= curves[:-1]).all())
    s, y = label_scores(logits, labels)
    scores = s[y == 1]
    for alpha in (0.1234, 0.0567):
        assert cp.thresholds(alpha)[1, 0, 0].item() == sort_based_quantile(scores, 1 - alpha)
    assert curves[0].max() == 0 and curves[-1].min() == 1.0


def test_accumulator_auto_switches_to_histogram_and_matches():
    logits, labels = data(n=20, seed=4)
    s, y = label_scores(logits, labels)
    auto = ScoreAccumulator(2, mode="auto", max_exact_scores=300)
    hist = ScoreAccumulator(2, mode="histogram")
    for i in range(0, 20, 5):
        auto.update(s[i:i + 5], y[i:i + 5])
        hist.update(s[i:i + 5], y[i:i + 5])
    assert not auto.exact and torch.equal(auto.store.counts, hist.store.counts)
    bank = ScoreBank(2, (6, 7), s, y)
    assert len(bank.subset([0, 3])) == 2 and torch.equal(bank.subset([3]).scores[0], s[3])
    with pytest.raises(ValueError, match="n_cal=21"):
        bank.sample(21)


@pytest.mark.parametrize("negative", [False, True])
def test_grouped_sort_equals_a_lexicographic_sort(negative):
    g = torch.Generator().manual_seed(0)
    values = torch.rand(5000, generator=g)
    values[:50] = 0.0
    values[50:60] = -0.0  # sorts as 0
    values[60:200] = values[200:340]  # ties
    if negative:  # scores below 0 (a custom score): the two-sort path
        values[400:500] -= 2
    keys = torch.randint(0, 70, (5000,), generator=g)
    got = grouped_sorted_values(keys, values)
    ref = np.lexsort((values.numpy(), keys.numpy()))
    assert torch.equal(got, values[torch.from_numpy(ref)])  # −0.0 == 0.0


@pytest.mark.parametrize("groups", ["pixel", "map", "image"])
def test_bank_pools_are_the_sorted_scores_of_each_class_and_group(groups):
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(9, 5, 6, generator=gen)
    labels = torch.randint(-1, 3, (9, 5, 6), generator=gen)  # −1: unlabelled
    bank = ScoreBank(3, (5, 6), scores, labels)
    p = 30
    index = {"pixel": torch.arange(p).expand(3, p), "map": torch.randint(0, 4, (3, p), generator=gen),
             "image": torch.zeros(3, p, dtype=torch.long)}[groups]
    num_groups = {"pixel": p, "map": 4, "image": 1}[groups]
    pooled = bank.pool(index, num_groups)
    y, s = labels.view(9, p), scores.view(9, p)
    for c in range(3):
        for g in range(num_groups):
            mine = (y == c) & (index[c] == g).view(1, p)
            start, stop = pooled.offsets[c * num_groups + g], pooled.offsets[c * num_groups + g + 1]
            assert torch.equal(pooled.values[start:stop], s[mine].sort().values)
