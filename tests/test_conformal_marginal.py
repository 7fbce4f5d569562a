"""Marginal (class-pooled) conformal calibration: a NumPy reference, the guarantee over all pixels, round trips."""
import numpy as np
import pytest
import torch

from segcal.conformal.accumulate import ScoreBank
from segcal.conformal.calibrator import ConformalCalibrator, ImagewiseCalibrator, PixelwiseCalibrator
from segcal.conformal.local_calibrator import LocalCalibrator
from segcal.conformal.scores import get_score, scores_at_labels
from test_conformal_aps import _three_class_pool

ALPHA = 0.1


def test_imagewise_marginal_threshold_is_the_pooled_conformal_quantile():
    logits, labels = _three_class_pool(20)
    cp = ImagewiseCalibrator(3, marginal=True).fit([(logits, labels)])
    s, _ = scores_at_labels(get_score("lac")(logits), labels)
    pooled = np.sort(s.flatten().numpy().astype(np.float64))
    n = pooled.size
    expected = pooled[int(np.ceil((n + 1) * (1 - ALPHA))) - 1]  # the ⌈(n+1)(1−α)⌉-th smallest score
    q = cp.thresholds(ALPHA)
    assert q.shape == (3, 10, 10) and torch.allclose(q, torch.full_like(q, float(expected)))
    conditional = ImagewiseCalibrator(3).fit([(logits, labels)]).thresholds(ALPHA)
    assert not torch.allclose(conditional[0], conditional[2])  # per class: one threshold each


def _pooled_coverage(cp, scores, labels):
    """Share of labelled pixels whose true class is in the set, at ALPHA."""
    q = cp.thresholds(ALPHA)
    s, y = scores_at_labels(scores, labels)
    return float((s <= q[y.clamp(min=0), torch.arange(10).view(-1, 1), torch.arange(10)]).float().mean())


@pytest.mark.parametrize("score", ["lac", "aps"])
def test_marginal_coverage_over_200_random_splits(score):
    logits, labels = _three_class_pool()
    scores = get_score(score)(logits)
    bank = ScoreBank(3, (10, 10), *scores_at_labels(scores, labels))
    methods = {"image": lambda: ImagewiseCalibrator(3, score=score, marginal=True),
               "pixel": lambda: PixelwiseCalibrator(3, score=score, marginal=True),
               "local": lambda: LocalCalibrator(3, score=score, min_scores=30, marginal=True)}
    gen = torch.Generator().manual_seed(2)
    cov = {m: [] for m in methods}
    for _ in range(200):
        perm = torch.randperm(60, generator=gen)
        for name, make in methods.items():
            cp = make().fit_bank(bank.subset(perm[:25]))
            cov[name].append(_pooled_coverage(cp, scores[perm[25:]], labels[perm[25:]]))
    mean = {name: sum(v) / len(v) for name, v in cov.items()}
    assert all(m >= 1 - ALPHA - 0.006 for m in mean.values()), mean
    assert mean["image"] <= 1 - ALPHA + 0.006 and mean["local"] <= 1 - ALPHA + 0.015  # n ≫ 1: tight
    assert mean["pixel"] <= 1 - ALPHA + 1 / 26 + 0.006  # 25 pooled scores per pixel


def test_marginal_round_trips_and_shows_in_info():
    logits, labels = _three_class_pool(12)
    for cp in (ConformalCalibrator("pixel", 3, marginal=True), LocalCalibrator(3, marginal=True, min_scores=20)):
        cp.fit([(logits, labels)])
        assert cp.info_["marginal"] and cp.num_classes_ == 3
        clone = ConformalCalibrator.from_state_dict(cp.state_dict())
        assert clone.marginal and torch.equal(clone.predict_set(logits, ALPHA), cp.predict_set(logits, ALPHA))
        q = cp.thresholds(ALPHA)
        assert torch.equal(q[0], q[1]) and torch.equal(q[1], q[2])
    with pytest.raises(ValueError, match="marginal must be True or False"):
        ImagewiseCalibrator(3, marginal="yes")


def test_cli_marginal_for_calibrate_and_sweep(tmp_path):
    import json

    from conftest import write_prediction_folder
    from segcal.calibrated import load_bundle
    from segcal.cli.main import main

    preds = tmp_path / "p"
    write_prediction_folder(preds, n=12)
    assert main(["calibrate", "--predictions", str(preds), "--method", "pixel", "--param", "marginal=true",
                 "--no-progress"]) == 0
    assert load_bundle(preds / "calibration" / "pixel.pt").conformal.marginal
    write_prediction_folder(tmp_path / "test", n=6, seed=1)
    assert main(["sweep", "--predictions", str(tmp_path / "test"), "--cal-predictions", str(preds),
                 "--methods", "image,local", "--n-cals", "4,8", "--repeats", "1", "--marginal",
                 "--out", str(tmp_path / "sweep"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert result["params"] == {"image": {"marginal": True}, "local": {"marginal": True}}
