"""The up-front memory estimate of conformal calibration and the refusal that names what would fit."""
import pytest

from conftest import write_prediction_folder
from segcal.calibrated import load_bundle
from segcal.cli.main import main
from segcal.conformal.memory import (
    BASE,
    BINNED,
    BINNED_PER_BIN,
    EXACT,
    EXACT_PER_BIN,
    FULL_RES,
    HELD,
    PARTS,
    PER_BLOCK_PER_BIN,
    PER_SCORE,
    estimate_peak_bytes,
)
from segcal.pipeline import memory
from segcal.pipeline.sources import folder_source

GIB = 2**30


def test_estimate_grows_with_classes_pixels_images_and_shrinks_with_the_grid():
    small = estimate_peak_bytes("pixel", 2, (8, 8), 10)
    assert small == BASE + 2 * 64 * (FULL_RES + EXACT["pixel"]) + PER_SCORE["pixel"] * 10 * 64
    assert estimate_peak_bytes("pixel", 19, (512, 1024), 12) > 5.4 * GIB  # measured 5.4 GiB
    assert estimate_peak_bytes("image", 19, (512, 1024), 500) < 1.1 * GIB  # measured 0.97 GiB
    assert 7.1 * GIB < estimate_peak_bytes("kmeans", 19, (512, 1024), 500) < 8 * GIB  # measured 7.09 GiB
    assert estimate_peak_bytes("custom-grouping", 2, (8, 8), 1) == estimate_peak_bytes("kmeans", 2, (8, 8), 1)
    # a grid of 4 keeps a 16th of the per-block statistics (7 × 7 blocks of an odd image)
    gridded = estimate_peak_bytes("local", 2, (25, 27), 3, grid=4)
    per_class = EXACT["local"] + 256 * EXACT_PER_BIN["local"]
    assert gridded == (BASE + 2 * FULL_RES * 25 * 27 + (2 * per_class + 256 * PER_BLOCK_PER_BIN["local"]) * 7 * 7
                       + PER_SCORE["local"] * 3 * 25 * 27)
    # past max_exact_scores per part the parts hold compact histograms and the exact scores being binned
    many = estimate_peak_bytes("kmeans", 2, (100, 100), 10**6, max_exact_scores=1000)
    binned = BINNED["kmeans"] + 256 * BINNED_PER_BIN["kmeans"]
    assert many == BASE + 2 * 10**4 * (FULL_RES + binned) + HELD * 1000 * PARTS["kmeans"]


def test_refusal_names_the_methods_that_fit(tmp_path, monkeypatch, capsys):
    write_prediction_folder(tmp_path / "p", n=6)
    source = folder_source(tmp_path / "p")
    assert memory.memory_plan(source, "temperature") is None  # recalibration: no per-pixel state
    need_pixel = estimate_peak_bytes("pixel", 2, (8, 8), 6)
    monkeypatch.setattr(memory, "available_bytes", lambda: int((need_pixel - 1) / memory.HEADROOM))
    with pytest.raises(memory.MemoryBudgetError, match=r"pixel on 6 images of 2 classes at 8×8 needs about .* "
                                                        r"--method image or --method kandinsky-kmeans"):
        memory.check_memory(source, "pixel")
    memory.check_memory(source, "image")  # fits
    args = ["calibrate", "--predictions", str(tmp_path / "p"), "--method", "pixel", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr()
    assert "estimated peak memory" in err.out and "--no-memory-check" in err.err
    assert main([*args, "--no-memory-check"]) == 0
    monkeypatch.setattr(memory, "available_bytes", lambda: None)  # unknown: no check
    memory.check_memory(source, "local")


def test_max_memory_budget_suggests_the_calibration_grid(tmp_path, capsys):
    write_prediction_folder(tmp_path / "p", n=6)
    source = folder_source(tmp_path / "p")
    local = estimate_peak_bytes("local", 2, (8, 8), 6)
    gridded = estimate_peak_bytes("local", 2, (8, 8), 6, grid=2)
    budget = (local + gridded) // 2  # the grid of 2 fits, the full resolution does not
    with pytest.raises(memory.MemoryBudgetError, match=r"budget is .* \(--max-memory\): use .*--param grid=2"):
        memory.check_memory(source, "local", max_bytes=budget)
    memory.check_memory(source, "local", params={"grid": 2}, max_bytes=budget)
    # pixelwise has no grid: the refusal points at the gridded methods that do not fit at full resolution
    pixel, local4 = estimate_peak_bytes("pixel", 2, (8, 8), 6), estimate_peak_bytes("local", 2, (8, 8), 6, grid=4)
    with pytest.raises(memory.MemoryBudgetError, match=r"use --method image or --method kandinsky-kmeans or "
                                                        r"--method local --param grid=4, a smaller"):
        memory.check_memory(source, "pixel", max_bytes=(pixel + local4) // 2)
    args = ["calibrate", "--predictions", str(tmp_path / "p"), "--method", "local", "--no-progress",
            "--max-memory", str(budget / GIB), "--out", str(tmp_path / "local.pt")]
    assert main(args) == 2 and "--param grid=2" in capsys.readouterr().err
    assert main([*args, "--param", "grid=2"]) == 0
    out = capsys.readouterr().out
    assert "estimated peak memory" in out and "(budget" in out and "grid: 2" in out
    with pytest.raises(SystemExit):
        main([*args, "--max-memory", "-1"])
    assert "expected a number > 0" in capsys.readouterr().err


def test_bins_are_a_param_and_scale_the_binned_memory(tmp_path, capsys):
    half = estimate_peak_bytes("kmeans", 19, (512, 1024), 500, num_bins=128)
    full = estimate_peak_bytes("kmeans", 19, (512, 1024), 500)
    assert full - half == 2 * 128 * 19 * 512 * 1024  # one byte per bin and part, two parts
    write_prediction_folder(tmp_path / "p", n=6)
    out = tmp_path / "pixel.pt"
    args = ["calibrate", "--predictions", str(tmp_path / "p"), "--method", "pixel", "--no-progress", "--out",
            str(out), "--param", "mode=histogram"]
    assert main([*args, "--param", "bins=64"]) == 0
    assert load_bundle(out).conformal.scores_.bins.num_bins == 64
    assert main([*args, "--param", "bins=2"]) == 2
    assert "--param bins must be an int >= 3" in capsys.readouterr().err
    # the histogram recalibrator's bins are a --param too
    assert main(["calibrate", "--predictions", str(tmp_path / "p"), "--method", "histogram", "--no-progress",
                 "--out", str(tmp_path / "h.pt"), "--param", "bins=7"]) == 0
    assert load_bundle(tmp_path / "h.pt").recalibration.bins == 7


def test_evaluate_is_checked_up_front_and_names_the_levels_that_fit(tmp_path, capsys):
    write_prediction_folder(tmp_path / "p", n=6)
    source = folder_source(tmp_path / "p")
    one, many = (memory.evaluate_peak_bytes(2, (8, 8), levels, True) for levels in (1, 19))
    assert many - one == 18 * 8 * 8 * 2 * memory.EVALUATE_PER_CELL
    assert memory.evaluate_peak_bytes(2, (8, 8), 19, False) < one  # no coverage maps without a conformal method
    budget = (memory.evaluate_peak_bytes(2, (8, 8), 5, True) + memory.evaluate_peak_bytes(2, (8, 8), 6, True)) // 2
    with pytest.raises(memory.MemoryBudgetError, match=r"with 19 coverage levels needs about .* --alphas with at "
                                                        r"most 5 levels \(e.g. --alphas 0.1\), --segmentation-only"):
        memory.check_evaluate_memory(source, 19, True, budget)
    assert memory.check_evaluate_memory(source, 5, True, budget)[1] == budget
    cal = tmp_path / "image.pt"
    assert main(["calibrate", "--predictions", str(tmp_path / "p"), "--method", "image", "--no-progress",
                 "--out", str(cal)]) == 0
    args = ["evaluate", "--predictions", str(tmp_path / "p"), str(cal), "--no-progress", "--out", str(tmp_path / "ev"),
            "--max-memory", str(budget / GIB)]
    assert main(args) == 2 and "--alphas with at most 5 levels" in capsys.readouterr().err
    assert main([*args, "--alphas", "0.1,0.2"]) == 0
    assert "estimated peak memory" in capsys.readouterr().out
    assert main([*args, "--no-memory-check"]) == 0


def test_a_prefetching_model_source_counts_the_batches_in_flight():
    from types import SimpleNamespace

    from segcal.pipeline.memory import in_flight_bytes

    source = SimpleNamespace(prefetch=1, image_size=(512, 1024), batch_size=4, num_classes=19)
    assert in_flight_bytes(source) == 2 * 4 * (4 * 19 + 8) * 512 * 1024  # one queued, one being run
    assert in_flight_bytes(SimpleNamespace(prefetch=0, image_size=(8, 8), batch_size=1, num_classes=2)) == 0
    assert in_flight_bytes(SimpleNamespace(image_size=(8, 8), batch_size=1, num_classes=2)) == 0  # saved predictions
