"""Risk controllers across torch.distributed ranks (2 gloo processes) and on CUDA when one is present."""

import pytest
import torch

from ranks import run_ranks
from segcal.risk import MarginController, RiskController
from segcal.risk.morphology import distance_to


def make_data(n=16, size=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r, c = torch.randint(0, size - 8, (2,), generator=g)
        labels[i, r:r + 8, c:c + 8] = 1
    logits = 2 * torch.nn.functional.one_hot(labels).permute(0, 3, 1, 2).float()
    return logits + 1.5 * torch.randn(logits.shape, generator=g), labels


def fitted(logits, labels):
    return {"fnr": RiskController(alpha=0.2).fit([(logits, labels)]),
            "margin": MarginController(structure="disk", inner=True, loss="fnr", alpha=0.2).fit([(logits, labels)])}


def fitted_states(rank, world):
    logits, labels = make_data()
    controllers = fitted(logits[rank::world], labels[rank::world])  # rows gathered when initialised
    return {k: c.state_dict() for k, c in controllers.items()}


def test_two_gloo_ranks_match_single_process(tmp_path):
    got = run_ranks(fitted_states, tmp_path)[0]
    logits, labels = make_data()
    order = torch.cat([torch.arange(0, 16, 2), torch.arange(1, 16, 2)])  # rank 0's images, then rank 1's
    single = fitted(logits[order], labels[order])
    assert got["fnr"]["n_cal"] == 16 and got["fnr"]["images_with_target"] == 16
    assert torch.equal(got["fnr"]["rows"]["losses"], single["fnr"].losses_)
    for name in ("outer", "inner", "fnr"):
        assert torch.equal(got["margin"]["rows"][name], single["margin"].state_dict()["rows"][name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_give_the_cpu_answers():
    logits, labels = make_data()
    mask = torch.rand(3, 40, 30) < 0.05
    for structure in ("square", "cross", "disk"):
        assert torch.equal(distance_to(mask.cuda(), structure).cpu(), distance_to(mask, structure))
    cpu, cuda = fitted(logits, labels), fitted(logits.cuda(), labels.cuda())
    assert cuda["fnr"].threshold() == cpu["fnr"].threshold()
    assert cuda["margin"].margins() == cpu["margin"].margins()
    assert torch.equal(cuda["fnr"].predict(logits.cuda()).cpu(), cpu["fnr"].predict(logits))
    out = cuda["margin"].predict(logits.cuda())
    assert out.outer.is_cuda and torch.equal(out.band.cpu(), cpu["margin"].predict(logits).band)
