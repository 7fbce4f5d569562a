"""``local``: windows, local CDFs, thresholds and the coverage guarantee over random splits."""
import math

import pytest
import torch

import segcal.conformal.local as local_module
import segcal.conformal.local_crossfit as crossfit_module
from planted import block_map, planted_logits, ring_map
from segcal.calibrated import CalibrationBundle, load_bundle, save_bundle
from segcal.conformal.accumulate import ScoreBank
from segcal.conformal.calibrator import ConformalCalibrator, PixelwiseCalibrator
from segcal.conformal.evaluation import CoverageAccumulator, evaluate_coverage
from segcal.conformal.local import (
    LEVEL_STEPS,
    OccupiedBins,
    level_quantiles,
    local_cdfs,
    rare_pixels,
    window_radii,
)
from segcal.conformal.local_calibrator import LocalCalibrator
from segcal.conformal.local_crossfit import ExactFold, cross_fit
from segcal.conformal.scores import class_scores, scores_at_labels
from segcal.stats.score_histogram import ScoreBins, ScoreHistogram

ALPHA = 0.1
TOL = 0.006  # ≈ 5 Monte-Carlo standard errors of a 200-split mean


def test_window_radii_known_answer():
    counts = torch.ones(7, 7, dtype=torch.long)
    radius, window = window_radii(counts, 9)
    assert radius[3, 3] == 1 and window[3, 3] == 9  # 3x3 inside
    assert radius[0, 0] == 2 and window[0, 0] == 9  # a corner needs radius 2: 3x3 after clipping
    assert radius[0, 3] == 2 and window[0, 3] == 15  # an edge: 3 rows x 5 columns
    radius, window = window_radii(counts, 1000)  # more than the image holds: the whole image
    assert bool((radius == 7).all()) and bool((window == 49).all())
    counts = torch.zeros(5, 5, dtype=torch.long)
    counts[2, 2] = 4
    radius, _ = window_radii(counts, 4)
    assert radius[2, 2] == 0 and radius[0, 0] == 2 and radius[0, 2] == 2


def test_pixels_where_a_class_is_rare_pool_the_whole_image():
    counts = torch.tensor([[0, 1, 5], [2, 0, 9]])
    radius, window = window_radii(counts, 5, min_own=2)
    assert radius.tolist() == [[4, 4, 0], [2, 4, 0]]  # rare (< 2 own scores): max(H, W) + 1, the whole image
    assert window.tolist() == [[17, 17, 5], [17, 17, 9]]
    assert rare_pixels(radius[None]).tolist() == [3]
    assert torch.equal(window_radii(counts, 5)[0], torch.tensor([[2, 1, 0], [2, 1, 0]]))  # min_own 0: none


def test_occupied_bins_compress_and_expand_cumulated_counts():
    used = OccupiedBins(torch.tensor([False, True, False, False, True, False]))
    assert used.num_occupied == 2 and used.index(torch.tensor([1, 4])).tolist() == [0, 1]
    cum = torch.tensor([[3, 5], [0, 2]])  # cumulated counts at bins 1 and 4
    first = torch.tensor([[0], [-1]])
    assert used.expand(cum, first).tolist() == [[0, 3, 3, 3, 5, 5], [-1, 0, 0, 0, 2, 2]]
    assert OccupiedBins(torch.zeros(4, dtype=torch.bool)).num_occupied == 1  # no score: one all-zero column


def test_local_cdf_is_the_pooled_window_histogram():
    gen = torch.Generator().manual_seed(0)
    bins = ScoreBins(16, -6, 6)
    scores = torch.rand(6, 9, 11, generator=gen)
    labels = torch.randint(0, 2, (6, 9, 11), generator=gen)
    hist = ScoreHistogram(2, (9, 11), bins)
    hist.update(scores, labels)
    cdf, radius, window = local_cdfs(hist, 20)
    for c, y, x in [(0, 0, 0), (1, 4, 5), (0, 8, 10), (1, 2, 9)]:
        r = int(radius[c, y, x])
        box = hist.counts[c, max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].sum((0, 1)).double()
        assert int(box.sum()) == int(window[c, y, x]) >= 20
        if r > 0:  # the next smaller window would hold too few
            small = hist.counts[c, max(0, y - r + 1):y + r, max(0, x - r + 1):x + r].sum()
            assert int(small) < 20
        expected = torch.ceil(box.cumsum(0) / box.sum() * LEVEL_STEPS - 1e-9)
        assert torch.equal(cdf[c, y, x].to(torch.int64), expected.long())


def test_level_quantile_is_the_conformal_order_statistic():
    counts = torch.zeros(1, LEVEL_STEPS + 1, dtype=torch.long)
    values = torch.tensor([5, 9, 9, 30, 100, 2000, 2000, 40000, 65535])  # n = 9
    counts[0].index_add_(0, values, torch.ones(9, dtype=torch.long))
    q = level_quantiles(counts, torch.tensor([0.5, 0.8, 0.9, 0.95, 0.0], dtype=torch.float64))
    # k = ceil(10 · level) = 5, 8, 9, 10 (> n: everything), 0 (nothing)
    assert q[:, 0].tolist() == [100, 40000, 65535, LEVEL_STEPS + 1, -1]


@pytest.mark.parametrize("fitting", ["cross", "split"])
def test_sets_are_the_levels_below_the_conformal_quantile(fitting):
    logits, labels = planted_logits(20, ring_map((12, 12), [3, 5]), [0.5, 2, 4], [1, 1, 2], seed=3)
    cp = LocalCalibrator(2, min_scores=30, fitting=fitting).fit([(logits[:12], labels[:12])])
    assert cp.interpolated_ == (fitting == "cross")  # exact scores: levels placed inside their bins
    scores = class_scores(logits[12:])
    bins = ScoreBins()
    u_hat = level_quantiles(cp.level_counts_, torch.tensor([0.9], dtype=torch.float64))[0].double()  # [C]
    index, within = bins.locate(scores)
    cdf = cp.cdf_.long().unsqueeze(0).expand(8, -1, -1, -1, -1)
    hi = cdf.gather(-1, index.unsqueeze(-1)).squeeze(-1).double()
    lo = cdf.gather(-1, (index - 1).clamp_min(0).unsqueeze(-1)).squeeze(-1).double().masked_fill(index == 0, 0)
    t = within if cp.interpolated_ else torch.ones_like(hi)
    u = lo + t * (hi - lo)  # the level of every class score [N, C, H, W]
    margin = (u - u_hat.view(1, 2, 1, 1)).abs() > 1e-3
    sets = cp.predict_set(logits[12:], 0.1)
    assert torch.equal(sets[margin], (u <= u_hat.view(1, 2, 1, 1))[margin])
    assert margin.float().mean() > 0.99


@pytest.mark.parametrize("dense", [True, False])
def test_cross_fitted_levels_are_out_of_fold(dense):
    gen = torch.Generator().manual_seed(0)
    bins = ScoreBins(16, -6, 6)
    folds = []
    for _ in range(3):
        hist = ScoreHistogram(2, (9, 11), bins)
        hist.update(torch.rand(4, 9, 11, generator=gen), torch.randint(0, 2, (4, 9, 11), generator=gen))
        folds.append(hist)
    cdf, radius, window, counts = cross_fit(folds, 20, dense=dense)
    total = ScoreHistogram(2, (9, 11), bins, sum(f.counts for f in folds))
    assert torch.equal(cdf, local_cdfs(total, 20)[0])  # test images see every fold
    expected = torch.zeros_like(counts)
    for fold in folds:  # brute force: each fold's cells through the CDF of the other folds' window
        rest = total.counts - fold.counts
        for c, y, x, b in torch.nonzero(fold.counts).tolist():
            r = int(radius[c, y, x])
            box = rest[c, max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].sum((0, 1)).long().cumsum(0)
            n = int(box[-1])
            level = LEVEL_STEPS if n == 0 else -(-int(box[b]) * LEVEL_STEPS // n)
            expected[c, level] += int(fold.counts[c, y, x, b])
    assert torch.equal(expected, counts)


@pytest.mark.parametrize("dense", [True, False, None])
@pytest.mark.parametrize("pieces", [False, True])
def test_cross_fitted_exact_levels_interpolate_the_other_folds_cdf(monkeypatch, pieces, dense):
    if pieces:  # several pixel blocks and score pieces per fold
        monkeypatch.setattr(local_module, "_CHUNK", 10)
        monkeypatch.setattr(crossfit_module, "PIECE", 7)
    gen = torch.Generator().manual_seed(2)
    bins = ScoreBins(16, -6, 6)
    folds = [ExactFold(torch.rand(4, 7, 9, generator=gen), torch.randint(-1, 2, (4, 7, 9), generator=gen).short(), 2,
                       bins) for _ in range(3)]
    _, radius, _, counts = cross_fit(folds, 15, dense=dense)
    expected = torch.zeros_like(counts)
    for j, fold in enumerate(folds):  # brute force: each score against the other folds' scores in its window
        others = [f for i, f in enumerate(folds) if i != j]
        for img, y, x in torch.nonzero(fold.labels >= 0).tolist():
            c, s = int(fold.labels[img, y, x]), fold.scores[img, y, x]
            r = int(radius[c, y, x])
            win = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
            rest = torch.cat([f.scores[:, win[0], win[1]][f.labels[:, win[0], win[1]] == c] for f in others])
            b, t = (v.item() for v in bins.locate(s.view(1)))
            rest_bins = bins.index(rest)
            n, hi, lo = rest.numel(), int((rest_bins <= b).sum()), int((rest_bins < b).sum())
            level = LEVEL_STEPS if n == 0 else math.ceil((lo + t * (hi - lo)) / n * LEVEL_STEPS - 1e-9)
            expected[c, level] += 1
    assert torch.equal(expected, counts)


def _split_coverage(n_cal, splits, pool=60, seed=0, fitting="cross", grid=1, fg_prob=0.5):
    """Split-averaged class coverage [C] at 1 − α and its upper bound (ties included) [C]."""
    logits, labels = planted_logits(pool, block_map((10, 10)), [-1, 1.5, 3.5, 6], [0.5, 1, 0.5, 2], fg_prob,
                                    seed=seed)
    scores = class_scores(logits)
    bank = ScoreBank(2, (10, 10), *scores_at_labels(scores, labels))
    gen = torch.Generator().manual_seed(seed)
    cov, bound = [], []
    for _ in range(splits):
        perm = torch.randperm(pool, generator=gen)
        cp = LocalCalibrator(2, min_scores=40, fitting=fitting, grid=grid).fit_bank(bank.subset(perm[:n_cal]))
        acc = CoverageAccumulator(cp, [ALPHA], min_test_labels=1)
        acc.update_scores(scores[perm[n_cal:]], labels[perm[n_cal:]])
        cov.append(acc.compute().class_coverage[0])
        counts = cp.level_counts_
        u_hat = level_quantiles(counts, torch.tensor([1 - ALPHA], dtype=torch.float64))[0]
        below = counts.cumsum(1).gather(1, u_hat.clamp(0, LEVEL_STEPS).view(-1, 1)).squeeze(1)
        bound.append((below + 1).double() / (counts.sum(1) + 1).double())
    return torch.stack(cov).mean(0), torch.stack(bound).mean(0)


RARE = [0.02, 0.5, 0.5, 0.5]  # foreground in 2% of images in the block the model gets wrong: rare pixels


@pytest.mark.parametrize("n_cal, fitting, grid, fg_prob", [
    (10, "cross", 1, 0.5), (50, "cross", 1, 0.5), (10, "split", 1, 0.5), (50, "split", 1, 0.5),
    (10, "cross", 2, 0.5), (50, "cross", 3, 0.5), (50, "cross", 1, RARE), (50, "split", 1, RARE)])
def test_coverage_guarantee_over_200_random_splits(n_cal, fitting, grid, fg_prob):
    cov, bound = _split_coverage(n_cal, splits=200, fitting=fitting, grid=grid, fg_prob=fg_prob,
                                 pool=60 if fg_prob == 0.5 else 100)
    assert bool((cov >= 1 - ALPHA - TOL).all()), cov
    assert bool((cov <= bound + TOL).all()), (cov, bound)
    assert bool((bound < 1 - ALPHA + 0.02).all()), bound  # pooled levels: a tight guarantee, not a full set


def test_windows_shrink_as_data_grows():
    logits, labels = planted_logits(200, ring_map((16, 16), [4, 7]), [0.5, 2, 4], [1, 1, 2], seed=1)
    sides = [LocalCalibrator(2, min_scores=50).fit([(logits[:n], labels[:n])]).window_sides().double().mean()
             for n in (10, 50, 200)]
    assert sides[0] > sides[1] > sides[2]
    big = LocalCalibrator(2, min_scores=20).fit([(logits, labels)])
    assert bool((big.radius_ == 0).float().mean() > 0.9)  # ~50 scores per pixel and class: windows = pixels


def test_local_adapts_where_imagewise_cannot():
    # two halves with very different score distributions: one threshold per class misses both
    logits, labels = planted_logits(120, block_map((12, 12), 1, 2), [0.5, 5.0], [1.0, 1.0], seed=2)
    stream = [(logits[:60], labels[:60])]
    test = [(logits[60:], labels[60:])]
    local = evaluate_coverage(LocalCalibrator(2, min_scores=50).fit(stream), test, min_test_labels=5)
    image = evaluate_coverage(ConformalCalibrator("image", 2).fit(stream), test, min_test_labels=5)
    pixel = evaluate_coverage(PixelwiseCalibrator(2).fit(stream), test, min_test_labels=5)
    assert local.mean_ce < image.mean_ce - 0.03
    assert local.mean_ce < pixel.mean_ce + 0.005


def test_state_round_trip_through_a_bundle(tmp_path):
    logits, labels = planted_logits(30, ring_map((12, 12), [3, 5]), [0.5, 2, 4], [1, 1, 2], seed=4)
    cp = LocalCalibrator(2, min_scores=25, split=0.6).fit([(logits, labels)])
    save_bundle(CalibrationBundle(conformal=cp), tmp_path / "local.pt")
    back = load_bundle(tmp_path / "local.pt").conformal
    assert isinstance(back, LocalCalibrator) and back.get_params() == cp.get_params()
    assert torch.equal(back.predict_set(logits, 0.2), cp.predict_set(logits, 0.2))
    assert back.cdf_.dtype == torch.uint16 and back.info_ == cp.info_
    assert torch.equal(back.nc_curves(), cp.nc_curves())


def test_a_rare_class_pools_the_whole_image_and_gets_fewer_full_sets():
    # foreground in 1% of the images in the left half, where the model misses it; 50% on the right
    logits, labels = planted_logits(400, block_map((12, 12), 1, 2), [3.0, 3.0], [1.0, 1.0], [0.01, 0.5], seed=9)
    missed = ((labels == 1) & (torch.arange(12) < 6)).unsqueeze(1)
    logits = torch.where(missed, logits.flip(1), logits)  # the model says background there
    stream, test = [(logits[:200], labels[:200])], [(logits[200:], labels[200:])]
    cp = LocalCalibrator(2, min_scores=30).fit(stream)  # min_own = ⌊0.02 · 200⌋ = 4
    own = (labels[:200] == 1).sum(0)
    assert cp.min_own_ == 4 and cp.rare_pixels_.tolist() == [0, int((own < 4).sum())] and cp.rare_pixels_[1] > 50
    pooled = cp.thresholds(0.1)[1][own < 4]
    assert bool((pooled == pooled[0]).all())  # one CDF, the whole image's, for every rare pixel
    never = LocalCalibrator(2, min_scores=30, min_frequency=0).fit(stream)
    assert never.min_own_ == 0 and never.rare_pixels_.tolist() == [0, 0]
    left = [c.predict_set(test[0][0], 0.1)[..., :6].all(1).double().mean() for c in (cp, never)]
    assert left[0] < 0.5 * left[1]  # the local windows of the missed rare class put it in most sets
    cov = [evaluate_coverage(c, test, [0.1]).class_coverage[0] for c in (cp, never)]
    assert float(cov[0][1]) > 0.88 and float(cov[1][1]) > 0.88  # both keep the class-conditional guarantee
    assert cp.info_["rare_pixels"] == cp.rare_pixels_.tolist() and cp.info_["min_frequency"] == 0.02


def test_states_from_before_min_frequency_load_without_rare_pixels():
    logits, labels = planted_logits(30, ring_map((8, 8), [2]), [1, 3], [1, 1], seed=10)
    cp = LocalCalibrator(2, min_scores=10, min_frequency=0).fit([(logits, labels)])
    state = cp.state_dict()
    del state["params"]["min_frequency"], state["min_frequency"], state["min_own"], state["rare_pixels"]
    back = LocalCalibrator.from_state_dict(state)
    assert back.min_frequency == 0 and back.min_own_ == 0 and back.rare_pixels_.tolist() == [0, 0]
    assert torch.equal(back.predict_set(logits, 0.1), cp.predict_set(logits, 0.1))


def test_a_class_never_seen_falls_back_to_the_full_set_without_nan():
    logits, labels = planted_logits(12, ring_map((8, 8), [2]), [1, 3], [1, 1], seed=5)
    labels = torch.zeros_like(labels)  # class 1 never labelled
    cp = LocalCalibrator(2, min_scores=10).fit([(logits, labels)])
    t = cp.thresholds(0.1)
    assert not torch.isnan(t).any() and bool((t[1] == 1).all())
    assert cp.fallback_pixels_.tolist() == [0, 64]


@pytest.mark.parametrize("params, message", [
    ({"min_scores": 0}, "min_scores must be a positive int"),
    ({"min_scores": 2.5}, "min_scores must be a positive int"),
    ({"split": 1.0}, "split must lie strictly between 0 and 1"),
    ({"split": None}, "split must lie strictly between 0 and 1"),
    ({"mode": "fast"}, "mode must be one of"),
    ({"min_frequency": 1.0}, r"min_frequency must lie in \[0, 1\)"),
    ({"min_frequency": -0.1}, r"min_frequency must lie in \[0, 1\)"),
    ({"min_frequency": True}, r"min_frequency must lie in \[0, 1\)"),
])
def test_bad_parameters_are_one_clear_error(params, message):
    with pytest.raises(ValueError, match=message):
        LocalCalibrator(2, **params)


def test_too_few_images_for_the_split_and_bad_alpha():
    logits, labels = planted_logits(3, ring_map((8, 8), [2]), [1, 3], [1, 1], seed=6)
    with pytest.raises(ValueError, match="too few calibration images for the local method"):
        LocalCalibrator(2).fit([(logits[:1], labels[:1])])
    cp = LocalCalibrator(2, min_scores=5).fit([(logits, labels)])
    with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
        cp.predict_set(logits, 1.5)


def test_auto_min_scores_grows_windows_for_few_images():
    logits, labels = planted_logits(120, ring_map((12, 12), [3, 5]), [0.5, 2, 4], [1, 1, 2], seed=7)
    few = LocalCalibrator(2).fit([(logits[:10], labels[:10])])
    many = LocalCalibrator(2).fit([(logits, labels)])
    assert (few.min_scores_, many.min_scores_) == (200, 50)  # max(50, ⌈2000 / n⌉)
    assert LocalCalibrator(2, min_scores=7).fit([(logits[:10], labels[:10])]).min_scores_ == 7
    assert few.info_["min_scores"] == 200 and few.get_params()["min_scores"] == "auto"


def test_histogram_mode_and_sigmoid_head():
    logits, labels = planted_logits(80, ring_map((12, 12), [3, 5]), [0.5, 2, 4], [1, 1, 2], seed=8)
    stream, test = [(logits[:40], labels[:40])], [(logits[40:], labels[40:])]
    binned = LocalCalibrator(2, mode="histogram").fit(stream)
    assert not binned.interpolated_ and len(binned.images_per_part_) == 5
    cov = evaluate_coverage(binned, test, [0.1]).marginal_coverage[0]
    assert 0.87 < float(cov) < 0.95
    sigmoid = (logits[:, 1:] - logits[:, :1])  # one channel: the same model as a sigmoid head
    cp = LocalCalibrator(2, head="sigmoid").fit([(sigmoid[:40], labels[:40])])
    same = LocalCalibrator(2).fit(stream)
    assert torch.equal(cp.predict_set(sigmoid[40:], 0.1), same.predict_set(logits[40:], 0.1))


def test_compact_histogram_folds_give_the_dense_folds_fit():
    from segcal.conformal.accumulate import ScoreAccumulator

    logits, labels = planted_logits(800, ring_map((6, 8), [2]), [3, 5], [0.02, 0.02], seed=12)  # cells spill
    scores = class_scores(logits).gather(1, labels.clamp_min(0).unsqueeze(1)).squeeze(1)
    parts, dense = {}, {}
    for name, keep in (("fit", slice(0, None, 2)), ("cal", slice(1, None, 2))):
        acc = ScoreAccumulator(2, (6, 8), mode="histogram")
        acc.update(scores[keep], labels[keep])
        parts[name] = acc
        dense[name] = ScoreAccumulator.wrap(ScoreHistogram(2, (6, 8), acc.bins, acc.store.counts, acc.num_images))
    assert parts["fit"].store.compact and parts["fit"].store._store.spill_index.numel() > 0
    a, b = LocalCalibrator(2, min_scores=30).fit_parts(parts), LocalCalibrator(2, min_scores=30).fit_parts(dense)
    assert torch.equal(a.cdf_, b.cdf_) and torch.equal(a.level_counts_, b.level_counts_)
    assert torch.equal(a.thresholds(0.1), b.thresholds(0.1))
