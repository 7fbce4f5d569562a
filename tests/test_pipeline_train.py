"""Training end to end on tiny synthetic data: run directory, checkpoints, resume, options."""
import json

import pytest
import torch

from conftest import tiny_experiment_dict
from segcal.cli.main import main
from segcal.configio import load_yaml, to_dict
from segcal.io.checkpoint import read_checkpoint
from segcal.pipeline.config import experiment_from_dict
from segcal.pipeline.inference import experiment_of, load_model
from segcal.pipeline.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg = experiment_from_dict(tiny_experiment_dict(tmp))
    return cfg, train(cfg, tmp / "run")


def test_run_directory_is_complete(trained):
    cfg, res = trained
    run = res.run_dir
    for rel in ["config.yaml", "manifests/train.txt", "manifests/cal.txt", "logs/metrics.csv",
                "figures/curves.png", "figures/samples.png", "val_metrics.json",
                "checkpoints/epoch000.ckpt", "checkpoints/epoch001.ckpt", "checkpoints/best.ckpt",
                "checkpoints/last.ckpt"]:
        assert (run / rel).is_file(), rel
    assert load_yaml(run / "config.yaml") == to_dict(cfg)
    names = {s: (run / "manifests" / f"{s}.txt").read_text().split() for s in ("train", "val", "cal", "test")}
    assert [len(names[s]) for s in ("train", "val", "cal", "test")] == [8, 4, 4, 8]
    val = json.loads((run / "val_metrics.json").read_text())
    assert val["classes"] == cfg.data.class_names and len(val["per_class"]["dice"]) == 3
    assert 0.0 <= val["mean_foreground"]["dice"] <= 1.0


def test_checkpoint_is_self_contained(trained):
    cfg, res = trained
    model = load_model(res.last_checkpoint, "cpu")
    assert experiment_of(model) == cfg
    out = model(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 3, 32, 32)


def test_resume_continues_from_checkpoint(trained, tmp_path):
    cfg, res = trained
    more = experiment_from_dict(to_dict(cfg), ["train.epochs=3", f"train.resume={res.last_checkpoint}"])
    res2 = train(more, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoints" / "epoch002.ckpt").is_file()
    assert not (tmp_path / "resumed" / "checkpoints" / "epoch000.ckpt").exists()
    assert read_checkpoint(res2.last_checkpoint)["epoch"] == 2


def test_same_seed_same_result(tmp_path):
    a = train(experiment_from_dict(tiny_experiment_dict(tmp_path, train={"epochs": 1})), tmp_path / "a")
    b = train(experiment_from_dict(tiny_experiment_dict(tmp_path, train={"epochs": 1})), tmp_path / "b")
    assert a.val_metrics.per_class == b.val_metrics.per_class


def test_sigmoid_attention_unet_tversky_mixup_sgd_schedule(tmp_path):
    d = tiny_experiment_dict(tmp_path, model={"arch": "attention_unet", "head": "sigmoid", "channels": [8, 16],
                                              "strides": [2]},
                             loss={"terms": [{"name": "tversky", "alpha": 0.1, "beta": 0.9, "smooth": 1.0},
                                             {"name": "topk_ce", "k": 0.2, "weight": 0.5}]},
                             optim={"name": "sgd", "lr": 0.01, "scheduler": "cosine_restarts", "t0": 1},
                             train={"epochs": 2, "monitor": "val/recall", "logger": "tensorboard"})
    d["data"]["synthetic"]["num_classes"] = 2
    d["data"]["augment"] = {"mixup_alpha": 0.4, "rotate_deg": 15, "color_jitter": 0.2}
    res = train(experiment_from_dict(d), tmp_path / "run")
    model = load_model(res.best_checkpoint, "cpu")
    assert model.net(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)  # binary sigmoid head: one channel
    assert any((tmp_path / "run" / "tb").iterdir())
    assert res.val_metrics.mean("recall") == res.val_metrics.per_class["recall"][1]


def test_step_scheduler_and_adam(tmp_path):
    d = tiny_experiment_dict(tmp_path, optim={"name": "adam", "scheduler": "step", "step_size": 1, "gamma": 0.5},
                             train={"epochs": 2})
    train(experiment_from_dict(d), tmp_path / "run")
    import csv
    rows = list(csv.DictReader(open(tmp_path / "run" / "logs" / "metrics.csv")))
    lrs = [float(r["lr-Adam"]) for r in rows if r.get("lr-Adam")]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(5e-4)


def test_evaluate_segmentation_only(trained, tmp_path, capsys):
    cfg, res = trained
    out = tmp_path / "ev"
    assert main(["evaluate", str(res.last_checkpoint), "--split", "test", "--segmentation-only", "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "mean over class1, class2" in text and "dice" in text and "Calibration" not in text
    result = json.loads((out / "evaluation.json").read_text())
    assert result["segmentation"]["num_images"] == 8 and result["source"]["split"] == "test"
    assert result["calibration"] == {} and not list((out / "figures").glob("*.png"))
    assert main(["evaluate", str(tmp_path / "nope.ckpt"), "--segmentation-only"]) == 2
    assert "nope.ckpt" in capsys.readouterr().err


def test_cli_train_writes_run_dir(tmp_path, capsys):
    cfg_file = tmp_path / "exp.yaml"
    import yaml
    cfg_file.write_text(yaml.safe_dump(tiny_experiment_dict(tmp_path, train={"epochs": 1})))
    assert main(["train", str(cfg_file), "--run-dir", str(tmp_path / "cli_run"), "train.vis_samples=0"]) == 0
    assert (tmp_path / "cli_run" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "cli_run" / "figures" / "samples.png").exists()


def test_periodic_checkpoints_do_not_wait_for_validation(tmp_path):
    d = tiny_experiment_dict(tmp_path, train={"epochs": 3, "checkpoint_every": 1, "val_every": 2, "vis_samples": 0})
    res = train(experiment_from_dict(d), tmp_path / "run")
    assert [p.name for p in res.checkpoints] == ["epoch000.ckpt", "epoch001.ckpt", "epoch002.ckpt"]
    assert read_checkpoint(res.last_checkpoint)["epoch"] == 2
