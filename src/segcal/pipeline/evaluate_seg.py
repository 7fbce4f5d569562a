"""Segmentation quality of a model over a loader (validation during training, refinement rounds)."""
from __future__ import annotations

from segcal.metrics.segmentation import SegmentationMetrics, quality_summary
from segcal.models.lightning import SegModel
from segcal.pipeline.inference import run_model


def evaluate_segmentation_model(model: SegModel, loader, progress: bool = True,
                                description: str = "evaluate") -> dict:
    """Per-class and foreground-mean Dice, IoU, recall, precision, accuracy over ``loader``.

    Returns ``{"classes": [...], "per_class": {metric: [C]}, "mean_foreground": {metric: x},
    "overall_accuracy": x, "num_images": n}`` (NaN for classes absent from truth and prediction).
    """
    metrics = SegmentationMetrics(model.num_classes, model.ignore_index)
    n = 0
    for logits, batch in run_model(model, loader, description, progress):
        metrics.update(model.predict_labels(logits), batch["mask"])
        n += len(logits)
    return {**quality_summary(metrics.compute(), model.class_names, model.averaged), "num_images": n}
