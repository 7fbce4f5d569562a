"""CLI parsing, built-in configs and config errors (no training here)."""
import pytest

from segcal.cli.main import build_parser, main
from segcal.pipeline.config import load_experiment
from segcal.pipeline.configs import builtin_configs, resolve_config


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    assert {"demo", "train", "evaluate", "configs", "config", "export-synthetic"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: segcal" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(builtin_configs()))
def test_builtin_configs_validate(name):
    cfg = load_experiment(resolve_config(name), ["data.root=/somewhere"])
    assert cfg.name and cfg.train.epochs >= 1


def test_builtin_configs_mirror_the_seeds():
    sewer = load_experiment(resolve_config("sewer_attention_unet"))
    tv = sewer.loss.terms[0]
    assert (sewer.model.arch, tv.name, tv.alpha, tv.beta, tv.smooth) == ("attention_unet", "tversky", 0.1, 0.9, 1.0)
    assert sewer.train.monitor == "val/recall" and sewer.data.image_size == (512, 704)
    coco = load_experiment(resolve_config("coco_person_unet"))
    assert coco.data.kind == "coco" and coco.data.categories == ["person"] and coco.data.splits["train"] == 1000
    assert load_experiment(resolve_config("ccp_person")).data.remap == "binary"


@pytest.mark.parametrize("override,message", [
    ("train.epochs=-1", "train.epochs must be an integer >= 1"),
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("data.augment.mixup_alpha=-0.5", "data.augment.mixup_alpha must be >= 0"),
    ("data.image_size=[30, 64]", "must be divisible by 4"),
    ("loss.terms=[{name: tversky, alpha: 2}]", r"loss.terms\[0\].alpha must be in \[0, 1\]"),
    ("optim.name=rmsprop", "optim.name must be one of"),
    ("model.strides=[2]", "model.strides must be 2 positive integers"),
    ("train.limit_train_batches=2.5", "train.limit_train_batches must be a fraction in"),
])
def test_invalid_config_values_give_one_named_error(override, message, capsys):
    assert main(["config", "demo", override]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and len(err.strip().splitlines()) <= 3
    import re
    assert re.search(message, " ".join(err.split()))


def test_missing_config_file_is_named(capsys):
    assert main(["train", "no_such_config.yaml"]) == 2
    assert "no_such_config.yaml" in capsys.readouterr().err


def test_config_prints_resolved_yaml(capsys):
    assert main(["config", "demo", "train.epochs=7"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 7" in out and "kind: synthetic" in out


def test_configs_lists_builtins(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "ccp_person" in out and "demo" in out


def test_export_synthetic_writes_a_folder_dataset_and_refuses_to_overwrite(tmp_path, capsys):
    from segcal.data.folder import FolderDataset

    out = tmp_path / "synth"
    assert main(["export-synthetic", str(out), "--num-images", "4", "--size", "32", "48"]) == 0
    ds = FolderDataset(out, ["background", "class1", "class2"])
    assert len(ds) == 4 and ds.load(0).mask.shape == (32, 48)
    assert main(["export-synthetic", str(out), "--num-images", "4"]) == 2
    assert str(out) in capsys.readouterr().err
