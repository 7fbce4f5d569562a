"""Locally pooled, globally conformalized scores: the tensor algorithm behind ``--method local``.

On the **fit** images, each (class ``c``, pixel ``x``) gets the smallest square window around ``x``
(radius ``r`` from :data:`RADII`, clipped at the borders) that holds at least ``min_scores`` class-``c``
scores; its **local CDF** ``F_{c,x}`` is the pooled histogram of those scores. Window sums are box sums of
integral images of the per-pixel histograms ``[C, H, W, B]``, so the cost is ``O(C·H·W·B)`` whatever the
window sizes. Windows shrink to the pixel as data grows (a pixel with ``min_scores`` scores of its own is its
own window). A class that is **rare at a pixel** (fewer than ``min_own`` scores there, from the labels alone)
pools the whole image instead: where a class is seldom seen its local scores say little, and a window of them
would keep the class in most sets (see ``LocalCalibrator.min_frequency``).

On the other (**cal**) images every score ``s`` of class ``c`` at ``x`` becomes a level
``u = F_{c,x}(s)`` (the CDF at the upper edge of the score's bin, on a :data:`LEVEL_STEPS` grid); the
threshold level ``û_c`` is the finite-sample conformal quantile of the pooled levels of class ``c``, and the
set at a test pixel holds ``c`` when ``F_{c,x}(s_c) ≤ û_c``. Because ``F`` comes from other images than the
levels, the test level is exchangeable with the calibration levels: class-conditional coverage
``≥ 1 − α`` as for imagewise calibration, with the local shape of the score distribution. With K-fold
cross-fitting (the default) every fold's levels come from the other folds' CDFs
(:mod:`segcal.conformal.local_crossfit`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from segcal.conformal.integral import (
    box,
    integral_image,
)
from segcal.conformal.quantile import conformal_rank
from segcal.stats.score_histogram import ScoreBins, ScoreHistogram

LEVEL_STEPS = 65535
"""Local CDF values are stored as integers ``0…LEVEL_STEPS`` (uint16), rounded up."""

_CHUNK = 16384  # pixels per block when summing windows (bounds temporary memory: 32 MiB at 256 bins)

RADII = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512,
         640, 768, 1024, 1536, 2048, 4096)
"""Window radii tried, smallest first (side ``2r + 1``); the last one that fits covers the whole image."""


def window_radii(counts: torch.Tensor, min_scores: int, min_own: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest radius per pixel whose window holds ``≥ min_scores`` scores, and that window's count.

    ``counts [H, W]`` scores per pixel (one class) → ``(radius [H, W] int64, window count [H, W] int64)``.
    Pixels whose whole image holds fewer keep the whole image (radius ``max(H, W)``); pixels holding fewer than
    ``min_own`` scores of their own (the class is rare there) pool the whole image too, marked by the radius
    ``max(H, W) + 1`` (:func:`rare_pixels`).
    """
    h, w = counts.shape
    cumulative = integral_image(counts, int(counts.sum()))
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    biggest = max(h, w)
    rare = counts < min_own
    radius = torch.where(rare, biggest + 1, -1).long()
    window = torch.where(rare, int(counts.sum()), 0).long()
    for r in [r for r in RADII if r < biggest] + [biggest]:
        todo = radius < 0
        if not bool(todo.any()):
            break
        n = box(cumulative, torch.tensor(r), ys[todo], xs[todo])
        done = (n >= min_scores) | (r == biggest)
        idx = torch.nonzero(todo.flatten()).flatten()[done]
        radius.view(-1)[idx], window.view(-1)[idx] = r, n[done].long()
    return radius, window


def rare_pixels(radius: torch.Tensor) -> torch.Tensor:
    """Pixels per class that pool the whole image because the class is rare there: ``[C, H, W]`` → ``[C]``."""
    return (radius > max(radius.shape[-2:])).flatten(1).sum(1)


def _ceil_levels(cum: torch.Tensor) -> torch.Tensor:
    """``⌈LEVEL_STEPS · cum / total⌉`` (int32, exact) per row of cumulative counts ``[P, B]``; rows without a
    score get ``LEVEL_STEPS`` everywhere.

    For int32 counts (totals below 2³¹) float64 is exact and several times faster than int64 division: the
    product is within 1.5e-11 of ``v = L·cum/total``, and a non-integer ``v`` is at least ``1/total > 4.6e-10``
    above the integer below it, so ``⌈v̂ − 1e-10⌉ = ⌈v⌉``."""
    total = cum[:, -1:]
    return ceil_scaled(cum, total, cum.dtype == torch.int32).to(torch.int32).masked_fill_(total == 0, LEVEL_STEPS)


def ceil_scaled(num: torch.Tensor, den: torch.Tensor, small: bool) -> torch.Tensor:
    """``⌈LEVEL_STEPS · num / den⌉`` for integers ``0 ≤ num ≤ den`` (``den = 0`` counts as 1), exactly: in float64
    when every ``den < 2³¹`` (``small``, see :func:`_ceil_levels`), else by int64 division. Float64 or int64."""
    if small:
        return torch.ceil(num.double() * (LEVEL_STEPS / den.clamp_min(1).double()) - 1e-10)
    return (num.long() * LEVEL_STEPS + den - 1).div_(den.clamp_min(1), rounding_mode="floor")


def class_windows(whole: torch.Tensor, min_scores: int, min_own: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One class's window radius and count ``[H, W]`` from the integral image ``whole [H + 1, W + 1, B']`` of its
    bin-cumulated counts (:func:`window_radii` on the scores per pixel, its last bin)."""
    h, w = whole.shape[0] - 1, whole.shape[1] - 1
    pixels = torch.arange(h * w)
    per_pixel = box(whole[..., -1], torch.tensor(0), pixels // w, pixels % w).view(h, w)
    return window_radii(per_pixel, min_scores, min_own)


def window_cdfs(whole: torch.Tensor, radius: torch.Tensor
                 ) -> Iterator[tuple[int, Callable[[torch.Tensor], torch.Tensor], torch.Tensor]]:
    """The pixels in blocks of at most :data:`_CHUNK` (bounded temporary memory): ``(first pixel, read, cum)``
    with ``read(integral) → [block, B']`` the block's window sums of any integral image over the same windows
    (``radius [H, W]``) and ``cum = read(whole)``."""
    w = whole.shape[1] - 1
    pixels = torch.arange(radius.numel())
    for start in range(0, pixels.numel(), _CHUNK):
        chunk = pixels[start:start + _CHUNK]
        r, ys, xs = radius.view(-1)[chunk], chunk // w, chunk % w
        read = lambda integral, r=r, ys=ys, xs=xs: box(integral, r, ys, xs)  # noqa: E731
        yield start, read, read(whole)


def quantised(cum: torch.Tensor, bins: OccupiedBins) -> torch.Tensor:
    """Stored local CDF rows ``[M, B]`` uint16 of window counts ``cum [M, B']`` over the occupied ``bins``
    (all ``LEVEL_STEPS`` for an empty window)."""
    below = torch.where(cum[:, -1:] == 0, LEVEL_STEPS, 0).to(torch.uint16)  # the level before any score
    return bins.expand(_ceil_levels(cum).to(torch.uint16), below)


def _class_cdf(whole: torch.Tensor, min_scores: int, min_own: int, bins: OccupiedBins
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One class's windows and local CDFs from the integral image ``whole [H + 1, W + 1, B']`` of its
    bin-cumulated counts over the occupied ``bins``: ``(cdf [H, W, B] uint16, radius [H, W], window [H, W])``
    (see :func:`local_cdfs`)."""
    h, w = whole.shape[0] - 1, whole.shape[1] - 1
    radius, window = class_windows(whole, min_scores, min_own)
    flat = torch.empty((h * w, bins.num_bins), dtype=torch.uint16)
    for start, _, cum in window_cdfs(whole, radius):
        flat[start:start + cum.shape[0]] = quantised(cum, bins)
    return flat.view(h, w, bins.num_bins), radius, window


class OccupiedBins:
    """The score bins holding at least one score of a class (in any fold): integral images keep only those
    (``B'`` of the ``B`` bins), and a cumulated count at an empty bin is the one at the occupied bin before it.

    ``index(bins)``: compressed index of occupied bins; ``expand(values [M, B'], first [M, 1])`` → ``[M, B]``: at
    every bin the value of the last occupied bin up to it (``first`` before the first occupied one)."""

    def __init__(self, occupied: torch.Tensor) -> None:
        self.occupied = occupied.clone()  # [B] bool
        if not bool(self.occupied.any()):
            self.occupied[-1] = True  # a class without scores keeps one (all-zero) column
        self.num_bins, self.num_occupied = self.occupied.numel(), int(self.occupied.sum())
        self.upto = self.occupied.long().cumsum(0)  # [B]: occupied bins ≤ b (column of [0 | cum] to read)

    def index(self, bins: torch.Tensor) -> torch.Tensor:
        """Compressed index of occupied ``bins``."""
        return self.upto.index_select(0, bins) - 1

    def expand(self, values: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        return torch.cat([first, values], 1).index_select(1, self.upto)


def local_cdfs(fit: ScoreHistogram, min_scores: int, min_own: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantised local CDFs of the fit histograms ``[C, H, W, B]`` (windows: :func:`window_radii`).

    Returns ``cdf [C, H, W, B]`` uint16 (``⌈LEVEL_STEPS · F_{c,x}(upper edge of bin b)⌉``; all
    ``LEVEL_STEPS`` where the window holds no score), ``radius [C, H, W]`` and ``window [C, H, W]`` (scores in
    each window).
    """
    c, (h, w), b = fit.num_classes, fit.shape, fit.bins.num_bins
    cdf = torch.empty((c, h, w, b), dtype=torch.uint16)
    radius = torch.empty((c, h, w), dtype=torch.long)
    window = torch.empty((c, h, w), dtype=torch.long)
    for k in range(c):  # one class at a time bounds the memory to one [H + 1, W + 1, B] integral image
        counts = fit.class_counts(k)  # [H·W, B]
        used = OccupiedBins(counts.any(0))
        whole = integral_image(counts[:, used.occupied].view(h, w, -1), int(counts.sum()), cumulate=True)
        cdf[k], radius[k], window[k] = _class_cdf(whole, min_scores, min_own, used)
    return cdf, radius, window


def level_counts(cdf: torch.Tensor, cal: ScoreHistogram) -> torch.Tensor:
    """Histogram of the calibration levels ``u = F_{c,x}(s)`` per class: ``[C, LEVEL_STEPS + 1]`` int64."""
    c = cal.num_classes
    levels = cdf.view(c, -1)  # [C, H·W·B] uint16
    out = torch.zeros((c, LEVEL_STEPS + 1), dtype=torch.long)
    for k in range(c):
        weights = cal.class_counts(k).view(-1)
        used = torch.nonzero(weights).flatten()  # calibration (pixel, bin) cells holding scores
        out[k].index_add_(0, levels[k][used].to(torch.int64), weights[used].to(torch.int64))
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


def local_thresholds(cdf: torch.Tensor, u_hat: torch.Tensor, bins: ScoreBins, interpolate: bool = False
                     ) -> torch.Tensor:
    """Score thresholds ``[A, C, H, W]`` for levels ``u_hat [A, C]``: the largest score whose local level is
    ``≤ û_c``. Levels are the CDF at bin upper edges (the threshold is a bin edge) or, with ``interpolate``,
    linear in the logit inside a bin (as :meth:`ScoreBins.locate`). ``1`` where every bin qualifies (trivial), ``0``
    where none does."""
    c, h, w, b = cdf.shape
    a = u_hat.shape[0]
    edges, logit = bins.edges.double(), bins.edge_logits  # logits ±inf at the outer edges, never used there
    out = torch.empty((a, c, h, w))
    for k in range(c):
        rows = cdf[k].reshape(-1, b).to(torch.int32)
        wanted = u_hat[:, k].to(torch.int32).view(1, a).expand(rows.shape[0], a).contiguous()
        first = torch.searchsorted(rows, wanted, right=True)  # [H·W, A]: first bin whose level exceeds û
        edge = edges[first.clamp(0, b)]  # its lower edge; 1 when no bin exceeds û
        if interpolate:
            inner = (first > 0) & (first < b - 1)
            i = first.clamp(1, b - 2)
            f_hi = rows.gather(1, i).double()
            f_lo = rows.gather(1, i - 1).double()
            t = ((wanted.double() - f_lo) / (f_hi - f_lo).clamp_min(1e-12)).clamp(0, 1)
            inside = torch.sigmoid(logit[i] + t * (logit[i + 1] - logit[i]))
            edge = torch.where(inner, inside, edge)
        out[:, k] = edge.float().T.reshape(a, h, w)
    return out
