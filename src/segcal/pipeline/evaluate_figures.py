"""Figures of an evaluation: calibration (before/after), conformal maps and prediction-set overlays.

Each figure is listed as ``{"key", "title", "path" (relative to the evaluation folder), "group"}``
with group ``calibration``, ``conformal`` or ``prediction_sets``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segcal.batch import Batch
from segcal.conformal.calibrator import ConformalCalibrator
from segcal.conformal.evaluation import CoverageResult
from segcal.conformal.local_calibrator import LocalCalibrator
from segcal.metrics.calibration_results import CalibrationResults
from segcal.plots.calibration import plot_all
from segcal.plots.conformal import (
    plot_ce_maps,
    plot_coverage_vs_nominal,
    plot_group_maps,
    plot_prediction_set_overlay,
    plot_set_size_map,
    plot_window_maps,
)

CALIBRATION_TITLES = {"reliability": "Reliability diagram (top-label confidence)",
                      "confidence_histogram": "Confidence histogram",
                      "image_ece_histogram": "Per-image ECE", "boundary_interior": "Boundary vs interior ECE"}


class SetExamples:
    """The first ``count`` test images with their prediction sets at ``alpha`` (for overlays)."""

    def __init__(self, count: int, alpha: float) -> None:
        self.count, self.alpha = count, alpha
        self.items: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # name, image, sets, valid
        self.colors = None  # the source's class colours

    def add(self, source, batch: Batch, conformal: ConformalCalibrator, logits: torch.Tensor) -> None:
        take = min(self.count - len(self.items), len(logits))
        if take <= 0:
            return
        sets = conformal.predict_set(logits[:take], self.alpha, "logits", source.head)
        self.colors = getattr(source, "class_colors", None)
        for i in range(take):  # a few images, once: on the CPU for the figures
            valid = batch.labels[i] != source.ignore_index
            self.items.append((batch.names[i], source.display_image(batch, i), sets[i].cpu(), valid.cpu()))


def _entry(key: str, title: str, path: Path, root: Path, group: str) -> dict[str, str]:
    return {"key": key, "title": title, "path": str(path.relative_to(root)), "group": group}


def write_figures(folder: Path, calibration: list[CalibrationResults], coverage: CoverageResult | None,
                  conformal: ConformalCalibrator | None, class_names: list[str],
                  examples: SetExamples) -> list[dict[str, str]]:
    """Write every figure into ``folder``; returns their entries (paths relative to its parent)."""
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.parent
    entries = []
    for key, path in (plot_all(calibration, folder) if calibration else {}).items():
        if key.startswith("gap_map"):
            title = "Over- / under-confidence map" + key.removeprefix("gap_map").replace("_", " ")
        else:
            title = CALIBRATION_TITLES.get(key, "Per-pixel ECE map" + key.removeprefix("ece_map").replace("_", " "))
        entries.append(_entry(key, title, path, root, "calibration"))
    if coverage is None or conformal is None:
        return entries
    pooled = ["all classes (marginal)"] if conformal.marginal else class_names  # the statistics' classes
    if isinstance(conformal, LocalCalibrator):
        first = ("window_map", "Neighbourhood size (local), every class",
                 lambda p: plot_window_maps(conformal.window_sides(), conformal.min_scores_, pooled, path=p))
    else:
        first = ("group_map", f"Group maps ({conformal.method}), every class",
                 lambda p: plot_group_maps(conformal.group_map_, pooled,
                                           f"{conformal.method}: {conformal.num_groups_} groups", path=p))
    conformal_plots: list[tuple[str, str, Any]] = [
        first,
        ("ce_map", "Per-pixel coverage error, every class",
         lambda p: plot_ce_maps(coverage, class_names, path=p)),
        ("coverage_vs_nominal", "Coverage vs nominal level", lambda p: plot_coverage_vs_nominal(coverage, path=p)),
        ("set_size_map", f"Mean set size per pixel at α = {examples.alpha:g}",
         lambda p: plot_set_size_map(coverage, examples.alpha, path=p)),
    ]
    for key, title, plot in conformal_plots:
        path = folder / f"{key}.png"
        plot(path)
        entries.append(_entry(key, title, path, root, "conformal"))
    for i, (name, image, sets, valid) in enumerate(examples.items):
        path = folder / f"set_overlay_{i}.png"
        plot_prediction_set_overlay(image, sets, class_names, examples.alpha, path=path, valid=valid,
                                    colors=examples.colors)
        entries.append(_entry(f"set_overlay_{i}", f"Prediction sets, {name}", path, root, "prediction_sets"))
    return entries
