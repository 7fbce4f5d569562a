"""K-fold cross-fitting of the local method: every fold's calibration levels from the other folds' local CDFs.

Each fold's scores of class ``c`` at pixel ``x`` get the level ``u = F^{(−j)}_{c,x}(s)`` under the CDF of the
*other* folds over the same window (:func:`cross_fit`). The windows' counts come from integral images of
bin-cumulated counts (:mod:`segcal.conformal.integral`) in one of two ways per fold and class, whichever costs
less (:data:`DENSE_CELLS_PER_ROW_BIN`):

* **dense**: block of pixels by block, the other folds' whole window CDFs ``[block, B']`` (all folds' minus the
  fold's own, four row reads each); a level is then two look-ups in them (many scores per pixel);
* **look-ups**: the other folds' integral image, and four single-value look-ups per window sum of each score
  (few scores per pixel and bin).

Both give the same integers (tested against each other and against brute force).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from segcal.conformal.integral import (
    PIECE,
    box,
    integrate_,
    ones,
    sparse_integral,
    window_at,
    window_corners,
    zeros,
)
from segcal.conformal.local import (
    LEVEL_STEPS,
    OccupiedBins,
    ceil_scaled,
    class_windows,
    quantised,
    window_cdfs,
)
from segcal.stats.score_histogram import ScoreBins, ScoreHistogram

DENSE_CELLS_PER_ROW_BIN = 1 / 4
"""A fold's levels of a class come from dense window CDFs when it holds more than this many cells (scores, or
histogram cells) per pixel and occupied bin, else from look-ups. Measured (one thread, CPU time, best of 8): on
500 CCP images (144×96, five folds), background has 0.55 scores per pixel and bin per fold and person 0.17:
dense 0.80 s, look-ups 0.94 s, chosen per class 0.77 s; on 100 + 100 synthetic images at 240×320 (0.14) look-ups
take 3.1 s against 3.8 s dense; at 0.19 (histograms) both take 1.5 s."""


class ExactFold:
    """A fold of exact scores ``[N, H, W]`` (float32) and labels (int16, ``< 0`` unlabelled), read one class at a
    time (:meth:`class_scores`), so no all-class histogram is ever held."""

    def __init__(self, scores: torch.Tensor, labels: torch.Tensor, num_classes: int, bins: ScoreBins) -> None:
        self.scores, self.labels, self.num_classes, self.bins = scores, labels, int(num_classes), bins
        self.num_images, self.shape = scores.shape[0], tuple(scores.shape[1:])
        self._pixel_major: tuple[torch.Tensor, torch.Tensor] | None = None

    def class_scores(self, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pixel index [M] int32, bin [M] int32, t [M] float64)`` of the class-``c`` scores, pixel-major (every
        image's, per pixel): each score's bin and place inside it (:meth:`ScoreBins.locate`); 16 bytes a score."""
        if self._pixel_major is None:  # [P, N] copies, made once for every class
            n = self.num_images
            self._pixel_major = (self.labels.view(n, -1).T.contiguous(), self.scores.view(n, -1).T.contiguous())
        labels, scores = self._pixel_major
        index = torch.nonzero(labels.view(-1) == c).flatten()
        located = [(k.int(), t) for k, t in map(self.bins.locate, scores.view(-1).index_select(0, index).split(PIECE))]
        bins, t = (torch.cat(x) for x in zip(*located))  # (an empty index splits into one empty piece)
        return index.div_(self.num_images, rounding_mode="floor").int(), bins, t


class _FoldClass:
    """One fold's scores of one class, read as :func:`cross_fit` needs them: which bins they occupy, the integral
    image over the occupied bins, and cells ``(pixel, compressed bin, weight, t)`` for the levels. Exact scores
    are read once (``(pixel, bin, t)``, pixel-major, kept while the class is fitted); histograms are read
    again for each use, so that their memory does not grow with the images."""

    def __init__(self, fold: ScoreHistogram | ExactFold, k: int) -> None:
        self.fold, self.k = fold, k
        self.scored = fold.class_scores(k) if isinstance(fold, ExactFold) else None

    def num_cells(self) -> int:
        """Scores, or (at most) histogram cells holding scores."""
        return self.fold.cells_used(self.k) if self.scored is None else self.scored[0].numel()

    def occupied(self) -> torch.Tensor:
        if self.scored is None:
            return self.fold.bins_used(self.k)
        return torch.bincount(self.scored[1], minlength=self.fold.bins.num_bins) > 0

    def integral(self, used: OccupiedBins, total: int, out: torch.Tensor | None) -> torch.Tensor:
        h, w = self.fold.shape
        if self.scored is None:
            out = zeros((h + 1, w + 1, used.num_occupied), total, out)
            self.fold.write_class_columns(self.k, used.occupied, out[1:, 1:])
            return integrate_(out, cumulate=True)
        pixel, bins, _ = self.scored
        return sparse_integral(pixel, used.index(bins), (h, w), used.num_occupied, total, out)

    def cells(self, used: OccupiedBins, inside: bool, pixels: slice
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]]:
        """The cells of the ``pixels`` block, in pieces of at most :data:`~segcal.conformal.integral.PIECE`:
        ``(pixel, compressed bin, weight, t)`` for every exact score (weight 1, with ``inside`` ``t`` its place
        in its bin, :meth:`ScoreBins.locate`) or every (pixel, bin) cell of a histogram (its count); ``t`` None:
        levels at the bins' upper edges."""
        if self.scored is None:
            step = max(1, PIECE // self.fold.bins.num_bins)
            for first in range(pixels.start, pixels.stop, step):
                pixel, bins, weight = self.fold.class_cells(self.k, slice(first, min(first + step, pixels.stop)))
                yield pixel, used.index(bins), weight, None
            return
        pixel, bins, t = self.scored
        lo, hi = torch.searchsorted(pixel, torch.tensor([pixels.start, pixels.stop], dtype=pixel.dtype)).tolist()
        for first in range(lo, hi, PIECE):
            part = slice(first, min(first + PIECE, hi))
            yield pixel[part], used.index(bins[part]), ones(part.stop - part.start), t[part] if inside else None


def cross_fit(folds: list[ScoreHistogram | ExactFold], min_scores: int, min_own: int = 0,
              dense: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """K-fold cross-fitted local CDFs: windows and the stored CDF from every fold, levels out of fold.

    Windows come from the scores per pixel of all folds together (labels only); the returned
    ``cdf [C, H, W, B]`` (uint16) pools every fold, for test images. Each fold's scores get their levels
    from the CDF of the *other* folds over the same windows (never their own), pooled into
    ``level_counts [C, LEVEL_STEPS + 1]``. When every fold is an :class:`ExactFold` a level is interpolated
    inside the score's bin (linear in the logit, :meth:`ScoreBins.locate`), else it is the CDF at the bin's upper
    edge. Also returns ``radius`` and ``window`` ``[C, H, W]``. ``dense``: read levels from dense window CDFs
    (``True``) or by look-ups (``False``); ``None`` chooses per fold and class (:data:`DENSE_CELLS_PER_ROW_BIN`).
    """
    c, (h, w), b = folds[0].num_classes, folds[0].shape, folds[0].bins.num_bins
    cdf = torch.empty((c, h * w, b), dtype=torch.uint16)
    radius = torch.empty((c, h, w), dtype=torch.long)
    window = torch.empty((c, h, w), dtype=torch.long)
    counts = torch.zeros((c, LEVEL_STEPS + 1), dtype=torch.long)
    limit = sum(fold.num_images for fold in folds) * h * w  # at most one score per image and pixel
    exact = all(isinstance(fold, ExactFold) for fold in folds)
    owns, whole = [None] * len(folds), None  # buffers reused from class to class
    for k in range(c):
        parts = [_FoldClass(fold, k) for fold in folds]
        used = OccupiedBins(torch.stack([part.occupied() for part in parts]).any(0))
        owns = [part.integral(used, limit, own) for part, own in zip(parts, owns)]  # this class's, per fold
        whole = zeros(owns[0].shape, limit, whole)
        for own in owns:
            whole += own
        radius[k], window[k] = class_windows(whole, min_scores, min_own)
        cells_at_most = DENSE_CELLS_PER_ROW_BIN * h * w * used.num_occupied  # beyond: dense window CDFs
        is_dense = [part.num_cells() > cells_at_most if dense is None else dense for part in parts]
        dense_folds = [(own, part) for own, part, d in zip(owns, parts, is_dense) if d]
        sparse_folds = [(own, part) for own, part, d in zip(owns, parts, is_dense) if not d]
        for start, read, cum in window_cdfs(whole, radius[k]):
            block = slice(start, start + cum.shape[0])
            cdf[k, block] = quantised(cum, used)
            for own, part in dense_folds:
                rest = read(own).neg_().add_(cum)  # [block, B']: the other folds' window counts
                for pixel, bs, weight, t in part.cells(used, exact, block):
                    counts[k].index_add_(0, _levels(*_row_look_ups(rest, pixel - start, bs, t is not None), t),
                                         weight)
        if sparse_folds:
            pixels = torch.arange(h * w)
            ys, xs, r = pixels // w, pixels % w, radius[k].view(-1)
            corners = window_corners(whole, r, ys, xs)  # per pixel, every fold's
            for own, part in sparse_folds:
                rest = torch.sub(whole, own, out=own)  # the other folds' integral image (own is spent)
                in_window = box(rest[..., -1], r, ys, xs)  # [H·W]
                for pixel, bs, weight, t in part.cells(used, exact, slice(0, h * w)):
                    mine = tuple(corner.index_select(0, pixel) for corner in corners)
                    hi_lo = _window_look_ups(rest, mine, bs, t is not None)
                    counts[k].index_add_(0, _levels(*hi_lo, in_window.index_select(0, pixel), t), weight)
        del parts
    return cdf.view(c, h, w, b), radius, window, counts


def _row_look_ups(rest: torch.Tensor, rows: torch.Tensor, bs: torch.Tensor, below: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(hi, lo, n)`` of queries in ``rows`` of the other folds' window CDFs ``rest [M, B']`` at compressed bins
    ``bs``: counts up to the bin, below it (with ``below``; 0 at the first bin) and in the window."""
    width = rest.shape[1]
    flat, at = rest.view(-1), rows * width + bs
    hi = flat.index_select(0, at)
    lo = flat.index_select(0, (at - 1).clamp_min_(0)).masked_fill_(bs == 0, 0) if below else None
    return hi, lo, flat.index_select(0, rows * width + (width - 1))


def _window_look_ups(rest: torch.Tensor, corners: tuple[torch.Tensor, ...], bs: torch.Tensor, below: bool
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(hi, lo)`` as :func:`_row_look_ups` from the other folds' integral image ``rest`` and each query's window
    ``corners`` (:func:`~segcal.conformal.integral.window_corners`)."""
    hi = window_at(rest, corners, bs)
    lo = window_at(rest, corners, (bs - 1).clamp_min(0)).masked_fill_(bs == 0, 0) if below else None
    return hi, lo


def _levels(hi: torch.Tensor, lo: torch.Tensor | None, n: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """Integer levels ``⌈LEVEL_STEPS · F_rest⌉`` (int64; ``LEVEL_STEPS`` for an empty window) from the other
    folds' counts up to the bin ``hi``, below it ``lo`` and in the window ``n``: at the bin's upper edge, or inside
    it at ``t`` when given."""
    if t is None:
        level = ceil_scaled(hi, n, hi.dtype == torch.int32).long()
    else:
        u = (lo + t * (hi - lo)) / n.clamp_min(1)
        level = torch.ceil(u * LEVEL_STEPS - 1e-9).long()
    return level.clamp_(0, LEVEL_STEPS).masked_fill_(n == 0, LEVEL_STEPS)
