"""Where calibration statistics live: per pixel, on the calibration grid, or pooled (imagewise).

The calibration grid keeps the statistics of learned groupings and of the local method on ``grid × grid`` pixel
blocks. With ``grid = g`` an image ``[H, W]`` is seen as ``g²`` images of ``[⌈H/g⌉, ⌈W/g⌉]`` blocks (pixel ``(i, j)`` of
block ``(y, x)`` is pixel ``(g·y + i, g·x + j)``; padding is unlabelled), so per-pixel statistics cost
``1/g²`` of the memory; the group map or the thresholds found on the grid are mapped back to every pixel of
its block. Pooled scores stay exact; only the smallest neighbourhood a pixel can have grows to its block.
Imagewise calibration keeps one location: every pixel of every image is pooled as it streams. ::

    s, y = to_blocks(scores, labels, 4)         # [N, H, W] → [16·N, ⌈H/4⌉, ⌈W/4⌉]
    full = upsample(thresholds, 4, (H, W))      # [..., ⌈H/4⌉, ⌈W/4⌉] → [..., H, W]
"""
from __future__ import annotations

import torch

from segcal.stats.score_histogram import ScoreBins


def check_grid(grid: object) -> int:
    """``grid`` if it is an int ≥ 1, else ``ValueError``."""
    if not (isinstance(grid, int) and not isinstance(grid, bool) and grid >= 1):
        raise ValueError(f"grid must be an int >= 1 (side of the pixel blocks statistics are kept for), got {grid!r}")
    return grid


def grid_shape(shape: tuple[int, int], grid: int) -> tuple[int, int]:
    """Block-grid size ``(⌈H/g⌉, ⌈W/g⌉)`` of images ``shape``."""
    return -(-int(shape[0]) // grid), -(-int(shape[1]) // grid)


def to_blocks(scores: torch.Tensor, labels: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and labels ``[N, H, W]`` as ``[g²·N, ⌈H/g⌉, ⌈W/g⌉]`` (image-major; padded pixels get label −1)."""
    if grid == 1:
        return scores, labels
    n, h, w = scores.shape
    gh, gw = grid_shape((h, w), grid)
    pad = (0, gw * grid - w, 0, gh * grid - h)
    s = torch.nn.functional.pad(scores, pad)
    y = torch.nn.functional.pad(labels, pad, value=-1)

    def blocks(x: torch.Tensor) -> torch.Tensor:  # [N, gh·g, gw·g] → [N·g·g, gh, gw]
        return x.view(n, gh, grid, gw, grid).permute(0, 2, 4, 1, 3).reshape(n * grid * grid, gh, gw)
    return blocks(s), blocks(y)


def upsample(x: torch.Tensor, grid: int, shape: tuple[int, int]) -> torch.Tensor:
    """Block values ``[..., ⌈H/g⌉, ⌈W/g⌉]`` on every pixel of their block: ``[..., H, W]``."""
    if grid == 1:
        return x
    out = x.repeat_interleave(grid, dim=-2).repeat_interleave(grid, dim=-1)
    return out[..., : shape[0], : shape[1]].contiguous()


POOLED_MAX_EXACT_SCORES = 2**24
"""Imagewise pools keep at most this many exact scores (100 MB), then a histogram of :data:`POOLED_BINS` bins."""
POOLED_BINS = 65536
"""Bins of a pooled imagewise histogram: thresholds at most one bin, ``≤ 2.1e-4``, above the exact ones."""


def stats_storage(pooled: bool, bins: ScoreBins | None, max_exact_scores: int) -> tuple[ScoreBins, int]:
    """Histogram bins and exact-score budget of an accumulator: for a ``pooled`` (imagewise) one, fine bins
    (unless ``bins`` are given) and at most :data:`POOLED_MAX_EXACT_SCORES` exact scores."""
    if pooled:
        return bins or ScoreBins(POOLED_BINS), min(max_exact_scores, POOLED_MAX_EXACT_SCORES)
    return bins or ScoreBins(), max_exact_scores


def stats_shape(pooled: bool, grid: int, shape: tuple[int, int]) -> tuple[int, int]:
    """Where per-location statistics of images ``shape`` live: one location when ``pooled`` (imagewise), else
    the block grid."""
    return (1, 1) if pooled else grid_shape(shape, grid)


def to_stats(pooled: bool, grid: int, scores: torch.Tensor, labels: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and labels ``[N, H, W]`` laid out for :func:`stats_shape` (pooled: every pixel one location-image
    ``[N·H·W, 1, 1]``; else :func:`to_blocks`)."""
    if pooled:
        return scores.reshape(-1, 1, 1), labels.reshape(-1, 1, 1)
    return to_blocks(scores, labels, grid)


def to_pixels(x: torch.Tensor, grid: int, shape: tuple[int, int]) -> torch.Tensor:
    """Per-location values ``[..., h, w]`` of :func:`stats_shape` on every pixel of images ``shape``."""
    if tuple(x.shape[-2:]) == (1, 1):
        return x.expand(*x.shape[:-2], *shape).contiguous()
    return upsample(x, grid, shape)
