"""Coverage evaluation (hand-computed case, streaming = one pass, JSON) and the low-data sweep."""
import json
import math

import pytest
import torch

from planted import block_map, planted_logits
from segcal.conformal.accumulate import ScoreBank
from segcal.conformal.calibrator import ImagewiseCalibrator, KandinskyCalibrator, PixelwiseCalibrator
from segcal.conformal.evaluation import CoverageAccumulator, evaluate_coverage
from segcal.conformal.scores import label_scores
from segcal.conformal.sweep import cache_test_scores, calibration_sweep, summarise_sweep


def probs_with_fg_score(scores):
    """Softmax probabilities [N, 2, 1, 1] whose class-1 score is ``scores``."""
    s = torch.tensor(scores, dtype=torch.float32).view(-1, 1, 1)
    return torch.stack([s, 1 - s], 1)


def test_hand_computed_coverage_set_size_and_ce():
    cal = probs_with_fg_score([0.1 * i for i in range(1, 10)])  # 9 class-1 scores 0.1 … 0.9
    cp = ImagewiseCalibrator(2, kind="probs").fit([(cal, torch.ones(9, 1, 1, dtype=torch.long))])
    q = cp.thresholds(0.2)  # k = ⌈10 · 0.8⌉ = 8 → 0.8 for class 1; class 0 never seen → 1
    assert q[1, 0, 0].item() == pytest.approx(0.8, abs=1e-6) and q[0, 0, 0].item() == 1.0
    test = probs_with_fg_score([0.75, 0.85])
    res = evaluate_coverage(cp, [(test, torch.ones(2, 1, 1, dtype=torch.long))], alphas=[0.2], min_test_labels=2)
    assert res.class_coverage[0].tolist() == [0.0, 0.5]  # class 0: no test labels
    assert res.marginal_coverage.item() == 0.5
    assert res.mean_ce_per_class[1].item() == pytest.approx(0.3)  # |0.5 − 0.8|
    assert math.isnan(res.mean_ce_per_class[0].item())
    assert res.mean_set_size.item() == 1.5 and res.full_fraction.item() == 0.5 and res.empty_fraction.item() == 0
    assert res.multi_fraction.item() == 0.5  # two classes: more than one class = the full set
    assert res.trivial_fraction.item() == 0.5 and res.trivial_fraction_per_class[0].tolist() == [1.0, 0.0]
    strict = evaluate_coverage(cp, [(test, torch.ones(2, 1, 1, dtype=torch.long))], alphas=[0.2], min_test_labels=3)
    assert math.isnan(strict.mean_ce) and strict.to_dict()["mean_ce"] is None


def test_streaming_and_merging_equal_one_pass_and_loop_reference():
    logits, labels = planted_logits(30, block_map((5, 6)), [-1, 1.5, 3.5, 6], [0.5, 1, 0.5, 2], seed=0)
    cp = PixelwiseCalibrator(2).fit([(logits[:15], labels[:15])])
    test_l, test_y = logits[15:], labels[15:]
    test_y[0, 0, 0] = 255
    whole = evaluate_coverage(cp, [(test_l, test_y)], min_test_labels=1)
    a, b = CoverageAccumulator(cp, min_test_labels=1), CoverageAccumulator(cp, min_test_labels=1)
    a.update(test_l[:7], test_y[:7])
    b.update(test_l[7:], test_y[7:])
    merged = a.merge(b).compute()
    assert torch.equal(merged.coverage.nan_to_num(-1), whole.coverage.nan_to_num(-1))
    assert merged.mean_ce == whole.mean_ce and merged.num_test_images == 15
    # per-pixel loop reference at one level
    s, y = label_scores(test_l, test_y)
    thr = cp.thresholds_at(whole.levels)
    for i, j in [(0, 0), (2, 3), (4, 5)]:
        for c in range(2):
            mask = y[:, i, j] == c
            ref = (s[mask, i, j].unsqueeze(0) <= thr[:, c, i, j].unsqueeze(1)).double().mean(1)
            assert torch.allclose(whole.coverage[:, c, i, j], ref)
            assert whole.ce_map[c, i, j].item() == pytest.approx(float((ref - whole.levels).abs().mean()))
    sizes = (cp.class_scores(test_l).unsqueeze(0) <= thr.unsqueeze(1)).sum(2).double()  # [A, N, H, W]
    valid = (y >= 0).double()
    assert torch.allclose(whole.mean_set_size, (sizes * valid).flatten(1).sum(1) / valid.sum())


def test_result_to_dict_is_json_and_complete():
    logits, labels = planted_logits(20, block_map((4, 4)), [-1, 1.5, 3.5, 6], [0.5, 1, 0.5, 2], seed=1)
    cp = KandinskyCalibrator("kmeans", 2).fit([(logits[:10], labels[:10])])
    res = evaluate_coverage(cp, [(logits[10:], labels[10:])], min_test_labels=2)
    d = json.loads(json.dumps(res.to_dict()))
    assert len(d["levels"]) == 19 and d["levels"][0] == 0.05 and d["levels"][-1] == 0.95
    for key in ("mean_ce", "mean_set_size", "full_fraction", "empty_fraction", "trivial_fraction",
                "marginal_coverage", "coverage_at_0.9", "min_test_labels", "calibration"):
        assert key in d
    assert d["calibration"]["method"] == "kandinsky-kmeans"
    assert res.level_index(0.1) == 17
    with pytest.raises(ValueError, match="not on the evaluated grid"):
        res.level_index(0.12)
    with pytest.raises(ValueError, match="alphas must lie strictly between 0 and 1"):
        evaluate_coverage(cp, [], alphas=[0.1, 1.0])
    with pytest.raises(ValueError, match="image size"):
        evaluate_coverage(cp, [(torch.zeros(1, 2, 4, 5), torch.zeros(1, 4, 5).long())])


def test_sweep_records_and_summary():
    logits, labels = planted_logits(40, block_map((4, 6)), [-1, 1.5, 3.5, 6], [0.5, 1, 0.5, 2], seed=2)
    pool = ScoreBank(2, (4, 6), *label_scores(logits[:30], labels[:30]))
    test = cache_test_scores([(logits[30:], labels[30:])])
    methods = {"pixelwise": lambda: PixelwiseCalibrator(2), "kmeans": lambda: KandinskyCalibrator("kmeans", 2)}
    records = calibration_sweep(pool, test, methods, n_cals=(4, 10), repeats=3, min_test_labels=1)
    assert len(records) == 2 * 2 * 3
    assert {r["method"] for r in records} == {"pixelwise", "kmeans"} and "mean_ce_c1" in records[0]
    rows = summarise_sweep(records)
    assert len(rows) == 4 and rows[0]["repeats"] == 3
    row = next(r for r in rows if r["method"] == "pixelwise" and r["n_cal"] == 10)
    vals = torch.tensor([r["mean_ce"] for r in records if r["method"] == "pixelwise" and r["n_cal"] == 10])
    assert row["mean_ce_mean"] == pytest.approx(float(vals.mean()))
    assert row["mean_ce_std"] == pytest.approx(float(vals.std(unbiased=False)))
    with pytest.raises(ValueError, match="exceed the 30 images"):
        calibration_sweep(pool, test, methods, n_cals=(31,))


def test_coverage_counts_match_brute_force():
    from segcal.conformal.sets import coverage_counts

    g = torch.Generator().manual_seed(3)
    scores = torch.rand(7, 3, 4, generator=g)
    labels = torch.randint(-1, 3, (7, 3, 4), generator=g)
    thresholds = torch.rand(5, 3, 3, 4, generator=g).sort(0).values  # nondecreasing in the level
    covered, counts = coverage_counts(scores, labels, thresholds)
    for c in range(3):
        mask = labels == c
        assert torch.equal(counts[c], mask.sum(0))
        for a in range(5):
            assert torch.equal(covered[a, c], (mask & (scores <= thresholds[a, c])).sum(0))


def test_level_histogram_counts_exactly_across_int16_flushes(monkeypatch):
    from segcal.conformal.sets import LevelHistogram

    monkeypatch.setattr(LevelHistogram, "LIMIT", 3)  # flush every 3 rows instead of every 32767
    g = torch.Generator().manual_seed(5)
    first = torch.randint(0, 4, (11, 6), generator=g)
    rows = torch.stack([torch.randperm(6, generator=g) for _ in range(11)])  # distinct cells per row
    hist = LevelHistogram(6, 4)
    hist.add(first[:5], rows[:5])
    hist.add(first[5:], rows[5:])
    expected = torch.zeros(6, 4, dtype=torch.long)
    for f, r in zip(first.flatten(), rows.flatten()):
        expected[r, f] += 1
    assert torch.equal(hist.total(), expected) and hist.total().dtype == torch.int32
    live = hist.total()
    live += 1  # total() is the live tensor: merge and all-reduce act on it in place
    assert torch.equal(hist.total(), expected + 1)


def test_coverage_accumulator_merge_equals_one_pass():
    from segcal.conformal.calibrator import PixelwiseCalibrator
    from segcal.conformal.evaluation import CoverageAccumulator

    g = torch.Generator().manual_seed(9)
    cal = [(2 * torch.randn(3, 3, 5, 4, generator=g), torch.randint(0, 3, (3, 5, 4), generator=g)) for _ in range(4)]
    cp = PixelwiseCalibrator(3).fit(cal)
    test = [(2 * torch.randn(2, 3, 5, 4, generator=g), torch.randint(0, 3, (2, 5, 4), generator=g)) for _ in range(4)]
    test[1][1][0, :2] = 255  # some unlabelled pixels
    one, left, right = (CoverageAccumulator(cp, min_test_labels=1) for _ in range(3))
    for i, (x, y) in enumerate(test):
        one.update(x, y)
        (left if i % 2 else right).update(x, y)
    a, b = one.compute(), left.merge(right).compute()
    for name in ("coverage", "ce_map", "set_size_map", "marginal_coverage", "mean_set_size", "empty_fraction",
                 "full_fraction", "multi_fraction", "label_counts"):
        assert torch.allclose(getattr(a, name).nan_to_num(-1), getattr(b, name).nan_to_num(-1)), name
    # brute force on one pixel: set sizes over the labelled images, and unlabelled pixels left out
    thr = one.thresholds  # [A, C, H, W]
    scores = torch.cat([cp.class_scores(x) for x, _ in test])
    labels = torch.cat([y for _, y in test])
    keep = labels[:, 0, 0] < 3
    sizes = (scores[keep, :, 0, 0].unsqueeze(0) <= thr[:, :, 0, 0].unsqueeze(1)).sum(2).double().mean(1)
    assert torch.allclose(a.set_size_map[:, 0, 0], sizes)
    assert int(a.label_counts[:, 0, 0].sum()) == int(keep.sum())
    # brute force over every labelled pixel: share of sets with more than one class, per level
    inside = scores.unsqueeze(0) <= thr.unsqueeze(1)  # [A, N, C, H, W]
    sizes_all = inside.sum(2)  # [A, N, H, W]
    labelled = (labels < 3).unsqueeze(0).expand_as(sizes_all)
    multi = ((sizes_all >= 2) & labelled).flatten(1).sum(1).double() / labelled[0].sum()
    assert torch.allclose(a.multi_fraction, multi)


def test_coverage_maps_computed_in_pixel_chunks_equal_one_pass(monkeypatch):
    from segcal.conformal import evaluation

    logits, labels = planted_logits(30, block_map((6, 7)), [-1, 1.5, 3.5, 6], [0.5, 1, 0.5, 2], seed=4)
    cp = PixelwiseCalibrator(2).fit([(logits[:20], labels[:20])])
    whole = evaluate_coverage(cp, [(logits[20:], labels[20:])], min_test_labels=1)
    monkeypatch.setattr(evaluation, "COMPUTE_PIXELS", 5)  # 42 pixels: nine chunks, the last one short
    chunked = evaluate_coverage(cp, [(logits[20:], labels[20:])], min_test_labels=1)
    for name in ("coverage", "ce_map", "class_coverage", "marginal_coverage", "set_size_map", "label_counts"):
        assert torch.equal(getattr(whole, name).nan_to_num(-1), getattr(chunked, name).nan_to_num(-1)), name
