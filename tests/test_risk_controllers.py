"""RiskController and MarginController: the calibrator contract, known answers, bad input, MAPIE agreement."""
import warnings

import numpy as np
import pytest
import torch

from segcal.estimator import NotFittedError
from segcal.risk import MarginController, RiskController, risk_from_state_dict
from segcal.risk.losses import threshold_grid, threshold_losses
from segcal.risk.procedures import binomial_cdf, crc, hb_p_values, ltt, rcps


def binary_stream(n_batches=6, n=8, size=24, seed=0, classes=2):
    """Batches of (logits [n, C, H, W], labels [n, H, W]) with one square object of class 1 per image."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        labels = torch.zeros(n, size, size, dtype=torch.long)
        for i in range(n):
            r, c = torch.randint(2, size - 10, (2,), generator=g)
            labels[i, r:r + 8, c:c + 8] = 1
        labels[:, 0, :] = 255  # an ignored row
        onehot = torch.nn.functional.one_hot(labels.clamp(max=classes - 1), classes).permute(0, 3, 1, 2).float()
        out.append((3 * onehot + 1.5 * torch.randn(n, classes, size, size, generator=g), labels))
    return out


def test_fnr_controller_known_answer_and_round_trip():
    stream = binary_stream()
    rc = RiskController(loss="fnr", alpha=0.1).fit(stream)
    probs = torch.cat([torch.softmax(x, 1) for x, _ in stream])
    labels = torch.cat([y for _, y in stream])
    grid = threshold_grid(1001)
    table = threshold_losses(probs, labels, "fnr", grid, 1)
    expected = crc(table, 0.1)
    assert rc.selection().index == expected.index and rc.threshold() == float(grid[expected.index])
    assert rc.n_cal_ == 48 and rc.target_class_ == 1 and rc.procedure_ == "crc"
    logits, y = binary_stream(1, seed=5)[0]
    mask = rc.predict(logits)
    assert mask.shape == (8, 24, 24) and torch.equal(mask, torch.softmax(logits, 1)[:, 1].double() >= rc.threshold())
    clone = risk_from_state_dict(rc.state_dict())
    assert torch.equal(clone.predict(logits, alpha=0.2), rc.predict(logits, alpha=0.2))
    assert clone.info_ == rc.info_
    # a smaller α needs a lower threshold: a larger mask with lower FNR
    assert rc.threshold(0.05) <= rc.threshold(0.1) <= rc.threshold(0.2)
    assert rc.image_losses(logits, y, 0.05).mean() <= rc.image_losses(logits, y, 0.2).mean()


def test_sigmoid_head_equals_two_class_softmax():
    stream = binary_stream()
    sigmoid = [(x[:, 1:] - x[:, :1], y) for x, y in stream]  # logit of class 1 against class 0
    a = RiskController(alpha=0.1).fit(stream)
    b = RiskController(alpha=0.1, head="sigmoid").fit(sigmoid)
    assert abs(a.threshold() - b.threshold()) < 1e-9
    m = MarginController(inner=True, head="sigmoid").fit(sigmoid)
    assert m.margins() == MarginController(inner=True).fit(stream).margins()


def test_fdr_uses_ltt_and_miscoverage_gives_sets():
    stream = binary_stream(classes=3)
    fdr = RiskController(loss="fdr", target_class=1, alpha=0.2).fit(stream)
    assert fdr.procedure_ == "ltt" and fdr.info_["delta"] == 0.1
    sets = RiskController(loss="miscoverage", alpha=0.1).fit(stream)
    out = sets.predict(stream[0][0])
    assert out.shape == (8, 3, 24, 24) and out.dtype == torch.bool
    assert sets.image_losses(*stream[0]).mean() < 0.2


def test_infeasible_alpha_gives_the_trivial_answer():
    stream = binary_stream(1, n=5)  # 5 images: CRC needs n ≥ 1/α − 1 = 19 at α = 0.05
    rc = RiskController(alpha=0.05).fit(stream)
    assert not rc.selection().feasible and not rc.info_["feasible"]
    assert rc.threshold() == 0.0 and rc.predict(stream[0][0]).all()
    fdr = RiskController(loss="fdr", alpha=0.01, delta=0.01).fit(stream)
    assert not fdr.predict(stream[0][0]).any()
    m = MarginController(alpha=0.05, inner=True).fit(stream)
    assert m.margins() == {"outer": float("inf"), "inner": float("inf")}
    out = m.predict(stream[0][0])
    assert out.outer.all() and not out.inner.any()


def test_margins_cover_shifted_predictions():
    """A model that predicts each object 2 px to the right needs exactly 2 dilations / erosions."""
    labels = torch.zeros(30, 20, 20, dtype=torch.long)
    labels[:, 5:12, 4:11] = 1
    pred = torch.roll(labels, 2, dims=2)
    logits = torch.stack([-pred.float(), pred.float()], 1) * 4
    for structure in ("square", "cross", "disk"):
        m = MarginController(structure=structure, inner=True, alpha=0.1).fit([(logits, labels)])
        assert m.margins() == {"outer": 2.0, "inner": 2.0}
        out = m.predict(logits)
        assert (out.outer >= (labels == 1)).all() and (out.inner <= (labels == 1)).all()
        assert torch.equal(out.band, out.outer & ~out.inner)
        assert not any(v.any() for v in m.image_losses(logits, labels).values())
    fnr = MarginController(loss="fnr", alpha=0.2).fit([(logits, labels)])
    assert fnr.margins()["outer"] == 1.0  # one dilation leaves 1/7 of the object uncovered: FNR 0.14 ≤ 0.2


def test_bad_input_gets_one_clear_error():
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1"):
            RiskController(alpha=bad)
        with pytest.raises(ValueError, match="delta must lie strictly between 0 and 1"):
            MarginController(delta=bad)
    with pytest.raises(ValueError, match="loss must be one of"):
        RiskController(loss="dice")
    with pytest.raises(ValueError, match="not monotone.*ltt"):
        RiskController(loss="fdr", procedure="crc")
    with pytest.raises(ValueError, match="procedure must be one of"):
        MarginController(procedure="bonferroni")
    multiclass = binary_stream(1, classes=3)
    with pytest.raises(ValueError, match="pass target_class"):
        RiskController(loss="fnr").fit(multiclass)
    with pytest.raises(ValueError, match="no calibration image has pixels of target class 2"):
        MarginController(target_class=2).fit(multiclass)
    with pytest.raises(ValueError, match="target_class=5 is not a class"):
        RiskController(target_class=5).fit(multiclass)
    with pytest.raises(NotFittedError):
        RiskController().predict(multiclass[0][0])
    rc = RiskController(loss="miscoverage").fit(multiclass)
    with pytest.raises(ValueError, match="fitted on 3 classes"):
        rc.predict(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="no inner margin"):
        MarginController().fit(binary_stream(1)).selection(side="inner")


def test_binomial_cdf_and_hb_p_values_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    k = torch.tensor([-1.0, 0, 3, 7, 20])
    assert np.allclose(binomial_cdf(k, 20, 0.3).numpy(), stats.binom.cdf(k.numpy(), 20, 0.3), atol=1e-12)
    risk = torch.tensor([0.0, 0.02, 0.05, 0.1, 0.3])
    p = hb_p_values(risk, 100, 0.1)
    assert p[0] < p[1] < p[2] < p[3] and p[4] == 1.0


@pytest.fixture
def mapie_data():
    pytest.importorskip("mapie")
    stream = binary_stream(n_batches=25, seed=3)
    probs = torch.cat([torch.softmax(x, 1)[:, 1:] for x, _ in stream]).double()
    labels = torch.cat([(y == 1).long().unsqueeze(1) for _, y in stream])
    grid = threshold_grid(201)
    return probs, labels, grid, threshold_losses(torch.cat([1 - probs, probs], 1), labels[:, 0], "fnr", grid, 1)


def _mapie(probs, labels, grid, **options):
    from mapie.risk_control import SemanticSegmentationController

    controller = SemanticSegmentationController(predict_function=lambda x: x, predict_params=grid.flip(0).numpy(),
                                                **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        controller.calibrate(probs.numpy(), labels.numpy())
    return float(controller.best_predict_param[0])


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_crc_and_rcps_agree_with_mapie(mapie_data, alpha):
    probs, labels, grid, table = mapie_data
    ours = crc(table, alpha)
    assert float(grid[ours.index]) == pytest.approx(_mapie(probs, labels, grid, risk="recall", method="crc",
                                                           target_level=1 - alpha))
    ours = rcps(table, alpha, 0.1, "hoeffding")
    theirs = _mapie(probs, labels, grid, risk="recall", method="rcps", target_level=1 - alpha,
                    confidence_level=0.9, rcps_bound="hoeffding")
    assert (float(grid[ours.index]) if ours.feasible else 0.0) == pytest.approx(theirs)  # infeasible: all pixels
    assert ours.feasible == (alpha > 0.05)  # Hoeffding's slack at n = 200 is 0.076


def test_ltt_p_values_and_fixed_sequence_agree_with_mapie(mapie_data):
    from mapie.risk_control._base_controller import ltt_procedure
    from mapie.risk_control.methods import compute_hoeffding_bentkus_p_value

    probs, labels, grid, _ = mapie_data
    table = threshold_losses(torch.cat([1 - probs, probs], 1), labels[:, 0], "fdr", grid, 1)
    risk, n = table.mean(0), table.shape[0]
    theirs = compute_hoeffding_bentkus_p_value(risk.numpy(), n, 0.1)[:, 0]
    assert np.allclose(hb_p_values(risk, n, 0.1).numpy(), theirs, rtol=1e-9, atol=1e-12)
    valid, _ = ltt_procedure(risk.numpy()[None], np.array([[0.1]]), 0.1, np.array([[n]]),
                             fwer_method="fixed_sequence")
    assert ltt(table, 0.1, 0.1, start="bottom").index == max(valid[0])
