"""`segcal predict`: save per-image predictions (and conformal prediction sets) for any later use.

``<out>/<name>.npz`` holds ``logits [C, H, W]`` float32 (recalibrated when the checkpoint
carries a recalibrator) and, with ``alpha``, ``sets [C, H, W]`` bool and ``set_size [H, W]``
uint8; ``<out>/masks/<name>.png`` the labels; ``<out>/meta.json`` classes, head and source.
With ``alpha`` also ``<out>/sets/<name>.png`` (colour key: ``sets/legend.png``): singleton sets in
their class colour, ambiguous pixels white, empty sets black. The folder is directly usable as
``segcal evaluate --predictions <out>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from segcal.calibrated import CalibrationBundle
from segcal.data.files import write_png
from segcal.data.predictions import PredictionWriter
from segcal.io.atomic import atomic_write
from segcal.pipeline.progress import track
from segcal.pipeline.sources import Stream
from segcal.plots.conformal import plot_set_legend, set_colours


def predict(source, out_dir: str | Path, bundle: CalibrationBundle | None = None, alpha: float | None = None,
            overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write predictions of ``source`` into ``out_dir``; returns a summary dict."""
    bundle = bundle if bundle is not None else CalibrationBundle()
    if alpha is not None:
        if bundle.conformal is None:
            raise ValueError("--alpha needs a conformally calibrated checkpoint (nc_curves); run "
                             "`segcal calibrate CHECKPOINT --method kandinsky-kmeans` (or pixel/image/...) first")
        if not 0 < alpha < 1:
            raise ValueError(f"--alpha must lie strictly between 0 and 1, got {alpha}")
    out = Path(out_dir)
    info = source.describe()
    info["calibration"] = bundle.describe()
    sizes, count, legend_written = [], 0, False
    with PredictionWriter(out, classes=source.class_names, head=source.head, ignore_index=source.ignore_index,
                          source=info, overwrite=overwrite) as writer:
        for batch in track(Stream(source, bundle.apply), "predict", enabled=progress):
            logits = batch.logits
            sets = None if alpha is None else bundle.conformal.predict_set(logits, alpha, "logits", source.head)
            if sets is not None and not legend_written:
                plot_set_legend(source.class_names, path=writer.path("sets/legend.png"))
                legend_written = True
            for i, name in enumerate(batch.names):
                extra = {}
                if sets is not None:
                    size = sets[i].sum(0).to(torch.uint8)
                    extra = {"sets": sets[i].numpy(), "set_size": size.numpy()}
                    sizes.append(float(size.float().mean()))
                    rgb = (set_colours(sets[i]) * 255).round().astype(np.uint8)
                    atomic_write(writer.path(f"sets/{name}.png"), lambda tmp, rgb=rgb: write_png(tmp, rgb))
                writer.add(name, logits[i].numpy(), batch.labels[i].numpy(), **extra)
                count += 1
    summary = {"out": str(out), "num_images": count, "calibration": bundle.describe(), "alpha": alpha}
    if sizes:
        summary["mean_set_size"] = sum(sizes) / len(sizes)
    return summary

