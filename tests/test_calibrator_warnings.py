"""Recalibrators say when a fit changes nothing, hits a bound, or makes calibration worse."""
import math
import warnings

import pytest
import torch

from segcal.calibrators import SelectiveScaling, VectorScaling
from segcal.calibrators.diagnostics import FitWarning, check_objective, check_temperatures


def _model(n=8, c=2, sharpness=1.0, truth_sharpness=1.0, symmetric=False, seed=0):
    """Logits ``[n, c, 16, 16]`` whose labels are drawn from softmax(truth_sharpness / sharpness · logits):
    ``truth_sharpness > sharpness`` is an under-confident model."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, 16, 16, generator=g) * 2
    if symmetric:  # z_0 = -z_1: only the difference carries information
        x = torch.cat([-x[:, 1:], x[:, 1:]], 1)
    p = torch.softmax(x * truth_sharpness, 1).permute(0, 2, 3, 1).reshape(-1, c)
    labels = torch.multinomial(p, 1, generator=g).view(n, 16, 16)
    return [(x * sharpness, labels)]


def test_check_functions():
    with pytest.warns(FitWarning, match="changes \\(almost\\) nothing"):
        check_temperatures("temperature", torch.tensor([1.004]), 1e4)
    with pytest.warns(FitWarning, match=r"channel\(s\) \[1\] hit its bound"):
        check_temperatures("vector", torch.tensor([1.5, 1e4]), 1e4)
    with pytest.warns(FitWarning, match="got worse \\(0.1 → 0.2\\)"):
        check_objective("selective", "held-out top-label ECE", 0.1, 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_temperatures("temperature", torch.tensor([1.5]), 1e4)
        check_objective("temperature", "NLL", 0.3, 0.2)


def test_two_class_softmax_vector_scaling_stays_identifiable():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no bound warning: the fit is identifiable
        vs = VectorScaling(max_iter=50).fit(_model(symmetric=True, sharpness=2.0))
    t = vs.temperature_
    assert torch.allclose(t[0], t[1]) and 1.6 < t[0] < 2.5  # mirrored logits, over-confident by 2: T ≈ 2 each
    assert math.isfinite(vs.info_["nll_after"]) and vs.info_["nll_after"] < vs.info_["nll_before"]


def test_selective_scaling_on_an_under_confident_model_says_so_before_training():
    with pytest.warns(FitWarning) as caught:
        SelectiveScaling(epochs=1, hidden=8).fit(_model(truth_sharpness=3.0))
    messages = [str(w.message) for w in caught]
    assert "under-confident" in messages[0] and "--method temperature" in messages[0]
