"""The HTML report: produced, self-contained, every section present, missing parts explained."""
import json
import re
import shutil
import subprocess

import pytest
import yaml
from PIL import Image

from segcal.report.build import REPORT_SECTIONS, build_report
from segcal.report.html import fmt

CLASSES = ["background", "<b>&co"]


def png(path, color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), color).save(path)


def seg_metrics(dice=0.8123456):
    metrics = ("dice", "iou", "recall", "precision", "accuracy")
    return {"classes": CLASSES, "per_class": {m: [0.9, dice] for m in metrics},
            "mean_foreground": {m: dice for m in metrics},
            "overall_accuracy": 0.95, "num_images": 8}


def calib(ece):
    return {"binning": "15 equal-width bins on top-label confidence", "ece": ece, "mce": 0.3, "rmsce": 0.1,
            "adaptive_ece": 0.05, "mean_classwise_ece": 0.02, "brier": 0.1, "nll": 0.25,
            "classwise_ece": [0.01, None], "regions": {"boundary": {"ece": 0.2}, "interior": {"ece": 0.01}}}


def write_eval(run, name, recal=False, conformal=False, missing_figure=False):
    """An evaluation as the demo writes them: ``a-last`` measures the uncalibrated model; a recalibrated or
    conformal one measures only what its calibrator changes and names the baseline."""
    folder = run / "eval" / name
    measured = not conformal
    figures = [{"key": "reliability", "title": "Reliability diagram", "path": "figures/reliability.png",
                "group": "calibration"},
               {"key": "ece_map", "title": "Per-pixel ECE map", "path": "figures/ece_map.png",
                "group": "calibration"}] if measured else []
    if conformal:
        figures += [{"key": k, "title": k.replace("_", " "), "path": f"figures/{k}.png", "group": "conformal"}
                    for k in ("set_size_map", "ce_map", "group_map", "coverage_vs_nominal")]
        figures += [{"key": "set_overlay_0", "title": "Prediction sets at alpha 0.1", "path": "figures/sets0.png",
                     "group": "prediction_sets"}]
    for f in figures:
        png(folder / f["path"])
    if missing_figure:
        figures.append({"key": "image_ece_histogram", "title": "Per-image ECE", "path": "figures/gone.png",
                        "group": "calibration"})
    calibration = ({"temperature": calib(0.0123456)} if recal else {} if conformal
                   else {"uncalibrated": calib(0.0876543)})
    data = {"name": name, "baseline": "a-last" if recal or conformal else None,
            "source": {"checkpoint": "ckpt/last.ckpt", "predictions": None, "split": "test",
                       "num_images": 8, "classes": CLASSES, "head": "softmax"},
            "segmentation": None if recal or conformal else seg_metrics(), "calibration": calibration,
            "recalibration": {"method": "temperature", "info": {"temperature": 1.8765}} if recal else None,
            "conformal": None, "figures": figures, "seconds": 1.5}
    if conformal:
        data["conformal"] = {"method": "kandinsky-kmeans", "mean_ce": 0.0456789, "mean_ce_per_class": [0.04, 0.05],
                             "mean_set_size": 1.2, "full_fraction": 0.05, "empty_fraction": 0.0,
                             "trivial_fraction": 0.01, "levels": [0.5, 0.9], "marginal_coverage": [0.5, 0.9012],
                             "mean_set_size_per_level": [1.0, 1.1], "full_fraction_per_level": [0.0, 0.04],
                             "min_test_labels": 5, "num_test_images": 8,
                             "calibration": {"n_cal": 25, "num_groups": 4}}
    (folder / "evaluation.json").write_text(json.dumps(data))


@pytest.fixture
def full_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"name": "demo <x>", "seed": 3, "data": {"kind": "synthetic", "image_size": [32, 32]},
         "model": {"arch": "unet"}, "train": {"epochs": 2}}, sort_keys=False))
    (run / "summary.json").write_text(json.dumps({"summary": ["test Dice 0.812", "ECE 0.088 -> 0.012"],
                                                  "seconds": 42.0}))
    (run / "val_metrics.json").write_text(json.dumps(seg_metrics(0.7777777)))
    png(run / "figures" / "curves.png")
    png(run / "figures" / "samples.png")
    write_eval(run, "a-last", missing_figure=True)
    write_eval(run, "b-temperature", recal=True)
    write_eval(run, "c-kmeans", conformal=True)
    (run / "sweep").mkdir()
    png(run / "sweep" / "ce_vs_ncal.png")
    summary = [{"method": m, "n_cal": n, "repeats": 3, "mean_ce_mean": 0.1 / n, "mean_ce_std": 0.01,
                "mean_set_size_mean": 1.5, "mean_set_size_std": 0.1, "full_fraction_mean": 0.2}
               for m in ("pixel", "kandinsky-kmeans") for n in (10, 25)]
    (run / "sweep" / "sweep.json").write_text(json.dumps(
        {"summary": summary, "records": [], "n_cals": [10, 25], "repeats": 3, "methods": ["pixel", "kandinsky-kmeans"],
         "figures": [{"key": "ce_vs_ncal", "title": "CE vs n_cal", "path": "ce_vs_ncal.png", "group": "sweep"}]}))
    return run


def assert_self_contained(text):
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*http', text, re.I)
    assert "<link" not in text.lower() and "<script src" not in text.lower() and "@import" not in text
    imgs = re.findall(r"<img [^>]*src=\"([^\"]*)\"", text)
    assert all(s.startswith("data:image/png;base64,") for s in imgs)
    return imgs


def test_full_report(full_run):
    path = build_report(full_run)
    assert path == full_run / "report.html"
    text = path.read_text(encoding="ascii")
    imgs = assert_self_contained(text)
    assert len(imgs) == 2 + 2 + 1 + 4 + 1 + 1  # training, calibration, recal, conformal, sets, sweep
    for sid in REPORT_SECTIONS:
        assert f'<section id="{sid}"><h2>' in text and f'href="#{sid}"' in text
    for number in ("0.08765", "0.01235", "0.04568", "0.9012", "1.877", "0.7778", "0.8123"):
        assert number in text
    assert "15 equal-width bins" in text and "test Dice 0.812" in text
    assert "0.010 &#177; 0.010 (1.50)" in text and "mean set size over the level grid" in text
    assert "missing figure: eval/a-last/figures/gone.png" in text
    calibration = text.split('id="calibration"')[1].split("</section>")[0]
    assert calibration.count("0.08765") == 1 and "identical" not in text  # measured once, shown once
    recalibration = text.split('id="recalibration"')[1].split("</section>")[0]
    assert "0.08765" in recalibration and "0.01235" in recalibration  # before / after, from the baseline
    assert "&lt;b&gt;&amp;co" in text and "<b>&co" not in text and "demo &lt;x&gt;" in text
    assert "run <code>" not in text.split('id="conformal"')[1].split("</section>")[0]
    assert [p.name for p in full_run.iterdir() if p.name.startswith(".")] == []
    path.write_text("old")
    assert build_report(full_run) == path and path.read_text(encoding="ascii") != "old"  # replaced atomically
    assert [p.name for p in full_run.iterdir() if p.name.startswith(".")] == []


def test_missing_parts_give_notes(tmp_path):
    run = tmp_path / "only-config"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\nseed: 1\n")
    out = build_report(run, out=tmp_path / "out" / "r.html", title="My <report>")
    text = out.read_text()
    assert "<title>My &lt;report&gt;</title>" in text
    for sid in REPORT_SECTIONS:
        assert f'<section id="{sid}">' in text
    for cmd in ("segcal train CONFIG", "segcal evaluate CHECKPOINT", "segcal calibrate CHECKPOINT --method temperature",
                "segcal sweep"):
        assert f"run <code>{cmd}" in text
    assert "no evaluation found" in text and "<img" not in text
    assert "Headline numbers of the evaluations" in text


def test_training_only_and_missing_figure(tmp_path):
    run = tmp_path / "r"
    png(run / "figures" / "curves.png")
    text = build_report(run).read_text()
    assert "missing figure(s): figures/samples.png" in text and text.count("<img") == 1
    assert 'id="configuration"' in text and "no config.yaml found" in text


def test_broken_json_is_reported(tmp_path):
    run = tmp_path / "r"
    (run / "eval" / "x").mkdir(parents=True)
    (run / "eval" / "x" / "evaluation.json").write_text("{not json")
    (run / "val_metrics.json").write_text(json.dumps(seg_metrics()))
    (run / "eval" / "y").mkdir(parents=True)
    (run / "eval" / "y" / "evaluation.json").write_text(json.dumps({"name": "y", "calibration": ["not", "a", "dict"]}))
    text = build_report(run).read_text()
    assert "could not read eval/x/evaluation.json" in text
    assert "no calibration measured" in text


def test_section_error_becomes_warning(full_run, monkeypatch):
    from segcal.report import build as report

    def broken(run):
        raise KeyError("mean_ce_mean")

    monkeypatch.setitem(report.SECTION_BUILDERS, "sweep", broken)
    text = build_report(full_run).read_text()
    sweep = text.split('id="sweep"')[1].split("</section>")[0]
    assert "could not render this section" in sweep and "KeyError" in sweep and 'id="prediction-sets"' in text


def test_bad_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        build_report(tmp_path / "empty")
    assert not (tmp_path / "empty" / "report.html").exists()


def test_fmt():
    values = [0.123456, 3, None, 98765.4, 20480.0, 1e10, float("nan")]
    assert [fmt(v) for v in values] == ["0.1235", "3", "\u2014", "9.877e+04", "20480", "1e+10", "nan"]


BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(BROWSER is None, reason="no chromium / google-chrome on PATH")
def test_renders_in_headless_chromium(full_run, tmp_path):
    path = build_report(full_run)
    cmd = [BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
           "--dump-dom", path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr
    for sid in REPORT_SECTIONS:
        assert f'id="{sid}"' in proc.stdout
