"""A sweep writes each finished (n_cal, repeat) cell at once; stopped, it resumes to the same results."""
import json

import pytest

from conftest import write_prediction_folder
from segcal.pipeline import sweep as sweep_module
from segcal.pipeline.sweep import run_sweep

ARGS = {"methods": ["pixel", "image"], "n_cals": [4, 8], "repeats": 2, "seed": 3, "progress": False}


@pytest.fixture
def sources(tmp_path):
    return write_prediction_folder(tmp_path / "cal", n=12, seed=1), write_prediction_folder(tmp_path / "test", n=6)


class Stop(Exception):
    """Stands in for Ctrl-C or a kill while a sweep runs."""


def _stop_after(monkeypatch, k: int) -> list:
    calls, cell = [], sweep_module.sweep_cell

    def counted(*args, **kwargs):
        if len(calls) == k:
            raise Stop
        calls.append(args[3:5])
        return cell(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "sweep_cell", counted)
    return calls


def test_a_stopped_sweep_resumes_to_the_uninterrupted_results(sources, tmp_path, monkeypatch):
    cal, test = sources
    reference = run_sweep(cal, test, tmp_path / "ref", **ARGS)
    _stop_after(monkeypatch, 3)
    with pytest.raises(Stop):
        run_sweep(cal, test, tmp_path / "sweep", **ARGS)
    lines = (tmp_path / "sweep" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 3 and not (tmp_path / "sweep" / "sweep.json").exists()
    with open(tmp_path / "sweep" / "records.jsonl", "a") as fh:
        fh.write('{"n_cal": 8, "repeat": 1, "rec')  # a line cut short by a kill
    monkeypatch.undo()
    resumed = run_sweep(cal, test, tmp_path / "sweep", **ARGS)
    assert resumed["records"] == reference["records"] and resumed["summary"] == reference["summary"]
    stored = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert stored["records"] == json.loads((tmp_path / "ref" / "sweep.json").read_text())["records"]


def test_only_the_missing_cells_run_again(sources, tmp_path, monkeypatch):
    cal, test = sources
    _stop_after(monkeypatch, 2)
    with pytest.raises(Stop):
        run_sweep(cal, test, tmp_path / "s", **ARGS)
    monkeypatch.undo()
    calls = _stop_after(monkeypatch, 99)
    run_sweep(cal, test, tmp_path / "s", **ARGS)
    assert calls == [(8, 0), (8, 1)]  # (4, 0) and (4, 1) were on disk


def test_other_settings_are_refused_unless_restarted(sources, tmp_path):
    cal, test = sources
    run_sweep(cal, test, tmp_path / "s", **ARGS)
    with pytest.raises(ValueError, match=r"records of a different sweep \(settings differ: repeats\).*--restart"):
        run_sweep(cal, test, tmp_path / "s", **{**ARGS, "repeats": 1})
    assert len(run_sweep(cal, test, tmp_path / "s", **{**ARGS, "repeats": 1}, restart=True)["records"]) == 4
