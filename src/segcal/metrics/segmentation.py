"""Segmentation quality per class (Dice, IoU, recall, precision, pixel accuracy).

Built on torchmetrics' streaming confusion matrix, so it accumulates batch by batch in
O(C²) memory and reduces across DDP ranks by summation.
"""
from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from segcal.classes import averaged_classes

QUALITY_METRICS = ("dice", "iou", "recall", "precision", "accuracy")


def quality_from_confusion(confmat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class quality from a confusion matrix ``[C, C]`` (rows = truth, cols = prediction).

    Returns ``{name: [C]}`` for Dice, IoU, recall, precision and one-vs-rest pixel
    accuracy, plus ``overall_accuracy`` (scalar). Classes absent from both truth and
    prediction get NaN (undefined), never a fake 0 or 1.
    """
    cm = confmat.double()
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    total = cm.sum()
    tn = total - tp - fp - fn

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, float("nan")))

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "recall": ratio(tp, tp + fn),
        "precision": ratio(tp, tp + fp),
        "accuracy": ratio(tp + tn, total.expand_as(tp)),
        "overall_accuracy": ratio(tp.sum(), total),
    }


def class_mean(per_class: torch.Tensor, classes: list[int] | None = None) -> torch.Tensor:
    """Mean of ``per_class [C]`` over ``classes`` (default: classes ``1..C-1``), ignoring NaN (undefined
    classes); NaN when none is defined."""
    values = torch.as_tensor(per_class, dtype=torch.float64)
    picked = values[list(range(1, len(values))) if classes is None else list(classes)]
    picked = picked[~picked.isnan()]
    return picked.mean() if picked.numel() else torch.tensor(float("nan"), dtype=torch.float64)


def quality_summary(results: dict[str, torch.Tensor], class_names: list[str],
                    classes: list[int] | None = None) -> dict:
    """``{"classes", "per_class": {metric: [C]}, "mean_foreground": {metric: x}, "averaged_classes": [names],
    "overall_accuracy"}`` from the output of :func:`quality_from_confusion` (plain floats; the mean over
    ``classes``, default :func:`averaged_classes`)."""
    classes = averaged_classes(class_names) if classes is None else list(classes)
    return {"classes": list(class_names), "averaged_classes": [str(class_names[i]) for i in classes],
            "per_class": {m: [float(v) for v in results[m]] for m in QUALITY_METRICS},
            "mean_foreground": {m: float(class_mean(results[m], classes)) for m in QUALITY_METRICS},
            "overall_accuracy": float(results["overall_accuracy"])}


class SegmentationMetrics(MulticlassConfusionMatrix):
    """Streaming per-class segmentation quality.

    ``update(preds, labels)`` takes predicted class indices ``[N, H, W]`` (or scores
    ``[N, C, H, W]``, arg-maxed) and labels ``[N, H, W]``; ``ignore_index`` pixels are
    skipped. ``compute()`` returns the dict of :func:`quality_from_confusion`.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, validate_args=False, **kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        if preds.ndim == target.ndim + 1:
            preds = preds.max(dim=1).indices
        super().update(preds.long(), target.long())

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return quality_from_confusion(super().compute())
