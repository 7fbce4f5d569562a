"""Conformal-prediction figures: CE heatmap, group map, coverage vs nominal, set-size map,
CE-vs-n_cal sweep, and prediction-set overlays. Each function returns the figure and, given
``path``, also saves it. Every CE figure shows informativeness (set size) next to it.
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.ticker
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from segcal.conformal.evaluation import CoverageResult
from segcal.conformal.sweep import summarise_sweep
from segcal.plots.figure import Figure, finish_figure, new_figure
from segcal.plots.palette import Colors, class_palette

PathLike = str | os.PathLike | None


def _class_name(names: Sequence[str] | None, c: int) -> str:
    return names[c] if names and c < len(names) else f"class {c}"


def plot_ce_map(result: CoverageResult, class_index: int = -1, class_names: Sequence[str] | None = None,
                path: PathLike = None) -> Figure:
    """Per-pixel coverage error of one class (grey: fewer than ``min_test_labels`` test labels)."""
    c = class_index % result.ce_map.shape[0]
    ce = result.ce_map[c].double().numpy()
    fig, ax = new_figure(figsize=(5.5, 4.5))
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.75")
    vmax = max(0.5, float(np.nanmax(ce))) if np.isfinite(ce).any() else 0.5
    im = ax.imshow(np.ma.masked_invalid(ce), cmap=cmap, vmin=0, vmax=vmax)
    fig.colorbar(im, ax=ax, label="coverage error")
    s = result.summary()
    ax.set_title(f"{result.method} — {_class_name(class_names, c)}\n"
                 f"mean CE {float(result.mean_ce_per_class[c]):.3f}, mean set size {s['mean_set_size']:.2f},"
                 f" full sets {100 * s['full_fraction']:.1f}%", fontsize=9)
    ax.set_axis_off()
    return finish_figure(fig, path)


def _class_grid(count: int, panel: float = 2.6) -> tuple[Figure, list]:
    cols = min(count, 4)
    rows = -(-count // cols)
    fig, axes = new_figure(rows, cols, figsize=(panel * cols + 1.2, panel * rows + 0.4), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.set_axis_off()
    return fig, flat[:count]


def plot_ce_maps(result: CoverageResult, class_names: Sequence[str] | None = None, path: PathLike = None) -> Figure:
    """Per-pixel coverage error of every class, one named panel each, on one colour scale (grey: fewer than
    ``min_test_labels`` test labels)."""
    ce = result.ce_map.double().numpy()
    fig, axes = _class_grid(ce.shape[0])
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.75")
    vmax = max(0.5, float(np.nanmax(ce))) if np.isfinite(ce).any() else 0.5
    im = None
    for c, ax in enumerate(axes):
        im = ax.imshow(np.ma.masked_invalid(ce[c]), cmap=cmap, vmin=0, vmax=vmax)
        mean = float(result.mean_ce_per_class[c])
        value = f"< {result.min_test_labels} test labels per pixel" if np.isnan(mean) else f"CE {mean:.3f}"
        ax.set_title(f"{_class_name(class_names, c)}: {value}", fontsize=8)
        ax.set_axis_off()
    fig.colorbar(im, ax=axes, label="coverage error", shrink=0.8)
    fig.suptitle(f"{result.method}: per-pixel coverage error per class", fontsize=9)
    return finish_figure(fig, path)


def plot_group_maps(group_map: torch.Tensor, class_names: Sequence[str] | None = None, title: str = "groups",
                    path: PathLike = None) -> Figure:
    """The group map of every class ``[C, H, W]``, one named panel each."""
    maps = group_map.long().numpy()
    k = int(maps.max()) + 1
    fig, axes = _class_grid(maps.shape[0])
    colors = class_palette(min(k, 20))
    for c, ax in enumerate(axes):
        if k > 20:  # pixelwise: ids are not categories
            ax.imshow(maps[c], cmap="viridis")
        else:
            ax.imshow(maps[c], cmap=ListedColormap(colors), vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
        ax.set_title(_class_name(class_names, c), fontsize=8)
        ax.set_axis_off()
    if k <= 20:
        axes[-1].legend(handles=[Patch(color=colors[i], label=f"group {i}") for i in range(k)],
                        loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.suptitle(f"{title} ({k} groups)", fontsize=9)
    return finish_figure(fig, path)


def plot_window_maps(sides: torch.Tensor, min_scores: int, class_names: Sequence[str] | None = None,
                     title: str = "local", path: PathLike = None) -> Figure:
    """Neighbourhood size of the local method: the side in pixels of each pixel's window ``[C, H, W]`` (the
    smallest square holding ``min_scores`` calibration scores of the class), one named panel per class, log
    colour scale shared by all classes."""
    s = sides.double().numpy()
    fig, axes = _class_grid(s.shape[0])
    norm = matplotlib.colors.LogNorm(vmin=1, vmax=max(2.0, float(s.max())))
    im = None
    for c, ax in enumerate(axes):
        im = ax.imshow(s[c], cmap="viridis", norm=norm)
        ax.set_title(f"{_class_name(class_names, c)}: median {float(np.median(s[c])):g} px", fontsize=8)
        ax.set_axis_off()
    fig.colorbar(im, ax=axes, label="window side (pixels)", shrink=0.8)
    fig.suptitle(f"{title}: neighbourhood size (windows holding ≥ {min_scores} scores of the class)", fontsize=9)
    return finish_figure(fig, path)


def plot_group_map(group_map: torch.Tensor, class_index: int = -1, title: str = "groups",
                   path: PathLike = None) -> Figure:
    """Group ids ``[H, W]`` or ``[C, H, W]`` (one class shown) as a categorical map."""
    g = group_map[class_index % group_map.shape[0]] if group_map.ndim == 3 else group_map
    g = g.long().numpy()
    k = int(g.max()) + 1
    fig, ax = new_figure(figsize=(5.5, 4.5))
    if k > 20:  # pixelwise: ids are not categories worth a legend
        im = ax.imshow(g, cmap="viridis")
        fig.colorbar(im, ax=ax, label="group id")
    else:
        colors = class_palette(k)
        ax.imshow(g, cmap=ListedColormap(colors), vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
        ax.legend(handles=[Patch(color=colors[i], label=f"group {i}") for i in range(k)],
                  loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    ax.set_title(f"{title} ({k} groups)", fontsize=9)
    ax.set_axis_off()
    return finish_figure(fig, path)


def _as_results(results: CoverageResult | Mapping[str, CoverageResult]) -> dict[str, CoverageResult]:
    return {results.method: results} if isinstance(results, CoverageResult) else dict(results)


def plot_coverage_vs_nominal(results: CoverageResult | Mapping[str, CoverageResult],
                             class_index: int | None = None, path: PathLike = None) -> Figure:
    """Empirical vs nominal coverage (marginal, or of one class) with mean set size beside it."""
    fig, (ax, ax_size) = new_figure(1, 2, figsize=(10, 4.2))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="nominal")
    for name, r in _as_results(results).items():
        lv = r.levels.numpy()
        cov = r.marginal_coverage if class_index is None else r.class_coverage[:, class_index]
        ax.plot(lv, cov.numpy(), "o-", ms=3, label=f"{name} (CE {r.mean_ce:.3f})")
        ax_size.plot(lv, r.mean_set_size.numpy(), "o-", ms=3, label=name)
    which = "marginal" if class_index is None else f"class {class_index}"
    ax.set(xlabel="nominal coverage 1 − α", ylabel=f"empirical coverage ({which})", xlim=(0, 1), ylim=(0, 1.02))
    ax_size.set(xlabel="nominal coverage 1 − α", ylabel="mean set size", xlim=(0, 1))
    ax.legend(fontsize=8)
    ax_size.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax_size.grid(alpha=0.3)
    fig.tight_layout()
    return finish_figure(fig, path)


def plot_set_size_map(result: CoverageResult, alpha: float = 0.1, path: PathLike = None) -> Figure:
    """Mean prediction-set size per pixel over the test set at ``1 − alpha`` (a grid level)."""
    i = result.level_index(alpha)
    fig, ax = new_figure(figsize=(5.5, 4.5))
    num_classes = result.ce_map.shape[0]
    im = ax.imshow(result.set_size_map[i].numpy(), cmap="viridis", vmin=0, vmax=num_classes)
    fig.colorbar(im, ax=ax, label="mean set size")
    ax.set_title(f"{result.method} — set size at 1 − α = {float(result.levels[i]):.2f}\n"
                 f"mean {float(result.mean_set_size[i]):.2f}, full {100 * float(result.full_fraction[i]):.1f}%,"
                 f" empty {100 * float(result.empty_fraction[i]):.1f}%", fontsize=9)
    ax.set_axis_off()
    return finish_figure(fig, path)


def plot_sweep(records: Iterable[Mapping[str, Any]], metrics: Sequence[str] = ("mean_ce", "mean_set_size"),
               path: PathLike = None) -> Figure:
    """Each of ``metrics`` (default mean CE and mean set size) versus n_cal per method, mean ± std
    over repeats, one panel each.

    ``records``: :func:`segcal.conformal.sweep.calibration_sweep` output (one per repeat).
    """
    metrics = list(metrics)
    rows = summarise_sweep(records, metrics)
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    fig, axes = new_figure(1, len(metrics), figsize=(5 * len(metrics), 4.2), squeeze=False)
    axes = axes[0]
    for name, rs in by_method.items():
        rs = sorted(rs, key=lambda r: r["n_cal"])
        n = np.array([r["n_cal"] for r in rs])
        for ax, m in zip(axes, metrics):
            mean = np.array([np.nan if r[f"{m}_mean"] is None else r[f"{m}_mean"] for r in rs])
            std = np.array([0.0 if r[f"{m}_std"] is None else r[f"{m}_std"] for r in rs])
            line, = ax.plot(n, mean, "o-", ms=4, label=name)
            ax.fill_between(n, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    n_values = sorted({row["n_cal"] for row in rows})
    for ax, m in zip(axes, metrics):
        ax.set(xscale="log", xlabel="calibration images n_cal", ylabel=m.replace("_", " "))
        ax.set_xticks(n_values, [str(n) for n in n_values])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("mean ± std over repeats", fontsize=9)
    fig.tight_layout()
    return finish_figure(fig, path)


def set_colours(sets: torch.Tensor, colors: Colors = None) -> np.ndarray:
    """RGB ``[H, W, 3]`` in [0, 1] for sets ``[C, H, W]``: singleton → class colour (``colors`` or the
    palette, see :mod:`.palette`), ambiguous → white, empty → black."""
    s = sets.bool().cpu()
    size = s.sum(0).numpy()
    colour = np.ones((*size.shape, 3))
    single = size == 1
    colour[single] = class_palette(s.shape[0], colors)[s.float().argmax(0).numpy()[single]]
    colour[size == 0] = 0.0
    return colour


def set_legend_handles(class_names: Sequence[str], colors: Colors = None) -> list[Patch]:
    """Legend entries of set images: one colour per class (a singleton set), white ambiguous, black empty."""
    palette = class_palette(len(class_names), colors)
    handles = [Patch(color=palette[c], label=f"{{{name}}}") for c, name in enumerate(class_names)]
    return handles + [Patch(facecolor="white", edgecolor="k", label="ambiguous (≥ 2 classes)"),
                      Patch(color="black", label="empty")]


def plot_set_legend(class_names: Sequence[str], path: PathLike = None, colors: Colors = None) -> Figure:
    """The colour key of the set images ``segcal predict`` writes (``sets/legend.png``)."""
    fig, ax = new_figure(figsize=(3.2, 0.45 + 0.28 * (len(class_names) + 2)))
    ax.legend(handles=set_legend_handles(class_names, colors), loc="center", fontsize=8, frameon=False,
              ncol=1 if len(class_names) <= 20 else 2)
    ax.set_axis_off()
    return finish_figure(fig, path)


def plot_prediction_set_overlay(image: torch.Tensor | np.ndarray, sets: torch.Tensor,
                                class_names: Sequence[str] | None = None, alpha: float | None = None,
                                opacity: float = 0.5, path: PathLike = None,
                                valid: torch.Tensor | np.ndarray | None = None, colors: Colors = None) -> Figure:
    """An image (``[H, W]``, ``[H, W, 3]`` or ``[3, H, W]``) with each pixel coloured by its set ``[C, H, W]``.

    Singleton sets get their class colour, sets with several classes are "ambiguous" (white),
    empty sets are black. ``valid [H, W]`` (e.g. labels ≠ ignore_index, padding excluded):
    other pixels are left uncoloured and not counted.
    """
    img = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.max() > 1:
        img = img / 255.0
    s = sets.bool().cpu()
    num_classes = s.shape[0]
    size = s.sum(0).numpy()
    keep = np.ones(size.shape, bool) if valid is None else np.asarray(valid, dtype=bool)
    colour = set_colours(s, colors)
    fig, ax = new_figure(figsize=(6, 4.8))
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
    ax.imshow(np.concatenate([colour, np.where(keep, opacity, 0.0)[..., None]], axis=-1))
    size = size[keep] if keep.any() else size.ravel()
    names = [_class_name(class_names, c) for c in range(num_classes)]
    ax.legend(handles=set_legend_handles(names, colors), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    level = "" if alpha is None else f" at 1 − α = {1 - alpha:.2f}"
    ax.set_title(f"prediction sets{level}: {100 * (size > 1).mean():.1f}% ambiguous,"
                 f" {100 * (size == 0).mean():.1f}% empty", fontsize=9)
    ax.set_axis_off()
    return finish_figure(fig, path)
