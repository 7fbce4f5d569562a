"""Python API edges: NaN at prediction time, NumPy inputs, one-channel outputs, trivial thresholds."""
import math
import warnings

import pytest
import torch

from segcal.conformal.calibrator import ImagewiseCalibrator, PixelwiseCalibrator
from segcal.conformal.diagnostics import TrivialThresholdWarning, min_scores
from segcal.outputs import check_batch


def _data(n=20, c=2, h=6, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g) * 2, torch.randint(0, c, (n, h, w), generator=g)


def test_predict_set_rejects_nan_and_inf_like_fit():
    logits, labels = _data()
    cp = ImagewiseCalibrator(2).fit([(logits, labels)])
    for bad in (float("nan"), float("inf")):
        x = logits[:2].clone()
        x[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            cp.predict_set(x, 0.1)
        with pytest.raises(ValueError, match="NaN or inf"):
            ImagewiseCalibrator(2).fit([(x, labels[:2])])


def test_numpy_arrays_work_like_tensors():
    logits, labels = _data()
    a = PixelwiseCalibrator(2).fit([(logits.numpy(), labels.numpy())])
    b = PixelwiseCalibrator(2).fit([(logits, labels)])
    assert torch.equal(a.nc_curves(), b.nc_curves())
    assert torch.equal(a.predict_set(logits[:3].numpy(), 0.2), b.predict_set(logits[:3], 0.2))
    with pytest.raises(ValueError, match="torch.Tensor or a NumPy array"):
        PixelwiseCalibrator(2).fit([(logits.tolist(), labels)])


def test_one_channel_softmax_points_to_the_sigmoid_head():
    logits, labels = _data(c=2)
    with pytest.raises(ValueError, match="1 channel.*head='sigmoid'"):
        check_batch(logits[:, :1], labels, kind="logits", head="softmax")
    with pytest.raises(ValueError, match="head='sigmoid'"):
        ImagewiseCalibrator().fit([(logits[:, :1], labels)])
    cp = ImagewiseCalibrator(head="sigmoid").fit([(logits[:, :1], labels)])  # the fix the message names
    assert cp.num_classes_ == 2


@pytest.mark.parametrize("alpha", [0.5, 0.3, 0.2, 0.1, 0.05, 0.01, 0.07])
def test_min_scores_is_the_first_n_with_a_finite_rank(alpha):
    n = min_scores(alpha)
    assert math.ceil((n + 1) * (1 - alpha) - 1e-9) <= n
    assert n == 1 or math.ceil(n * (1 - alpha) - 1e-9) > n - 1


def test_trivial_thresholds_warn_with_the_number_of_images_needed():
    logits, labels = _data(n=4)
    cp = PixelwiseCalibrator(2).fit([(logits, labels)])
    with pytest.warns(TrivialThresholdWarning, match=r"at alpha=0.1 are trivial.*at least 9 calibration images"):
        cp.predict_set(logits[:1], 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cp.predict_set(logits[:1], 0.1)  # once per level
        cp.predict_set(logits[:1], 0.5)  # 1 score suffices at alpha = 0.5: nothing to warn about
        ImagewiseCalibrator(2).fit([(logits, labels)]).predict_set(logits[:1], 0.1)  # pooled: plenty of scores
    assert "trivial" in cp.trivial_warning(0.05) and "at least 19" in cp.trivial_warning(0.05)
    big = PixelwiseCalibrator(2).fit([_data(n=60, c=2)])
    assert big.trivial_warning(0.1) is None

