"""`segcal calibrate | evaluate | predict | sweep` end to end on a tiny trained model."""
import json

import numpy as np
import pytest
import torch

from conftest import tiny_experiment_dict, train_tiny
from segcal.calibrated import load_bundle, read_checkpoint
from segcal.cli.main import main
from segcal.conformal.state import nc_curves_of
from segcal.pipeline.config import experiment_from_dict
from segcal.pipeline.results import EvaluationResult
from segcal.pipeline.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("calib"), 32, {"train": 8, "val": 4, "cal": 12, "test": 8})


def _cli(*args) -> int:
    return main([str(a) for a in args] + ["--no-progress"])


@pytest.fixture(scope="module")
def temperature_ckpt(run):
    run_dir, ckpt = run
    assert _cli("calibrate", ckpt, "--method", "temperature") == 0
    return ckpt.with_name("last.temperature.ckpt")


@pytest.fixture(scope="module")
def conformal_ckpt(run, temperature_ckpt):
    assert _cli("calibrate", temperature_ckpt, "--method", "kandinsky-kmeans", "--param", "num_groups=2") == 0
    return temperature_ckpt.with_name("last.temperature.kandinsky-kmeans.ckpt")


def test_calibrated_checkpoint_keeps_the_model_and_adds_the_calibrator(run, temperature_ckpt):
    ckpt = read_checkpoint(temperature_ckpt)
    assert "state_dict" in ckpt and ckpt["segcal"]["recalibration"]["method"] == "temperature"
    bundle = load_bundle(temperature_ckpt)
    assert bundle.conformal is None and bundle.history[0]["n_cal"] == 12
    assert load_bundle(run[1]).empty


def test_evaluate_shows_before_and_after(run, temperature_ckpt, capsys):
    assert _cli("evaluate", temperature_ckpt) == 0
    folder = run[0] / "eval" / "last.temperature-test"
    result = json.loads((folder / "evaluation.json").read_text())
    assert list(result["calibration"]) == ["uncalibrated", "temperature"]
    assert result["source"]["num_images"] == 8 and result["conformal"] is None
    assert all((folder / f["path"]).is_file() for f in result["figures"])
    assert {f["key"] for f in result["figures"]} >= {"reliability", "ece_map_uncalibrated", "boundary_interior"}
    printed = capsys.readouterr().out
    assert "uncalibrated" in printed and "temperature" in printed and "NLL" in printed


def test_conformal_on_top_of_recalibration(run, conformal_ckpt, capsys):
    bundle = load_bundle(conformal_ckpt)
    assert bundle.recalibration.method == "temperature" and bundle.conformal.num_groups_ == 2
    state = read_checkpoint(conformal_ckpt)["segcal"]["conformal"]
    assert tuple(state["nc_group_curves"].shape) == (100, 3, 2) and tuple(state["nc_levels"].shape) == (100,)
    assert tuple(nc_curves_of(state).shape) == (100, 3, 32, 32)  # the Kandinsky-repo layout, on request
    assert tuple(state["n_per_group"].shape) == (3, 2) and int(state["n_per_group"].sum()) > 0
    assert _cli("evaluate", conformal_ckpt, "--out", run[0] / "eval" / "conf") == 0
    result = EvaluationResult.read(run[0] / "eval" / "conf" / "evaluation.json")
    cov = result.conformal
    assert cov.method == "kandinsky-kmeans" and cov.n_cal == 12 and cov.num_groups == 2
    assert 0 <= cov.at(0.9).coverage <= 1 and cov.num_test_images == 8 and cov.at(0.33) is None
    assert result.baseline is None and set(result.calibration) == {"uncalibrated", "temperature"}
    keys = {f.key for f in result.figures}
    assert {"ce_map", "group_map", "coverage_vs_nominal", "set_size_map", "set_overlay_0"} <= keys
    assert "mean CE" in capsys.readouterr().out
    out = run[0] / "eval" / "c2"
    assert _cli("evaluate", conformal_ckpt, "--alpha", "0.2", "--alphas", "0.1,0.2", "--out", out) == 0
    levels = json.loads((run[0] / "eval" / "c2" / "evaluation.json").read_text())["conformal"]["levels"]
    assert levels == pytest.approx([0.8, 0.9])


def test_recalibrating_a_calibrated_checkpoint_is_refused(conformal_ckpt, capsys):
    assert _cli("calibrate", conformal_ckpt, "--method", "temperature") == 2
    assert "already calibrated" in capsys.readouterr().err


def test_predict_then_evaluate_saved_predictions_gives_the_same_numbers(run, conformal_ckpt, tmp_path):
    out = tmp_path / "preds"
    assert _cli("predict", conformal_ckpt, "--out", out, "--alpha", "0.1") == 0
    files = sorted(out.glob("*.npz"))
    assert len(files) == 8 and (out / "meta.json").is_file()
    assert len(list((out / "sets").glob("*.png"))) == 8 + 1 and (out / "sets" / "legend.png").is_file()
    with np.load(files[0]) as z:
        assert z["sets"].shape == (3, 32, 32) and z["sets"].dtype == bool
        assert (z["set_size"] == z["sets"].sum(0)).all()
    # the saved logits are the recalibrated ones: their "uncalibrated" ECE is the model's "temperature" ECE
    assert _cli("evaluate", "--predictions", out, "--out", tmp_path / "ev") == 0
    from_files = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert _cli("evaluate", conformal_ckpt, "--out", tmp_path / "ev_model") == 0
    from_model = json.loads((tmp_path / "ev_model" / "evaluation.json").read_text())
    for key in ("ece", "nll", "brier", "adaptive_ece"):
        assert from_files["calibration"]["uncalibrated"][key] == pytest.approx(
            from_model["calibration"]["temperature"][key], abs=1e-6)
    assert from_files["segmentation"]["per_class"]["dice"] == pytest.approx(
        from_model["segmentation"]["per_class"]["dice"], abs=1e-9)


def test_calibrate_and_evaluate_from_saved_predictions_only(run, tmp_path):
    cal, test = tmp_path / "cal", tmp_path / "test"
    assert _cli("predict", run[1], "--split", "cal", "--out", cal) == 0
    assert _cli("predict", run[1], "--out", test) == 0
    assert _cli("calibrate", "--predictions", cal, "--method", "image") == 0
    calib = cal / "calibration" / "image.pt"
    assert "state_dict" not in read_checkpoint(calib)
    assert _cli("calibrate", "--predictions", cal, "--method", "temperature") == 0  # the folder still reads
    assert _cli("evaluate", calib, "--predictions", test, "--out", tmp_path / "ev") == 0
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert result["conformal"]["method"] == "image" and result["source"]["predictions"] == str(test)


def test_calibration_file_without_model_needs_predictions(run, tmp_path, capsys):
    cal = tmp_path / "cal"
    assert _cli("predict", run[1], "--split", "cal", "--out", cal) == 0
    assert _cli("calibrate", "--predictions", cal, "--method", "pixel", "--out", tmp_path / "c.pt") == 0
    assert _cli("evaluate", tmp_path / "c.pt") == 2
    assert "without model weights" in capsys.readouterr().err


def test_conformal_size_mismatch_is_a_clear_error(run, conformal_ckpt, tmp_path, capsys):
    small = tmp_path / "small"
    small.mkdir()
    (small / "masks").mkdir()
    from PIL import Image
    np.save(small / "a.npy", np.zeros((3, 16, 16), dtype=np.float32))
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(small / "masks" / "a.png")
    assert _cli("evaluate", conformal_ckpt, "--predictions", small, "--kind", "logits", "--out", tmp_path / "e") == 2
    assert "image size" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["predict", "{plain}", "--out", "{tmp}/p", "--alpha", "0.1"], "needs a conformally calibrated"),
    (["predict", "{conf}", "--out", "{tmp}/p", "--alpha", "1.5"], "between 0 and 1"),
    (["evaluate", "{conf}", "--alpha", "0.07"], "not on the evaluated grid"),
    (["evaluate", "{conf}", "--alpha", "0.2", "--alphas", "0.1,1.2"], "--alphas must lie"),
    (["calibrate", "{plain}", "--method", "pixel", "--n-cal", "99"], "only 12 images"),
    (["calibrate", "{plain}", "--method", "pixel", "--param", "bogus=1"], "invalid --param"),
    (["calibrate", "{plain}", "--method", "pixel", "--param", "nonsense"], "NAME=VALUE"),
    (["evaluate"], "give a CHECKPOINT"),
    (["evaluate", "{tmp}/missing.ckpt"], "not found"),
    (["sweep", "{plain}", "--n-cals", "4,50"], "exceed the 12 images"),
    (["sweep", "{plain}", "--methods", "pixel,magic"], "--methods"),
    (["sweep", "--predictions", "{tmp}"], "go together"),
])
def test_bad_arguments_give_one_clear_error(run, conformal_ckpt, tmp_path, capsys, args, message):
    fill = {"plain": run[1], "conf": conformal_ckpt, "tmp": tmp_path}
    assert _cli(*(a.format(**fill) for a in args)) == 2
    assert message in capsys.readouterr().err


def test_sweep_writes_table_json_and_figure(run, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert _cli("sweep", run[1], "--n-cals", "4,8", "--repeats", "2", "--methods", "pixel,image,kandinsky-kmeans",
                "--num-groups", "2", "--out", out) == 0
    result = json.loads((out / "sweep.json").read_text())
    assert len(result["records"]) == 2 * 2 * 3 and len(result["summary"]) == 2 * 3
    assert {r["n_cal"] for r in result["summary"]} == {4, 8}
    assert (out / "sweep.csv").read_text().startswith("method,n_cal,repeats")
    assert (out / result["figures"][0]["path"]).is_file()
    kmeans = [r for r in result["records"] if r["method"] == "kandinsky-kmeans"]
    assert all(r["num_groups"] == 2 for r in kmeans)
    assert "n_cal" in capsys.readouterr().out


def test_sweep_default_sizes_stop_at_the_pool(run, tmp_path):
    assert _cli("sweep", run[1], "--methods", "image", "--repeats", "1", "--out", tmp_path / "s") == 0
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["n_cals"] == [10, 12]


def test_python_api_of_the_pipeline(run):
    from segcal.pipeline.calibrate import calibrate
    from segcal.pipeline.evaluate import evaluate
    from segcal.pipeline.sources import model_source

    cal = model_source(run[1], "cal", device="cpu")
    bundle, record = calibrate(cal, "vector", progress=False)
    assert record["n_cal"] == 12 and bundle.recalibration.method == "vector"
    ev = evaluate(model_source(run[1], "test", device="cpu"), bundle, progress=False)
    assert set(ev.calibration) == {"uncalibrated", "vector"} and ev.result.seconds > 0
    assert torch.isfinite(torch.tensor(ev.result.calibration["vector"].nll))
    assert ev.result.segmentation is not None  # vector scaling can change the predicted class: measured


def test_broken_calibration_files_name_the_file(run, tmp_path, capsys):
    ckpt = read_checkpoint(run[1])
    ckpt["segcal"] = {"conformal": {"format": "something else"}}
    torch.save(ckpt, tmp_path / "broken.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert _cli("evaluate", tmp_path / "broken.ckpt") == 2
    assert "broken.ckpt: corrupt segcal calibration state" in capsys.readouterr().err
    assert _cli("evaluate", tmp_path / "junk.ckpt") == 2
    assert "junk.ckpt: not a readable torch checkpoint" in capsys.readouterr().err


def test_binary_sigmoid_model_through_every_command(tmp_path):
    d = tiny_experiment_dict(tmp_path, model={"head": "sigmoid"},
                             data={"synthetic": {"num_images": 24, "num_classes": 2, "height": 32, "width": 32},
                                   "splits": {"train": 8, "val": 4, "cal": 8, "test": 4}},
                             train={"epochs": 1, "vis_samples": 0})
    ckpt = train(experiment_from_dict(d), tmp_path / "run").last_checkpoint
    assert _cli("calibrate", ckpt, "--method", "selective", "--param", "epochs=2") == 0
    recal = ckpt.with_name("last.selective.ckpt")
    assert _cli("calibrate", recal, "--method", "kandinsky-annuli") == 0
    both = ckpt.with_name("last.selective.kandinsky-annuli.ckpt")
    assert _cli("evaluate", both, "--out", tmp_path / "ev") == 0
    result = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert result["source"]["head"] == "sigmoid" and list(result["calibration"]) == ["uncalibrated", "selective"]
    assert result["conformal"]["method"] == "kandinsky-annuli"
    assert len(result["segmentation"]["per_class"]["dice"]) == 2
    assert _cli("predict", both, "--out", tmp_path / "p", "--alpha", "0.2") == 0
    with np.load(tmp_path / "p" / f"{sorted(p.stem for p in (tmp_path / 'p').glob('*.npz'))[0]}.npz") as z:
        assert z["logits"].shape == (1, 32, 32) and z["sets"].shape == (2, 32, 32)
    assert _cli("evaluate", "--predictions", tmp_path / "p", "--out", tmp_path / "ev2") == 0
    again = json.loads((tmp_path / "ev2" / "evaluation.json").read_text())
    assert again["source"]["head"] == "sigmoid"
    assert again["calibration"]["uncalibrated"]["ece"] == pytest.approx(result["calibration"]["selective"]["ece"],
                                                                         abs=1e-6)


def test_method_parameters_are_listed_and_checked(capsys):
    from segcal.pipeline.calibrate import check_params, method_params

    assert set(method_params("pixel")) == {"score", "marginal", "mode", "bins", "max_exact_scores"}
    assert method_params("pixel")["bins"] == 256 and method_params("histogram")["bins"] == 15
    assert method_params("kandinsky-auto")["num_groups"] == "auto"
    assert method_params("temperature") == {"pixels_per_image": 4096, "max_pixels": 2**19, "max_iter": 100}
    with pytest.raises(ValueError, match=r"invalid --param nm_groups for kandinsky-kmeans; valid: num_groups, split, "
                                         "score, marginal"):
        check_params("kandinsky-kmeans", {"nm_groups": 3})
    assert main(["calibrate", "--list-params", "--method", "selective"]) == 0
    out = capsys.readouterr().out
    assert "wrong_weight" in out and "t2" in out and "kmeans" not in out


def test_local_method_end_to_end(run, tmp_path, capsys):
    run_dir, ckpt = run
    assert _cli("calibrate", ckpt, "--method", "local", "--param", "min_scores=50") == 0
    local = ckpt.with_name("last.local.ckpt")
    bundle = load_bundle(local)
    assert bundle.conformal.method == "local" and bundle.conformal.min_scores_ == 50
    assert sum(bundle.conformal.images_per_part_.values()) == 12 and bundle.conformal.folds == 5
    assert _cli("evaluate", local, "--out", run_dir / "eval" / "local") == 0
    result = EvaluationResult.read(run_dir / "eval" / "local" / "evaluation.json")
    assert result.conformal.method == "local" and 0 < result.conformal.at(0.9).coverage <= 1
    assert {"window_map", "ce_map", "set_overlay_0"} <= {f.key for f in result.figures}
    assert _cli("predict", local, "--alpha", "0.1", "--out", tmp_path / "p") == 0
    assert np.load(next((tmp_path / "p").glob("*.npz")))["sets"].shape == (3, 32, 32)
    capsys.readouterr()
    assert _cli("calibrate", "--list-params", "--method", "local") == 0
    listed = capsys.readouterr().out
    assert "min_scores" in listed and "split" in listed and "num_groups" not in listed
    assert _cli("calibrate", ckpt, "--method", "local", "--param", "num_groups=3", "--out", tmp_path / "x.ckpt") == 2
    assert "invalid --param num_groups for local" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_model_source_keeps_batches_on_the_model_device(run, device):
    from dataclasses import replace

    from segcal.pipeline.sources import model_source

    source = model_source(run[1], "cal", device=device, limit=4)
    kept = next(iter(replace(source, keep_device=True)))
    assert kept.logits.device.type == device and kept.labels.device.type == device
    plain = next(iter(source))
    assert plain.logits.device.type == "cpu" and torch.allclose(plain.logits, kept.logits.cpu(), atol=1e-5)
    assert replace(source, keep_device=True).subset(2).keep_device  # subsets keep the setting


def _device_bundle(ckpt, device):
    from segcal.pipeline.calibrate import calibrate
    from segcal.pipeline.sources import model_source

    source = model_source(ckpt, "cal", device=device)
    bundle, _ = calibrate(source, "pixel", progress=False)
    bundle, _ = calibrate(source, "risk", bundle=bundle, params={"target_class": "class1", "alpha": 0.2},
                          progress=False)
    return bundle


def test_evaluate_copies_to_the_cpu_do_not_grow_with_the_batches(run):
    from segcal.pipeline.evaluate import evaluate
    from segcal.pipeline.sources import model_source
    from test_device import cpu_copies

    bundle, counts, numbers = _device_bundle(run[1], "cpu"), [], []
    for size in (8, 2):  # 1 test batch, then 4
        source = model_source(run[1], "test", [f"data.batch_size={size}"], device="cpu")
        with cpu_copies() as calls:
            result = evaluate(source, bundle, progress=False).result
        counts.append(calls[0])
        numbers.append([result.calibration["uncalibrated"].ece, result.conformal.mean_ce, result.risk.test_risk])
    assert counts[0] == counts[1], counts
    assert numbers[0] == pytest.approx(numbers[1], abs=1e-6)  # the same images, batched differently


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluate_on_cuda_gives_the_cpu_numbers(run):
    from segcal.pipeline.evaluate import evaluate
    from segcal.pipeline.sources import model_source

    cpu, gpu = (evaluate(model_source(run[1], "test", device=device), _device_bundle(run[1], device),
                         progress=False).result for device in ("cpu", "cuda"))
    assert cpu.calibration["uncalibrated"].ece == pytest.approx(gpu.calibration["uncalibrated"].ece, abs=1e-5)
    assert cpu.conformal.marginal_coverage == pytest.approx(gpu.conformal.marginal_coverage, abs=1e-6)
    assert cpu.risk.test_risk == pytest.approx(gpu.risk.test_risk, abs=1e-6)
    assert cpu.segmentation.mean_foreground == pytest.approx(gpu.segmentation.mean_foreground, abs=1e-5)
