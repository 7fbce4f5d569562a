"""Risk-control guarantees over 200 random calibration/test splits of one synthetic pool.

Per-image losses are computed once for the pool (:mod:`segcal.risk.losses`), so each split only runs the
procedure. CRC: the split-averaged test risk is at most α (and not far below); RCPS and LTT: the share of
splits whose test risk exceeds α is at most δ. The test risk of a split is the mean over ~1,000 held-out
images, close to the true risk at the chosen λ.
"""
import pytest
import torch

from segcal.risk.losses import margin_needs, step_losses, threshold_grid, threshold_losses
from segcal.risk.procedures import crc, ltt, rcps

SPLITS, N_CAL = 200, 100


def planted_pool(n=1100, size=20, seed=0):
    """Binary images with one square object each and per-image noise: ``(probs [n, 2, H, W], labels)``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        side = int(torch.randint(3, 9, (1,), generator=g))
        r, c = torch.randint(0, size - side, (2,), generator=g)
        labels[i, r:r + side, c:c + side] = 1
    noise = 0.5 + 2.0 * torch.rand(n, 1, 1, generator=g)  # some images are much harder than others
    logit = noise * torch.randn(n, size, size, generator=g) + 2.0 * (2 * labels - 1).float()
    p = torch.sigmoid(logit)
    return torch.stack([1 - p, p], 1), labels


def shifted_masks(labels, seed=0):
    """Predicted masks: each truth moved by a random offset of 0–6 pixels (the margin a pool needs varies)."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.zeros_like(labels, dtype=torch.bool)
    for i in range(labels.shape[0]):
        dy, dx = torch.randint(-6, 7, (2,), generator=g).tolist()
        pred[i] = torch.roll(labels[i] == 1, (dy, dx), (0, 1))
    return pred


@pytest.fixture(scope="module")
def pool():
    probs, labels = planted_pool()
    grid = threshold_grid(401)
    return {"fnr": threshold_losses(probs, labels, "fnr", grid, 1),
            "fdr": threshold_losses(probs, labels, "fdr", grid, 1),
            "miscoverage": threshold_losses(probs, labels, "miscoverage", grid),
            "cover": step_losses(margin_needs(shifted_masks(labels), labels, 1, "disk")["outer"],
                                 torch.arange(41.0))}


def _previous_step_risk(table, choose, seed=0):
    """Split-averaged test risk one grid step below the chosen λ (it must exceed α: λ̂ is not too large)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(SPLITS):
        perm = torch.randperm(table.shape[0], generator=g)
        index = choose(table[perm[:N_CAL]]).index
        out.append(float(table[perm[N_CAL:], max(index - 1, 0)].mean()))
    return sum(out) / len(out)


def _splits(table, choose, seed=0):
    """Test risk at the chosen λ for each split (``choose``: losses → Selection)."""
    g = torch.Generator().manual_seed(seed)
    risks = []
    for _ in range(SPLITS):
        perm = torch.randperm(table.shape[0], generator=g)
        chosen = choose(table[perm[:N_CAL]])
        assert chosen.feasible
        risks.append(float(table[perm[N_CAL:], chosen.index].mean()))
    return torch.tensor(risks)


@pytest.mark.parametrize("loss", ["fnr", "miscoverage", "cover"])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_crc_controls_the_mean_risk(pool, loss, alpha):
    risks = _splits(pool[loss], lambda t: crc(t, alpha))
    tol = 3 * float(risks.std()) / SPLITS ** 0.5 + 1e-3
    assert risks.mean() <= alpha + tol
    if loss == "cover":  # few distinct margins: the risk jumps, but one margin less would break it
        assert _previous_step_risk(pool[loss], lambda t: crc(t, alpha)) > alpha
    else:  # tight: within the finite-sample slack
        assert risks.mean() >= alpha - 1.5 / (N_CAL + 1) - 0.01


@pytest.mark.parametrize("bound", ["hb", "hoeffding"])
@pytest.mark.parametrize("loss", ["fnr", "cover"])
def test_rcps_controls_the_risk_with_high_probability(pool, loss, bound):
    alpha, delta = 0.15, 0.1
    risks = _splits(pool[loss], lambda t: rcps(t, alpha, delta, bound))
    assert float((risks > alpha).float().mean()) <= delta
    assert risks.mean() < alpha  # conservative by design
    assert risks.mean() > alpha / (3 if bound == "hb" else 5)  # and not absurdly so


def test_ltt_controls_the_fdr_with_high_probability(pool):
    alpha, delta = 0.1, 0.1
    risks = _splits(pool["fdr"], lambda t: ltt(t, alpha, delta, start="bottom"))
    assert float((risks > alpha).float().mean()) <= delta
    assert risks.mean() > alpha / 3


def test_crc_is_less_conservative_than_rcps(pool):
    table = pool["fnr"]
    assert crc(table, 0.1).index < rcps(table, 0.1, 0.1).index  # a smaller λ: a smaller mask
