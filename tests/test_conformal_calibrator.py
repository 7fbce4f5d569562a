"""Calibrators: API, heads and kinds, fallback (never NaN), state_dict round trip, bad input."""
import io

import pytest
import torch

from planted import block_map, planted_logits
from segcal.conformal.accumulate import ScoreBank
from segcal.conformal.calibrator import (
    ConformalCalibrator,
    ImagewiseCalibrator,
    KandinskyCalibrator,
    PixelwiseCalibrator,
)
from segcal.conformal.grouping import GROUPINGS, register_grouping
from segcal.conformal.parts import assign_parts
from segcal.conformal.scores import label_scores
from segcal.conformal.sets import ambiguous, set_size
from segcal.conformal.state import nc_curves_of


def data(n=20, shape=(6, 8), seed=0):
    return planted_logits(n, block_map(shape), [-1, 1.5, 3.5, 6], [0.5, 1, 0.5, 2], seed=seed)


def batches(logits, labels, size=5):
    return [(logits[i:i + size], labels[i:i + size]) for i in range(0, logits.shape[0], size)]


def test_api_in_a_few_lines():
    logits, labels = data()
    cp = KandinskyCalibrator(grouping="kmeans", num_classes=2).fit(batches(logits, labels))
    sets = cp.predict_set(logits[:3], alpha=0.1)
    assert sets.shape == (3, 2, 6, 8) and sets.dtype == torch.bool
    assert set_size(sets).shape == (3, 6, 8) and ambiguous(sets).dtype == torch.bool
    assert cp.nc_curves().shape == (100, 2, 6, 8)
    assert cp.info_["images_per_part"] == {"cal": 10, "fit": 10}


def test_split_assignment_is_interleaved_and_exact():
    codes = assign_parts(0, 25, 0.5)
    assert int((codes == 1).sum()) == 12 and codes[:4].tolist() == [0, 1, 0, 1]
    # streaming in batches gives the same assignment as all at once
    assert torch.equal(torch.cat([assign_parts(i, 5, 0.3) for i in range(0, 25, 5)]), assign_parts(0, 25, 0.3))
    with_val = assign_parts(0, 40, 0.5, with_val=True)
    assert int((with_val == 1).sum()) == 10 and int((with_val == 2).sum()) == 10


def test_sigmoid_single_channel_equals_two_channel_softmax():
    logits, labels = data(seed=1)
    x = logits[:, 1:] - logits[:, :1]  # foreground-minus-background logit
    soft = PixelwiseCalibrator(2).fit(batches(logits, labels))
    sig = PixelwiseCalibrator(2, head="sigmoid").fit(batches(x, labels))
    assert torch.allclose(soft.thresholds(0.2), sig.thresholds(0.2), rtol=1e-5)
    assert torch.equal(sig.predict_set(x[:2], 0.2), soft.predict_set(logits[:2], 0.2))


def test_probs_input_matches_logits_for_moderate_scores():
    logits, labels = data(seed=2)
    probs = torch.softmax(logits, 1)
    a = ImagewiseCalibrator(2).fit(batches(logits, labels))
    b = ImagewiseCalibrator(2, kind="probs").fit(batches(probs, labels))
    assert torch.allclose(a.thresholds(0.3), b.thresholds(0.3), atol=1e-6)


def test_ignore_index_pixels_are_not_calibration_scores():
    logits, labels = data(seed=3)
    labels[:, :2] = 255
    cp = PixelwiseCalibrator(2).fit(batches(logits, labels))
    assert int(cp.scores_.group_counts().view(2, 6, 8)[:, :2].sum()) == 0
    assert cp.fallback_pixels_.tolist() == [16, 16]  # they fall back to the image level


def test_fallback_never_nan_and_counted():
    logits, labels = data(seed=4)
    labels[:, 0, 0] = 0  # class 1 never seen at pixel (0, 0)
    cp = PixelwiseCalibrator(2).fit(batches(logits, labels))
    image = ImagewiseCalibrator(2).fit(batches(logits, labels))
    assert cp.fallback_pixels_.tolist() == [0, 1]
    curves = cp.nc_curves()
    assert not torch.isnan(curves).any()
    assert torch.equal(curves[:, 1, 0, 0], image.nc_curves()[:, 1, 0, 0])
    # a class never seen anywhere: trivial thresholds, still no NaN
    never = PixelwiseCalibrator(3).fit([(torch.cat([logits, torch.zeros(20, 1, 6, 8) - 5], 1), labels)])
    assert not torch.isnan(never.nc_curves()).any()
    assert bool((never.thresholds(0.1)[2] == 1.0).all()) and never.fallback_pixels_[2] == 48


def test_fallback_for_a_group_that_never_saw_a_class():
    @register_grouping("test-rows", num_groups=2)
    def rows(stats, num_groups, seed):
        h, w = stats.shape
        return (torch.arange(h) >= 3).long().view(h, 1).expand(h, w)

    try:
        logits, labels = data(seed=5)
        labels[:, 3:] = 0  # class 1 never seen in the lower group
        cp = ConformalCalibrator("test-rows", 2).fit(batches(logits, labels))
        assert cp.fallback_pixels_.tolist() == [0, 24]
        thr = cp.thresholds(0.1)
        image = ImagewiseCalibrator(2).fit([(logits[0::2], labels[0::2])]).thresholds(0.1)
        assert not torch.isnan(thr).any() and torch.equal(thr[1, 3:], image[1, 3:])
    finally:
        GROUPINGS.pop("test-rows")


@pytest.mark.parametrize("mode", ["exact", "histogram"])
@pytest.mark.parametrize("make", [PixelwiseCalibrator, ImagewiseCalibrator,
                                  lambda **kw: KandinskyCalibrator("annuli", **kw)])
def test_state_dict_round_trip(mode, make):
    logits, labels = data(seed=6)
    cp = make(num_classes=2, mode=mode).fit(batches(logits, labels))
    buffer = io.BytesIO()
    torch.save(cp.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # plain tensors + metadata
    groups = {PixelwiseCalibrator: 48, ImagewiseCalibrator: 1}.get(make, 4)
    assert state["nc_group_curves"].shape == (100, 2, groups) and state["method"] == cp.method
    assert "nc_curves" not in state and torch.equal(nc_curves_of(state), cp.nc_curves())  # expanded on request
    assert torch.equal(cp.state_dict(include_curves="dense")["nc_curves"], cp.nc_curves())
    back = ConformalCalibrator.from_state_dict(state)
    assert type(back) is type(cp) and back.info_ == cp.info_
    for alpha in (0.05, 0.31):
        assert torch.equal(back.thresholds(alpha), cp.thresholds(alpha))


def test_fit_bank_equals_streaming_fit():
    logits, labels = data(seed=7)
    bank = ScoreBank(2, (6, 8), *label_scores(logits, labels))
    a = KandinskyCalibrator("kmeans", 2).fit(batches(logits, labels, 3))
    b = KandinskyCalibrator("kmeans", 2).fit_bank(bank)
    assert torch.equal(a.group_map_, b.group_map_) and torch.equal(a.nc_curves(), b.nc_curves())


def test_bad_input_raises_clear_errors():
    logits, labels = data(seed=8)
    cp = PixelwiseCalibrator(2).fit(batches(logits, labels))
    for alpha in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
            cp.predict_set(logits, alpha)
    with pytest.raises(ValueError, match="n_cal=50 is larger than the 20 calibration images"):
        PixelwiseCalibrator(2).fit(batches(logits, labels), n_cal=50)
    with pytest.raises(ValueError, match="image size"):
        cp.predict_set(torch.zeros(1, 2, 6, 9), 0.1)
    with pytest.raises(ValueError, match="image size"):
        PixelwiseCalibrator(2).fit([(logits, labels), (torch.zeros(1, 2, 5, 8), torch.zeros(1, 5, 8).long())])
    with pytest.raises(ValueError, match="fitted on 2 classes"):
        cp.predict_set(torch.zeros(1, 3, 6, 8), 0.1)
    with pytest.raises(ValueError, match="num_classes=3"):
        PixelwiseCalibrator(3).fit(batches(logits, labels))
    with pytest.raises(ValueError, match="not a segcal conformal calibrator state"):
        ConformalCalibrator.from_state_dict({"method": "pixelwise"})
    with pytest.raises(ValueError, match="not fitted"):
        PixelwiseCalibrator(2).predict_set(logits, 0.1)
    with pytest.raises(ValueError, match="split"):
        KandinskyCalibrator(split=1.0)
    with pytest.raises(ValueError, match="num_groups"):
        KandinskyCalibrator(num_groups=0)
    with pytest.raises(ValueError, match="too few calibration images"):
        KandinskyCalibrator(num_classes=2).fit([(logits[:1], labels[:1])])
    with pytest.raises(ValueError, match="learned grouping"):
        KandinskyCalibrator("pixel")
    with pytest.raises(ValueError, match="empty"):
        PixelwiseCalibrator(2).fit([])
