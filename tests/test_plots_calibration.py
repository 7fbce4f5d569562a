"""Calibration figures are written (atomically) for one, several and degenerate results."""
import matplotlib.pyplot as plt
import pytest
import torch

from segcal.metrics.calibration import CalibrationMetrics
from segcal.plots.calibration import (
    plot_all,
    plot_boundary_interior,
    plot_confidence_histogram,
    plot_ece_map,
    plot_image_ece_histogram,
    plot_reliability,
)


def results(seed=0, temperature=1.0, label="", ignore_all=False, **kwargs):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 2, 12, 16, generator=g) * 3 / temperature
    labels = torch.randint(0, 2, (3, 12, 16), generator=g)
    if ignore_all:
        labels[:] = 255
    m = CalibrationMetrics(2, kind="logits", **kwargs)
    m.update(logits, labels)
    r = m.compute()
    r.label = label
    return r


def test_plot_all_writes_every_figure(tmp_path):
    paths = plot_all(results(class_maps=True), tmp_path / "figs")
    assert set(paths) == {"reliability", "confidence_histogram", "image_ece_histogram", "boundary_interior", "ece_map",
                          "gap_map"}
    for path in paths.values():
        assert path.exists() and path.stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(p.name for p in paths.values())


def test_overlay_before_after_with_labels(tmp_path):
    before, after = results(label="uncalibrated"), results(temperature=3.0, label="temperature scaled")
    fig = plot_reliability([before, after], tmp_path / "rel.png")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("uncalibrated: ECE") for t in legend) and any("temperature scaled" in t for t in legend)
    assert "15 equal-width bins" in fig.axes[0].get_title()
    paths = plot_all([before, after], tmp_path / "both", prefix="cmp_")
    assert {"ece_map_uncalibrated", "ece_map_temperature_scaled"} <= set(paths)
    assert all(p.name.startswith("cmp_") and p.exists() for p in paths.values())
    plt.close("all")


def test_per_class_map_and_missing_maps(tmp_path):
    r = results(class_maps=True)
    plot_ece_map(r, tmp_path / "class1.png", class_index=1)
    assert (tmp_path / "class1.png").exists()
    no_maps = results(ece_map=False)
    with pytest.raises(ValueError, match="ece_map=True"):
        plot_ece_map(no_maps)
    with pytest.raises(ValueError, match="class_maps=True"):
        plot_ece_map(no_maps, class_index=0)
    with pytest.raises(ValueError, match="non-empty"):
        plot_reliability([])


def test_degenerate_results_still_plot(tmp_path):
    empty = results(ignore_all=True)  # every value undefined (NaN)
    for plot in (plot_reliability, plot_confidence_histogram, plot_image_ece_histogram, plot_boundary_interior,
                 plot_ece_map):
        path = tmp_path / f"{plot.__name__}.png"
        plot(empty, path)
        assert path.exists()
