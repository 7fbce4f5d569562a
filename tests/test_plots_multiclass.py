"""Figures for many classes: distinct colours, names in legends and panel titles, every class shown."""
import numpy as np
import torch

from planted import block_map, planted_logits
from segcal.conformal import PixelwiseCalibrator, evaluate_coverage
from segcal.plots.conformal import plot_ce_maps, plot_group_maps
from segcal.plots.palette import class_colormap, class_palette
from segcal.plots.training import plot_samples


def test_palette_is_distinct_for_many_classes():
    for n in (2, 11, 20, 35):
        colours = class_palette(n)
        assert colours.shape == (n, 3) and len({tuple(np.round(c, 3)) for c in colours}) == n
    assert not np.allclose(class_palette(11)[0], 0)  # class 0 is a colour, not black
    assert class_colormap(20).N == 21  # + ignored pixels


def test_training_samples_name_every_class(tmp_path):
    names = [f"c{i}" for i in range(12)]
    labels = np.arange(12 * 16).reshape(12, 16) % 12
    fig_path = plot_samples(np.zeros((1, 12, 16, 3)), labels[None], labels[None], ["im"], names, 255,
                            tmp_path / "s.png")
    assert fig_path.stat().st_size > 1000


def test_per_class_grids_show_and_name_every_class(tmp_path):
    g = torch.Generator().manual_seed(0)
    c = 5
    cal = [(torch.randn(6, c, 6, 8, generator=g) * 2, torch.randint(0, c, (6, 6, 8), generator=g)) for _ in range(3)]
    cp = PixelwiseCalibrator().fit(cal)
    res = evaluate_coverage(cp, cal, min_test_labels=1)
    names = ["sky", "road", "car", "person", "bicyclist"]
    fig = plot_ce_maps(res, names, path=tmp_path / "ce.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [t.split(":")[0] for t in titles] == names
    fig = plot_group_maps(cp.group_map_, names, path=tmp_path / "g.png")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == names
    logits, labels = planted_logits(8, block_map((6, 8)), [-1, 1.5, 3.5, 6], [0.5, 1, 0.5, 2], seed=0)
    binary = evaluate_coverage(PixelwiseCalibrator(2).fit([(logits, labels)]), [(logits, labels)], min_test_labels=1)
    assert len([ax for ax in plot_ce_maps(binary, ["bg", "fg"]).axes if ax.get_title()]) == 2
