"""Figures of mask-level guarantees: outlines of the truth, the prediction and the calibrated masks on an image,
and the distribution of the per-image loss against α."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from segcal.plots.figure import finish_figure, new_figure

PathLike = str | os.PathLike | None
OUTLINES = {"truth": ("#ffffff", "-", "truth"), "pred": ("#ffd400", "--", "prediction"),
            "outer": ("#ff3b30", "-", "outer mask"), "inner": ("#34c759", "-", "inner mask"),
            "mask": ("#ff3b30", "-", "calibrated mask")}
"""Mask name → (colour, line style, legend label)."""


def _backdrop(image: torch.Tensor | None, shape: tuple[int, int]) -> np.ndarray:
    if image is None:
        return np.full((*shape, 3), 0.15)
    return image.permute(1, 2, 0).clamp(0, 1).cpu().numpy()


def plot_mask_outlines(image: torch.Tensor | None, masks: dict[str, torch.Tensor | None], title: str = "",
                       path: PathLike = None, band: bool = True) -> Figure:
    """Outlines of ``masks`` (``truth``, ``pred``, ``outer``, ``inner`` or ``mask``: bool ``[H, W]``) over
    ``image [3, H, W]`` (a dark backdrop when ``None``); the band between outer and inner masks is shaded."""
    shown = {k: v for k, v in masks.items() if v is not None and k in OUTLINES}
    shape = tuple(next(iter(shown.values())).shape)
    fig, ax = new_figure(figsize=(4.4, 4.4 * shape[0] / shape[1] + 0.6))
    ax.imshow(_backdrop(image, shape))
    if band and shown.get("outer") is not None:
        region = shown["outer"] & ~shown["inner"] if shown.get("inner") is not None else shown["outer"]
        shade = np.zeros((*shape, 4))
        shade[region.cpu().numpy()] = (1.0, 0.23, 0.19, 0.25)
        ax.imshow(shade)
    handles = []
    for key, mask in shown.items():
        colour, style, label = OUTLINES[key]
        if mask.any() and not mask.all():
            ax.contour(mask.cpu().numpy().astype(float), levels=[0.5], colors=[colour], linestyles=[style],
                       linewidths=1.4)
        handles.append(Line2D([], [], color=colour, linestyle=style, label=label))
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, -0.02), ncol=min(len(handles), 2), fontsize=7,
              frameon=False, labelcolor="white")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return finish_figure(fig, path)


def plot_loss_histogram(losses: Sequence[float], alpha: float, loss: str, path: PathLike = None) -> Figure:
    """Histogram of the per-image test loss with α and the mean marked."""
    values = np.asarray(losses, dtype=float)
    fig, ax = new_figure(figsize=(4.8, 3.2))
    ax.hist(values, bins=30, color="#4c78a8")
    ax.axvline(alpha, color="#e45756", linestyle="--", label=f"α = {alpha:g}")
    ax.axvline(float(values.mean()), color="black", label=f"mean = {values.mean():.3f}")
    ax.set_xlabel(f"per-image {loss}")
    ax.set_ylabel("test images")
    ax.legend(fontsize=8)
    return finish_figure(fig, path)
