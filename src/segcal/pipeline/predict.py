"""`segcal predict`: save per-image predictions (and conformal prediction sets) for any later use.

``<out>/<name>.npz`` holds ``logits [C, H, W]`` float32 (recalibrated when the checkpoint
carries a recalibrator) and, with ``alpha``, ``sets [C, H, W]`` bool and ``set_size [H, W]``
uint8; ``<out>/masks/<name>.png`` the labels; ``<out>/meta.json`` classes, colours, head, source and
each image's original size. With ``alpha`` also ``<out>/sets/<name>.png`` (colour key:
``sets/legend.png``): singleton sets in their class colour, ambiguous pixels white, empty sets black.
With ``original_size`` the predicted label map ``<out>/original/<name>.png`` and (with ``alpha``) the set
image ``<out>/original/sets/<name>.png`` at each image's original size (``data.resize`` undone; pixels a
``crop`` cut away get ``ignore_index`` / grey). With a risk controller in the checkpoint (``--method risk`` or
``margin``), its calibrated masks at the controller's α: ``risk/<name>.png`` (0/255) for a thresholded mask, or
``risk/outer/<name>.png``, ``risk/inner/<name>.png`` and the outline overlay ``risk/band/<name>.png`` for
margins; multiclass sets from ``--loss miscoverage`` go into the ``.npz`` as ``risk_sets``. ``alpha``, when
given, replaces the controller's α (the rows of every calibration image are stored). The folder is directly
usable as ``segcal evaluate --predictions <out>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from segcal.batch import Batch
from segcal.calibrated import CalibrationBundle
from segcal.data.files import write_png
from segcal.data.geometry import to_original
from segcal.data.prediction_writer import PredictionWriter
from segcal.io.atomic import atomic_write
from segcal.outputs import hard_labels
from segcal.pipeline.progress import track
from segcal.pipeline.sources import Stream
from segcal.plots.conformal import plot_set_legend, set_colours

UNSEEN_GREY = 0.5
"""Colour of original-size pixels the model never saw (cut away by ``data.resize: crop``)."""


def predict(source, out_dir: str | Path, bundle: CalibrationBundle | None = None, alpha: float | None = None,
            overwrite: bool = False, progress: bool = True, original_size: bool = False) -> dict[str, Any]:
    """Write predictions of ``source`` into ``out_dir``; returns a summary dict."""
    bundle = bundle if bundle is not None else CalibrationBundle()
    if alpha is not None:
        if bundle.conformal is None and bundle.risk is None:
            raise ValueError("--alpha needs a conformally calibrated checkpoint (or one with a risk controller); run "
                             "`segcal calibrate CHECKPOINT --method kandinsky-kmeans` (or pixel/image/local/risk/...) "
                             "first")
        if not 0 < alpha < 1:
            raise ValueError(f"--alpha must lie strictly between 0 and 1, got {alpha}")
    resize = getattr(source, "resize", None)
    if original_size and resize is None:
        raise ValueError("--original-size needs each image's original size: predict from a checkpoint, or from a "
                         "predictions folder written by `segcal predict` from a checkpoint (its meta.json records "
                         "them)")
    out = Path(out_dir)
    info = source.describe()
    info["calibration"] = bundle.describe()
    colors = getattr(source, "class_colors", None)
    sizes, count = [], 0
    with PredictionWriter(out, classes=source.class_names, head=source.head, ignore_index=source.ignore_index,
                          source=info, overwrite=overwrite, colors=colors, resize=resize) as writer:
        if alpha is not None:
            plot_set_legend(source.class_names, path=writer.path("sets/legend.png"), colors=colors)
        for batch in track(Stream(source, bundle.apply), "predict", enabled=progress):
            sets = None if alpha is None or bundle.conformal is None else bundle.conformal.predict_set(
                batch.logits, alpha, "logits", source.head)
            risk = None if bundle.risk is None else _risk_masks(bundle.risk, batch.logits, alpha)
            if original_size and batch.sizes is None:
                raise ValueError(f"--original-size: no original size recorded for {batch.names[0]}")
            for i, name in enumerate(batch.names):
                extra = {}
                if sets is not None:
                    size = sets[i].sum(0).to(torch.uint8)
                    extra = {"sets": sets[i].numpy(), "set_size": size.numpy()}
                    sizes.append(float(size.float().mean()))
                    _write_rgb(writer.path(f"sets/{name}.png"), set_colours(sets[i], colors))
                if original_size:
                    _write_original(writer, batch, i, None if sets is None else sets[i], source, colors)
                if risk is not None:
                    extra.update(_write_risk(writer, source, batch, i, {k: v[i] for k, v in risk.items()}))
                writer.add(name, batch.logits[i].numpy(), batch.labels[i].numpy(),
                           original_size=None if batch.sizes is None else batch.sizes[i], **extra)
                count += 1
    summary = {"out": str(out), "num_images": count, "calibration": bundle.describe(), "alpha": alpha}
    if bundle.risk is not None:
        summary["risk"] = {**bundle.risk.info_, "alpha": alpha or bundle.risk.alpha}
    if sizes:
        summary["mean_set_size"] = sum(sizes) / len(sizes)
    return summary


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    """RGB ``[H, W, 3]`` in [0, 1] as an 8-bit PNG, atomically."""
    pixels = (rgb * 255).round().astype(np.uint8)
    atomic_write(path, lambda tmp: write_png(tmp, pixels))


def _write_original(writer: PredictionWriter, batch: Batch, i: int, sets: torch.Tensor | None, source,
                    colors) -> None:
    """Label map (and set image) of image ``i`` at its original size, under ``original/``."""
    name, original = batch.names[i], batch.sizes[i]
    logits, covered = to_original(batch.logits[i], original, source.resize)
    labels = hard_labels(logits[None], source.head)[0]
    labels = torch.where(covered, labels, torch.full_like(labels, source.ignore_index))
    label_map = labels.numpy()
    atomic_write(writer.path(f"original/{name}.png"), lambda tmp: write_png(tmp, label_map))
    if sets is not None:
        big, covered = to_original(sets, original, source.resize, nearest=True)
        rgb = set_colours(big, colors)
        rgb[~covered.numpy()] = UNSEEN_GREY
        _write_rgb(writer.path(f"original/sets/{name}.png"), rgb)


def _risk_masks(controller, logits: torch.Tensor, alpha: float | None) -> dict[str, torch.Tensor]:
    """The controller's masks of a batch at ``alpha`` (``None``: the controller's): ``mask`` / ``sets``, or
    ``pred``, ``outer`` (and ``inner``)."""
    out = controller.predict(logits, alpha)
    if controller.method == "margin":
        return {k: v for k, v in (("pred", out.pred), ("outer", out.outer), ("inner", out.inner)) if v is not None}
    return {"sets" if controller.loss == "miscoverage" else "mask": out}


def _write_mask(path: Path, mask: torch.Tensor) -> None:
    pixels = mask.numpy().astype(np.uint8) * 255
    atomic_write(path, lambda tmp: write_png(tmp, pixels))


def _write_risk(writer: PredictionWriter, source, batch: Batch, i: int, masks: dict[str, torch.Tensor]
                ) -> dict[str, np.ndarray]:
    """PNGs of image ``i``'s calibrated masks; returns the arrays for its ``.npz``."""
    from segcal.plots.risk import plot_mask_outlines

    name = batch.names[i]
    if "sets" in masks:
        return {"risk_sets": masks["sets"].numpy()}
    if "mask" in masks:
        _write_mask(writer.path(f"risk/{name}.png"), masks["mask"])
        return {"risk_mask": masks["mask"].numpy()}
    for side in ("outer", "inner"):
        if side in masks:
            _write_mask(writer.path(f"risk/{side}/{name}.png"), masks[side])
    image = source.display_image(batch, i) if batch.images is not None else None
    fig = plot_mask_outlines(image, masks, name, path=writer.path(f"risk/band/{name}.png"))
    fig.clear()
    return {f"risk_{side}": mask.numpy() for side, mask in masks.items() if side != "pred"}
