"""The short path for users with their own model: metrics, recalibration, conformal sets."""
import torch

from segcal import (
    CalibrationMetrics,
    KandinskyCalibrator,
    MarginController,
    RiskController,
    TemperatureScaling,
    evaluate_coverage,
)


def test_five_line_api_on_synthetic_logits():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 2, 16, 16, generator=g) * 3, torch.randint(0, 2, (4, 16, 16), generator=g))
               for _ in range(6)]
    m = CalibrationMetrics(num_classes=2, kind="logits")
    for logits, labels in batches:
        m.update(logits, labels)
    assert 0.0 <= m.compute().summary()["ece"] <= 1.0
    ts = TemperatureScaling().fit(batches)
    assert ts(batches[0][0]).argmax(1).equal(batches[0][0].argmax(1))
    cp = KandinskyCalibrator(grouping="kmeans", num_classes=2, num_groups=2).fit(batches[:4])
    sets = cp.predict_set(batches[4][0], alpha=0.1)
    assert sets.shape == (4, 2, 16, 16) and sets.dtype == torch.bool
    assert 0.0 <= evaluate_coverage(cp, batches[4:], min_test_labels=2).mean_ce <= 1.0


def test_mask_level_guarantees_in_a_few_lines():
    g = torch.Generator().manual_seed(1)
    labels = torch.zeros(40, 16, 16, dtype=torch.long)
    labels[:, 4:12, 4:12] = 1
    logits = torch.randn(40, 2, 16, 16, generator=g) + 2 * torch.nn.functional.one_hot(labels).permute(0, 3, 1, 2)
    batches = list(zip(logits.split(8), labels.split(8)))
    rc = RiskController(loss="fnr", alpha=0.1).fit(batches)
    assert rc.predict(logits[:2]).shape == (2, 16, 16) and 0 < rc.threshold() < 1
    mc = MarginController(inner=True, alpha=0.2).fit(batches)
    masks = mc.predict(logits[:2])
    assert (masks.outer >= masks.pred).all() and (masks.inner <= masks.pred).all()
