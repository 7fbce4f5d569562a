"""DataConfig validation and class-count resolution."""
import json

import pytest

from segcal.configio import from_dict
from segcal.data.config import AugmentConfig, DataConfig, SyntheticConfig


def test_defaults_validate():
    cfg = DataConfig().validate()
    assert cfg.num_classes == 2
    assert cfg.class_names == ["background", "class1"]


@pytest.mark.parametrize("change, key", [
    ({"kind": "hdf5"}, "data.kind"),
    ({"image_size": (0, 64)}, "data.image_size"),
    ({"image_size": (64, -8)}, "data.image_size"),
    ({"resize": "squash"}, "data.resize"),
    ({"std": (0.2, 0.0, 0.2)}, "data.std"),
    ({"batch_size": 0}, "data.batch_size"),
    ({"num_workers": -1}, "data.num_workers"),
    ({"n_cal": 0}, "data.n_cal"),
    ({"splits": {"train": 0.8, "val": 0.3}}, "data.splits"),
    ({"splits": {"train": 1.5}}, "data.splits.train"),
    ({"splits": {"train": -3}}, "data.splits.train"),
    ({"splits": {"training": 0.5}}, "data.splits"),
    ({"splits": {"train": 0.5}, "n_cal": 5}, "data.n_cal"),
    ({"remap": "ternary"}, "data.remap"),
    ({"remap": [[0], [1, 0]]}, "data.remap"),
    ({"remap": [[0], "rest", "rest"]}, "data.remap"),
    ({"remap": [[0], [255]]}, "data.remap[1]"),
    ({"classes": ["only"]}, "data.classes"),
    ({"classes": ["a", "b", "c"]}, "data.classes"),
    ({"ignore_index": 1}, "data.ignore_index"),
    ({"categories": []}, "data.categories"),
    ({"augment": AugmentConfig(mixup_alpha=-1)}, "data.augment.mixup_alpha"),
    ({"augment": AugmentConfig(hflip=1.5)}, "data.augment.hflip"),
    ({"augment": AugmentConfig(scale=(1.2, 0.8))}, "data.augment.scale"),
    ({"augment": AugmentConfig(translate=1.0)}, "data.augment.translate"),
    ({"synthetic": SyntheticConfig(num_classes=1)}, "data.synthetic.num_classes"),
    ({"synthetic": SyntheticConfig(num_images=0)}, "data.synthetic.num_images"),
])
def test_invalid_values_name_the_key(change, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        DataConfig(**change).validate()


def test_mixup_alpha_message():
    with pytest.raises(ValueError, match=r"data\.augment\.mixup_alpha must be >= 0, got -1"):
        DataConfig(augment=AugmentConfig(mixup_alpha=-1)).validate()


def test_num_classes_resolution(tmp_path):
    assert DataConfig(synthetic=SyntheticConfig(num_classes=5)).num_classes == 5
    assert DataConfig(kind="coco", categories=["person", "dog"]).num_classes == 3
    assert DataConfig(kind="coco", categories=["person", "dog"]).class_names == ["background", "person", "dog"]
    assert DataConfig(kind="folder", root=str(tmp_path), remap="binary").num_classes == 2
    assert DataConfig(kind="folder", root=str(tmp_path), remap=[[0], [3], "rest"]).num_classes == 3
    (tmp_path / "classes.json").write_text(json.dumps(["bg", "hair", "skin", "hat"]))
    folder = DataConfig(kind="folder", root=str(tmp_path))
    assert folder.num_classes == 4
    grouped = DataConfig(kind="folder", root=str(tmp_path), remap=[[0], [2], "rest"])
    assert grouped.class_names == ["bg", "skin", "rest"]


def test_folder_without_class_info_asks_for_classes(tmp_path):
    with pytest.raises(ValueError, match="no dataset there"):  # an empty folder is named as such
        _ = DataConfig(kind="folder", root=str(tmp_path)).num_classes
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="data.classes"):
        _ = DataConfig(kind="folder", root=str(tmp_path)).num_classes
    assert DataConfig(kind="folder", root=str(tmp_path), classes=["bg", "a", "b"]).num_classes == 3


def test_classes_must_match_classes_json_without_remap(tmp_path):
    (tmp_path / "classes.json").write_text(json.dumps(["bg", "a", "b"]))
    with pytest.raises(ValueError, match="data.remap"):
        _ = DataConfig(kind="folder", root=str(tmp_path), classes=["bg", "fg"]).class_names


def test_generic_loader_builds_nested_config():
    cfg = from_dict(DataConfig, {"kind": "synthetic", "remap": [[0], "rest"], "image_size": [32, 48],
                                 "splits": {"train": 10, "test": 0.5},
                                 "augment": {"scale": [0.9, 1.1], "mixup_alpha": 0.2}}, "data").validate()
    assert cfg.remap == [[0], "rest"] and cfg.image_size == (32, 48) and cfg.augment.scale == (0.9, 1.1)
    assert cfg.splits == {"train": 10, "test": 0.5}
