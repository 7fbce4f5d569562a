"""Evaluations are typed results with one schema: written once, read back equal, older layouts still read."""
import json

import pytest

from conftest import write_prediction_folder
from segcal.calibrated import CalibrationBundle
from segcal.conformal import ImagewiseCalibrator
from segcal.pipeline.evaluate import evaluate
from segcal.pipeline.results import SCHEMA, EvaluationResult


@pytest.fixture
def folder(tmp_path):
    return write_prediction_folder(tmp_path / "p", n=12, scale=3.0, seed=1)


def test_written_results_read_back_equal(folder, tmp_path):
    bundle = CalibrationBundle(conformal=ImagewiseCalibrator().fit(folder))
    run = evaluate(folder, bundle, tmp_path / "ev", name="ev", progress=False, min_test_labels=1)
    stored = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert stored["schema"] == SCHEMA and not [k for k in stored["conformal"] if "_at_" in k]
    back = EvaluationResult.read(tmp_path / "ev" / "evaluation.json")
    assert back.to_dict() == stored
    assert back.conformal.at(0.9).coverage == pytest.approx(run.coverage.marginal_coverage[17].item())
    assert back.segmentation.mean("dice") == run.result.segmentation.mean("dice")
    assert back.calibration["uncalibrated"].ece == pytest.approx(run.calibration["uncalibrated"].ece)
    assert back.calibration["uncalibrated"].details["reliability"]["count"]  # details kept for users


def test_the_first_layout_still_reads():
    old = {"name": "x", "source": {"classes": ["a", "b"], "num_images": 3},
           "segmentation": {"classes": ["a", "b"], "per_class": {"dice": [0.5, None]},
                            "mean_foreground": {"dice": None}, "overall_accuracy": 0.7},
           "calibration": {"uncalibrated": {"ece": 0.1, "binning": "15 equal-width bins",
                                            "regions": {"boundary": {"ece": 0.3}}}},
           "conformal": {"method": "pixelwise", "mean_ce": 0.2, "coverage_at_0.9": 0.91, "levels": [0.9],
                         "marginal_coverage": [0.91], "calibration": {"n_cal": 5}},
           "recalibration": None, "figures": [{"key": "k", "title": "t", "path": "f.png", "group": "calibration"}]}
    r = EvaluationResult.from_dict(old)
    assert r.calibration["uncalibrated"].boundary_ece == 0.3 and r.calibration["uncalibrated"].interior_ece is None
    assert r.conformal.at(0.9).coverage == 0.91 and r.conformal.n_cal == 5 and r.figures[0].path == "f.png"
    with pytest.raises(ValueError, match="not a segcal evaluation"):
        EvaluationResult.from_dict({"name": "no source"})
