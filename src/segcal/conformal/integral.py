"""Integral images of per-pixel counts and the window sums read from them (the local method's machinery).

A zero-padded integral image ``I [H + 1, W + 1, ...]`` of counts ``x [H, W, ...]`` gives the sum over any
window in four look-ups: ``I[y1, x1] − I[y0, x1] − I[y1, x0] + I[y0, x0]``. With bin-cumulated counts in the
last dimension, a window's whole CDF is four row look-ups. Counts are int32 while their total fits, else
int64; look-ups use ``index_select`` (several times faster than advanced indexing on the CPU).
"""
from __future__ import annotations

import torch

PIECE = 1 << 18
"""Elements per piece of per-score work: chains of elementwise operations over pieces that stay in the cache run
about 2× faster than over millions of elements at once (and their temporaries stay bounded)."""


def count_dtype(total: int) -> torch.dtype:
    return torch.int32 if total < 2**31 else torch.int64


def zeros(shape: tuple[int, ...], total: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """A zeroed count buffer of ``shape`` (dtype from ``total``): ``out`` reused when it fits (no new pages)."""
    dtype = count_dtype(total)
    if out is None or tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        return torch.zeros(shape, dtype=dtype)
    return out.zero_()


def integral_image(x: torch.Tensor, total: int, cumulate: bool = False,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-padded 2-D integral image of integer ``x [H, W, ...]`` (summing to ``total``) →
    ``[H + 1, W + 1, ...]``, int32 when ``total`` fits, else int64; with ``cumulate`` the last dimension (bins)
    is cumulated too (see :func:`integrate_`). Written into ``out`` when it fits."""
    out = zeros((x.shape[0] + 1, x.shape[1] + 1, *x.shape[2:]), total, out)
    out[1:, 1:] = x
    return integrate_(out, cumulate)


def integrate_(out: torch.Tensor, cumulate: bool = False) -> torch.Tensor:
    """In place: the integral image of counts laid out zero-padded in ``out [H + 1, W + 1, ...]`` (row 0 and
    column 0 zero), cumulated over the last dimension first with ``cumulate``. Row and column running sums add
    whole contiguous rows: several times faster than ``cumsum`` over the leading dimensions."""
    if cumulate:
        out.cumsum_(-1)
    for i in range(2, out.shape[0]):
        out[i] += out[i - 1]
    for j in range(2, out.shape[1]):
        out[:, j] += out[:, j - 1]
    return out


def box(integral: torch.Tensor, radius: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Sums of the windows of ``radius`` around pixels ``(ys, xs)`` (clipped), from an integral image
    ``[H + 1, W + 1, ...]`` → ``[M, ...]`` in its dtype. Rows are read with ``index_select`` (several times
    faster than advanced indexing); ``(a − b) − (c − d)`` never leaves ``[0, total]``, in place."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    y0, y1 = (ys - radius).clamp_min(0) * (w + 1), (ys + radius + 1).clamp_max(h) * (w + 1)
    x0, x1 = (xs - radius).clamp_min(0), (xs + radius + 1).clamp_max(w)
    rows = integral.reshape((h + 1) * (w + 1), -1)  # a copy only for a strided slice (one bin)
    at = lambda corner: rows.index_select(0, corner)  # noqa: E731
    out = at(y1 + x1).sub_(at(y0 + x1)).sub_(at(y1 + x0).sub_(at(y0 + x0)))  # (a − b) − (c − d), in place
    return out.view(-1, *integral.shape[2:])


def ones(n: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``n`` ones as a stride-0 view (no memory), e.g. the weights of single scores."""
    return torch.ones((), dtype=dtype).expand(n)


def sparse_integral(pixel: torch.Tensor, bins: torch.Tensor, shape: tuple[int, int], num_bins: int, total: int,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """Integral image ``[H + 1, W + 1, num_bins]`` of bin-cumulated counts of single scores at (``pixel``,
    ``bins``), added straight into the zero-padded buffer (``out`` reused when it fits)."""
    h, w = shape
    out = zeros((h + 1, w + 1, num_bins), total, out)
    flat = out.view(-1)
    for p, b in zip(pixel.split(PIECE), bins.split(PIECE)):  # pixel (y, x) sits at (y + 1, x + 1)
        p = p.long()
        flat.index_add_(0, (p + p // w + (w + 2)) * num_bins + b, ones(p.numel(), out.dtype))
    return integrate_(out, cumulate=True)


def window_corners(integral: torch.Tensor, radius: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor
                   ) -> tuple[torch.Tensor, ...]:
    """Flat offsets of the four corners of each window in ``integral [H + 1, W + 1, B]`` (bin 0)."""
    h, w, b = integral.shape[0] - 1, integral.shape[1] - 1, integral.shape[2]
    y0, y1 = (ys - radius).clamp_min(0) * (w + 1), (ys + radius + 1).clamp_max(h) * (w + 1)
    x0, x1 = (xs - radius).clamp_min(0), (xs + radius + 1).clamp_max(w)
    return (y1 + x1) * b, (y0 + x1) * b, (y1 + x0) * b, (y0 + x0) * b


def window_at(integral: torch.Tensor, corners: tuple[torch.Tensor, ...], bins: torch.Tensor) -> torch.Tensor:
    """Window sums at single ``bins`` from :func:`window_corners` (one flat ``index_select`` per corner), in the
    integral's dtype."""
    flat = integral.view(-1)
    at = lambda corner: flat.index_select(0, corner + bins)  # noqa: E731
    a, b, c, d = corners
    return at(a).sub_(at(b)).sub_(at(c).sub_(at(d)))
