"""The signed gap map says where the model is over- or under-confident, pooled to stable blocks."""
import math

import numpy as np
import torch

from segcal.metrics.calibration import CalibrationMetrics
from segcal.plots.calibration import plot_gap_map, pool_gap


def _results(n=40, h=16, w=16):
    """Labels from softmax(x); logits 3·x on the left half (over-confident), x/3 on the right (under-confident)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, h, w, generator=g) * 2
    p = torch.softmax(x, 1)[:, 1]
    labels = (torch.rand(n, h, w, generator=g) < p).long()
    scale = torch.ones(1, 1, h, w)
    scale[..., : w // 2], scale[..., w // 2:] = 3.0, 1 / 3
    m = CalibrationMetrics(2, kind="logits", ece_map=True, image_size=(h, w))
    m.update(x * scale, labels)
    return m.compute()


def test_signed_gap_has_the_right_sign_and_matches_its_definition():
    r = _results()
    gap = r.gap_map
    assert float(gap[:, :8].mean()) > 0.03 and float(gap[:, 8:].mean()) < -0.03
    # pooled over everything: the count-weighted mean of the per-pixel gaps
    g, se, cnt, k = pool_gap(r, min_samples=10**9)
    assert k == 16 and cnt.shape == (1, 1) and cnt[0, 0] == 40 * 16 * 16
    expected = float((r.gap_map.double() * r.map_count).sum() / r.map_count.sum())
    assert math.isclose(float(g[0, 0]), expected, rel_tol=1e-9)
    acc = float((r.accuracy_map.double() * r.map_count).sum() / r.map_count.sum())
    assert math.isclose(float(se[0, 0]), math.sqrt(acc * (1 - acc) / cnt[0, 0]), rel_tol=1e-9)


def test_blocks_grow_until_they_hold_enough_pixels(tmp_path):
    r = _results()
    g, _, cnt, k = pool_gap(r, min_samples=600)  # 40 images per pixel: 4×4 blocks hold 640
    assert k == 4 and g.shape == (4, 4) and np.median(cnt) >= 600
    assert (g[:, :2] > 0).all() and (g[:, 2:] < 0).all()
    fig = plot_gap_map(r, tmp_path / "gap.png", min_samples=600)
    assert "4×4-pixel blocks" in fig.axes[0].get_title() and (tmp_path / "gap.png").stat().st_size > 1000
