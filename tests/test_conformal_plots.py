"""Conformal figures are written from results objects."""
import pytest
import torch

from planted import block_map, planted_logits
from segcal.conformal.calibrator import ImagewiseCalibrator, PixelwiseCalibrator
from segcal.conformal.evaluation import evaluate_coverage
from segcal.plots.conformal import (
    plot_ce_map,
    plot_coverage_vs_nominal,
    plot_group_map,
    plot_prediction_set_overlay,
    plot_set_size_map,
    plot_sweep,
)


@pytest.fixture(scope="module")
def results():
    logits, labels = planted_logits(24, block_map((6, 8)), [-1, 1.5, 3.5, 6], [0.5, 1, 0.5, 2], seed=0)
    out = {}
    for cp in (PixelwiseCalibrator(2), ImagewiseCalibrator(2)):
        cp.fit([(logits[:12], labels[:12])])
        out[cp.method] = (cp, evaluate_coverage(cp, [(logits[12:], labels[12:])], min_test_labels=2))
    return out, logits


@pytest.mark.filterwarnings("ignore::segcal.conformal.diagnostics.TrivialThresholdWarning")  # 12 images on purpose
def test_all_figures_are_written(results, tmp_path):
    (out, logits) = results
    cp, res = out["pixel"]
    paths = [tmp_path / name for name in ("ce.png", "groups.png", "cov.png", "size.png", "sweep.png", "sets.png")]
    plot_ce_map(res, class_index=1, class_names=["background", "person"], path=paths[0])
    plot_group_map(out["image"][0].group_map_, path=paths[1])
    plot_coverage_vs_nominal({k: v[1] for k, v in out.items()}, path=paths[2])
    plot_set_size_map(res, alpha=0.1, path=paths[3])
    records = [{"method": m, "n_cal": n, "repeat": r, "mean_ce": 0.1 / n + 0.01 * r, "mean_set_size": 1 + 1 / n}
               for m in ("pixelwise", "kmeans") for n in (5, 10, 20) for r in range(3)]
    plot_sweep(records, path=paths[4])
    image = torch.rand(3, 6, 8)
    plot_prediction_set_overlay(image, cp.predict_set(logits[:1], 0.1)[0], ["bg", "fg"], alpha=0.1, path=paths[5])
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
    fig = plot_group_map(cp.group_map_)  # pixelwise: a colour bar instead of a legend
    assert fig.axes


def test_set_size_map_needs_a_grid_level(results):
    out, _ = results
    with pytest.raises(ValueError, match="not on the evaluated grid"):
        plot_set_size_map(out["pixel"][1], alpha=0.123)
