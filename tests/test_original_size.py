"""Predictions at the original image size (``data.resize`` undone) and class colours from ``classes.json``."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_experiment_dict, write_prediction_folder
from segcal.cli.main import main
from segcal.data.config import SyntheticConfig
from segcal.data.files import read_mask
from segcal.data.folder import write_folder_dataset
from segcal.data.geometry import to_original
from segcal.data.labels import parse_color, read_classes_file
from segcal.data.synthetic import SyntheticDataset
from segcal.data.transforms import fit_to_size
from segcal.pipeline.config import experiment_from_dict
from segcal.pipeline.train import train
from segcal.plots.palette import class_palette

COLORS = [[0, 0, 0], [250, 20, 20], "#14c814"]


def test_pad_is_undone_exactly():
    x = torch.randn(3, 10, 20)
    padded = torch.zeros(3, 20, 20)
    padded[:, 5:15] = x  # what fit_to_size does to a 10x20 image at 20x20 (no resizing needed)
    back, covered = to_original(padded, (10, 20), "pad")
    assert torch.equal(back, x) and covered.all()


def test_crop_marks_what_the_model_never_saw():
    x = torch.arange(100.0).view(1, 10, 10)  # centre rows 5..14 of a 20x10 image
    back, covered = to_original(x, (20, 10), "crop")
    assert back.shape == (1, 20, 10)
    assert torch.equal(back[:, 5:15], x) and covered[5:15].all() and not covered[:5].any() and not covered[15:].any()


@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
def test_a_mask_survives_the_round_trip(mode):
    rng = np.random.default_rng(0)
    mask = np.zeros((48, 80), np.int64)
    mask[10:30, 20:60] = 1
    mask[30:, 50:] = 2
    image = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    _, small = fit_to_size(image, mask, (32, 32), mode, ignore_index=255)
    back, covered = to_original(small[None].clamp(max=2), (48, 80), mode, nearest=True)
    assert back.shape == (1, 48, 80) and back.dtype == small.dtype
    agree = (back[0][covered].numpy() == mask[covered.numpy()]).mean()
    assert agree > 0.9
    assert covered.all() == (mode != "crop")


def test_classes_json_colours(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(["bg", {"name": "car", "color": [255, 0, 0]}, {"name": "sky", "color": "#0000ff"}]))
    names, colors = read_classes_file(path)
    assert names == ["bg", "car", "sky"] and colors == [None, (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
    palette = class_palette(3, colors)
    assert np.allclose(palette[1:], [[1, 0, 0], [0, 0, 1]]) and np.allclose(palette[0], class_palette(3)[0])
    path.write_text(json.dumps({"0": "bg", "1": {"name": "car", "color": [1, 2, 3]}}))
    assert read_classes_file(path)[1] == [None, (1 / 255, 2 / 255, 3 / 255)]
    path.write_text(json.dumps(["bg", "car"]))
    assert read_classes_file(path) == (["bg", "car"], None)


@pytest.mark.parametrize("entry, message", [
    ({"name": "car", "color": [300, 0, 0]}, "color must be"),
    ({"name": "car", "color": "red"}, "color must be"),
    ({"color": [1, 2, 3]}, "without a \"name\""),
])
def test_bad_colours_name_the_file_and_class(tmp_path, entry, message):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(["bg", entry]))
    with pytest.raises(ValueError, match=message) as err:
        read_classes_file(path)
    assert "classes.json" in str(err.value)
    with pytest.raises(ValueError, match="3 entries for 2 classes"):
        class_palette(2, [None, None, None])
    assert parse_color("#ffffff", "x") == (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A tiny model trained on 24x40 images with class colours, fitted to 32x32 (letterbox)."""
    tmp = tmp_path_factory.mktemp("orig")
    synthetic = SyntheticDataset(SyntheticConfig(num_images=20, num_classes=3, height=24, width=40),
                                 ["background", "car", "sky"])
    root = write_folder_dataset(synthetic, tmp / "data", classes=["background", "car", "sky"])
    (root / "classes.json").write_text(json.dumps(["background", {"name": "car", "color": COLORS[1]},
                                                   {"name": "sky", "color": COLORS[2]}]))
    d = tiny_experiment_dict(tmp, data={"kind": "folder", "root": str(root), "synthetic": {},
                                        "splits": {"train": 8, "val": 2, "cal": 5, "test": 5}},
                             train={"epochs": 1, "vis_samples": 2, "progress": False})
    result = train(experiment_from_dict(d), tmp / "run")
    ckpt = result.last_checkpoint
    assert main(["calibrate", str(ckpt), "--method", "image", "--no-progress"]) == 0
    return ckpt.with_name("last.image.ckpt"), tmp


def _check_original_outputs(out, colours):
    meta = json.loads((out / "meta.json").read_text())
    assert meta["geometry"]["resize"] == "pad" and len(meta["geometry"]["original_sizes"]) == 5
    names = sorted(meta["geometry"]["original_sizes"])
    singletons = 0
    for name in names:
        labels = read_mask(out / "original" / f"{name}.png")
        assert labels.shape == (24, 40) and labels.max() <= 2
        rgb = np.asarray(Image.open(out / "original" / "sets" / f"{name}.png"))
        assert rgb.shape == (24, 40, 3)
        logged = np.asarray(Image.open(out / "sets" / f"{name}.png"))
        assert logged.shape == (32, 32, 3)
        found = {tuple(c) for c in rgb.reshape(-1, 3)}
        allowed = {(255, 255, 255), (0, 0, 0), *map(tuple, colours)}
        assert found <= allowed, found - allowed
        singletons += len(found & {*map(tuple, colours)})
    assert singletons > 0  # the class colours of classes.json are drawn
    assert (out / "sets" / "legend.png").is_file()


def test_predict_at_the_original_size_with_class_colours(folder_run, tmp_path):
    ckpt, _ = folder_run
    out = tmp_path / "preds"
    assert main(["predict", str(ckpt), "--out", str(out), "--alpha", "0.2", "--original-size", "--no-progress"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    palette = (class_palette(3, meta["colors"]) * 255).round().astype(int)
    assert palette[1].tolist() == COLORS[1] and palette[2].tolist() == [20, 200, 20]
    _check_original_outputs(out, palette)
    again = tmp_path / "again"  # from the saved predictions: meta.json carries sizes and colours
    assert main(["predict", str(ckpt), "--predictions", str(out), "--out", str(again), "--alpha", "0.2",
                 "--original-size", "--no-progress"]) == 0
    _check_original_outputs(again, palette)
    for name in json.loads((out / "meta.json").read_text())["geometry"]["original_sizes"]:
        first, second = (read_mask(folder / "original" / f"{name}.png") for folder in (out, again))
        assert np.array_equal(first, second)


def test_original_size_needs_recorded_sizes(tmp_path, capsys):
    write_prediction_folder(tmp_path / "plain")
    assert main(["predict", "--predictions", str(tmp_path / "plain"), "--out", str(tmp_path / "o"), "--original-size",
                 "--no-progress"]) == 2
    assert "--original-size needs each image's original size" in capsys.readouterr().err
