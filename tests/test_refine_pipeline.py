"""`refine` / `refine-eval` end to end with a tiny model trained for one epoch on synthetic folders."""
import csv
import json

import numpy as np
import pytest
from torch.utils.data import DataLoader

from conftest import tiny_experiment_dict
from segcal.cli.main import main
from segcal.data.base import SplitDataset
from segcal.data.config import SyntheticConfig
from segcal.data.files import read_mask
from segcal.data.folder import write_folder_dataset
from segcal.data.synthetic import SyntheticDataset
from segcal.io.checkpoint import read_checkpoint
from segcal.pipeline.config import experiment_from_dict
from segcal.pipeline.evaluate_seg import evaluate_segmentation_model
from segcal.pipeline.inference import load_model
from segcal.pipeline.train import train
from segcal.refine.predict import model_transform
from segcal.refine.prepare import prepare_hybrid
from segcal.refine.project import Project
from segcal.refine.rounds import evaluate_original, read_rounds, record_round, rounds_report
from segcal.refine.rules import RefineRule
from segcal.refine.run import refine_dataset

SIZE = (40, 48)  # original image size; the model works at 32 x 32 (letterboxed)


def names(folder):
    return sorted(p.stem for p in (folder / "masks").iterdir())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refine")
    source = tmp / "src"
    write_folder_dataset(SyntheticDataset(SyntheticConfig(num_images=26, num_classes=2, height=SIZE[0],
                                                          width=SIZE[1])), source)
    project = Project(tmp / "pipes")
    prepare_hybrid(source, project.prefix, n_baseline=8, n_eval=6, simulate_boxes=True, progress=False)
    d = tiny_experiment_dict(tmp, train={"epochs": 1, "vis_samples": 0})
    d["data"] = {"kind": "folder", "root": str(project.baseline), "image_size": [32, 32], "resize": "pad",
                 "splits": {"train": 6, "val": 2}, "batch_size": 4}
    result = train(experiment_from_dict(d), tmp / "run")
    return project, result.last_checkpoint


def test_refine_writes_hybrid_dataset(setup):
    project, ckpt = setup
    res = refine_dataset(ckpt, project.prefix, progress=False)
    out = res.out
    assert out == project.hybrid(1)
    assert names(out) == sorted(names(project.coarse) + names(project.baseline))
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["coarse_data"] == str(project.coarse.resolve()) and prov["model"]["checkpoint"] == str(ckpt.resolve())
    assert prov["rule"]["threshold"] == 0.5 and "coarse region" in prov["rule"]["text"]
    assert prov["num_refined"] == 12 and prov["num_accurate"] == 8 and prov["coarse_provenance"]["role"] == "COARSE"
    assert (out / "preview.png").is_file() and json.loads((out / "classes.json").read_text()) == ["background",
                                                                                                "class1"]
    rows = list(csv.DictReader(open(out / "refine_stats.csv")))
    assert len(rows) == 12 and sum(int(r["foreground"]) for r in rows) == prov["counts"]["foreground"]
    for name in names(project.coarse):
        coarse = read_mask(project.coarse / "masks" / f"{name}.png")
        hybrid = read_mask(out / "masks" / f"{name}.png")
        assert hybrid.shape == SIZE  # predicted at 32 x 32, resized back
        assert not ((hybrid == 1) & (coarse == 0)).any()  # restricted to the coarse boxes
    b = names(project.baseline)[0]
    assert np.array_equal(read_mask(out / "masks" / f"{b}.png"), read_mask(project.baseline / "masks" / f"{b}.png"))


def test_refuse_overwrite_and_next_round(setup, tmp_path):
    project, ckpt = setup
    first = refine_dataset(ckpt, project.prefix, tmp_path / "H", accurate=None, progress=False).out
    before = sorted(p.name for p in first.rglob("*"))
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        refine_dataset(ckpt, project.prefix, first, progress=False)
    assert sorted(p.name for p in first.rglob("*")) == before
    again = refine_dataset(ckpt, project.prefix, first, rule=RefineRule(fallback="ignore"), accurate=None,
                           overwrite=True, progress=False)
    assert json.loads((again.out / "provenance.json").read_text())["rule"]["fallback"] == "ignore"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_confident_pixels_only(setup, tmp_path):
    project, ckpt = setup
    res = refine_dataset(ckpt, project.coarse, tmp_path / "P", rule=RefineRule(confidence="probability",
                                                                                min_confidence=0.99),
                         progress=False)
    ignored = sum(int((read_mask(tmp_path / "P" / "masks" / f"{n}.png") == 255).sum()) for n in names(project.coarse))
    assert ignored == res.provenance["counts"]["uncertain"] > 0
    assert res.provenance["accurate_data"] == str(project.baseline.resolve())  # P_COARSE implies project P


def test_conformal_singletons_calibrated_on_the_runs_val_split(setup, tmp_path):
    project, ckpt = setup
    res = refine_dataset(ckpt, project.prefix, tmp_path / "C", rule=RefineRule(confidence="conformal", alpha=0.2),
                         accurate=None, progress=False)
    assert "val split" in res.provenance["calibration"]
    res2 = refine_dataset(ckpt, project.prefix, tmp_path / "C2", rule=RefineRule(confidence="conformal"),
                          accurate=None, calibration=project.eval, progress=False)
    assert res2.provenance["calibration"] == str(project.eval)


def test_bad_inputs_write_nothing(setup, tmp_path):
    project, ckpt = setup
    three = tmp_path / "three"
    write_folder_dataset(SyntheticDataset(SyntheticConfig(num_images=3, num_classes=3, height=16, width=16)), three)
    with pytest.raises(ValueError, match="3 classes .* the model has 2"):
        refine_dataset(ckpt, three, tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError, match="prepare-hybrid"):
        refine_dataset(ckpt, tmp_path / "nothing", tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="--out is required"):
        refine_dataset(ckpt, three, progress=False)
    with pytest.raises(ValueError, match="input data folder"):
        refine_dataset(ckpt, project.coarse, project.coarse, overwrite=True, progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        refine_dataset(tmp_path / "x.ckpt", project.prefix, tmp_path / "o", progress=False)
    (three / "masks" / "synth_00001.png").unlink()
    with pytest.raises(ValueError, match="no counterpart"):
        refine_dataset(ckpt, three, tmp_path / "o", remap="binary", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["three"]


def test_evaluate_original_matches_model_size_evaluation(setup, tmp_path):
    project, ckpt = setup
    model = load_model(ckpt, "cpu")
    same = tmp_path / "same"  # images at the model's own size: both evaluations see the same pixels
    write_folder_dataset(SyntheticDataset(SyntheticConfig(num_images=5, num_classes=2, height=32, width=32, seed=3)),
                         same)
    from segcal.refine.project import open_for_model

    source = open_for_model(model, same)
    ours = evaluate_original(model, source, batch_size=2, progress=False)
    loader = DataLoader(SplitDataset(source, range(5), model_transform(model)), batch_size=2)
    ref = evaluate_segmentation_model(model, loader, progress=False)
    for m in ("dice", "iou", "recall", "precision"):
        assert ours["per_class"][m] == pytest.approx(ref["per_class"][m], nan_ok=True)


def test_rounds_table_and_plot(setup, tmp_path):
    project, ckpt = setup
    table = tmp_path / "rounds.csv"
    row, rows, plot = record_round(ckpt, project.prefix, "BASELINE", table=table, progress=False)
    assert row["num_images"] == 6 and 0 <= row["iou"] <= row["dice"] <= 1 and plot.is_file()
    record_round(ckpt, project.prefix, "H1", table=table, train_data="pipes_H1", progress=False)
    with pytest.raises(ValueError, match="already has a round 'H1'"):
        record_round(ckpt, project.prefix, "H1", table=table, progress=False)
    rows, _ = rounds_report(project.prefix, table)
    assert [r["round"] for r in rows] == ["BASELINE", "H1"] and rows[1]["train_data"] == "pipes_H1"
    record_round(ckpt, project.prefix, "BASELINE", table=table, train_data="again", replace=True, progress=False)
    assert [r["train_data"] for r in read_rounds(table)] == ["again", "pipes_H1"]
    with pytest.raises(FileNotFoundError, match="no rounds recorded"):
        rounds_report(tmp_path / "nothing")


def test_cli_round_trip(setup, tmp_path, capsys):
    project, ckpt = setup
    src = project.coarse  # any folder dataset with masks works as a source
    prefix = tmp_path / "cli"
    assert main(["prepare-hybrid", str(src), "--prefix", str(prefix), "--baseline", "3", "--eval", "3",
                 "--simulate-boxes", "--no-progress"]) == 0
    assert main(["refine", str(ckpt), "--data", str(prefix), "--threshold", "0.4", "--min-found", "0.05",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "cli_H1" in text and "0.4" in text
    cli = Project(prefix)
    assert len(names(cli.hybrid(1))) == 6 + 3  # refined coarse + BASELINE
    assert (cli.hybrid(1) / "provenance.json").is_file()
    assert main(["refine", str(ckpt), "--data", str(prefix), "--out", str(cli.hybrid(1)), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["refine-eval", str(ckpt), "--data", str(prefix), "--round", "BASELINE", "--no-progress"]) == 0
    assert main(["refine-report", "--data", str(prefix)]) == 0
    text = capsys.readouterr().out
    assert "BASELINE" in text and "iou" in text
    assert cli.rounds_csv.is_file() and cli.rounds_png.is_file()
    assert read_checkpoint(ckpt)["hyper_parameters"]["num_classes"] == 2


def test_conformal_calibration_folder_is_remapped_like_the_coarse_masks(setup, tmp_path):
    project, ckpt = setup
    three = tmp_path / "three"  # multi-class masks: usable with a binary model only through --remap binary
    write_folder_dataset(SyntheticDataset(SyntheticConfig(num_images=6, num_classes=3, height=16, width=16)), three)
    res = refine_dataset(ckpt, project.prefix, tmp_path / "C", rule=RefineRule(confidence="conformal"),
                         accurate=None, calibration=three, remap="binary", progress=False)
    assert res.provenance["calibration"] == str(three)
