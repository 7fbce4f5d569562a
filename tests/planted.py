"""Synthetic binary-segmentation logits with planted spatial structure, for tests and benchmarks.

Every pixel belongs to a planted group ``g`` with a foreground probability ``π_g`` and a
margin distribution ``N(μ_g, σ_g²)``. Per image and pixel, the label is ``y ~ Bernoulli(π_g)``
and the model's logit difference (foreground − background) is ``(2y − 1)·m`` with
``m = μ_g + σ_g·ε + b`` (``b ~ N(0, τ²)`` shared by the image: within-image dependence), so
the true-class score is ``σ(−m)``. Images are i.i.d., hence exchangeable.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def ring_map(shape: tuple[int, int], radii: Sequence[float], centre_offset: tuple[float, float] = (0.0, 0.0)
             ) -> torch.Tensor:
    """Group ids ``[H, W]``: 0 inside ``radii[0]`` of the (offset) centre, then one id per ring."""
    h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2 - centre_offset[0],
                            torch.arange(w) - (w - 1) / 2 - centre_offset[1], indexing="ij")
    d = torch.hypot(yy.double(), xx.double())
    return sum((d > r).long() for r in sorted(radii))


def block_map(shape: tuple[int, int], rows: int = 2, cols: int = 2) -> torch.Tensor:
    """Group ids ``[H, W]`` of a ``rows × cols`` grid of blocks."""
    h, w = shape
    return (torch.arange(h) * rows // h).view(h, 1) * cols + (torch.arange(w) * cols // w).view(1, w)


def planted_logits(num_images: int, group_map: torch.Tensor, margin: Sequence[float],
                   noise: Sequence[float], fg_prob: Sequence[float] | float = 0.5,
                   image_effect: float = 0.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, 2, H, W]`` (float32, softmax head) and labels ``[N, H, W]`` (int64).

    ``margin``, ``noise`` and ``fg_prob`` give ``μ_g``, ``σ_g`` and ``π_g`` per group of
    ``group_map [H, W]`` (ids ``0…G−1``).
    """
    gen = torch.Generator().manual_seed(seed)
    g = group_map.long()
    num_groups = int(g.max()) + 1
    if len(margin) < num_groups or len(noise) < num_groups:
        raise ValueError(f"margin and noise need one value per group ({num_groups})")
    pi = torch.as_tensor(fg_prob, dtype=torch.float64).expand(num_groups)[g]
    mu = torch.as_tensor(margin, dtype=torch.float64)[g]
    sd = torch.as_tensor(noise, dtype=torch.float64)[g]
    n, (h, w) = num_images, g.shape
    labels = (torch.rand(n, h, w, generator=gen, dtype=torch.float64) < pi).long()
    b = image_effect * torch.randn(n, 1, 1, generator=gen, dtype=torch.float64)
    m = mu + sd * torch.randn(n, h, w, generator=gen, dtype=torch.float64) + b
    d = ((2 * labels - 1) * m).float()
    return torch.stack([-d / 2, d / 2], dim=1), labels
