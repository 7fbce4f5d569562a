"""Compact counts (uint8 + sparse spill table) are exact: every read equals an int64 reference."""
import pytest
import torch

from ranks import run_ranks
from segcal.stats import compact_counts as cc
from segcal.stats import score_histogram
from segcal.stats.compact_counts import LOW_MAX, SPILL_AT, CompactCounts
from segcal.stats.score_histogram import ScoreBins, ScoreHistogram


def random_adds(numel, rounds, seed, hot=3):
    """(index, most) add rounds: uniform cells plus ``hot`` cells hit by every index of a round."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(rounds):
        most = int(torch.randint(1, SPILL_AT, (1,), generator=g))
        uniform = torch.randint(0, numel, (most * 50,), generator=g)
        hot_cells = torch.arange(hot).repeat(most)  # each hot cell gains exactly `most`
        yield torch.cat([uniform.unique(), hot_cells]), most


def test_adds_with_spills_equal_int64_reference():
    counts, ref = CompactCounts(1000), torch.zeros(1000, dtype=torch.long)
    for index, most in random_adds(1000, 40, seed=0):
        counts.scatter_add_(index, most=most)
        ref.index_add_(0, index, torch.ones_like(index))
    assert int(ref[:3].min()) > 10 * LOW_MAX  # the hot cells went far past uint8
    assert counts.spill_index.numel() >= 3 and counts.low.dtype == torch.uint8
    assert torch.equal(counts.dense(0, 1000, torch.long), ref)
    for start, stop in [(0, 1), (2, 3), (3, 700), (999, 1000), (500, 500)]:
        assert torch.equal(counts.dense(start, stop, torch.long), ref[start:stop])
    assert counts.nbytes == 1000 + 16 * counts.spill_index.numel()


def test_columns_used_see_spilled_cells_without_a_dense_copy():
    counts = CompactCounts(60)
    counts.scatter_add_(torch.tensor([7] * 127), most=127)
    counts.scatter_add_(torch.tensor([7] * 127), most=127)  # 254
    counts.scatter_add_(torch.tensor([14, 22, 41]), most=127)  # could overflow: cell 7 spills (low back to 0)
    assert counts.spill_index.tolist() == [7] and int(counts.low[7]) == 0
    ref = counts.dense(0, 60).view(-1, 6) > 0
    assert torch.equal(counts.columns_used(0, 60, 6), ref.any(0))  # column 1: only the spilled cell 7
    assert torch.equal(counts.columns_used(30, 60, 6), ref[5:].any(0))
    hist = ScoreHistogram(2, (2, 3), ScoreBins(5), compact=True)
    hist.update(torch.tensor([[[0.1, 0.9, 0.5], [0.5, 0.2, 0.99]]]), torch.tensor([[[0, 1, 1], [0, -1, 1]]]))
    for c in range(2):
        assert torch.equal(hist.bins_used(c), hist.class_counts(c).any(0))
        dense = ScoreHistogram(2, (2, 3), ScoreBins(5), hist.counts)
        assert torch.equal(dense.bins_used(c), hist.bins_used(c))


def test_cells_and_columns_of_a_spilled_histogram_equal_its_dense_counts(monkeypatch):
    monkeypatch.setattr(score_histogram, "DENSE_AT", 100)  # stay compact however much spills
    gen = torch.Generator().manual_seed(4)
    hist = ScoreHistogram(2, (3, 4), ScoreBins(6, -3, 3), compact=True)
    for _ in range(4):  # 400 images: frequent cells spill past uint8
        scores = torch.rand(100, 3, 4, generator=gen) ** 20  # mostly in the first bin
        labels = (torch.rand(100, 3, 4, generator=gen) > 0.9).long()  # class 0 at 90% of the pixels
        hist.update(scores, labels.masked_fill(torch.rand(100, 3, 4, generator=gen) > 0.97, -1))
    assert hist._store.spill_index.numel() > 0
    for c in range(2):
        dense = hist.class_counts(c).long()  # [G, B]
        rebuilt = torch.zeros_like(dense)
        loc, bins, count = hist.class_cells(c, slice(0, 12))
        rebuilt.index_put_((loc, bins), count, accumulate=True)
        assert torch.equal(rebuilt, dense)
        loc, bins, count = hist.class_cells(c, slice(5, 9))  # a block of locations
        assert bool(((loc >= 5) & (loc < 9)).all()) and int(count.sum()) == int(dense[5:9].sum())
        columns = torch.tensor([True, False, True, True, False, True])
        out = torch.full((4, 5, 4), -1, dtype=torch.int32)
        hist.write_class_columns(c, columns, out[1:, 1:])  # into a strided view, as an integral image is
        assert torch.equal(out[1:, 1:].long(), dense.view(3, 4, 6)[..., columns]) and bool((out[0] == -1).all())
        plain = ScoreHistogram(2, (3, 4), hist.bins, hist.counts)
        assert torch.equal(plain.write_class_columns(c, columns, torch.zeros(3, 4, 4, dtype=torch.long)),
                           dense.view(3, 4, 6)[..., columns])
        used = int((dense > 0).sum())
        assert plain.cells_used(c) == used  # exact when dense; at most one more per spilled cell when compact
        assert used <= hist.cells_used(c) <= used + int(((hist._store.spill_index // 72) == c).sum())


def test_spill_keeps_headroom_and_values():
    counts = CompactCounts(10)
    counts.scatter_add_(torch.tensor([0] * 127 + [1] * 5), most=127)
    assert counts.headroom == LOW_MAX - 127  # what the fullest possible cell has left
    counts.scatter_add_(torch.tensor([0] * 127), most=127)  # headroom 128: no spill yet
    counts.scatter_add_(torch.tensor([0, 1]), most=1)
    assert counts.spill_index.numel() == 0 and int(counts.low[0]) == LOW_MAX and counts.headroom == 0
    counts.scatter_add_(torch.tensor([0, 1]), most=1)  # would pass 255: cell 0 spills first
    assert counts.spill_index.tolist() == [0] and counts.spill_count.tolist() == [LOW_MAX]
    assert counts.dense(0, 2).tolist() == [256, 7] and counts.headroom == LOW_MAX - 6 - 1
    with pytest.raises(ValueError, match="at most 127"):
        counts.scatter_add_(torch.tensor([1]), most=SPILL_AT)


def test_merge_map_and_dense_round_trip(monkeypatch):
    monkeypatch.setattr(cc, "_CHUNK", 64)  # several chunks per pass
    a, b = CompactCounts(300), CompactCounts(300)
    ra, rb = torch.zeros(300, dtype=torch.long), torch.zeros(300, dtype=torch.long)
    for (ia, ma), (ib, mb) in zip(random_adds(300, 15, seed=1), random_adds(300, 15, seed=2, hot=70)):
        a.scatter_add_(ia, most=ma)
        b.scatter_add_(ib, most=mb)
        ra.index_add_(0, ia, torch.ones_like(ia))
        rb.index_add_(0, ib, torch.ones_like(ib))
    a.merge_(b)
    assert torch.equal(a.dense(0, 300, torch.long), ra + rb)
    assert a.headroom >= LOW_MAX - SPILL_AT + 1 and int(a.low.max()) < SPILL_AT
    a.map_dense_(lambda chunk: 2 * chunk)
    assert torch.equal(a.dense(0, 300, torch.long), 2 * (ra + rb))
    back = CompactCounts.from_dense(2 * (ra + rb))
    assert torch.equal(back.dense(0, 300, torch.long), 2 * (ra + rb))
    loaded = CompactCounts.from_state_dict(a.state_dict(), 300)
    assert torch.equal(loaded.dense(0, 300, torch.long), 2 * (ra + rb))


@pytest.mark.parametrize("broken", ["dtype", "unsorted", "range", "length", "negative", "missing"])
def test_invalid_states_are_rejected(broken):
    state = CompactCounts.from_dense(torch.tensor([0, 300, 5, 900])).state_dict()
    state = {k: v.clone() for k, v in state.items()}
    if broken == "dtype":
        state["low"] = state["low"].int()
    elif broken == "unsorted":
        state["spill_index"] = state["spill_index"].flip(0)
    elif broken == "range":
        state["spill_index"][-1] = 4
    elif broken == "length":
        state["spill_count"] = state["spill_count"][:1]
    elif broken == "negative":
        state["spill_count"][0] = -1
    else:
        del state["spill_index"]
    with pytest.raises(ValueError, match="not a compact count table of 4 cells"):
        CompactCounts.from_state_dict(state, 4)


def concentrated(n, shape, classes, seed):
    """Scores of ``n`` images that fall in few bins (so cells pass 255) and labels with some ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.sigmoid(torch.randn(n, *shape, generator=g) * 0.3 - 4)
    labels = torch.randint(-1, classes, (n, *shape), generator=g)
    return scores, labels


def test_compact_histogram_equals_dense_histogram(monkeypatch):
    monkeypatch.setattr(score_histogram, "DENSE_AT", 100)  # stay compact however much spills
    bins = ScoreBins(16, -8, 8)
    dense = ScoreHistogram(3, (5, 4), bins)
    compact = ScoreHistogram(3, (5, 4), bins, compact=True)
    for seed in range(5):  # 1500 images in five updates (each split into adds of ≤ 127 images)
        s, y = concentrated(300, (5, 4), 3, seed)
        dense.update(s, y)
        compact.update(s, y)
    assert compact.compact and compact._store.spill_index.numel() > 0
    assert int(dense.counts.max()) > LOW_MAX and compact.num_images == dense.num_images == 1500
    assert torch.equal(compact.counts, dense.counts)
    assert torch.equal(compact.group_counts(), dense.group_counts())
    k = torch.randint(1, 50, (4, 3, 20))
    flat_c, flat_d = compact.reshaped((20,)), dense.reshaped((20,))
    assert torch.equal(flat_c.order_statistic(k), flat_d.order_statistic(k))
    index = torch.randint(0, 3, (3, 20))
    assert torch.equal(compact.reshaped((20,)).pool(index, 3).counts, dense.reshaped((20,)).pool(index, 3).counts)
    assert torch.equal(compact.class_counts(2), dense.flat()[2])
    merged = compact + dense
    assert merged.compact and torch.equal(merged.counts, 2 * dense.counts) and merged.num_images == 3000
    loaded = ScoreHistogram.from_state_dict(compact.state_dict())
    assert loaded.compact and torch.equal(loaded.counts, dense.counts)


def test_compact_histogram_memory_is_a_quarter():
    hist = ScoreHistogram(2, (64, 64), compact=True)
    hist.update(*concentrated(20, (64, 64), 2, seed=0))
    dense_bytes = 2 * 64 * 64 * 256 * 4
    assert hist._store.nbytes == dense_bytes // 4  # no cell reached the spill threshold


def _reduced_counts(rank, world):
    hist = ScoreHistogram(2, (3, 3), ScoreBins(4, -6, 6), compact=True)
    hist.update(*concentrated(600, (3, 3), 2, seed=rank))
    return hist.all_reduce().counts


def test_compact_all_reduce_over_two_gloo_ranks(tmp_path):
    ref = ScoreHistogram(2, (3, 3), ScoreBins(4, -6, 6))
    for rank in range(2):
        ref.update(*concentrated(600, (3, 3), 2, seed=rank))
    assert int(ref.counts.max()) > LOW_MAX
    assert all(torch.equal(counts, ref.counts) for counts in run_ranks(_reduced_counts, tmp_path))


def _mixed_counts(rank, world):
    from segcal.stats import compact_counts as counts_module

    counts_module._CHUNK = 16  # several chunks per collective
    hist = ScoreHistogram(2, (3, 3), ScoreBins(4, -6, 6), compact=True)
    hist.update(*concentrated(600 if rank == 0 else 20, (3, 3), 2, seed=rank))
    form = "compact" if hist.compact else "dense"
    return form, hist.all_reduce().counts


def test_ranks_with_compact_and_dense_forms_reduce_together(tmp_path):
    ref = ScoreHistogram(2, (3, 3), ScoreBins(4, -6, 6))
    for rank, n in enumerate((600, 20)):
        ref.update(*concentrated(n, (3, 3), 2, seed=rank))
    results = run_ranks(_mixed_counts, tmp_path)
    assert [form for form, _ in results] == ["dense", "compact"]  # rank 0 spilled past DENSE_AT
    assert all(torch.equal(counts, ref.counts) for _, counts in results)


def test_heavily_spilled_counts_turn_dense_and_stay_exact():
    bins = ScoreBins(4, -6, 6)
    hist, ref = ScoreHistogram(2, (3, 3), bins, compact=True), ScoreHistogram(2, (3, 3), bins)
    s, y = concentrated(600, (3, 3), 2, seed=0)
    hist.update(s[:100], y[:100])
    assert hist.compact  # no spill yet
    hist.update(s[100:], y[100:])
    ref.update(s, y)
    assert not hist.compact and hist.counts.dtype == torch.int32 and torch.equal(hist.counts, ref.counts)
    merged = ScoreHistogram(2, (3, 3), bins, compact=True).merge(hist)
    assert not merged.compact and torch.equal(merged.counts, ref.counts)
