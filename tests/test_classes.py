"""The class mean in tables and the monitored metric covers explicit classes: by default every class not
named like a background (class 0 is not dropped blindly), or data.mean_classes."""
import pytest
import torch

from segcal.classes import averaged_classes
from segcal.data.config import DataConfig
from segcal.metrics.segmentation import quality_summary
from segcal.models.lightning import SegModel
from segcal.pipeline.results import SegmentationQuality


def test_default_excludes_only_classes_named_like_a_background():
    assert averaged_classes(["background", "car", "person"]) == [1, 2]
    assert averaged_classes(["sky", "road", "car"]) == [0, 1, 2]  # street scenes: class 0 is a real class
    assert averaged_classes(["road", "void", "car"]) == [0, 2]
    assert averaged_classes(["Background", "BG"]) == [0, 1]  # nothing left: every class


def test_explicit_classes_and_clear_errors():
    assert averaged_classes(["sky", "road", "car"], ["car", "road"]) == [2, 1]
    with pytest.raises(ValueError, match="data.mean_classes must name classes of"):
        averaged_classes(["sky", "road"], ["sky", "raod"])
    with pytest.raises(ValueError, match="data.mean_classes must be null or a non-empty list"):
        DataConfig(mean_classes=[]).validate()
    with pytest.raises(ValueError, match="data.mean_classes must name classes"):
        DataConfig(classes=["sky", "road"], remap=None, kind="folder", root="x", mean_classes=["car"]).validate()


def test_tables_name_the_mean():
    results = {m: torch.tensor([0.9, 0.5, float("nan")]) for m in ("dice", "iou", "recall", "precision", "accuracy")}
    results["overall_accuracy"] = torch.tensor(0.8)
    q = SegmentationQuality.from_dict(quality_summary(results, ["sky", "road", "car"]))
    assert q.mean("dice") == pytest.approx(0.7) and q.mean_label == "mean over sky, road, car"
    q = SegmentationQuality.from_dict(quality_summary(results, ["sky", "road", "car"], [1]))
    assert q.mean("dice") == pytest.approx(0.5) and q.mean_label == "mean over road"


def test_the_model_monitors_the_configured_mean():
    kw = {"model": {}, "loss": {}, "optim": {}, "num_classes": 3, "class_names": ["sky", "road", "car"]}
    assert SegModel(**kw).averaged == [0, 1, 2]
    assert SegModel(**kw, mean_classes=[2]).averaged == [2]
