"""CalibrationMetrics on tiny hand-computed cases, edge cases and bad input."""
import json
import math

import pytest
import torch

from segcal.metrics.calibration import CalibrationMetrics
from segcal.metrics.calibration_results import CalibrationResults
from segcal.metrics.scoring import PROB_EPS
from segcal.outputs import PROB_SUM_TOL

# class-1 probabilities of a 2x3 image (+ one fully ignored row), labels
P1 = torch.tensor([[0.875, 0.625, 0.5], [0.25, 1.0, 0.0], [0.3, 0.3, 0.3]])  # dyadic: exact in float32
LABELS = torch.tensor([[1, 1, 0], [0, 1, 1], [255, 255, 255]])


def tiny_batch():
    probs = torch.stack([1 - P1, P1]).unsqueeze(0)  # [1, 2, 3, 3]
    return probs, LABELS.unsqueeze(0)


def test_hand_computed_values():
    m = CalibrationMetrics(2, bins=4, boundary_width=1)
    m.update(*tiny_batch())
    r = m.compute()
    # top-label conf .875 .625 .5 .75 1 1, correct 1 1 1 1 1 0 (tie at .5 -> class 0 = label)
    # bins [0,.25) [.25,.5) [.5,.75) [.75,1]: bin 2 {.625, .5} gap |1.125 - 2|; bin 3 {.875, .75, 1, 1} |3.625 - 3|
    assert r.num_pixels == 6 and r.num_images == 1
    assert math.isclose(r.ece, (0.875 + 0.625) / 6, rel_tol=1e-9)
    assert math.isclose(r.mce, 1 - 0.5625, rel_tol=1e-9)
    assert r.reliability.count.tolist() == [0, 0, 2, 4]
    assert torch.isnan(r.reliability.accuracy[0]) and r.reliability.accuracy[3].item() == 0.75
    # one-vs-rest, class 1: gaps 1 (p=0, y=1) + .25 + |1.125 - 1| + |1.875 - 2| = 1.5; class 0: .125+.375+.5+.75
    assert torch.allclose(r.classwise_ece, torch.tensor([1.75 / 6, 1.5 / 6], dtype=torch.float64))
    assert math.isclose(r.mean_classwise_ece, 3.25 / 12, rel_tol=1e-9)
    # Brier 2 * sum (p1 - y)^2 / 6; NLL clips p_y = 0 to float32 eps
    assert math.isclose(r.brier, 2 * 1.46875 / 6, rel_tol=1e-7)
    nll = -(math.log(0.875) + math.log(0.625) + math.log(0.5) + math.log(0.75)
            + math.log(1 - PROB_EPS) + math.log(PROB_EPS)) / 6
    assert math.isclose(r.nll, nll, rel_tol=1e-5)
    # one image: its ECE is the global one; the per-pixel map is |conf - correct|, NaN where ignored
    assert torch.allclose(r.image_ece, torch.tensor([1.5 / 6], dtype=torch.float64))
    expected_map = torch.tensor([[0.125, 0.375, 0.5], [0.25, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(r.ece_map[:2], expected_map, atol=1e-9)
    assert torch.isnan(r.ece_map[2]).all() and r.map_count[2].sum() == 0
    assert r.segmentation["overall_accuracy"] == 5 / 6
    assert r.binning == "4 equal-width bins"


def test_all_pixels_ignored_gives_nan_and_zero_counts():
    probs, labels = tiny_batch()
    m = CalibrationMetrics(2)
    m.update(probs, torch.full_like(labels, 255))
    r = m.compute()
    assert r.num_pixels == 0 and r.num_images == 1
    for value in (r.ece, r.mce, r.adaptive_ece, r.brier, r.nll, r.mean_classwise_ece):
        assert math.isnan(value)
    assert torch.isnan(r.image_ece).all() and torch.isnan(r.ece_map).all()
    d = json.loads(json.dumps(r.to_dict(maps=True)))  # strict JSON: NaN became null
    assert d["ece"] is None and d["num_pixels"] == 0


def test_single_class_present():
    torch.manual_seed(0)
    p1 = torch.rand(2, 4, 4) * 0.5 + 0.5  # always predicts class 1, which is the only label
    m = CalibrationMetrics(2, bins=10)
    m.update(torch.stack([1 - p1, p1], 1), torch.ones(2, 4, 4, dtype=torch.long))
    r = m.compute()
    # every pixel correct: ECE = 1 - mean confidence; class 0 one-vs-rest: mean p0 (never the label)
    assert math.isclose(r.ece, 1 - p1.double().mean().item(), rel_tol=1e-6)
    assert math.isclose(r.classwise_ece[0].item(), (1 - p1).double().mean().item(), rel_tol=1e-6)
    assert math.isfinite(r.mean_classwise_ece)
    assert math.isnan(r.segmentation["dice"][0]) and r.segmentation["dice"][1] == 1.0


def test_results_round_trip_through_json():
    torch.manual_seed(1)
    m = CalibrationMetrics(3, kind="logits", class_maps=True)
    m.update(torch.randn(2, 3, 6, 5), torch.randint(0, 3, (2, 6, 5)))
    r = m.compute()
    back = CalibrationResults.from_dict(json.loads(json.dumps(r.to_dict(maps=True))))
    assert back.ece == r.ece and torch.allclose(back.classwise_ece, r.classwise_ece)
    assert torch.allclose(back.ece_map, r.ece_map, equal_nan=True)
    assert torch.allclose(back.class_ece_maps, r.class_ece_maps, equal_nan=True)
    assert back.regions.keys() == r.regions.keys()
    assert all(math.isclose(back.regions[k][m], r.regions[k][m]) or math.isnan(r.regions[k][m])
               for k in r.regions for m in r.regions[k])
    assert "ece_map" not in r.to_dict() and r.to_dict()["binning"] == "15 equal-width bins"


BAD_INPUTS = [
    (lambda p, y: (p, y[:, :2]), "shape mismatch"),
    (lambda p, y: (p[:, :1], y), "num_classes"),
    (lambda p, y: (p[0], y), r"\[N, C, H, W\]"),
    (lambda p, y: (p.index_put((torch.tensor(0),) * 4, torch.tensor(float("nan"))), y), "NaN or inf"),
    (lambda p, y: (p.index_put((torch.tensor(0),) * 4, torch.tensor(float("inf"))), y), "NaN or inf"),
    (lambda p, y: (p * (1 - 10 * PROB_SUM_TOL), y), "sum"),
    (lambda p, y: (p, y.masked_fill(y == 0, 2)), r"labels must lie in \[0, 1\]"),
    (lambda p, y: (p, y.masked_fill(y == 0, -1)), "labels must lie"),
    (lambda p, y: (p, y.float()), "integer"),
]


@pytest.mark.parametrize("corrupt,message", BAD_INPUTS)
def test_bad_input_raises_clear_value_error(corrupt, message):
    probs, labels = tiny_batch()
    m = CalibrationMetrics(2)
    with pytest.raises(ValueError, match=message):
        m.update(*corrupt(probs, labels))


@pytest.mark.parametrize("kwargs,message", [
    ({"num_classes": 1}, "num_classes"), ({"bins": 0}, "bins"), ({"head": "relu"}, "head"),
    ({"kind": "scores"}, "kind"), ({"boundary_width": 0}, "boundary_width"), ({"image_size": (4,)}, "image_size"),
])
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CalibrationMetrics(**{"num_classes": 2, **kwargs})


def test_map_needs_one_image_size():
    m = CalibrationMetrics(2)
    m.update(torch.full((1, 2, 4, 4), 0.5), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="one size"):
        m.update(torch.full((1, 2, 5, 4), 0.5), torch.zeros(1, 5, 4, dtype=torch.long))
    no_map = CalibrationMetrics(2, ece_map=False)
    for h in (4, 5):
        no_map.update(torch.full((1, 2, h, 4), 0.5), torch.zeros(1, h, 4, dtype=torch.long))
    assert no_map.compute().num_pixels == 36


def test_image_size_preallocates_the_map():
    m = CalibrationMetrics(2, image_size=(4, 5), class_maps=True)
    assert m.map_count.shape == (4, 5, 15) and m.class_map_count.shape == (2, 4, 5, 15)
    with pytest.raises(ValueError, match="one size"):
        m.update(torch.full((1, 2, 5, 5), 0.5), torch.zeros(1, 5, 5, dtype=torch.long))


def test_merge_rejects_other_configuration():
    with pytest.raises(ValueError, match="same configuration"):
        CalibrationMetrics(2, bins=10) + CalibrationMetrics(2, bins=15)


def test_top_label_prediction_comes_from_the_logits_when_probabilities_tie():
    """A huge temperature makes float32 probabilities tie exactly; the prediction stays the model's arg-max."""
    logits = torch.tensor([1.0, 3.0, 2.0]).view(1, 3, 1, 1) / 1e10  # softmax → exactly [1/3, 1/3, 1/3]
    assert torch.equal(torch.softmax(logits, 1), torch.full((1, 3, 1, 1), 1 / 3))
    m = CalibrationMetrics(3, bins=10, kind="logits", ece_map=False)
    m.update(logits, torch.tensor([[[1]]]))
    res = m.compute()
    assert res.ece == pytest.approx(1 - 1 / 3, abs=1e-6)  # predicted class 1 (correct) with confidence 1/3
