"""Every calibrator follows one contract: params stored as given, fit → self, fitted attributes end in
``_``, one NotFittedError, state_dict/load_state_dict round trips through a weights-only file."""
import io

import pytest
import torch

from segcal.calibrators import LocalTemperatureScaling, SelectiveScaling, TemperatureScaling, VectorScaling
from segcal.conformal import ImagewiseCalibrator, KandinskyCalibrator, PixelwiseCalibrator
from segcal.estimator import NotFittedError

FAST = {"epochs": 1}
CASES = [
    (TemperatureScaling, {"max_iter": 20, "seed": 3}),
    (VectorScaling, {"max_iter": 20}),
    (SelectiveScaling, {"epochs": 1, "hidden": 8, "t2": 2.0}),
    (LocalTemperatureScaling, {"epochs": 1, "hidden": 4, "val_fraction": 0.0}),
    (PixelwiseCalibrator, {"num_classes": 3, "mode": "histogram"}),
    (ImagewiseCalibrator, {"split": 0.3, "head": "softmax"}),
    (KandinskyCalibrator, {"grouping": "kmeans", "num_groups": 2, "seed": 5}),
]


def _batches(n=2, c=3, h=8, w=8):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(4, c, h, w, generator=g) * 3, torch.randint(0, c, (4, h, w), generator=g))
            for _ in range(n)]


def _apply(est, logits):
    return est.predict_set(logits, 0.2) if hasattr(est, "predict_set") else est(logits)


@pytest.mark.parametrize("cls, params", CASES, ids=[c.__name__ for c, _ in CASES])
def test_parameters_are_stored_as_given(cls, params):
    est = cls(**params)
    got = est.get_params()
    assert {k: got[k] for k in params} == params
    assert set(got) == set(cls.param_names())
    assert repr(est).startswith(cls.__name__ + "(")
    with pytest.raises(ValueError, match="has no parameter 'tempertaure'.*valid:"):
        est.set_params(tempertaure=2)


@pytest.mark.parametrize("cls, params", CASES, ids=[c.__name__ for c, _ in CASES])
def test_unfitted_use_raises_not_fitted(cls, params):
    est = cls(**params)
    assert not est.is_fitted
    logits = _batches(1)[0][0]
    for use in (lambda: _apply(est, logits), est.state_dict):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            use()


@pytest.mark.parametrize("cls, params", CASES, ids=[c.__name__ for c, _ in CASES])
def test_fit_returns_self_and_learns_only_trailing_underscore_attributes(cls, params):
    est = cls(**params)
    before = set(vars(est))
    assert est.fit(_batches()) is est and est.is_fitted
    learned = {k for k in set(vars(est)) - before if not k.startswith("_")}
    assert learned and all(k.endswith("_") for k in learned), learned
    assert est.get_params() == cls(**params).get_params()  # fit changed no parameter


@pytest.mark.parametrize("cls, params", CASES, ids=[c.__name__ for c, _ in CASES])
def test_state_dict_round_trips_through_a_weights_only_file(cls, params):
    est = cls(**params).fit(_batches())
    buf = io.BytesIO()
    torch.save(est.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    clone = cls(**params).load_state_dict(state)
    logits = _batches(1)[0][0]
    assert clone.is_fitted and torch.equal(_apply(clone, logits), _apply(est, logits))
    assert type(est).from_state_dict(state).get_params() == est.get_params()


def test_loading_a_state_of_another_method_is_refused():
    state = TemperatureScaling(max_iter=5).fit(_batches()).state_dict()
    with pytest.raises(ValueError, match="state is for method 'temperature'"):
        VectorScaling().load_state_dict(state)
    conf = PixelwiseCalibrator().fit(_batches()).state_dict()
    with pytest.raises(ValueError, match="state is for grouping 'pixel'"):
        ImagewiseCalibrator().load_state_dict(conf)


def test_conformity_score_is_a_parameter():
    with pytest.raises(ValueError, match="score must be one of"):
        PixelwiseCalibrator(score="aps-typo")
    cp = ImagewiseCalibrator(score="lac").fit(_batches())
    assert cp.info_["score"] == "lac"
