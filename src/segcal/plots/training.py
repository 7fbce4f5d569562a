"""Training figures: loss/metric curves from the CSV log and image / truth / prediction samples."""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segcal.plots.figure import new_figure, save_figure
from segcal.plots.palette import Colors, class_colormap, class_legend


def read_metrics_csv(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch series ``{metric: [(epoch, value), ...]}`` from a Lightning CSV log."""
    series: dict[str, dict[int, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                series.setdefault(key, {})[epoch] = float(value)
    return {k: sorted(v.items()) for k, v in series.items()}


def plot_curves(series: dict[str, list[tuple[int, float]]], path: str | os.PathLike) -> Path:
    """Two panels: train/val loss, and the mean foreground val metrics, per epoch."""
    fig, (ax_loss, ax_met) = new_figure(1, 2, figsize=(10, 3.8))
    for key in ("train/loss", "val/loss"):
        if key in series:
            ep, val = zip(*series[key])
            ax_loss.plot(ep, val, marker=".", label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    for key in ("val/dice", "val/iou", "val/recall", "val/precision"):
        if key in series:
            ep, val = zip(*series[key])
            ax_met.plot(ep, val, marker=".", label=key)
    ax_met.set(xlabel="epoch", ylabel="score", title="Validation (foreground mean)", ylim=(0, 1))
    ax_met.legend()
    return save_figure(fig, path)


def plot_samples(images: np.ndarray, truths: np.ndarray, preds: np.ndarray, names: list[str],
                 class_names: Sequence[str], ignore_index: int, path: str | os.PathLike,
                 colors: Colors = None) -> Path:
    """Grid of rows (image / true mask / predicted mask) with a legend naming the class colours.

    ``images [N, H, W, 3]`` in [0, 1], ``truths`` and ``preds`` ``[N, H, W]`` integer labels.
    """
    n, num_classes = len(images), len(class_names)
    cmap = class_colormap(num_classes, colors=colors)
    fig, axes = new_figure(n, 3, figsize=(7.5, 2.4 * n), squeeze=False)
    for i in range(n):
        truth = np.where(truths[i] == ignore_index, num_classes, truths[i])
        for ax, img, title in zip(axes[i], (images[i], truth, preds[i]), ("image", "true mask", "prediction")):
            if img.ndim == 3:
                ax.imshow(np.clip(img, 0, 1))
            else:
                ax.imshow(img, cmap=cmap, vmin=0, vmax=num_classes, interpolation="nearest")
            ax.set_title(f"{title}: {names[i]}" if title == "image" else title, fontsize=8)
            ax.axis("off")
    class_legend(axes[0, -1], class_names, colors=colors)
    fig.tight_layout()
    return save_figure(fig, path)
