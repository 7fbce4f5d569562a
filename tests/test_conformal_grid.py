"""Where statistics live: the calibration grid (blocks for learned groupings and the local method, mapped back
to pixels) and the one pooled location of imagewise calibration."""
import pytest
import torch

from planted import planted_logits, ring_map
from segcal.calibrated import CalibrationBundle, load_bundle, save_bundle
from segcal.conformal.accumulate import ScoreBank
from segcal.conformal.calibrator import (
    ConformalCalibrator,
    ImagewiseCalibrator,
    KandinskyCalibrator,
    PixelwiseCalibrator,
)
from segcal.conformal.grid import POOLED_BINS, grid_shape, to_blocks, upsample
from segcal.conformal.local_calibrator import LocalCalibrator
from segcal.conformal.quantile import SortedScores
from segcal.conformal.scores import class_scores, scores_at_labels
from segcal.conformal.state import nc_curves_of


def test_blocks_hold_every_pixel_once_and_pad_unlabelled():
    scores = torch.arange(2 * 5 * 7, dtype=torch.float32).view(2, 5, 7)
    labels = torch.ones(2, 5, 7, dtype=torch.long)
    s, y = to_blocks(scores, labels, 3)
    assert s.shape == y.shape == (18, 2, 3) and grid_shape((5, 7), 3) == (2, 3)
    kept = s[y >= 0]
    assert torch.equal(kept.sort().values, scores.flatten())  # every pixel exactly once
    assert int((y < 0).sum()) == 2 * (6 * 9 - 5 * 7)  # the padding
    # pixel (i, j) of block (by, bx) of image n is pixel (3·by + i, 3·bx + j)
    assert s[0 * 9 + 1 * 3 + 2, 1, 1] == scores[0, 3 + 1, 3 + 2]
    block_values = torch.arange(6.0).view(2, 3)
    full = upsample(block_values, 3, (5, 7))
    assert full.shape == (5, 7) and full[4, 6] == block_values[1, 2] and full[2, 2] == block_values[0, 0]
    assert to_blocks(scores, labels, 1)[0] is scores and upsample(block_values, 1, (2, 3)) is block_values


def data(n=40, seed=0):
    return planted_logits(n, ring_map((13, 11), [3, 5]), [0.5, 2, 4], [1, 1, 2], seed=seed)


def test_kmeans_on_the_grid_pools_exact_scores_per_block_group():
    logits, labels = data()
    cp = KandinskyCalibrator("kmeans", 2, num_groups=3, grid=2, mode="exact").fit([(logits, labels)])
    assert cp.shape_ == (13, 11) and cp.group_map_.shape == (2, 13, 11) and cp.n_cal_ == 40
    blocks = cp.group_map_[:, ::2, ::2]
    assert torch.equal(upsample(blocks, 2, (13, 11)), cp.group_map_)  # one group per 2 × 2 block
    # the thresholds pool the exact full-resolution scores of the cal images by the pixel map
    s, y = scores_at_labels(class_scores(logits), labels)
    cal = cp._part_codes(0, 40) == 0
    yy = y[cal]  # [n, H, W]
    flat_y = yy.reshape(-1)
    flat_g = cp.group_map_.view(2, -1)[flat_y.clamp_min(0), torch.arange(13 * 11).repeat(yy.shape[0])]
    valid = flat_y >= 0
    ref = SortedScores.from_keys((flat_y * cp.num_groups_ + flat_g)[valid], s[cal].reshape(-1)[valid], 2,
                                 cp.num_groups_)
    assert torch.equal(cp.scores_.values, ref.values) and torch.equal(cp.scores_.offsets, ref.offsets)


def test_local_on_the_grid_is_blockwise_and_round_trips(tmp_path):
    logits, labels = data()
    cp = LocalCalibrator(2, min_scores=30, grid=2).fit([(logits, labels)])
    assert cp.cdf_.shape[1:3] == (7, 6) and cp.shape_ == (13, 11) and cp.n_cal_ == 40 and cp.num_groups_ == 42
    q = cp.thresholds(0.1)
    assert q.shape == (2, 13, 11) and torch.equal(upsample(q[:, ::2, ::2], 2, (13, 11)), q)
    sides = cp.window_sides()
    assert sides.shape == (2, 13, 11) and int(sides.min()) >= 2 and int(sides.max()) <= 13
    assert cp.info_["grid"] == 2
    sets = cp.predict_set(logits[:3], 0.1)
    path = tmp_path / "cal.pt"
    save_bundle(CalibrationBundle(conformal=cp), path)
    back = load_bundle(path).conformal
    assert back.grid == 2 and torch.equal(back.predict_set(logits[:3], 0.1), sets)


def test_kmeans_grid_state_and_sweep_path_agree(tmp_path):
    logits, labels = data()
    streamed = KandinskyCalibrator("kmeans", 2, num_groups=3, grid=3, mode="exact").fit([(logits, labels)])
    bank = ScoreBank(2, (13, 11), *scores_at_labels(class_scores(logits), labels))
    banked = KandinskyCalibrator("kmeans", 2, num_groups=3, grid=3).fit_bank(bank)
    assert torch.equal(streamed.group_map_, banked.group_map_)
    assert torch.equal(streamed.thresholds(0.1), banked.thresholds(0.1))
    back = ConformalCalibrator.from_state_dict(streamed.state_dict())
    assert back.grid == 3 and torch.equal(back.thresholds(0.1), streamed.thresholds(0.1))


@pytest.mark.parametrize("make, message", [
    (lambda: PixelwiseCalibrator(2, grid=2), "grid applies to learned groupings"),
    (lambda: ConformalCalibrator("image", 2, grid=4), "grid applies to learned groupings"),
    (lambda: KandinskyCalibrator("kmeans", 2, grid=0), "grid must be an int >= 1"),
    (lambda: LocalCalibrator(2, grid=1.5), "grid must be an int >= 1"),
    (lambda: LocalCalibrator(2, grid=True), "grid must be an int >= 1"),
])
def test_bad_grids_are_one_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_imagewise_pools_one_location_and_bins_finely_past_its_budget():
    logits, labels = data(60)
    exact = ImagewiseCalibrator(2, mode="exact").fit([(logits, labels)])
    binned = ImagewiseCalibrator(2, max_exact_scores=1000).fit([(logits, labels)])
    assert exact.info_["storage"] == "exact" and binned.info_["storage"] == "histogram"
    assert binned.scores_.bins.num_bins == POOLED_BINS and binned.scores_.counts.numel() == 2 * POOLED_BINS
    assert binned.group_map_.shape == (2, 13, 11) and binned.n_cal_ == exact.n_cal_ == 60
    for alpha in (0.05, 0.1, 0.3):
        q_exact, q_binned = exact.thresholds(alpha), binned.thresholds(alpha)
        assert bool((q_binned >= q_exact).all()) and float((q_binned - q_exact).max()) <= 2.1e-4


def test_gridded_group_maps_are_stored_per_block():
    logits, labels = data()
    cp = KandinskyCalibrator("kmeans", 2, num_groups=3, grid=3).fit([(logits, labels)])
    state = cp.state_dict(include_curves="dense")
    assert tuple(state["group_map"].shape) == (2, 5, 4)  # ⌈13/3⌉ × ⌈11/3⌉ blocks
    assert torch.equal(ConformalCalibrator.from_state_dict(state).group_map_, cp.group_map_)
    assert state["nc_curves"].shape == (100, 2, 13, 11)
    del state["nc_curves"]
    assert torch.equal(nc_curves_of(state), cp.nc_curves())
