"""APS and RAPS conformity scores: known answers, MAPIE's cumulated mass, coverage over random splits, CLI."""
import numpy as np
import pytest
import torch

from conftest import write_prediction_folder
from segcal.cli.main import main
from segcal.conformal.accumulate import ScoreBank
from segcal.conformal.calibrator import ImagewiseCalibrator, PixelwiseCalibrator
from segcal.conformal.evaluation import CoverageAccumulator
from segcal.conformal.local_calibrator import LocalCalibrator
from segcal.conformal.scores import RAPS_LAMBDA, aps_scores, get_score, pixel_uniform, raps_scores, scores_at_labels

ALPHA = 0.1
TOL = 0.006


def _probs(*values):
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def test_known_answers():
    p = _probs(0.2, 0.5, 0.3)
    u = float(pixel_uniform(p))
    assert 0 <= u < 1
    assert aps_scores(p, "probs").flatten().tolist() == pytest.approx([0.8 + 0.2 * u, 0.5 * u, 0.5 + 0.3 * u])
    scale = 1 + RAPS_LAMBDA * 2  # ranks 3, 1, 2 pay 2, 0, 1 penalties (k_reg = 1)
    assert raps_scores(p, "probs").flatten().tolist() == pytest.approx(
        [(0.8 + 0.2 * u + 2 * RAPS_LAMBDA) / scale, 0.5 * u / scale, (0.5 + 0.3 * u + RAPS_LAMBDA) / scale])
    ties = _probs(0.4, 0.4, 0.2)
    u = float(pixel_uniform(ties))
    assert aps_scores(ties, "probs").flatten().tolist() == pytest.approx([0.4 * u, 0.4 + 0.4 * u, 0.8 + 0.2 * u])
    logit = torch.tensor([[[[2.0]]]])  # a single sigmoid channel: p = σ(2) for class 1
    p1, u = float(torch.sigmoid(torch.tensor(2.0))), float(pixel_uniform(logit))
    assert aps_scores(logit, "logits", "sigmoid").flatten().tolist() == pytest.approx([p1 + u * (1 - p1), u * p1])
    with pytest.raises(ValueError, match="sum to one"):
        aps_scores(torch.zeros(1, 3, 2, 2), "logits", "sigmoid")
    assert get_score("raps") is raps_scores


def test_the_tie_breaking_share_is_uniform_and_reproducible():
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    u = pixel_uniform(x).flatten()
    assert torch.equal(pixel_uniform(x.clone()).flatten(), u)  # a function of the predictions: same sets again
    counts = torch.histc(u, 10, 0, 1)
    assert counts.min() > 0.85 * counts.mean() and counts.max() < 1.15 * counts.mean()
    assert abs(float(torch.corrcoef(torch.stack([u, x.softmax(1).amax(1).flatten()]))[0, 1])) < 0.05


def test_aps_is_mapie_cumulated_mass_with_a_share_of_the_true_class():
    aps = pytest.importorskip("mapie.conformity_scores.sets.aps")
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=400).astype(np.float32)
    y = rng.integers(0, 5, 400)
    cumulated, _ = aps.APSConformityScore.get_true_label_cumsum_proba(y, probs, np.arange(5))
    image = torch.from_numpy(probs).T.reshape(1, 5, 20, 20)
    ours = aps_scores(image, "probs").reshape(5, -1).T.numpy()
    u = pixel_uniform(image).flatten().numpy()
    true_p = probs[np.arange(400), y]
    # MAPIE's randomised APS is the cumulated mass through the true class minus U·p_true; ours adds U·p_true to
    # the mass strictly above: the same score for the same U
    np.testing.assert_allclose(ours[np.arange(400), y], cumulated.ravel() - (1 - u) * true_p, atol=1e-6)


def _three_class_pool(n=60, shape=(10, 10), seed=0):
    """Exchangeable images: per pixel logits, labels drawn from the (calibrated) softmax."""
    gen = torch.Generator().manual_seed(seed)
    bias = torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1)
    logits = 2 * torch.randn(n, 3, *shape, generator=gen) + bias
    labels = torch.multinomial(logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, 3), 1, generator=gen)
    return logits, labels.view(n, *shape)


@pytest.mark.parametrize("score", ["aps", "raps"])
def test_coverage_guarantee_over_200_random_splits(score):
    logits, labels = _three_class_pool()
    scores = get_score(score)(logits)
    bank = ScoreBank(3, (10, 10), *scores_at_labels(scores, labels))
    methods = {"pixel": lambda: PixelwiseCalibrator(3, score=score),
               "image": lambda: ImagewiseCalibrator(3, score=score),
               "local": lambda: LocalCalibrator(3, score=score, min_scores=30)}
    gen = torch.Generator().manual_seed(1)
    cov = {m: [] for m in methods}
    for _ in range(200):
        perm = torch.randperm(60, generator=gen)
        for name, make in methods.items():
            cp = make().fit_bank(bank.subset(perm[:25]))
            acc = CoverageAccumulator(cp, [ALPHA], min_test_labels=1)
            acc.update_scores(scores[perm[25:]], labels[perm[25:]])
            cov[name].append(acc.compute().class_coverage[0])
    for name, values in cov.items():
        mean = torch.stack(values).mean(0)
        assert bool((mean >= 1 - ALPHA - TOL).all()), (score, name, mean)
    # upper bounds (continuous scores: no ties); pixelwise has only ~8 scores per pixel here, so 1/(n+1) is large
    assert bool((torch.stack(cov["image"]).mean(0) <= 1 - ALPHA + TOL).all())
    assert bool((torch.stack(cov["local"]).mean(0) <= 1 - ALPHA + 0.015).all())


def test_cli_score_for_calibrate_and_sweep(tmp_path, capsys):
    preds = tmp_path / "p"
    write_prediction_folder(preds, n=12)
    assert main(["calibrate", "--predictions", str(preds), "--method", "image", "--score", "aps",
                 "--no-progress"]) == 0
    from segcal.calibrated import load_bundle

    assert load_bundle(preds / "calibration" / "image.pt").conformal.score == "aps"
    assert main(["calibrate", "--predictions", str(preds), "--method", "temperature", "--score", "aps",
                 "--out", str(tmp_path / "t.pt"), "--no-progress"]) == 2
    assert "--score applies to conformal methods" in capsys.readouterr().err
    write_prediction_folder(tmp_path / "test", n=6, seed=1)
    assert main(["sweep", "--predictions", str(tmp_path / "test"), "--cal-predictions", str(preds),
                 "--methods", "image,local", "--n-cals", "4,8", "--repeats", "1", "--score", "raps",
                 "--out", str(tmp_path / "sweep"), "--no-progress"]) == 0
    import json

    result = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert result["score"] == "raps" and {r["method"] for r in result["records"]} == {"image", "local"}
