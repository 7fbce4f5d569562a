"""Figures of pseudo-label refinement: metrics across rounds, and coarse vs refined masks."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segcal.plots.figure import new_figure, save_figure
from segcal.plots.palette import class_colormap

ROUND_METRICS = ("iou", "dice", "recall", "precision")


def plot_rounds(rows: list[dict], path: str | os.PathLike, metrics: tuple[str, ...] = ROUND_METRICS) -> Path:
    """One line per metric across the rounds of a table (rows in table order, x = round name)."""
    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    x = np.arange(len(rows))
    fig, ax = new_figure(figsize=(max(4.5, 1.1 * len(rows) + 2), 3.6))
    for m in metrics:
        ax.plot(x, [float(r[m]) for r in rows], marker="o", label=m)
    ax.set_xticks(x, [str(r["round"]) for r in rows], rotation=20 if len(rows) > 5 else 0)
    ax.set(xlabel="round (model)", ylabel="score on the EVAL set (foreground mean)", ylim=(0, 1),
           title="Refinement rounds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)


def plot_hybrid_preview(images: list[np.ndarray], coarse: list[np.ndarray], refined: list[np.ndarray],
                        names: list[str], num_classes: int, ignore_index: int, path: str | os.PathLike) -> Path:
    """Rows of image / coarse mask / refined mask; ``images`` uint8 ``[H, W, 3]``, masks ``[H, W]``."""
    n = len(images)
    if n == 0 or not len(coarse) == len(refined) == len(names) == n:
        raise ValueError(f"need the same positive number of images, coarse and refined masks and names, got "
                         f"{n}, {len(coarse)}, {len(refined)}, {len(names)}")
    cmap = class_colormap(num_classes, ignore_color=(0.85, 0.3, 0.3))
    fig, axes = new_figure(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
    for i in range(n):
        panels = (images[i], coarse[i], refined[i])
        for ax, img, title in zip(axes[i], panels, (names[i], "coarse mask", "refined (red: ignore)")):
            if img.ndim == 3:
                ax.imshow(img)
            else:
                ax.imshow(np.where(img == ignore_index, num_classes, img), cmap=cmap, vmin=0, vmax=num_classes,
                          interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)
