"""Binary dilation and erosion of masks by a structuring element, as tensor ops (2D or 3D, CPU or GPU).

``dilate(mask, r, "square")`` equals ``r`` iterations of :func:`scipy.ndimage.binary_dilation` with the full
3×3 (3×3×3) structure, ``"cross"`` with the 4- (6-) neighbour structure, and ``"disk"`` one dilation by the
ball ``{x : |x| ≤ r}``. All three are thresholds of one exact distance map::

    dilate(mask, r) = {x : d(x, mask) ≤ r}          d: chessboard (square), city-block (cross), Euclidean (disk)
    erode(mask, r)  = {x : d(x, ~mask ∪ outside) > r}

so the number of dilations a pixel needs is read off once (:func:`distance_to`) instead of dilating again for
every radius. Erosion treats pixels outside the image as background (scipy's ``border_value=0``).

The distance is separable: along the first spatial axis, the 1-D distance to the nearest mask pixel of the line
(cumulative maxima of indices); along each further axis a min-plus transform ``min_j combine(|i − j|, g_j)``
computed in chunks of lines, ``O(numel · L)`` time and bounded memory.
"""
from __future__ import annotations

import torch

STRUCTURES = ("square", "cross", "disk")
"""Structuring elements: chessboard, city-block and Euclidean distance."""

_CHUNK_ELEMENTS = 1 << 23  # pairwise distances per min-plus chunk (32 MiB in float32)


def check_structure(structure: str) -> str:
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(STRUCTURES)}; got {structure!r}")
    return structure


def _check(mask: torch.Tensor, spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if mask.ndim < spatial_dims:
        raise ValueError(f"mask must have at least {spatial_dims} dims [..., spatial], got {tuple(mask.shape)}")


def _line_distance(mask: torch.Tensor) -> torch.Tensor:
    """Distance along the last axis to the nearest True of the line (``inf`` if the line has none)."""
    n = mask.shape[-1]
    index = torch.arange(n, device=mask.device, dtype=torch.float32).expand(mask.shape)
    inf = torch.tensor(float("inf"), device=mask.device)
    left = torch.where(mask, index, -inf).cummax(-1).values  # last True at or before i
    right = torch.where(mask, index, inf).flip(-1).cummin(-1).values.flip(-1)  # first True at or after i
    return torch.minimum(index - left, right - index)


def _min_plus(g: torch.Tensor, structure: str, reach: int | None = None) -> torch.Tensor:
    """``out_i = min_j combine(|i − j|, g_j)`` along the last axis (``g``: squared distances for a disk).

    ``reach``: only ``|i − j| ≤ reach`` is searched — exact wherever the result is at most ``reach`` (every
    combination is at least ``|i − j|``), larger elsewhere; ``O(numel · reach)`` instead of ``O(numel · L)``.
    """
    n = g.shape[-1]
    lines = g.reshape(-1, n)
    if reach is None or 2 * reach + 1 >= n:
        offsets = torch.arange(n, device=g.device, dtype=torch.float32)
        gap, window = (offsets[:, None] - offsets[None, :]).abs(), None  # [i, j]
    else:
        gap, window = torch.arange(-reach, reach + 1, device=g.device, dtype=torch.float32).abs(), 2 * reach + 1
        lines = torch.nn.functional.pad(lines, (reach, reach), value=float("inf"))
    if structure == "disk":
        gap = gap * gap
    out = torch.empty(lines.shape[0], n, device=g.device, dtype=g.dtype)
    step = max(1, _CHUNK_ELEMENTS // (n * (window or n)))
    for start in range(0, lines.shape[0], step):
        chunk = lines[start:start + step]
        chunk = chunk[:, None, :] if window is None else chunk.unfold(-1, window, 1)  # [L, i, j]
        combined = torch.maximum(gap, chunk) if structure == "square" else gap + chunk
        out[start:start + step] = combined.amin(-1)
    return out.view(g.shape)


def distance_to(mask: torch.Tensor, structure: str = "square", spatial_dims: int = 2,
                outside: bool = False, reach: float | None = None) -> torch.Tensor:
    """Distance ``[..., *spatial]`` (float32) from every pixel to the nearest True pixel of ``mask``.

    ``mask`` is bool ``[..., H, W]`` (``[..., D, H, W]`` with ``spatial_dims=3``); the distance is chessboard
    (``square``), city-block (``cross``) or Euclidean (``disk``); ``inf`` where ``mask`` has no True pixel.
    ``outside=True`` counts the pixels just outside the image as True (the distance to the border too).
    ``reach``: only distances up to ``reach`` are needed (exact there, possibly overestimated beyond): faster.
    """
    check_structure(structure)
    _check(mask, spatial_dims)
    dims = list(range(mask.ndim - spatial_dims, mask.ndim))
    d = _line_distance(mask.movedim(dims[0], -1)).movedim(-1, dims[0])
    if structure == "disk":
        d = d * d
    for dim in dims[1:]:
        d = _min_plus(d.movedim(dim, -1).contiguous(), structure, None if reach is None else int(reach)
                      ).movedim(-1, dim)
    if structure == "disk":
        d = d.sqrt()
    if outside:
        d = torch.minimum(d, border_distance(mask.shape[-spatial_dims:], mask.device))
    return d


def border_distance(shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """Distance ``[*shape]`` from every pixel to the nearest pixel outside the image (1 at the edge)."""
    out = None
    for axis, n in enumerate(shape):
        i = torch.arange(n, device=device, dtype=torch.float32)
        d = torch.minimum(i + 1, n - i).view([n if a == axis else 1 for a in range(len(shape))])
        out = d if out is None else torch.minimum(out, d)
    return out.expand(tuple(shape))


def _check_radius(radius: float, structure: str) -> float:
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    if structure != "disk" and radius != int(radius):
        raise ValueError(f"radius of a {structure} structure counts iterations: a whole number, got {radius!r}")
    return float(radius)


def dilate(mask: torch.Tensor, radius: float, structure: str = "square", spatial_dims: int = 2) -> torch.Tensor:
    """``mask`` dilated ``radius`` times (bool, same shape): every pixel within distance ``radius``."""
    radius = _check_radius(radius, check_structure(structure))
    return distance_to(mask, structure, spatial_dims, reach=radius) <= radius


def erode(mask: torch.Tensor, radius: float, structure: str = "square", spatial_dims: int = 2) -> torch.Tensor:
    """``mask`` eroded ``radius`` times (bool, same shape); outside the image counts as background."""
    radius = _check_radius(radius, check_structure(structure))
    return distance_to(~mask, structure, spatial_dims, outside=True, reach=radius) > radius
