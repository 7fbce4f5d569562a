"""Calibrated states and batches sized for large images: compact group maps, one imagewise pool, float16
per-pixel curves rounded up, prediction-folder batches capped in bytes."""
import numpy as np
import torch

from conftest import write_prediction_folder
from segcal.conformal.calibrator import ConformalCalibrator, ImagewiseCalibrator, PixelwiseCalibrator
from segcal.conformal.quantile import group_thresholds
from segcal.conformal.state import compact_group_map, expand_group_map, group_curves, nc_curves_of
from segcal.data import predictions


def _batches(n=6, c=3, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n, size, size), generator=g)
    return [(torch.randn(n, c, size, size, generator=g) + 2 * torch.nn.functional.one_hot(y, c).permute(0, 3, 1, 2),
             y)]


def test_group_maps_are_stored_compactly_and_round_trip():
    constant = torch.zeros(3, 4, 5, dtype=torch.long)
    assert compact_group_map(constant) == {"constant": 0, "shape": [3, 4, 5]}
    pixels = torch.arange(40_000).view(1, 200, 200)
    assert compact_group_map(pixels).dtype == torch.int32 and compact_group_map(pixels[:, :100]).dtype == torch.int16
    assert compact_group_map(torch.arange(20).view(1, 4, 5)).dtype == torch.int16
    for gm in (constant, pixels, torch.arange(20).view(1, 4, 5)):
        assert torch.equal(expand_group_map(compact_group_map(gm)), gm)


def test_imagewise_state_stores_its_pool_once_and_reloads_equal():
    cp = ImagewiseCalibrator(3).fit(_batches())
    state = cp.state_dict()
    assert state["scores"] == "image_scores" and isinstance(state["group_map"], dict)
    clone = ConformalCalibrator.from_state_dict(state)
    assert torch.equal(clone.thresholds(0.1), cp.thresholds(0.1))
    assert nc_curves_of(state).shape == (100, 3, 12, 12)


def test_large_curves_are_float16_and_never_below_the_exact_thresholds(monkeypatch):
    from segcal.conformal import state as state_module

    cp = PixelwiseCalibrator(3).fit(_batches())
    levels = torch.linspace(0, 1, 100, dtype=torch.float64)
    exact = group_thresholds(cp.scores_, cp.image_scores_, levels).float()
    monkeypatch.setattr(state_module, "LARGE_CURVES", 10)
    curves = group_curves(cp.scores_, cp.image_scores_, levels, chunk=7)
    assert curves.dtype == torch.float16
    assert (curves.float() >= exact).all() and (curves.float() - exact).max() < 1e-3
    monkeypatch.setattr(state_module, "LARGE_CURVES", 10**9)
    assert torch.equal(group_curves(cp.scores_, cp.image_scores_, levels), exact)


def test_prediction_folder_batches_are_capped_in_bytes(tmp_path, monkeypatch):
    write_prediction_folder(tmp_path / "p", n=5)
    first = np.load(next((tmp_path / "p").glob("*.npz")))["logits"]
    monkeypatch.setattr(predictions, "BATCH_BYTES", 2 * 4 * first.size)
    folder = predictions.PredictionFolder(tmp_path / "p", batch_size=8)
    assert folder.batch_size == 2 and folder.requested_batch_size == 8
    assert [len(b) for b in folder] == [2, 2, 1]


def test_large_exact_pools_are_stored_as_fine_histograms_within_the_bound(monkeypatch):
    from segcal.conformal import state as state_module

    cp = ImagewiseCalibrator(3).fit(_batches(n=20, size=32))
    monkeypatch.setattr(state_module, "LARGE_POOL_BYTES", 1024)
    monkeypatch.setattr(state_module, "STATE_BINS", 1024)  # 3 classes × 1024 bins ≪ the 20 × 32 × 32 scores
    state = cp.state_dict()
    assert "counts" in state["image_scores"]  # a histogram, not every score
    clone = ConformalCalibrator.from_state_dict(state)
    exact, stored = cp.thresholds_at(torch.linspace(0.05, 0.95, 19, dtype=torch.float64)), clone.thresholds_at(
        torch.linspace(0.05, 0.95, 19, dtype=torch.float64))
    step = (14.0 + 40.0) / (1024 - 2)  # logit width of one bin
    assert (stored >= exact).all() and ((stored - exact) <= 0.25 * step + 1e-6).all()
