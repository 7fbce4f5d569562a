"""Spiegelhalter, KS and Kuiper calibration tests: streamed, against MAPIE's in-memory statistics."""
import math

import numpy as np
import pytest
import torch

from segcal.metrics.calibration import CalibrationMetrics
from segcal.stats.calibration_tests import ks_cdf, kuiper_cdf


def _binary_image(n=4, size=48, power=1.0, seed=0):
    """Two-class probabilities with labels drawn from ``p`` (calibrated when ``power = 1``)."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(n, 1, size, size, generator=gen) * 0.98 + 0.01
    labels = (torch.rand(n, size, size, generator=gen) < p[:, 0]).long()
    q = p ** power
    return torch.cat([1 - q, q], 1), labels


def _top_label(probs, labels):
    conf, pred = probs.max(1)
    return (pred == labels).double().flatten().numpy(), conf.double().flatten().numpy()


@pytest.mark.parametrize("power", [1.0, 0.6])
def test_statistics_agree_with_mapie(power):
    calibration = pytest.importorskip("mapie.metrics.calibration")
    probs, labels = _binary_image(power=power)
    m = CalibrationMetrics(2, adaptive_resolution=2**15)
    for i in range(4):  # streamed over images
        m.update(probs[i:i + 1], labels[i:i + 1])
    tests = m.compute().tests
    y, s = _top_label(probs, labels)
    assert tests["spiegelhalter_z"] == pytest.approx(calibration.spiegelhalter_statistic(y, s), rel=1e-6)
    gap = tests["test_resolution"]
    assert abs(tests["ks"] - calibration.kolmogorov_smirnov_statistic(y, s)) <= gap + 1e-6
    assert abs(tests["kuiper"] - calibration.kuiper_statistic(y, s)) <= 2 * gap + 1e-6
    for x in (0.3, 1.0, 2.0, 3.5):
        assert ks_cdf(x) == pytest.approx(calibration.kolmogorov_smirnov_cdf(x), abs=1e-9)
        assert kuiper_cdf(x) == pytest.approx(calibration.kuiper_cdf(x), abs=1e-9)


def test_calibrated_passes_and_miscalibrated_fails():
    calibrated = CalibrationMetrics(2)
    calibrated.update(*_binary_image(seed=1))
    over = CalibrationMetrics(2)
    over.update(*_binary_image(power=0.5, seed=1))
    good, bad = calibrated.compute().tests, over.compute().tests
    assert good["spiegelhalter_p"] > 0.01 and good["ks_p"] > 0.01 and good["kuiper_p"] > 0.01
    assert bad["spiegelhalter_p"] < 1e-6 and bad["ks_p"] < 1e-6 and bad["kuiper_p"] < 1e-6
    assert abs(good["spiegelhalter_z"]) < 3 < abs(bad["spiegelhalter_z"])


def test_known_answers_and_merging():
    assert ks_cdf(0) == 0 and kuiper_cdf(-1) == 0
    assert ks_cdf(10) == pytest.approx(1.0) and kuiper_cdf(10) == pytest.approx(1.0)
    # P(max |B| ≤ x) for small x ~ (4/π) exp(−π²/(8x²))
    assert ks_cdf(0.2) == pytest.approx(4 / math.pi * math.exp(-math.pi ** 2 / (8 * 0.04)), rel=1e-6)
    probs, labels = _binary_image(seed=3)
    a, b, whole = CalibrationMetrics(2), CalibrationMetrics(2), CalibrationMetrics(2)
    a.update(probs[:2], labels[:2])
    b.update(probs[2:], labels[2:])
    whole.update(probs, labels)
    merged, single = a.merge(b).compute().tests, whole.compute().tests
    assert merged == pytest.approx(single)
    empty = CalibrationMetrics(2)
    empty.update(probs[:1], torch.full_like(labels[:1], 255))
    assert all(np.isnan(v) for v in empty.compute().tests.values())


def test_smooth_ece_agrees_with_the_reference_implementation():
    relplot = pytest.importorskip("relplot")
    probs, labels = _binary_image(power=0.7, seed=4)
    m = CalibrationMetrics(2)
    m.update(probs, labels)
    tests = m.compute().tests
    y, s = _top_label(probs, labels)
    reference, sigma = relplot.smECE(s, y, return_width=True)
    assert tests["smooth_ece_sigma"] == pytest.approx(sigma, rel=0.02)  # bins, not samples: the same bisection step
    assert tests["smooth_ece"] == pytest.approx(reference, rel=0.02, abs=1e-4)
    calibrated, over = CalibrationMetrics(2), CalibrationMetrics(2)
    calibrated.update(*_binary_image(seed=5))
    over.update(*_binary_image(power=0.4, seed=5))
    assert calibrated.compute().tests["smooth_ece"] < 0.3 * over.compute().tests["smooth_ece"]
