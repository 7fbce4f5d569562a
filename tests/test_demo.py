"""`segcal demo --quick`: every stage runs and the run directory holds a complete report."""
import json
import re

import pytest
import yaml

from segcal.calibrators import CALIBRATORS
from segcal.cli.main import main
from segcal.pipeline.demo import CONFORMAL, RECALIBRATION, RISK, SCORE_VARIANTS
from segcal.report.build import REPORT_SECTIONS

MEASURED: dict[str, int] = {}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The quick demo, counting the batches every calibration measurement sees."""
    from segcal.metrics.calibration import CalibrationMetrics

    out = tmp_path_factory.mktemp("demo")
    calibration_update = CalibrationMetrics.update

    def count_update(self, preds, *args, **kwargs):
        MEASURED["calibration_batches"] = MEASURED.get("calibration_batches", 0) + 1
        return calibration_update(self, preds, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CalibrationMetrics, "update", count_update)
        assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    (run_dir,) = (out / "demo").iterdir()
    return run_dir


def test_the_uncalibrated_model_is_measured_once(demo_run):
    batch_size = yaml.safe_load((demo_run / "config.yaml").read_text())["data"]["batch_size"]
    batches = -(-24 // batch_size)  # the quick demo's 24 test images
    evaluations = [json.loads(p.read_text()) for p in (demo_run / "eval").glob("*/evaluation.json")]
    measured = [e["name"] for e in evaluations if "uncalibrated" in e["calibration"]]
    assert measured == ["last-test"]
    assert all(e["baseline"] == "last-test" for e in evaluations if e["name"] != "last-test")
    # uncalibrated once + each recalibration once; conformal evaluations add no calibration metrics
    assert MEASURED["calibration_batches"] == (1 + len(RECALIBRATION)) * batches
    # segmentation quality: measured once, and again only for recalibrators that can change the predicted class
    segmented = {e["name"] for e in evaluations if e["segmentation"]}
    changing = [m for m in RECALIBRATION if not CALIBRATORS[m].preserves_argmax]
    assert segmented == {"last-test", *(f"last.{m}-test" for m in changing)}
    assert {"last.dirichlet-test", "last.isotonic-test"} <= segmented


def test_every_stage_wrote_its_results(demo_run):
    evals = {p.name for p in (demo_run / "eval").iterdir()}
    assert evals == {"last-test", *(f"last.{m}-test" for m in (*RECALIBRATION, *CONFORMAL, *SCORE_VARIANTS, *RISK))}
    for method in RECALIBRATION:
        result = json.loads((demo_run / "eval" / f"last.{method}-test" / "evaluation.json").read_text())
        assert list(result["calibration"]) == [method] and result["baseline"] == "last-test"
    for method in (*CONFORMAL, *SCORE_VARIANTS):
        result = json.loads((demo_run / "eval" / f"last.{method}-test" / "evaluation.json").read_text())
        assert result["conformal"]["calibration"]["n_cal"] == 24
        assert (demo_run / "checkpoints" / f"last.{method}.ckpt").is_file()
    for method in RISK:
        result = json.loads((demo_run / "eval" / f"last.{method}-test" / "evaluation.json").read_text())
        assert result["risk"]["method"] == method and result["risk"]["n_cal"] == 24
        assert any(f["group"] == "risk" for f in result["figures"])
    sweep = json.loads((demo_run / "sweep" / "sweep.json").read_text())
    assert sweep["methods"] == list(CONFORMAL) and sweep["n_cals"] == [10, 24]
    summary = json.loads((demo_run / "summary.json").read_text())["summary"]
    assert len(summary) == 7 and summary[1].startswith("test Dice") and "kandinsky-annuli" in summary[4]
    assert "image-aps" in summary[4]
    assert summary[5].startswith("risk fnr of class 1 (CRC") and summary[6].startswith("margin cover")
    assert (demo_run / "config.yaml").is_file()


def test_report_is_self_contained_and_has_every_section(demo_run):
    html = (demo_run / "report.html").read_text()
    for section in REPORT_SECTIONS:
        assert f'id="{section}"' in html
    assert not re.search(r'(src|href)="https?:', html) and "<script src" not in html
    images = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(images) >= 10 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "missing figure" not in html and "no evaluation found" not in html


def test_report_command_rebuilds_it(demo_run, tmp_path, capsys):
    assert main(["report", str(demo_run), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 10_000
    assert "report:" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_demo_config_defaults_overfit_and_folder_data_trains_fewer_epochs(tmp_path):
    from segcal.pipeline.demo import demo_config

    cfg = demo_config(str(tmp_path))
    # over-fitted on purpose
    assert (cfg.train.epochs, cfg.data.splits["train"], cfg.data.augment.hflip) == (120, 32, 0.0)
    quick = demo_config(str(tmp_path), quick=True)
    assert quick.train.epochs == 2 and quick.train.val_every == 1
    (tmp_path / "images").mkdir()
    folder = demo_config(str(tmp_path), data=str(tmp_path), overrides=["train.epochs=7"])
    assert (folder.data.kind, folder.data.root, folder.train.epochs, folder.train.val_every) == (
        "folder", str(tmp_path), 7, 1)  # the user's overrides win
    with pytest.raises(FileNotFoundError, match="--data: folder not found: .*missing"):
        demo_config(str(tmp_path), data=str(tmp_path / "missing"))
