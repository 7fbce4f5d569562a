"""The up-front memory estimate of conformal calibration and the refusal that names what would fit."""
import pytest

from conftest import write_prediction_folder
from segcal.cli.main import main
from segcal.conformal.memory import BASE, PER_CLASS_PIXEL, PER_PIXEL_IMAGE, estimate_peak_bytes
from segcal.pipeline import memory
from segcal.pipeline.sources import folder_source


def test_estimate_grows_with_classes_pixels_and_images():
    small = estimate_peak_bytes("pixel", 2, (8, 8), 10)
    assert small == BASE + PER_CLASS_PIXEL["pixel"] * 2 * 64 + PER_PIXEL_IMAGE * 10 * 64
    assert estimate_peak_bytes("pixel", 19, (512, 1024), 12) > 6 * 2**30  # measured 5.4 GiB
    assert estimate_peak_bytes("image", 19, (512, 1024), 12) < 1.2 * 2**30  # measured 1.1 GiB
    assert estimate_peak_bytes("local", 19, (512, 1024), 12) > 50 * 2**30  # measured 4.1 GiB at a 16th the size
    assert estimate_peak_bytes("custom-grouping", 2, (8, 8), 1) == estimate_peak_bytes("kmeans", 2, (8, 8), 1)


def test_refusal_names_the_methods_that_fit(tmp_path, monkeypatch, capsys):
    write_prediction_folder(tmp_path / "p", n=6)
    source = folder_source(tmp_path / "p")
    assert memory.memory_plan(source, "temperature") is None  # recalibration: no per-pixel state
    need_pixel = estimate_peak_bytes("pixel", 2, (8, 8), 6)
    monkeypatch.setattr(memory, "available_bytes", lambda: int(need_pixel / memory.HEADROOM) - 1)
    with pytest.raises(memory.MemoryBudgetError, match=r"pixel on 6 images of 2 classes at 8×8 needs about .* "
                                                        r"--method image or kandinsky-kmeans"):
        memory.check_memory(source, "pixel")
    memory.check_memory(source, "image")  # fits
    args = ["calibrate", "--predictions", str(tmp_path / "p"), "--method", "pixel", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr()
    assert "estimated peak memory" in err.out and "--no-memory-check" in err.err
    assert main([*args, "--no-memory-check"]) == 0
    monkeypatch.setattr(memory, "available_bytes", lambda: None)  # unknown: no check
    memory.check_memory(source, "local")
