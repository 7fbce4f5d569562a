"""Segmentation quality of a model over one split (`segcal evaluate-seg`)."""
from __future__ import annotations

from pathlib import Path

from segcal.metrics.segmentation import QUALITY_METRICS, SegmentationMetrics
from segcal.models.lightning import SegModel
from segcal.pipeline.inference import iterate_logits, load_model


def evaluate_segmentation_model(model: SegModel, loader, progress: bool = True,
                                description: str = "evaluate") -> dict:
    """Per-class and foreground-mean Dice, IoU, recall, precision, accuracy over ``loader``.

    Returns ``{"classes": [...], "per_class": {metric: [C]}, "mean_foreground": {metric: x},
    "overall_accuracy": x, "num_images": n}`` (NaN for classes absent from truth and prediction).
    """
    metrics = SegmentationMetrics(model.num_classes, model.ignore_index)
    n = 0
    for logits, batch in iterate_logits(model, loader, description, progress):
        metrics.update(model.predict_labels(logits), batch["mask"])
        n += len(logits)
    return {**quality_dict(metrics, model.class_names), "num_images": n}


def quality_dict(metrics: SegmentationMetrics, class_names: list[str]) -> dict:
    """``{"classes", "per_class": {metric: [C]}, "mean_foreground": {metric: x}, "overall_accuracy"}``."""
    res = metrics.compute()
    per_class = {m: [float(v) for v in res[m]] for m in QUALITY_METRICS}
    mean_fg = {}
    for m in QUALITY_METRICS:
        fg = [v for v in per_class[m][1:] if v == v]
        mean_fg[m] = sum(fg) / len(fg) if fg else float("nan")
    return {"classes": list(class_names), "per_class": per_class, "mean_foreground": mean_fg,
            "overall_accuracy": float(res["overall_accuracy"])}


def evaluate_segmentation(checkpoint: str | Path, split: str = "test", overrides: list[str] | None = None,
                          device: str = "auto", progress: bool = True) -> dict:
    """Load ``checkpoint`` and evaluate it on ``split`` of its own data config.

    The run directory's manifests (``<run>/manifests``) are reused when present, so the split
    is exactly the one the model was trained with. ``overrides`` (``data.root=...``) adjust the
    stored data config, e.g. when the data moved.
    """
    from segcal.pipeline.sources import datamodule_for

    model = load_model(checkpoint, device)
    dm = datamodule_for(checkpoint, model, overrides)
    if split not in dm.split_names:
        raise ValueError(f"split must be one of {sorted(dm.split_names)}, got {split!r}")
    result = evaluate_segmentation_model(model, dm.dataloader(split), progress, f"evaluate {split}")
    result.update(split=split, checkpoint=str(checkpoint))
    return result
