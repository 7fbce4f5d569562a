"""Bad inputs and faults through the CLI: one clear error (rc 2), nothing half-written, nothing executed."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_experiment_dict
from segcal.cli.main import main
from segcal.data.prediction_writer import PredictionWriter
from segcal.io.atomic import output_lock
from segcal.pipeline.config import experiment_from_dict
from segcal.pipeline.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hard")
    d = tiny_experiment_dict(tmp, data={"synthetic": {"num_images": 24, "num_classes": 3, "height": 32, "width": 32},
                                        "splits": {"train": 8, "val": 4, "cal": 6, "test": 6}},
                             train={"epochs": 1, "vis_samples": 0, "progress": False})
    result = train(experiment_from_dict(d), tmp / "run")
    return result.run_dir, result.last_checkpoint


def _cli(*args) -> int:
    return main([str(a) for a in args] + (["--no-progress"] if args[0] not in ("config", "report") else []))


def _error(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("command", [["calibrate", "{ckpt}", "--method", "temperature"], ["evaluate", "{ckpt}"],
                                     ["predict", "{ckpt}", "--out", "{tmp}/p"],
                                     ["train", "demo", "--resume", "{ckpt}"]])
def test_a_crafted_checkpoint_runs_no_code(tmp_path, capsys, command):
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "hyper_parameters": Evil(marker)}, ckpt)
    assert _cli(*(a.format(ckpt=ckpt, tmp=tmp_path) for a in command)) == 2
    assert not marker.exists()
    assert "evil.ckpt: refused to open" in _error(capsys)
    torch.load(ckpt, weights_only=False)  # the negative control: unpickling it does run the command
    assert marker.exists()


def test_calibrated_checkpoints_load_weights_only(run, tmp_path):
    out = tmp_path / "c.ckpt"
    assert _cli("calibrate", run[1], "--method", "pixel", "--out", out) == 0
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["segcal"]["conformal"]["grouping"] == "pixel" and "state_dict" in ckpt


def test_full_disk_calibrate_and_predict(run, full_disk, capsys):
    assert _cli("calibrate", run[1], "--method", "temperature", "--out", full_disk / "x.ckpt") == 2
    assert "x.ckpt: No space left on device" in _error(capsys)
    assert _cli("predict", run[1], "--out", full_disk / "preds") == 2
    assert "No space left on device" in _error(capsys)
    assert list(full_disk.iterdir()) == []  # no temp file, no partial folder, no lock


@pytest.mark.parametrize("command", [
    ["calibrate", "{ckpt}", "--method", "temperature", "--out", "{ro}/x.ckpt"],
    ["evaluate", "{ckpt}", "--out", "{ro}/eval"],
    ["predict", "{ckpt}", "--out", "{ro}/p"],
    ["report", "{run}", "--out", "{ro}/report.html"],
    ["train", "demo", "--run-dir", "{ro}/run", "train.epochs=1"],
])
def test_read_only_outputs_give_one_error(run, readonly_dir, capsys, command):
    args = [a.format(ckpt=run[1], run=run[0], ro=readonly_dir) for a in command]
    assert _cli(*args) == 2
    err = _error(capsys)
    assert str(readonly_dir) in err and ("Read-only file system" in err or "Permission denied" in err)


def test_concurrent_writer_is_refused_with_a_clear_message(run, tmp_path, capsys):
    target = tmp_path / "t.ckpt"
    with output_lock(target):
        assert _cli("calibrate", run[1], "--method", "temperature", "--out", target) == 2
    assert "t.ckpt is being written by another segcal run" in _error(capsys)
    assert not target.exists()
    assert _cli("calibrate", run[1], "--method", "temperature", "--out", target) == 0  # the lock is gone


@pytest.mark.slow
def test_three_concurrent_calibrations_one_result_each_or_a_clear_refusal(run, tmp_path):
    target = tmp_path / "same.ckpt"
    cmd = [sys.executable, "-m", "segcal.cli.main", "calibrate", str(run[1]), "--method", "temperature",
           "--out", str(target), "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert any(rc == 0 for rc, _ in results)
    for rc, err in results:
        assert rc == 0 or (rc == 2 and "being written by another segcal run" in err), err
    assert torch.load(target, weights_only=True)["segcal"]["recalibration"] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.ckpt"]


def _prediction_folder(folder: Path, probs: np.ndarray, masks: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, (p, m) in enumerate(zip(probs, masks)):
        np.save(folder / f"im{i}.npy", p.astype(np.float32))
        np.save(folder / "masks" / f"im{i}.npy", m.astype(np.int64))
    return folder


def _softmax_folder(tmp_path, scale=1.0, ignore_all=False, n=6):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (n, 3, 16, 16))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True) * scale
    masks = np.full((n, 16, 16), 255) if ignore_all else rng.integers(0, 3, (n, 16, 16))
    return _prediction_folder(tmp_path / f"preds{scale}{ignore_all}", probs, masks)


def test_ambiguous_probabilities_are_refused_and_the_detected_kind_is_printed(tmp_path, capsys):
    scaled = _softmax_folder(tmp_path, scale=0.8)
    assert _cli("evaluate", "--predictions", scaled, "--out", tmp_path / "e1") == 2
    err = _error(capsys)
    assert "cannot tell logits from probabilities" in err and "--kind" in err
    assert _cli("evaluate", "--predictions", scaled, "--kind", "logits", "--out", tmp_path / "e2") == 0
    assert "kind logits (given)" in capsys.readouterr().out
    plain = _softmax_folder(tmp_path)
    assert _cli("evaluate", "--predictions", plain, "--out", tmp_path / "e3") == 0
    assert "kind probs (detected: values in [0, 1] summing to 1" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", [["calibrate", "--predictions", "{p}", "--method", "pixel"],
                                     ["calibrate", "--predictions", "{p}", "--method", "temperature"],
                                     ["evaluate", "--predictions", "{p}"]])
def test_all_ignored_masks_are_an_error_naming_the_source(tmp_path, capsys, command):
    folder = _softmax_folder(tmp_path, ignore_all=True)
    assert _cli(*(a.format(p=folder) for a in command)) == 2
    err = _error(capsys)
    assert f"predictions {folder}" in err and "no labelled pixels" in err
    assert not (folder / "calibration").exists() and not (folder / "eval" / "uncalibrated" / "evaluation.json").exists()


def test_training_without_labels_is_an_error_naming_the_split(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    from segcal.data.files import write_png
    for i in range(8):
        write_png(root / "images" / f"a{i}.png", np.zeros((32, 32, 3), np.uint8))
        write_png(root / "masks" / f"a{i}.png", np.full((32, 32), 255, np.uint8))
    assert _cli("train", "demo", "--run-dir", tmp_path / "run", f"data.root={root}", "data.kind=folder",
                "data.classes=[bg, fg]", "data.splits={train: 4, val: 2, cal: 1, test: 1}", "train.epochs=1",
                "train.progress=false", "data.image_size=[32, 32]") == 2
    assert "split 'train' has no labelled pixels" in _error(capsys)


@pytest.mark.parametrize("override, message", [
    ("data.splits={train: 0.7", "override 'data.splits={train: 0.7': the value is not valid YAML"),
    ("train.epochs=!!python/object/apply:os.system [ls]", "not valid YAML (could not determine a constructor"),
    ("train.epochs=many", "override train.epochs=many: train.epochs must be an integer"),
    ("data.splits={train: 0.7, val: 0.5}", "override data.splits={train: 0.7, val: 0.5}: data.splits: fractions"),
])
def test_override_errors_name_the_override(capsys, override, message):
    assert _cli("config", "demo", override) == 2
    err = _error(capsys)
    assert message in err and "demo.yaml" not in err


def test_alphas_checked_even_without_conformal_calibration(run, capsys):
    assert _cli("evaluate", run[1], "--alphas", "0.1,1.5") == 2
    assert "--alphas must lie strictly between 0 and 1" in _error(capsys)


def test_figures_and_outputs_are_world_readable(run, tmp_path):
    old = os.umask(0o022)
    try:
        assert _cli("evaluate", run[1], "--out", tmp_path / "ev") == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "ev").rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in files)
    assert {p.stat().st_mode & 0o777 for p in files} == {0o644}


def test_small_n_cal_warns_with_the_number_that_would_do(run, capsys):
    assert _cli("calibrate", run[1], "--method", "pixel", "--n-cal", "4") == 0
    err = _error(capsys)
    assert "warning:" in err and "trivial" in err and "at least 9 calibration images" in err


def test_predict_writes_nothing_on_interrupt(run, tmp_path, monkeypatch):
    calls = {"n": 0}
    add = PredictionWriter.add

    def add_then_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return add(self, *args, **kwargs)

    monkeypatch.setattr(PredictionWriter, "add", add_then_interrupt)
    assert _cli("predict", run[1], "--out", tmp_path / "p") == 130
    assert list(tmp_path.iterdir()) == []
