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


def _integral(x: torch.Tensor, total: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-padded 2-D integral image of integer ``x [H, W, ...]`` (summing to ``total``) →
    ``[H + 1, W + 1, ...]``, int32 when ``total`` fits, else int64 (written into ``out`` when given, a buffer of
    that shape and dtype). Row and column running sums add whole contiguous rows: several times faster than
    ``cumsum`` over the leading dimensions."""
    dtype = torch.int32 if total < 2**31 else torch.int64
    shape = (x.shape[0] + 1, x.shape[1] + 1, *x.shape[2:])
    if out is None or out.shape != shape or out.dtype != dtype:
        out = torch.empty(shape, dtype=dtype)
    out[0].zero_()
    out[:, 0].zero_()
    out[1:, 1:] = x.to(dtype)
    for i in range(2, out.shape[0]):
        out[i] += out[i - 1]
    for j in range(2, out.shape[1]):
        out[:, j] += out[:, j - 1]
    return out


def _box(integral: torch.Tensor, radius: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Sums of the windows of ``radius`` around pixels ``(ys, xs)`` (clipped), from an integral image."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    y0, y1 = (ys - radius).clamp_min(0), (ys + radius + 1).clamp_max(h)
    x0, x1 = (xs - radius).clamp_min(0), (xs + radius + 1).clamp_max(w)
    return integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]


def window_radii(counts: torch.Tensor, min_scores: int, min_own: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest radius per pixel whose window holds ``≥ min_scores`` scores, and that window's count.

    ``counts [H, W]`` scores per pixel (one class) → ``(radius [H, W] int64, window count [H, W] int64)``.
    Pixels whose whole image holds fewer keep the whole image (radius ``max(H, W)``); pixels holding fewer than
    ``min_own`` scores of their own (the class is rare there) pool the whole image too, marked by the radius
    ``max(H, W) + 1`` (:func:`rare_pixels`).
    """
    h, w = counts.shape
    integral = _integral(counts, int(counts.sum()))
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    biggest = max(h, w)
    rare = counts < min_own
    radius = torch.where(rare, biggest + 1, -1).long()
    window = torch.where(rare, int(counts.sum()), 0).long()
    for r in [r for r in RADII if r < biggest] + [biggest]:
        todo = radius < 0
        if not bool(todo.any()):
            break
        n = _box(integral, torch.tensor(r), ys[todo], xs[todo])
        done = (n >= min_scores) | (r == biggest)
        idx = torch.nonzero(todo.flatten()).flatten()[done]
        radius.view(-1)[idx], window.view(-1)[idx] = r, n[done].long()
    return radius, window


def rare_pixels(radius: torch.Tensor) -> torch.Tensor:
    """Pixels per class that pool the whole image because the class is rare there: ``[C, H, W]`` → ``[C]``."""
    return (radius > max(radius.shape[-2:])).flatten(1).sum(1)


def _ceil_levels(cum: torch.Tensor) -> torch.Tensor:
    """``⌈LEVEL_STEPS · cum / total⌉`` per row of cumulative counts ``[P, B]`` (exact integer ceil); rows without
    a score get ``LEVEL_STEPS`` everywhere."""
    total = cum[:, -1:]
    level = (cum * LEVEL_STEPS + total - 1).div_(total.clamp_min(1), rounding_mode="floor")
    return level.masked_fill_(total == 0, LEVEL_STEPS)


def _class_cdf(whole: torch.Tensor, min_scores: int, min_own: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One class's windows and local CDFs from the integral image ``whole [H + 1, W + 1, B]`` of its
    bin-cumulated counts: ``(cdf [H, W, B] uint16, radius [H, W], window [H, W])`` (see :func:`local_cdfs`)."""
    h, w, b = whole.shape[0] - 1, whole.shape[1] - 1, whole.shape[2]
    pixels = torch.arange(h * w)
    per_pixel = _box(whole[..., -1], torch.tensor(0), pixels // w, pixels % w).view(h, w)
    radius, window = window_radii(per_pixel, min_scores, min_own)
    flat = torch.empty((h * w, b), dtype=torch.int32)
    for chunk in pixels.split(_CHUNK):  # blocks of pixels bound the temporary memory
        cum = _box(whole, radius.view(-1)[chunk], chunk // w, chunk % w).long()
        flat[chunk] = _ceil_levels(cum).to(torch.int32)
    return flat.view(h, w, b).to(torch.uint16), radius, window


class ExactFold:
    """A fold of exact scores ``[N, H, W]`` (float32) and labels (int16, ``< 0`` unlabelled) read as per-pixel
    histograms one class at a time (:meth:`class_counts`), so no all-class histogram is ever held."""

    def __init__(self, scores: torch.Tensor, labels: torch.Tensor, num_classes: int, bins: ScoreBins) -> None:
        self.scores, self.labels, self.num_classes, self.bins = scores, labels, int(num_classes), bins
        self.num_images, self.shape = scores.shape[0], tuple(scores.shape[1:])

    def class_scores(self, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pixel index [M], score [M], bin [M])`` of the class-``c`` scores, pixel-major (every image's, per
        pixel)."""
        mine = (self.labels == c).view(self.num_images, -1).T  # [P, N]: pixel-major order
        pixel = torch.arange(mine.shape[0]).view(-1, 1).expand_as(mine)[mine]
        s = self.scores.view(self.num_images, -1).T[mine]
        return pixel, s, self.bins.index(s)

    def class_counts(self, c: int, scored: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """Per-pixel histogram of class ``c``: ``[H·W, B]`` int32 (from :meth:`class_scores` when given)."""
        pixel, _, bins = scored or self.class_scores(c)
        b = self.bins.num_bins
        flat = torch.zeros(self.scores[0].numel() * b, dtype=torch.int32)
        flat.scatter_add_(0, pixel * b + bins, torch.ones(pixel.numel(), dtype=torch.int32))
        return flat.view(-1, b)


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
        cum = fit.class_counts(k).view(h, w, b).cumsum(-1, dtype=torch.int32)
        whole = _integral(cum, int(cum[..., -1].sum()))
        cdf[k], radius[k], window[k] = _class_cdf(whole, min_scores, min_own)
    return cdf, radius, window


def cross_fit(folds: list[ScoreHistogram | ExactFold], min_scores: int, min_own: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """K-fold cross-fitted local CDFs: windows and the stored CDF from every fold, levels out of fold.

    Windows come from the scores per pixel of all folds together (labels only); the returned
    ``cdf [C, H, W, B]`` (uint16) pools every fold, for test images. Each fold's scores get their levels
    from the CDF of the *other* folds over the same windows (never their own), pooled into
    ``level_counts [C, LEVEL_STEPS + 1]``. When every fold is an :class:`ExactFold` a level is interpolated
    inside the score's bin (linear in the logit, :func:`within_bin`), else it is the CDF at the bin's upper
    edge. Also returns ``radius`` and ``window`` ``[C, H, W]``. Integral images of
    bin-cumulated counts make every out-of-fold level a handful of look-ups.
    """
    c, (h, w), b = folds[0].num_classes, folds[0].shape, folds[0].bins.num_bins
    cdf = torch.empty((c, h, w, b), dtype=torch.uint16)
    radius = torch.empty((c, h, w), dtype=torch.long)
    window = torch.empty((c, h, w), dtype=torch.long)
    counts = torch.zeros((c, LEVEL_STEPS + 1), dtype=torch.long)
    limit = sum(fold.num_images for fold in folds) * h * w  # at most one score per image and pixel
    pixels = torch.arange(h * w)
    exact = all(isinstance(fold, ExactFold) for fold in folds)
    for k in range(c):
        scored = [fold.class_scores(k) for fold in folds] if exact else [None] * len(folds)
        owns = [_integral((fold.class_counts(k, got) if exact else fold.class_counts(k)).view(h, w, b)
                          .cumsum(-1, dtype=torch.int32), limit)
                for fold, got in zip(folds, scored)]  # this class's integral image per fold
        whole = owns[0].clone()
        for own in owns[1:]:
            whole += own
        cdf[k], radius[k], window[k] = _class_cdf(whole, min_scores, min_own)
        for j, fold in enumerate(folds):
            if not exact:  # every (pixel, bin) cell holding scores, weighted by its count
                part = fold.class_counts(k).view(h, w, b)
                ys, xs, bs = torch.nonzero(part, as_tuple=True)
                weight, t = part[ys, xs, bs].long(), None
            else:  # every score, placed inside its bin
                pixel, s, bs = scored[j]  # pixel-major: look-ups walk the integral image once
                ys, xs = pixel // w, pixel % w
                weight, t = torch.ones_like(ys), within_bin(s, bs, fold.bins)
            if ys.numel() == 0:
                continue
            rest = torch.sub(whole, owns[j], out=owns[j])  # integral image of the other folds (owns[j] is spent)
            n = _box(rest[..., -1], radius[k].view(-1), pixels // w, pixels % w).view(h, w)[ys, xs]
            level = _out_of_fold_levels(rest, n, radius[k][ys, xs], ys, xs, bs, t)
            counts[k].index_add_(0, level, weight)
        del owns, whole, scored
    return cdf, radius, window, counts


def within_bin(scores: torch.Tensor, index: torch.Tensor, bins: ScoreBins) -> torch.Tensor:
    """Position ``t ∈ [0, 1]`` (float64) of ``scores`` inside their bins ``index``, linear in the logit; ``1`` in
    the first and last bins (whose outer edges 0 and 1 have no finite logit)."""
    edges = bins.edges.double()
    lo, hi = edges[index], edges[index + 1]
    logit = lambda p: torch.log(p) - torch.log1p(-p)  # noqa: E731
    inner = (index > 0) & (index < bins.num_bins - 1)
    safe = lambda p: torch.where(inner, p, torch.full_like(p, 0.5))  # noqa: E731
    t = (logit(safe(scores.double())) - logit(safe(lo))) / (logit(safe(hi)) - logit(safe(lo)))
    return torch.where(inner, t.clamp(0, 1), torch.ones_like(t))


def _corners(integral: torch.Tensor, radius: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor
             ) -> tuple[torch.Tensor, ...]:
    """Flat offsets of the four corners of each window in ``integral [H + 1, W + 1, B]`` (bin 0)."""
    h, w, b = integral.shape[0] - 1, integral.shape[1] - 1, integral.shape[2]
    y0, y1 = (ys - radius).clamp_min(0) * (w + 1), (ys + radius + 1).clamp_max(h) * (w + 1)
    x0, x1 = (xs - radius).clamp_min(0), (xs + radius + 1).clamp_max(w)
    return (y1 + x1) * b, (y0 + x1) * b, (y1 + x0) * b, (y0 + x0) * b


def _window_at(integral: torch.Tensor, corners: tuple[torch.Tensor, ...], bins: torch.Tensor) -> torch.Tensor:
    """Window sums at single ``bins`` from :func:`_corners` (one flat gather per corner) → int64."""
    flat = integral.view(-1)
    a, b, c, d = (flat[corner + bins] for corner in corners)
    return a.long() - b - c + d


def _out_of_fold_levels(rest: torch.Tensor, n: torch.Tensor, radius: torch.Tensor, ys: torch.Tensor,
                        xs: torch.Tensor, bs: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """Integer levels ``⌈LEVEL_STEPS · F_rest⌉`` (``LEVEL_STEPS`` for an empty window) of queries at pixels
    ``(ys, xs)`` and bins ``bs``: ``rest`` the integral image of the other folds' bin-cumulated counts, ``n``
    their scores in each query's window; inside the bin at ``t`` when given."""
    corners = _corners(rest, radius, ys, xs)
    hi = _window_at(rest, corners, bs)
    if t is None:
        level = (hi * LEVEL_STEPS + n - 1).div_(n.clamp_min(1), rounding_mode="floor")
    else:
        lo = _window_at(rest, corners, (bs - 1).clamp_min(0)).masked_fill_(bs == 0, 0)
        u = (lo + t * (hi - lo)) / n.clamp_min(1)
        level = torch.ceil(u * LEVEL_STEPS - 1e-9).long()
    return level.clamp_(0, LEVEL_STEPS).masked_fill_(n == 0, LEVEL_STEPS)


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
    linear in the logit inside a bin (as :func:`within_bin`). ``1`` where every bin qualifies (trivial), ``0``
    where none does."""
    c, h, w, b = cdf.shape
    a = u_hat.shape[0]
    edges = bins.edges.double()
    logit = torch.log(edges) - torch.log1p(-edges)  # ±inf at the outer edges, never used there
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
