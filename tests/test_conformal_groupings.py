"""Groupings: k-means and genetic annuli recover planted structure; registry; data-driven k."""
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from planted import block_map, planted_logits, ring_map
from segcal.conformal.accumulate import ScoreAccumulator
from segcal.conformal.calibrator import ConformalCalibrator, KandinskyCalibrator
from segcal.conformal.grouping import GROUPINGS, get_grouping, normalise_group_map, pixel_statistics, register_grouping
from segcal.conformal.grouping_annuli import fit_annuli
from segcal.conformal.scores import label_scores

MARGINS, NOISE = [-1.0, 1.5, 3.5, 6.0], [0.5, 0.5, 0.5, 0.5]


def ari(a, b):
    return adjusted_rand_score(a.flatten().numpy(), b.flatten().numpy())


def test_kmeans_recovers_planted_blocks():
    planted = block_map((12, 16))
    logits, labels = planted_logits(60, planted, MARGINS, NOISE, seed=0)
    cp = KandinskyCalibrator("kmeans", 2, num_groups=4).fit([(logits, labels)])
    assert cp.num_groups_ == 4 and cp.images_per_part_ == {"cal": 30, "fit": 30}
    for c in range(2):
        assert ari(cp.group_map_[c], planted) > 0.95
    # groups are ordered by curve level: group 0 = most confident (largest planted margin)
    assert cp.group_map_[1][planted == 3].mode().values.item() == 0


def test_annuli_recover_planted_rings():
    planted = ring_map((20, 20), radii=[3, 6, 9], centre_offset=(2, -1))
    logits, labels = planted_logits(40, planted, MARGINS, NOISE, seed=1)
    cp = KandinskyCalibrator("annuli", 2).fit([(logits, labels)])
    for c in range(2):
        assert ari(cp.group_map_[c], planted) > 0.9


def test_annuli_parameters_are_sorted_and_seeded():
    planted = ring_map((16, 16), radii=[2, 5, 8])
    feats = torch.tensor(MARGINS, dtype=torch.float64)[planted].reshape(-1, 1).numpy()
    p1, ids1 = fit_annuli(feats, (16, 16), seed=3)
    p2, ids2 = fit_annuli(feats, (16, 16), seed=3)
    assert (p1 == p2).all() and (ids1 == ids2).all()
    assert p1[2] <= p1[3] <= p1[4]
    assert adjusted_rand_score(ids1.ravel(), planted.flatten().numpy()) > 0.9


def test_custom_grouping_is_one_function():
    @register_grouping("test-halves", num_groups=2)
    def halves(stats, num_groups, seed):
        h, w = stats.shape
        return (torch.arange(w) >= w // 2).long().expand(h, w)

    try:
        logits, labels = planted_logits(10, block_map((4, 6)), MARGINS, NOISE, seed=2)
        cp = ConformalCalibrator("test-halves", 2).fit([(logits, labels)])
        assert cp.num_groups_ == 2 and cp.method == "kandinsky-test-halves"
        assert cp.group_map_[0].tolist() == [[0, 0, 0, 1, 1, 1]] * 4
    finally:
        GROUPINGS.pop("test-halves")
    with pytest.raises(ValueError, match="grouping must be one of"):
        get_grouping("nope")


def test_normalise_group_map_checks_and_compacts():
    g, k = normalise_group_map(torch.tensor([[5, 5], [9, 2]]), 2, (2, 2))
    assert k == 3 and g.shape == (2, 2, 2) and g[0].tolist() == [[1, 1], [2, 0]]
    with pytest.raises(ValueError, match="shape"):
        normalise_group_map(torch.zeros(3, 3, dtype=torch.long), 2, (2, 2))
    with pytest.raises(ValueError, match="integer"):
        normalise_group_map(torch.zeros(2, 2), 2, (2, 2))


def test_pixel_statistics_fill_unseen_pixels_with_image_level():
    logits, labels = planted_logits(8, block_map((4, 4)), MARGINS, NOISE, seed=4)
    labels[:, 0, 0] = 0  # class 1 never seen at pixel (0, 0)
    acc = ScoreAccumulator(2)
    acc.update(*label_scores(logits, labels))
    stats = pixel_statistics(acc, (0.5, 0.9))
    assert stats.counts[1, 0, 0] == 0 and not torch.isnan(stats.curves).any()
    s, y = label_scores(logits, labels)
    pooled = s[y == 1].sort().values
    assert stats.curves[1, 1, 0, 0] == pooled[int(torch.ceil(torch.tensor(0.9 * pooled.numel()))) - 1]


def test_data_driven_number_of_groups():
    planted = block_map((8, 8), 2, 4)  # 8 planted groups
    margins, noise = [-2, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 6], [0.4] * 8
    logits, labels = planted_logits(120, planted, margins, noise, seed=5)
    cp = KandinskyCalibrator("kmeans", 2, num_groups="auto", group_candidates=(1, 2, 8)).fit([(logits, labels)])
    assert cp.method == "kandinsky-auto"
    assert set(cp.group_selection_) == {1, 2, 8}
    assert cp.num_groups_ == 8 and min(cp.group_selection_, key=cp.group_selection_.get) == 8
    assert cp.images_per_part_ == {"cal": 60, "fit": 30, "val": 30}
    with pytest.raises(ValueError, match="fixed number of groups"):
        KandinskyCalibrator("annuli", num_groups="auto")
