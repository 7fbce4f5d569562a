"""Calibration tests of top-label confidence: Spiegelhalter's Z and the cumulative-difference (KS, Kuiper)
statistics of Arrieta-Ibarra, Gujral, Tannen, Tygert & Xu (JMLR 2022), from streaming sums.

With confidences ``s``, correctness ``y`` (1 if the top label is right) and ``n`` samples:

* Spiegelhalter: ``Z = Σ (y − s)(1 − 2s) / √(Σ (1 − 2s)² s (1 − s))``, standard normal under perfect
  calibration (two-sided p-value here);
* cumulative differences, samples sorted by ``s``: ``D_k = Σ_{i ≤ k} (y_i − s_i) / n``, scaled by
  ``σ = √(Σ s (1 − s)) / n``: ``KS = max |D| / σ`` and ``Kuiper = (max D − min D) / σ``; under perfect
  calibration ``D/σ`` behaves like a standard Brownian motion on [0, 1], whence the p-values (the distributions
  of its largest absolute value and of its range).

The path ``D`` is known at the edges of confidence bins (the fine, logit-spaced bins of
:class:`~segcal.metrics.calibration.CalibrationMetrics`), not inside them, so KS and Kuiper are exact up to
``resolution = max_b n_b / n / σ`` (KS) and twice that (Kuiper). The tests assume independent samples: pixels of
one image are not, so read the p-values of millions of pixels as "detectable", not as error rates.
"""
from __future__ import annotations

import math

import torch


def _terms(x: float) -> int:
    """Series terms until ``exp(−(k + ½)² π² / (2x²))`` is below float64 precision."""
    return min(200_000, 60 + math.ceil(3 * x))


def ks_sf(x: float) -> float:
    """``P(max_{t ≤ 1} |B(t)| > x)`` for a standard Brownian motion ``B``: ``4 Σ_k (−1)^k Q((2k + 1)x)`` (reflection
    principle, ``Q`` the normal tail) for ``x ≥ 1``, one minus the Fourier series below."""
    if x <= 0:
        return 1.0
    if x < 1:
        total = sum((-1) ** k / (k + 0.5) * math.exp(-((k + 0.5) ** 2) * math.pi ** 2 / (2 * x * x))
                    for k in range(_terms(x)))
        return min(1.0, max(0.0, 1 - 2 / math.pi * total))
    tail = sum((-1) ** k * math.erfc((2 * k + 1) * x / math.sqrt(2)) / 2 for k in range(40))
    return min(1.0, max(0.0, 4 * tail))


def ks_cdf(x: float) -> float:
    """``P(max_{t ≤ 1} |B(t)| ≤ x)``."""
    return 1.0 - ks_sf(x)


def kuiper_cdf(x: float) -> float:
    """``P(max B − min B ≤ x)`` over ``t ∈ [0, 1]`` for a standard Brownian motion ``B``."""
    if x <= 0:
        return 0.0
    total = sum((8 / (x * x) + 2 / ((k + 0.5) ** 2 * math.pi ** 2))
                * math.exp(-2 * (k + 0.5) ** 2 * math.pi ** 2 / (x * x)) for k in range(_terms(x)))
    return min(1.0, max(0.0, total))


def calibration_tests(count: torch.Tensor, conf_sum: torch.Tensor, correct_sum: torch.Tensor,
                      spiegel_num: float, spiegel_den: float, variance: float) -> dict[str, float]:
    """The tests from per-bin sums (bins in increasing confidence, ``[B]``) and the streamed sums
    ``Σ (y − s)(1 − 2s)``, ``Σ (1 − 2s)² s (1 − s)`` and ``Σ s (1 − s)``; NaN where undefined."""
    nan = float("nan")
    n = float(count.sum())
    out = dict.fromkeys(("spiegelhalter_z", "spiegelhalter_p", "ks", "ks_p", "kuiper", "kuiper_p",
                         "test_resolution"), nan)
    if n == 0:
        return out
    if spiegel_den > 0:
        z = spiegel_num / math.sqrt(spiegel_den)
        out.update(spiegelhalter_z=z, spiegelhalter_p=math.erfc(abs(z) / math.sqrt(2)))
    sigma = math.sqrt(variance) / n
    if sigma > 0:
        path = ((correct_sum.double() - conf_sum.double()) / n).cumsum(0)[count > 0]
        ks = float(path.abs().max()) / sigma
        kuiper = float(path.max().clamp_min(0) - path.min().clamp_max(0)) / sigma
        out.update(ks=ks, ks_p=ks_sf(ks), kuiper=kuiper, kuiper_p=1 - kuiper_cdf(kuiper),
                   test_resolution=float(count.max()) / n / sigma)
    return out
