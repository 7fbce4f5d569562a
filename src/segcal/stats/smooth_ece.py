"""Smooth ECE (Błasiok & Nakkiran, 2023) from binned sums: kernel-smoothed residuals, bandwidth at its fixed point.

``smECE_σ = ∫ |R_σ(t)| dt / ∫ C_σ(t) dt`` with ``R_σ`` the residuals ``s_i − y_i`` and ``C_σ`` the counts, both
smoothed with a Gaussian kernel of width ``σ`` reflected at 0 and 1; ``smECE`` takes the ``σ*`` with
``smECE_σ* = σ*`` (bisection, as the authors' reference does). Samples enter as per-bin masses placed at their
bin's mean confidence (the fine logit-spaced bins of :class:`~segcal.metrics.calibration.CalibrationMetrics`), split
linearly between the two nearest points of the smoothing grid, so memory does not grow with the pixels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MESH = 200  # evaluation points, at least (more for narrow kernels)


def _on_grid(location: torch.Tensor, mass: torch.Tensor, points: int) -> torch.Tensor:
    """Masses at ``location`` in [0, 1] split linearly onto ``points`` equally spaced grid points."""
    x = location.double().clamp(0, 1) * (points - 1)
    index = x.floor().long().clamp(0, points - 2)
    frac = x - index
    grid = torch.zeros(points, dtype=torch.float64)
    grid.index_add_(0, index, (1 - frac) * mass)
    grid.index_add_(0, index + 1, frac * mass)
    return grid


def _smoothed(grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """``grid`` convolved with a Gaussian of width ``sigma`` (grid units: [0, 1]), reflected at both ends."""
    n = grid.numel()
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    kernel = torch.exp(-((t - 0.5) ** 2) / (2 * sigma * sigma))
    extended = torch.cat([grid.flip(0)[:-1], grid, grid.flip(0)[1:]])
    full = F.conv1d(extended.view(1, 1, -1), kernel.flip(0).view(1, 1, -1)).view(-1)
    return full[n // 2: n // 2 + n]


def _at(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``values`` (on ``linspace(0, 1, len)``) at ``t``."""
    n = values.numel()
    x = t * (n - 1)
    i = x.floor().long().clamp(0, n - 2)
    return values[i] * (1 - (x - i)) + values[i + 1] * (x - i)


def smooth_ece_at(location: torch.Tensor, residual: torch.Tensor, count: torch.Tensor, sigma: float) -> float:
    """``smECE_σ`` of masses ``residual`` (Σ s − y) and ``count`` located at mean confidences ``location``."""
    points = max(2000, round(20 / sigma)) // 2 + 1
    t = torch.linspace(0, 1, max(round(10 / sigma), MESH), dtype=torch.float64)
    r = _at(_smoothed(_on_grid(location, residual.double(), points), sigma), t)
    c = _at(_smoothed(_on_grid(location, count.double(), points), sigma), t)
    return float(r.abs().sum() / c.sum()) if float(c.sum()) > 0 else math.nan


def smooth_ece(location: torch.Tensor, residual: torch.Tensor, count: torch.Tensor, eps: float = 1e-3,
               steps: int = 10) -> tuple[float, float]:
    """``(smECE, σ*)``: the smooth ECE at the bandwidth where it equals the bandwidth (NaN without samples)."""
    used = count > 0
    if not bool(used.any()):
        return math.nan, math.nan
    location, residual, count = location[used], residual[used], count[used]

    def wide_enough(sigma: float) -> bool:
        return sigma < eps or sigma < smooth_ece_at(location, residual, count, sigma)

    sigma = 1.0
    if not wide_enough(sigma):
        hi, lo = 1.0, 0.0
        for _ in range(steps):
            mid = (hi + lo) / 2
            if wide_enough(mid):
                lo = mid
            else:
                hi = mid
        sigma = hi
    return smooth_ece_at(location, residual, count, sigma), sigma
