"""Resuming training keeps every logged row; a damaged checkpoint is refused before anything changes."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import tiny_experiment_dict
from segcal.cli.main import main
from segcal.pipeline.config import experiment_from_dict
from segcal.pipeline.train import train


def _epochs(run_dir) -> list[tuple[str, str]]:
    """(epoch, val/loss) of every validation row of the run's log."""
    with open(run_dir / "logs" / "metrics.csv", newline="") as fh:
        return [(r["epoch"], r["val/loss"]) for r in csv.DictReader(fh) if r.get("val/loss")]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    d = tiny_experiment_dict(tmp, train={"epochs": 2, "checkpoint_every": 1, "vis_samples": 0, "progress": False})
    result = train(experiment_from_dict(d), tmp / "run")
    return d, result.run_dir


def test_resume_keeps_earlier_rows_and_logs_each_epoch_once(two_epochs, tmp_path):
    d, first = two_epochs
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(first), str(run_dir)], check=True)
    before = _epochs(run_dir)
    assert [e for e, _ in before] == ["0", "1"]
    resumed = {**d, "train": {**d["train"], "epochs": 3, "resume": str(run_dir / "checkpoints" / "epoch000.ckpt")}}
    train(experiment_from_dict(resumed), run_dir)
    after = _epochs(run_dir)
    assert [e for e, _ in after] == ["0", "1", "2"]
    assert after[:2] == before  # the re-run epoch 1 is deterministic: the same value, logged once


def test_truncated_checkpoint_is_refused_and_nothing_is_deleted(two_epochs, tmp_path, capsys):
    _, first = two_epochs
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(first), str(run_dir)], check=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert main(["train", str(run_dir / "config.yaml"), "--resume", str(last), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot resume" in err and "last.ckpt: not a readable torch checkpoint" in err
    assert "the newest readable checkpoint there is" in err and "epoch001.ckpt" in err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files


@pytest.mark.slow
def test_resume_after_kill_9_mid_training(tmp_path):
    d = tiny_experiment_dict(tmp_path, train={"epochs": 40, "checkpoint_every": 1, "vis_samples": 0,
                                              "progress": False})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(d))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "segcal.cli.main", "train", str(config), "--run-dir",
                             str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / "epoch002.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = {e for e, _ in _epochs(run_dir)}
    assert {"0", "1", "2"} <= logged
    d["train"] = {**d["train"], "epochs": 6, "resume": str(run_dir / "checkpoints" / "last.ckpt")}
    train(experiment_from_dict(d), run_dir)
    assert [e for e, _ in _epochs(run_dir)] == [str(i) for i in range(6)]
