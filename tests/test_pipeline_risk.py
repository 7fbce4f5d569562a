"""`segcal calibrate --method risk | margin`, then evaluate and predict, on tiny trained models."""
import json

import numpy as np
import pytest

from conftest import train_tiny
from segcal.calibrated import load_bundle
from segcal.cli.main import main
from segcal.pipeline.results import EvaluationResult


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("risk"), 40, {"train": 8, "val": 4, "cal": 20, "test": 8})


def _cli(*args) -> int:
    return main([str(a) for a in args] + ["--no-progress"])


def test_fnr_control_end_to_end(run, tmp_path, capsys):
    run_dir, ckpt = run
    assert _cli("calibrate", ckpt, "--method", "risk", "--loss", "fnr", "--target-class", "class1",
                "--alpha", "0.2", "--out", tmp_path / "fnr.ckpt") == 0
    printed = capsys.readouterr().out
    assert "threshold:" in printed and "procedure: crc" in printed
    bundle = load_bundle(tmp_path / "fnr.ckpt")
    assert bundle.risk.loss == "fnr" and bundle.risk.target_class_ == 1 and bundle.risk.n_cal_ == 20
    assert "risk: risk fnr at α = 0.2" in bundle.describe()
    assert _cli("evaluate", tmp_path / "fnr.ckpt", "--out", tmp_path / "ev") == 0
    assert "Risk control: risk fnr of class1, CRC at α = 0.2" in capsys.readouterr().out
    result = EvaluationResult.read(tmp_path / "ev" / "evaluation.json")
    risk = result.risk
    assert risk.num_test_images == 8 and risk.parameters["threshold"] == bundle.risk.threshold()
    assert 0 <= risk.test_risk <= 1 and risk.per_image["fdr"].mean is not None
    assert {"risk_losses", "risk_overlay_0"} <= {f.key for f in result.figures}
    assert all((tmp_path / "ev" / f.path).is_file() for f in result.figures)
    assert _cli("predict", tmp_path / "fnr.ckpt", "--out", tmp_path / "p") == 0
    assert len(list((tmp_path / "p" / "risk").glob("*.png"))) == 8
    with np.load(next((tmp_path / "p").glob("*.npz"))) as z:
        assert z["risk_mask"].shape == (32, 32) and z["risk_mask"].dtype == bool
        default = z["risk_mask"].sum()
    assert _cli("predict", tmp_path / "fnr.ckpt", "--out", tmp_path / "p2", "--alpha", "0.01") == 0  # another α
    with np.load(next((tmp_path / "p2").glob("*.npz"))) as z:
        assert z["risk_mask"].sum() >= default


def test_margin_with_inner_mask_and_rcps(run, tmp_path):
    run_dir, ckpt = run
    assert _cli("calibrate", ckpt, "--method", "margin", "--target-class", "1", "--structure", "cross", "--inner",
                "--procedure", "rcps", "--delta", "0.2", "--alpha", "0.3", "--out", tmp_path / "m.ckpt") == 0
    controller = load_bundle(tmp_path / "m.ckpt").risk
    assert controller.structure == "cross" and controller.inner and controller.procedure_ == "rcps"
    assert _cli("evaluate", tmp_path / "m.ckpt", "--out", tmp_path / "ev") == 0
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert set(result["risk"]["parameters"]) == {"outer_margin", "inner_margin"}
    assert {"band_area", "inner_area", "inner_loss"} <= set(result["risk"]["per_image"])
    assert _cli("predict", tmp_path / "m.ckpt", "--out", tmp_path / "p") == 0
    for side in ("outer", "inner", "band"):
        assert len(list((tmp_path / "p" / "risk" / side).glob("*.png"))) == 8


def test_miscoverage_from_saved_predictions_on_a_recalibrated_model(run, tmp_path):
    run_dir, ckpt = run
    assert _cli("calibrate", ckpt, "--method", "temperature") == 0
    temperature = ckpt.with_name("last.temperature.ckpt")
    assert _cli("calibrate", temperature, "--method", "risk", "--loss", "miscoverage", "--alpha", "0.1") == 0
    both = ckpt.with_name("last.temperature.risk.ckpt")
    bundle = load_bundle(both)
    assert bundle.recalibration.method == "temperature" and bundle.risk.loss == "miscoverage"
    assert _cli("calibrate", both, "--method", "margin") == 2  # one risk controller per checkpoint
    cal = tmp_path / "cal"
    assert _cli("predict", ckpt, "--split", "cal", "--out", cal) == 0
    assert _cli("calibrate", "--predictions", cal, "--method", "risk", "--loss", "miscoverage") == 0
    assert _cli("evaluate", cal / "calibration" / "risk.pt", "--predictions", cal, "--out", tmp_path / "ev") == 0
    result = EvaluationResult.read(tmp_path / "ev" / "evaluation.json")
    assert result.risk.loss == "miscoverage" and result.risk.per_image["set_size"].mean >= 1


@pytest.mark.parametrize("args, message", [
    (["--method", "risk", "--alpha", "1.5"], "alpha must lie strictly between 0 and 1"),
    (["--method", "risk", "--procedure", "rcps", "--delta", "0"], "delta must lie strictly between 0 and 1"),
    (["--method", "risk", "--loss", "dice"], "loss must be one of fnr, fdr, miscoverage"),
    (["--method", "risk", "--loss", "fnr"], "pass target_class"),
    (["--method", "risk", "--target-class", "zebra"], "--target-class 'zebra' is not a class"),
    (["--method", "risk", "--loss", "fdr", "--procedure", "crc", "--target-class", "1"], "use procedure='ltt'"),
    (["--method", "margin", "--loss", "miscoverage", "--target-class", "1"], "margin loss must be one of"),
    (["--method", "temperature", "--alpha", "0.1"], "--alpha applies to --method risk or margin"),
    (["--method", "risk", "--inner"], "--structure and --inner apply to --method margin"),
    (["--method", "pixel", "--loss", "fnr"], "--loss applies to --method risk or margin"),
])
def test_bad_risk_arguments_give_one_clear_error(run, tmp_path, capsys, args, message):
    assert _cli("calibrate", run[1], *args, "--out", tmp_path / "x.ckpt") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.ckpt").exists()


def test_risk_parameters_are_listed(capsys):
    from segcal.pipeline.calibrate import method_params

    assert method_params("risk") == {"loss": "fnr", "alpha": 0.1, "procedure": None, "delta": 0.1,
                                     "target_class": None, "grid": 1001}
    assert set(method_params("margin")) == {"structure", "loss", "inner", "alpha", "procedure", "delta",
                                            "target_class", "max_margin"}
    assert main(["calibrate", "--list-params", "--method", "margin"]) == 0
    assert "max_margin" in capsys.readouterr().out
