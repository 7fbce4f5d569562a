"""Calibration figures from :class:`~segcal.metrics.calibration_results.CalibrationResults`.

Each ``plot_*`` function takes one results object, or several to overlay (e.g. before / after
recalibration, named by their ``label``), returns the matplotlib Figure and, given ``path``,
saves it atomically (temporary file, then rename). Every figure names the binning.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch

from segcal.metrics.calibration_results import CalibrationResults
from segcal.plots.figure import Figure, finish_figure, new_figure

PathLike = str | os.PathLike | None
ResultsArg = CalibrationResults | Sequence[CalibrationResults]


def _as_list(results: ResultsArg) -> list[CalibrationResults]:
    items = [results] if isinstance(results, CalibrationResults) else list(results)
    if not items:
        raise ValueError("results must be a CalibrationResults or a non-empty sequence of them")
    return items


def _name(r: CalibrationResults, i: int) -> str:
    return r.label or f"model {i + 1}"


def _fmt(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.4f}"


def plot_reliability(results: ResultsArg, path: PathLike = None, title: str = "Reliability diagram") -> Figure:
    """Accuracy vs confidence per bin (top-label) with the diagonal, and the bin counts below."""
    items = _as_list(results)
    fig, (ax, ax_n) = new_figure(2, 1, figsize=(5.2, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    edges = items[0].reliability.edges.numpy()
    width = np.diff(edges)
    for i, r in enumerate(items):
        rel = r.reliability
        conf, acc, count = rel.confidence.numpy(), rel.accuracy.numpy(), rel.count.numpy()
        color = f"C{i}"
        if len(items) == 1:
            ax.bar(edges[:-1], np.nan_to_num(acc), width=width, align="edge", color=color, alpha=0.35,
                   edgecolor=color, label="accuracy per bin")
            ax.bar(edges[:-1], np.nan_to_num(conf - acc), bottom=np.nan_to_num(acc), width=width, align="edge",
                   color="none", edgecolor="C3", hatch="//", linewidth=0.6, label="gap to confidence")
        filled = count > 0
        ax.plot(conf[filled], acc[filled], marker="o", markersize=3.5, color=color,
                label=f"{_name(r, i)}: ECE {_fmt(r.ece)}, MCE {_fmt(r.mce)}")
        offset = (i - (len(items) - 1) / 2) * width / len(items)
        ax_n.bar(edges[:-1] + width / 2 + offset, count, width=width / len(items), color=color, alpha=0.7)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{title} ({items[0].binning}, top-label)")
    ax.legend(fontsize=7, loc="upper left")
    ax_n.set(xlabel="confidence", ylabel="pixels per bin")
    if any(r.reliability.count.sum() > 0 for r in items):
        ax_n.set_yscale("log")
    fig.tight_layout()
    return finish_figure(fig, path)


def plot_ece_map(results: CalibrationResults, path: PathLike = None, class_index: int | None = None,
                 vmax: float | None = None) -> Figure:
    """Per-pixel ECE heatmap (top-label, or one class's one-vs-rest map); grey where undefined."""
    if class_index is None:
        data, what = results.ece_map, "top-label"
    else:
        if results.class_ece_maps is None:
            raise ValueError("results have no per-class ECE maps (compute them with class_maps=True)")
        data, what = results.class_ece_maps[class_index], f"class {class_index}"
    if data is None:
        raise ValueError("results have no per-pixel ECE map (compute them with ece_map=True)")
    grid = np.ma.masked_invalid(data.numpy())
    cmap = matplotlib.colormaps.get_cmap("magma").with_extremes(bad="0.75")
    h, w = grid.shape
    fig, ax = new_figure(figsize=(1.2 + 5.0 * w / max(h, w), 0.6 + 5.0 * h / max(h, w)))
    im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="ECE")
    ax.set_title(f"Per-pixel ECE, {what} ({results.binning}; {results.num_images} images)", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    return finish_figure(fig, path)


def pool_gap(results: CalibrationResults, min_samples: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The signed gap (confidence − accuracy) pooled over ``k × k`` pixel blocks, with ``k`` the smallest power
    of two whose median block holds ``min_samples`` labelled pixels: ``(gap, standard error, samples, k)``, each
    ``[H/k, W/k]``; the standard error is ``sqrt(acc (1 − acc) / n)`` per block (NaN where empty)."""
    n = results.map_count.double()
    diff = torch.nan_to_num(results.gap_map.double()) * n
    correct = torch.nan_to_num(results.accuracy_map.double()) * n
    h, w = n.shape
    k = 1
    while k < max(h, w):
        counts = torch.nn.functional.avg_pool2d(n[None, None], k, ceil_mode=True)[0, 0] * k * k
        if float(counts[counts > 0].median()) >= min_samples:
            break
        k *= 2

    def block_sum(x: torch.Tensor) -> torch.Tensor:
        pad = (0, (-w) % k, 0, (-h) % k)
        return torch.nn.functional.pad(x, pad)[None, None].unfold(2, k, k).unfold(3, k, k).sum((-1, -2))[0, 0]

    cnt, dsum, csum = block_sum(n), block_sum(diff), block_sum(correct)
    safe = cnt.clamp_min(1)
    gap = torch.where(cnt > 0, dsum / safe, torch.full_like(cnt, float("nan")))
    acc = csum / safe
    se = torch.where(cnt > 0, (acc * (1 - acc) / safe).sqrt(), torch.full_like(cnt, float("nan")))
    return gap.numpy(), se.numpy(), cnt.numpy(), k


def plot_gap_map(results: CalibrationResults, path: PathLike = None, min_samples: int = 2000) -> Figure:
    """Where the model is over-confident (red) or under-confident (blue): the signed gap confidence − accuracy
    pooled to blocks that hold enough pixels for a stable estimate (see :func:`pool_gap`), with the block size,
    samples per block and the typical standard error in the title."""
    if results.gap_map is None or results.map_count is None:
        raise ValueError("results have no per-pixel maps (compute them with ece_map=True)")
    gap, se, cnt, k = pool_gap(results, min_samples)
    vmax = max(0.05, float(np.nanmax(np.abs(gap)))) if np.isfinite(gap).any() else 0.05
    h, w = gap.shape
    fig, ax = new_figure(figsize=(1.6 + 5.0 * w / max(h, w), 0.9 + 5.0 * h / max(h, w)))
    cmap = matplotlib.colormaps.get_cmap("RdBu_r").with_extremes(bad="0.75")
    im = ax.imshow(np.ma.masked_invalid(gap), cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="confidence − accuracy")
    typical = float(np.nanmedian(se)) if np.isfinite(se).any() else float("nan")
    ax.set_title(f"Over- (red) / under-confidence (blue), {k}×{k}-pixel blocks\n"
                 f"median {int(np.median(cnt[cnt > 0])) if (cnt > 0).any() else 0} labelled pixels per block, "
                 f"typical standard error {typical:.3f}; {results.num_images} images", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    return finish_figure(fig, path)


def plot_image_ece_histogram(results: ResultsArg, path: PathLike = None, bins: int = 30) -> Figure:
    """Histogram of per-image ECE (images without valid pixels are left out)."""
    items = _as_list(results)
    values = [r.image_ece.numpy()[np.isfinite(r.image_ece.numpy())] for r in items]
    top = max([v.max() for v in values if v.size] + [1e-3])
    fig, ax = new_figure(figsize=(5.5, 3.6))
    for i, (r, v) in enumerate(zip(items, values)):
        if v.size:
            ax.hist(v, bins=np.linspace(0, top, bins + 1), alpha=0.55, color=f"C{i}",
                    label=f"{_name(r, i)}: median {np.median(v):.4f} ({v.size} images)")
    ax.set(xlabel="per-image ECE", ylabel="images", title=f"Per-image ECE ({items[0].binning})")
    if any(v.size for v in values):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return finish_figure(fig, path)


def plot_boundary_interior(results: ResultsArg, path: PathLike = None) -> Figure:
    """ECE on boundary vs interior pixels (bars labelled with the ECE), pixel counts under the axis."""
    items = _as_list(results)
    regions = list(items[0].regions)
    x = np.arange(len(regions))
    width = 0.8 / len(items)
    fig, ax = new_figure(figsize=(5.0, 3.8))
    for i, r in enumerate(items):
        values = [r.regions[g]["ece"] for g in regions]
        bars = ax.bar(x + (i - (len(items) - 1) / 2) * width, np.nan_to_num(values), width=width,
                      color=f"C{i}", label=_name(r, i))
        ax.bar_label(bars, [_fmt(v) for v in values], fontsize=7)
    ticks = []
    for g in regions:
        pixels = " / ".join(dict.fromkeys(f"{r.regions[g]['pixels']:,}" for r in items))
        where = f"\n(within {items[0].boundary_width} px of a label change)" if g == "boundary" else ""
        ticks.append(f"{g}{where}\n{pixels} px")
    ax.set_xticks(x, ticks, fontsize=8)
    ax.margins(y=0.15)
    ax.set(ylabel="ECE", title=f"Boundary vs interior ECE ({items[0].binning})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return finish_figure(fig, path)


def plot_confidence_histogram(results: ResultsArg, path: PathLike = None) -> Figure:
    """Share of pixels per top-label confidence bin, with overall accuracy and mean confidence."""
    items = _as_list(results)
    edges = items[0].reliability.edges.numpy()
    fig, ax = new_figure(figsize=(5.5, 3.6))
    for i, r in enumerate(items):
        count = r.reliability.count.numpy().astype(float)
        total = count.sum()
        share = count / total if total else count
        ax.stairs(share, edges, color=f"C{i}", fill=len(items) == 1, alpha=0.5 if len(items) == 1 else 1,
                  label=_name(r, i))
        if total:
            mean_conf = float(np.nansum(r.reliability.confidence.numpy() * count) / total)
            accuracy = float(r.segmentation["overall_accuracy"])
            ax.axvline(mean_conf, color=f"C{i}", linestyle="-", linewidth=1, label=f"mean confidence {mean_conf:.3f}")
            ax.axvline(accuracy, color=f"C{i}", linestyle=":", linewidth=1.2, label=f"pixel accuracy {accuracy:.3f}")
    ax.set(xlim=(0, 1), xlabel="top-label confidence", ylabel="share of pixels",
           title=f"Confidence histogram ({items[0].binning})")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return finish_figure(fig, path)


def plot_all(results: ResultsArg, out_dir: str | os.PathLike, prefix: str = "") -> dict[str, Path]:
    """Write every calibration figure into ``out_dir``; returns ``{name: path}``.

    With several results the figures overlay them; the ECE heatmap is drawn for each
    result that has a map (``ece_map_<label>.png`` when more than one).
    """
    items = _as_list(results)
    out = Path(out_dir)
    paths = {
        "reliability": out / f"{prefix}reliability.png",
        "confidence_histogram": out / f"{prefix}confidence_histogram.png",
        "image_ece_histogram": out / f"{prefix}image_ece_histogram.png",
        "boundary_interior": out / f"{prefix}boundary_interior.png",
    }
    for name, plot in (("reliability", plot_reliability), ("confidence_histogram", plot_confidence_histogram),
                       ("image_ece_histogram", plot_image_ece_histogram),
                       ("boundary_interior", plot_boundary_interior)):
        plot(items, paths[name])
    for i, r in enumerate(items):
        if r.ece_map is not None:
            suffix = "" if len(items) == 1 else f"_{_slug(_name(r, i))}"
            name = f"ece_map{suffix}"
            paths[name] = out / f"{prefix}{name}.png"
            plot_ece_map(r, paths[name])
        if r.gap_map is not None:
            name = f"gap_map{'' if len(items) == 1 else f'_{_slug(_name(r, i))}'}"
            paths[name] = out / f"{prefix}{name}.png"
            plot_gap_map(r, paths[name])
    return paths


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_") or "results"
