"""Long work reports progress in log files too: plain lines when standard error is not a terminal."""
import re
import subprocess
import sys

from conftest import tiny_experiment_dict
from segcal.pipeline import progress
from segcal.pipeline.config import experiment_from_dict
from segcal.pipeline.progress import duration, track
from segcal.pipeline.train import train


def test_track_writes_plain_lines_with_count_rate_and_eta(capsys):
    assert list(track(range(20), "predict test split")) == list(range(20))
    lines = capsys.readouterr().err.strip().splitlines()
    assert 2 <= len(lines) <= 11  # about every tenth, never one per item
    assert re.fullmatch(r"predict test split: 2/20 \(10%\), [\d.]+ it/s, elapsed \d+s, eta \d+s", lines[0])
    assert lines[-1].startswith("predict test split: 20/20 (100%)") and "eta" not in lines[-1]


def test_track_logs_at_least_every_interval_when_the_total_is_unknown(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    list(track(iter(range(3)), "stream"))
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("stream: 3, ")


def test_disabled_progress_is_silent(capsys):
    list(track(range(5), "quiet", enabled=False))
    assert capsys.readouterr().err == ""


def test_redirected_output_still_shows_progress():
    code = "from segcal.pipeline.progress import track\nfor _ in track(range(4), 'work'): pass"
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "work: 4/4 (100%)" in err


def test_training_logs_one_line_per_epoch(tmp_path, capsys):
    d = tiny_experiment_dict(tmp_path, train={"epochs": 2, "vis_samples": 0, "progress": True})
    train(experiment_from_dict(d), tmp_path / "run")
    err = capsys.readouterr().err
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and epochs[1].startswith("epoch 2/2: train/loss ")
    assert "val/loss" in epochs[0] and "images/s" in epochs[0] and "eta 0s" in epochs[1]


def test_duration():
    assert (duration(42.4), duration(185), duration(3725)) == ("42s", "3m05s", "1h02m")
