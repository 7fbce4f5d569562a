"""Locally pooled, globally conformalized scores: the tensor algorithm behind ``--method local``.

On the **fit** images, each (class ``c``, pixel ``x``) gets the smallest square window around ``x``
(radius ``r`` from :data:`RADII`, clipped at the borders) that holds at least ``min_scores`` class-``c``
scores; its **local CDF** ``F_{c,x}`` is the pooled histogram of those scores. Window sums are box sums of
integral images of the per-pixel histograms ``[C, H, W, B]``, so the cost is ``O(C·H·W·B)`` whatever the
window sizes. Windows shrink to the pixel as data grows (a pixel with ``min_scores`` scores of its own is its
own window).

On the other (**cal**) images every score ``s`` of class ``c`` at ``x`` becomes a level
``u = F_{c,x}(s)`` (the CDF at the upper edge of the score's bin, on a :data:`LEVEL_STEPS` grid); the
threshold level ``û_c`` is the finite-sample conformal quantile of the pooled levels of class ``c``, and the
set at a test pixel holds ``c`` when ``F_{c,x}(s_c) ≤ û_c``. Because ``F`` comes from other images than the
levels, the test level is exchangeable with the calibration levels: class-conditional coverage
``≥ 1 − α`` as for imagewise calibration, with the local shape of the score distribution.
"""
from __future__ import annotations

import torch

from segcal.conformal.quantile import conformal_rank
from segcal.stats.score_histogram import ScoreBins, ScoreHistogram

LEVEL_STEPS = 65535
"""Local CDF values are stored as integers ``0…LEVEL_STEPS`` (uint16), rounded up."""

_CHUNK = 4096  # pixels per block when summing windows (bounds temporary memory)

RADII = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512,
         640, 768, 1024, 1536, 2048, 4096)
"""Window radii tried, smallest first (side ``2r + 1``); the last one that fits covers the whole image."""


def _integral(x: torch.Tensor) -> torch.Tensor:
    """Zero-padded 2-D integral image of ``x [H, W, ...]`` → ``[H + 1, W + 1, ...]`` (int64)."""
    s = x.long().cumsum(0).cumsum(1)
    return torch.nn.functional.pad(s, (0, 0) * (x.ndim - 2) + (1, 0, 1, 0))


def _box(integral: torch.Tensor, radius: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Sums of the windows of ``radius`` around pixels ``(ys, xs)`` (clipped), from an integral image."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    y0, y1 = (ys - radius).clamp_min(0), (ys + radius + 1).clamp_max(h)
    x0, x1 = (xs - radius).clamp_min(0), (xs + radius + 1).clamp_max(w)
    return integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]


def window_radii(counts: torch.Tensor, min_scores: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest radius per pixel whose window holds ``≥ min_scores`` scores, and that window's count.

    ``counts [H, W]`` scores per pixel (one class) → ``(radius [H, W] int64, window count [H, W] int64)``.
    Pixels whose whole image holds fewer keep the whole image (the largest radius needed).
    """
    h, w = counts.shape
    integral = _integral(counts)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    radius = torch.full((h, w), -1, dtype=torch.long)
    window = torch.zeros((h, w), dtype=torch.long)
    biggest = max(h, w)
    for r in [r for r in RADII if r < biggest] + [biggest]:
        todo = radius < 0
        if not bool(todo.any()):
            break
        n = _box(integral, torch.tensor(r), ys[todo], xs[todo])
        done = (n >= min_scores) | (r == biggest)
        idx = torch.nonzero(todo.flatten()).flatten()[done]
        radius.view(-1)[idx], window.view(-1)[idx] = r, n[done]
    return radius, window


def local_cdfs(fit: ScoreHistogram, min_scores: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantised local CDFs of the fit histograms ``[C, H, W, B]``.

    Returns ``cdf [C, H, W, B]`` uint16 (``⌈LEVEL_STEPS · F_{c,x}(upper edge of bin b)⌉``; all
    ``LEVEL_STEPS`` where the window holds no score), ``radius [C, H, W]`` and ``window [C, H, W]`` (scores in
    each window).
    """
    c, (h, w), b = fit.num_classes, fit.shape, fit.bins.num_bins
    counts = fit.counts.view(c, h, w, b)
    cdf = torch.empty((c, h, w, b), dtype=torch.uint16)
    radius = torch.empty((c, h, w), dtype=torch.long)
    window = torch.empty((c, h, w), dtype=torch.long)
    pixels = torch.arange(h * w)
    for k in range(c):  # one class at a time bounds the memory to one [H + 1, W + 1, B] integral image
        radius[k], window[k] = window_radii(counts[k].sum(-1), min_scores)
        integral = _integral(counts[k])
        flat_cdf, flat_radius = torch.empty((h * w, b), dtype=torch.int32), radius[k].view(-1)
        for chunk in pixels.split(_CHUNK):
            hist = _box(integral, flat_radius[chunk], chunk // w, chunk % w)  # [chunk, B]
            cum = hist.cumsum(-1).double()
            total = cum[:, -1:]
            level = torch.ceil(cum * LEVEL_STEPS / total.clamp_min(1) - 1e-9)
            level = torch.where(total > 0, level, torch.full_like(level, LEVEL_STEPS))
            flat_cdf[chunk] = level.clamp(0, LEVEL_STEPS).to(torch.int32)
        cdf[k] = flat_cdf.view(h, w, b).to(torch.uint16)
        del integral, flat_cdf
    return cdf, radius, window


def level_counts(cdf: torch.Tensor, cal: ScoreHistogram) -> torch.Tensor:
    """Histogram of the calibration levels ``u = F_{c,x}(s)`` per class: ``[C, LEVEL_STEPS + 1]`` int64."""
    c = cal.num_classes
    levels = cdf.view(c, -1).to(torch.int64)  # [C, H·W·B]
    weights = cal.counts.view(c, -1)
    out = torch.zeros((c, LEVEL_STEPS + 1), dtype=torch.long)
    for k in range(c):
        used = weights[k] > 0
        out[k] = torch.bincount(levels[k][used], weights=weights[k][used].double(),
                                minlength=LEVEL_STEPS + 1).round().long()
    return out


def level_quantiles(counts: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Conformal quantile ``û [A, C]`` (integer level) of the level histograms ``[C, L]`` at ``levels [A]``.

    ``û = L`` (every level: the trivial set) where the rank exceeds the count, ``−1`` (nothing) at rank 0.
    """
    n = counts.sum(1)  # [C]
    k = conformal_rank(n, levels)  # [A, C]
    cum = counts.cumsum(1)  # [C, L]
    idx = torch.searchsorted(cum, k.T.contiguous().clamp_min(1))  # [C, A]: first level reaching rank k
    top = counts.shape[1]
    u = torch.where(k.T > n.unsqueeze(1), torch.full_like(idx, top), idx)
    return torch.where(k.T <= 0, torch.full_like(u, -1), u).T


def local_thresholds(cdf: torch.Tensor, u_hat: torch.Tensor, bins: ScoreBins) -> torch.Tensor:
    """Score thresholds ``[A, C, H, W]``: the upper edge of the last bin whose local CDF is ``≤ û_c``
    (``u_hat [A, C]``); ``1`` where every bin is (trivial), ``0`` where none is."""
    c, h, w, b = cdf.shape
    a = u_hat.shape[0]
    out = torch.empty((a, c, h, w))
    for k in range(c):
        rows = cdf[k].reshape(-1, b).to(torch.int32)
        wanted = u_hat[:, k].to(torch.int32).view(1, a).expand(rows.shape[0], a).contiguous()
        last = torch.searchsorted(rows, wanted, right=True) - 1  # [H·W, A]: last bin with cdf ≤ û
        edge = bins.edges[(last + 1).clamp(0, b)]
        edge = torch.where(last < 0, torch.zeros_like(edge), edge)
        out[:, k] = edge.T.reshape(a, h, w)
    return out
