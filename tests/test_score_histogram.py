"""Score histograms: logit-space bins, right-closed binning, merging, conservative order statistics."""
import math

import pytest
import torch

from segcal.stats.score_histogram import ScoreBins, ScoreHistogram


def spread_scores(n, seed=0):
    """Scores spread over many orders of magnitude near 0 and near 1 (float32)."""
    g = torch.Generator().manual_seed(seed)
    logit = torch.empty(n, dtype=torch.float64).uniform_(-45, 18, generator=g)
    return torch.sigmoid(logit).float()


def test_bins_are_logit_uniform_and_right_closed():
    bins = ScoreBins(num_bins=10, logit_min=-8, logit_max=8)
    e = bins.edges.double()
    assert e[0] == 0 and e[-1] == 1 and bool((e[1:] >= e[:-1]).all())
    inner = bins.inner_edges.double()
    logit = torch.log(inner) - torch.log1p(-inner)
    assert torch.allclose(logit, torch.linspace(-8, 8, 9, dtype=torch.float64), atol=1e-5)
    # right-closed: an edge value belongs to the bin it closes
    idx = bins.index(bins.inner_edges)
    assert idx.tolist() == list(range(9))
    assert bins.index(torch.tensor([0.0, 1.0])).tolist() == [0, 9]
    assert bins.max_logit_gap() == pytest.approx(2.0, abs=1e-4)


@pytest.mark.parametrize("bins", [ScoreBins(), ScoreBins(10, -8, 8), ScoreBins(64, -30, 16)])
def test_fast_index_equals_bucketize_on_edges_and_spread_scores(bins):
    s = torch.cat([spread_scores(20000), bins.edges, torch.nextafter(bins.edges, torch.tensor(2.0)).clamp_max(1),
                   torch.nextafter(bins.edges, torch.tensor(-1.0)).clamp_min(0), torch.tensor([0.0, 1.0, 1e-38])])
    ref = torch.bucketize(s, bins.inner_edges, right=False)
    assert torch.equal(bins.index(s), ref)
    assert torch.equal(bins.locate(s)[0], ref)


@pytest.mark.parametrize("bins", [ScoreBins(), ScoreBins(10, -8, 8)])
def test_locate_places_scores_inside_their_bins_linearly_in_the_logit(bins):
    s = torch.cat([spread_scores(20000), bins.edges, torch.tensor([1e-38])])
    index, t = bins.locate(s)
    e = bins.edges.double()
    lo, hi = e[index], e[index + 1]
    logit = lambda p: torch.log(p) - torch.log1p(-p)  # noqa: E731  (the reference: the textbook logit)
    ref = ((logit(s.double()) - logit(lo)) / (logit(hi) - logit(lo))).clamp(0, 1)
    inner = (index > 0) & (index < bins.num_bins - 1)
    assert t.dtype == torch.float64 and torch.allclose(t[inner], ref[inner], rtol=0, atol=1e-12)
    assert bool((t[~inner] == 1).all()) and bool(((t >= 0) & (t <= 1)).all())
    at_edges = torch.isin(s, bins.inner_edges[1:-1]) & inner  # an upper edge sits at the top of its bin
    assert torch.allclose(t[at_edges], torch.ones_like(t[at_edges]), rtol=0, atol=1e-12)


def test_update_counts_per_class_and_pixel():
    hist = ScoreHistogram(2, (1, 2), ScoreBins(4, -1, 1))
    scores = torch.tensor([[[0.1, 0.9]], [[0.5, 0.2]]])
    labels = torch.tensor([[[0, 1]], [[1, -1]]])
    hist.update(scores, labels)
    # edges: 0, σ(-1)=.269, σ(0)=.5, σ(1)=.731, 1
    expected = torch.zeros(2, 1, 2, 4, dtype=torch.int32)
    expected[0, 0, 0, 0] = 1  # 0.1 → bin 0, class 0, pixel 0
    expected[1, 0, 1, 3] = 1  # 0.9 → bin 3, class 1, pixel 1
    expected[1, 0, 0, 1] = 1  # 0.5 → bin 1 (right-closed), class 1, pixel 0
    assert torch.equal(hist.counts, expected)
    assert hist.num_images == 2
    assert hist.group_counts().tolist() == [[1, 0], [1, 1]]


def test_merge_equals_single_pass_and_state_roundtrip():
    g = torch.Generator().manual_seed(1)
    s = spread_scores(6 * 12).view(6, 3, 4)
    y = torch.randint(-1, 3, (6, 3, 4), generator=g)
    whole = ScoreHistogram(3, (3, 4))
    whole.update(s, y)
    a, b = ScoreHistogram(3, (3, 4)), ScoreHistogram(3, (3, 4))
    a.update(s[:2], y[:2])
    b.update(s[2:], y[2:])
    assert torch.equal((a + b).counts, whole.counts)
    assert torch.equal(a.merge(b).counts, whole.counts) and a.num_images == 6
    back = ScoreHistogram.from_state_dict(whole.state_dict())
    assert torch.equal(back.counts, whole.counts) and back.bins == whole.bins
    with pytest.raises(ValueError, match="cannot merge"):
        whole + ScoreHistogram(3, (3, 4), ScoreBins(8))


def test_order_statistic_is_conservative_within_stated_gap():
    bins = ScoreBins()
    delta = bins.max_logit_gap()
    e1, e_last = float(bins.inner_edges[0]), float(bins.inner_edges[-1])
    n = 400
    s = spread_scores(n * 5, seed=2).view(n, 5)  # one group per column, class 0
    hist = ScoreHistogram(1, (5,), bins)
    hist.update(s, torch.zeros(n, 5, dtype=torch.long))
    k = torch.tensor([1, 7, 100, 200, 333, 399, 400]).view(-1, 1, 1).expand(-1, 1, 5)
    exact = s.sort(dim=0).values.gather(0, k[:, 0, :] - 1).unsqueeze(1)  # [A, 1, 5]
    approx = hist.order_statistic(k)
    assert bool((approx >= exact).all())
    inner = (exact > e1) & (exact <= e_last)
    ex, ap = exact.double(), approx.double()
    gap = (torch.log(ap) - torch.log1p(-ap)) - (torch.log(ex) - torch.log1p(-ex))
    assert bool((gap[inner] <= delta + 1e-6).all())
    assert bool((approx[exact <= e1] == e1).all())
    assert bool((approx[exact > e_last] == 1.0).all())
    assert 54 / 254 <= delta < 0.25
    # near 0 the float32 edges keep the nominal logit step, a relative gap below e^(54/254) ≈ 1.24
    small = inner & (exact < 1e-3)
    assert bool((ap[small] / ex[small] <= math.exp(54 / 254) * (1 + 1e-5)).all())


def test_pool_and_count_leq():
    bins = ScoreBins(16, -6, 6)
    s = spread_scores(8 * 4, seed=3).view(8, 4)
    y = torch.randint(0, 2, (8, 4), generator=torch.Generator().manual_seed(3))
    hist = ScoreHistogram(2, (4,), bins)
    hist.update(s, y)
    group_index = torch.tensor([[0, 0, 1, 1], [1, 0, 1, 0]])
    pooled = hist.pool(group_index, 2)
    for c in range(2):
        for g in range(2):
            members = (y == c) & (group_index[c] == g).expand(8, 4)
            ref = torch.bincount(bins.index(s[members]), minlength=16)
            assert torch.equal(pooled.counts[c, g].long(), ref)
    # count_leq at bin edges is exact
    thr = bins.edges[torch.tensor([3, 9, 16])].view(3, 1, 1).expand(3, 2, 4)
    got = hist.count_leq(thr)
    ref = torch.stack([torch.stack([((s <= thr[a, c]) & (y == c)).sum(0) for c in range(2)]) for a in range(3)])
    assert torch.equal(got, ref)


def test_shape_errors():
    hist = ScoreHistogram(2, (3, 3))
    with pytest.raises(ValueError, match="shape"):
        hist.update(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="num_bins"):
        ScoreBins(2)
    with pytest.raises(ValueError, match="logit_min"):
        ScoreBins(8, 3, 1)
