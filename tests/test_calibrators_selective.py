"""Selective scaling: misprediction classifier, T2 rule, ECE on an over-confident model, arg-max, errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from segcal.calibrators.misprediction import MispredictionMLP, detection_metrics
from segcal.calibrators.selective import T2_MAX, SelectiveScaling, confidence_matching_t2, mean_confidence
from segcal.calibrators.temperature import TemperatureScaling

C = 4
FAST = dict(epochs=15, batch_size=128, lr=1e-2)


def overconfident_stream(num_batches=4, n=8, size=16, seed=0):
    """70% easy pixels (logit 8 on the true class, always right); 30% hard pixels with a
    second logit 4 that are wrong 80% of the time yet ~98% confident: detectable mistakes."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        shape = (n, size, size)
        first = torch.randint(0, C, shape, generator=g)
        second = (first + torch.randint(1, C, shape, generator=g)) % C
        hard = torch.rand(shape, generator=g) < 0.3
        wrong = hard & (torch.rand(shape, generator=g) < 0.8)
        logits = 8 * F.one_hot(first, C) + 4 * hard.unsqueeze(-1) * F.one_hot(second, C)
        labels = torch.where(wrong, second, first)
        batches.append((logits.movedim(-1, 1).float(), labels))
    return batches


def top_label_ece(logits, labels):
    return multiclass_calibration_error(F.softmax(logits, 1), labels, num_classes=C, n_bins=15, norm="l1").item()


def test_selective_scaling_lowers_ece_of_an_overconfident_model_below_ts():
    cal = SelectiveScaling(**FAST).fit(overconfident_stream())
    metrics = cal.validation_metrics_
    assert metrics["balanced_accuracy"] > 0.9 and metrics["wrong_recall"] > 0.9
    assert cal.t2_ == T2_MAX  # flagged pixels are ~80% wrong: accuracy 0.2 < 1/C
    logits, labels = (torch.cat(x) for x in zip(*overconfident_stream(seed=1)))
    ts = TemperatureScaling().fit(overconfident_stream())
    uncalibrated, after_ts, after_selective = (top_label_ece(z, labels) for z in (logits, ts(logits), cal(logits)))
    assert after_selective < 0.5 * uncalibrated
    assert after_selective < after_ts
    assert torch.equal(cal(logits).argmax(1), logits.argmax(1))


@pytest.mark.parametrize("t2", ["auto", 2.0, 1e10])
def test_selective_scaling_never_changes_the_argmax(t2):
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(4, C, 12, 12, generator=g) * 3, torch.randint(0, C, (4, 12, 12), generator=g))
               for _ in range(3)]
    cal = SelectiveScaling(t2=t2, epochs=2).fit(batches)
    logits = torch.randn(2, C, 12, 12, generator=g) * 5
    out = cal(logits)
    assert torch.equal(out.argmax(1), logits.argmax(1))
    flagged = cal.flag_wrong(logits).unsqueeze(1)
    assert torch.equal(out, torch.where(flagged, logits / cal.t2_, logits))


def test_binary_sigmoid_head_keeps_the_decision():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, 1, 16, 16, generator=g) * 4
    labels = torch.bernoulli(torch.sigmoid(z[:, 0] / 3), generator=g).long()
    cal = SelectiveScaling(head="sigmoid", epochs=2).fit([(z[:3], labels[:3]), (z[3:], labels[3:])])
    assert torch.equal(cal(z) > 0, z > 0)


def test_confidence_matching_t2_equalises_confidence_and_accuracy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, C, generator=g) * 6
    labels = torch.where(torch.rand(2000, generator=g) < 0.6, logits.argmax(1), (logits.argmax(1) + 1) % C)
    t2 = confidence_matching_t2(logits, labels, "softmax")
    assert 1 < t2 < T2_MAX
    assert abs(mean_confidence(logits, "softmax", t2) - 0.6) < 0.01
    always_wrong = (logits.argmax(1) + 1) % C
    assert confidence_matching_t2(logits, always_wrong, "softmax") == T2_MAX
    assert confidence_matching_t2(torch.zeros(10, C), torch.zeros(10, dtype=torch.long), "softmax") == 1.0
    assert confidence_matching_t2(logits[:0], labels[:0], "softmax") == 1.0


def test_detection_metrics_by_hand():
    flagged = torch.tensor([True, True, False, False, False])
    wrong = torch.tensor([True, False, True, False, False])
    m = detection_metrics(flagged, wrong)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["wrong_precision"] == pytest.approx(1 / 2)
    assert m["wrong_recall"] == pytest.approx(1 / 2)
    assert m["correct_recall"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_first_layer_starts_at_identity():
    mlp = MispredictionMLP(5)
    assert torch.equal(mlp.identity.weight, torch.eye(5)) and not mlp.identity.bias.any()


def test_validation_holds_out_whole_images_and_history_is_kept():
    cal = SelectiveScaling(epochs=3, val_fraction=0.25).fit(overconfident_stream(num_batches=1, n=8))
    assert cal.validation_metrics_["pixels"] == 2 * 16 * 16
    assert len(cal.info_["history"]) == 3
    assert 1 <= cal.validation_metrics_["best_epoch"] <= 3


def test_fit_is_reproducible_with_a_seed():
    a = SelectiveScaling(epochs=2).fit(overconfident_stream(num_batches=1))
    b = SelectiveScaling(epochs=2).fit(overconfident_stream(num_batches=1))
    logits = overconfident_stream(num_batches=1, seed=3)[0][0]
    assert torch.equal(a(logits), b(logits))


@pytest.mark.parametrize("t2", [0, -1.0, float("nan"), math.inf, "large", True, None])
def test_non_positive_or_invalid_t2_raises(t2):
    with pytest.raises(ValueError, match="t2"):
        SelectiveScaling(t2=t2)


def test_bad_hyper_parameters_raise():
    with pytest.raises(ValueError, match="val_fraction"):
        SelectiveScaling(val_fraction=1.0)
    with pytest.raises(ValueError, match="wrong_weight"):
        SelectiveScaling(wrong_weight=0.0)
    with pytest.raises(ValueError, match="epochs"):
        SelectiveScaling(epochs=0)


def test_a_model_without_mistakes_or_a_single_image_raises_clearly():
    labels = torch.randint(0, C, (4, 8, 8), generator=torch.Generator().manual_seed(0))
    perfect = F.one_hot(labels, C).movedim(-1, 1).float() * 5
    with pytest.raises(ValueError, match="no wrong pixels"):
        SelectiveScaling(epochs=1).fit([(perfect, labels)])
    logits, labels = overconfident_stream(num_batches=1, n=1)[0]
    with pytest.raises(ValueError, match="at least 2 images"):
        SelectiveScaling(epochs=1).fit([(logits, labels)])
