"""Pluggable pixel groupings for conformal calibration, and the per-pixel statistics they see.

A grouping maps per-pixel statistics to a group map ``[H, W]`` (shared by all classes) or
``[C, H, W]`` (per class) of integer group ids; scores are then pooled per (class, group).
Pixelwise (every pixel its own group) and imagewise (one group) are groupings too; the
Kandinsky groupings (k-means, genetic annuli) are learned from data.

A new grouping is one small module::

    @register_grouping("stripes", num_groups=2)
    def stripes(stats: PixelStatistics, num_groups: int, seed: int) -> torch.Tensor:
        h, w = stats.shape
        return (torch.arange(w) >= w // 2).long().expand(h, w)

and then ``ConformalCalibrator(grouping="stripes")``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from segcal.conformal.accumulate import ScoreAccumulator
from segcal.conformal.quantile import group_quantiles
from segcal.stats.score_histogram import ScoreHistogram

KANDINSKY_FEATURE_LEVELS = (0.6, 0.7, 0.8, 0.9)
_BUILTIN_MODULES = ("segcal.conformal.grouping_kmeans", "segcal.conformal.grouping_annuli")


@dataclass
class PixelStatistics:
    """What a grouping sees: per-pixel empirical score quantiles of the grouping-fit images.

    ``curves [L, C, H, W]``: each pixel's empirical quantile (``⌈n·level⌉``-th smallest) of its
    class-``c`` scores at ``levels [L]``; pixels that never saw class ``c`` get the image-level
    quantile. ``counts [C, H, W]``: scores per pixel and class. Both are ``None`` for groupings
    that are not learned.
    """

    num_classes: int
    shape: tuple[int, int]
    levels: torch.Tensor | None = None
    curves: torch.Tensor | None = None
    counts: torch.Tensor | None = None


GroupingFn = Callable[[PixelStatistics, int, int], torch.Tensor]


@dataclass(frozen=True)
class GroupingSpec:
    """A registered grouping: ``fn(stats, num_groups, seed) → [H, W] or [C, H, W]`` group ids.

    ``learned``: the map depends on calibration scores (so it is fitted on images disjoint
    from those that set the thresholds). ``num_groups``: a fixed number of groups, or ``None``
    when it is a parameter (default ``default_groups``, or chosen from data with ``"auto"``).
    """

    name: str
    fn: GroupingFn
    learned: bool = True
    num_groups: int | None = None
    default_groups: int = 4
    feature_levels: tuple[float, ...] = KANDINSKY_FEATURE_LEVELS


GROUPINGS: dict[str, GroupingSpec] = {}


def register_grouping(name: str, *, learned: bool = True, num_groups: int | None = None, default_groups: int = 4,
                      feature_levels: tuple[float, ...] = KANDINSKY_FEATURE_LEVELS
                      ) -> Callable[[GroupingFn], GroupingFn]:
    """Decorator registering ``fn`` as grouping ``name`` (see :class:`GroupingSpec`)."""
    def decorate(fn: GroupingFn) -> GroupingFn:
        GROUPINGS[name] = GroupingSpec(name, fn, learned, num_groups, default_groups, tuple(feature_levels))
        return fn
    return decorate


def get_grouping(name: str) -> GroupingSpec:
    """The registered grouping ``name`` (``ValueError`` listing the known ones otherwise)."""
    if name not in GROUPINGS:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
    if name not in GROUPINGS:
        raise ValueError(f"grouping must be one of {sorted(GROUPINGS)}, got {name!r}")
    return GROUPINGS[name]


@register_grouping("pixel", learned=False, num_groups=0)
def pixel_grouping(stats: PixelStatistics, num_groups: int, seed: int) -> torch.Tensor:
    """Pixelwise: every pixel is its own group."""
    h, w = stats.shape
    return torch.arange(h * w).view(h, w)


@register_grouping("image", learned=False, num_groups=1)
def image_grouping(stats: PixelStatistics, num_groups: int, seed: int) -> torch.Tensor:
    """Imagewise: one group per class."""
    return torch.zeros(stats.shape, dtype=torch.long)


def pixel_statistics(acc: ScoreAccumulator, levels: tuple[float, ...]) -> PixelStatistics:
    """:class:`PixelStatistics` of the scores in ``acc`` at feature ``levels``."""
    lv = torch.tensor(levels, dtype=torch.float64)
    c, (h, w) = acc.num_classes, acc.shape
    per_pixel = acc.per_pixel()
    counts = per_pixel.group_counts()  # [C, P]
    if isinstance(per_pixel, ScoreHistogram):  # class by class: temporaries of one class, not of all
        curves = torch.cat([group_quantiles(per_pixel.class_histogram(k), lv, conformal=False) for k in range(c)], 1)
    else:
        curves = group_quantiles(per_pixel, lv, conformal=False)  # [L, C, P]
    image = group_quantiles(acc.pool(torch.zeros_like(counts), 1), lv, conformal=False)  # [L, C, 1]
    curves = torch.where(counts.unsqueeze(0) > 0, curves, image)
    return PixelStatistics(c, (h, w), lv, curves.view(len(levels), c, h, w), counts.view(c, h, w))


def normalise_group_map(group_map: torch.Tensor, num_classes: int, shape: tuple[int, int]) -> tuple[torch.Tensor, int]:
    """Validate a grouping's output and return ``([C, H, W] int64 ids in [0, G), G)``."""
    g = torch.as_tensor(group_map)
    if g.is_floating_point() or g.is_complex():
        raise ValueError(f"a group map must hold integer ids, got dtype {g.dtype}")
    if tuple(g.shape) == tuple(shape):
        g = g.expand(num_classes, *shape)
    if tuple(g.shape) != (num_classes, *shape):
        raise ValueError(f"a group map must have shape {tuple(shape)} or {(num_classes, *shape)},"
                         f" got {tuple(g.shape)}")
    ids, inverse = torch.unique(g.long(), return_inverse=True)
    return inverse.view(num_classes, *shape).contiguous(), int(ids.numel())
