"""Recalibrators under torch.distributed (2 gloo processes) pool their samples: every rank gets the same
parameters, equal to a single-process fit on all images."""

import torch

from ranks import run_ranks
from segcal.calibrators import LocalTemperatureScaling, TemperatureScaling, VectorScaling

ALL_PIXELS = {"pixels_per_image": 10_000, "max_pixels": 100_000}  # sample every pixel: rank splits are exact


def make_data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 3, 8, 8, generator=g) * 3
    labels = torch.where(torch.rand(12, 8, 8, generator=g) < 0.7, logits.argmax(1), torch.randint(0, 3, (12, 8, 8),
                                                                                                  generator=g))
    return logits, labels


def fit_all(logits, labels):
    return {"temperature": TemperatureScaling(**ALL_PIXELS).fit([(logits, labels)]).temperature_,
            "vector": VectorScaling(**ALL_PIXELS).fit([(logits, labels)]).temperature_,
            "lts_crops": LocalTemperatureScaling(epochs=1, val_fraction=0.0).fit([(logits, labels)]).info_["crops"]}


def fitted_on_rank(rank, world):
    logits, labels = make_data()
    mine = slice(rank * 6, rank * 6 + 6)
    return fit_all(logits[mine], labels[mine])


def test_two_ranks_fit_one_pooled_sample(tmp_path):
    r0, r1 = run_ranks(fitted_on_rank, tmp_path)
    single = fit_all(*make_data())
    assert torch.equal(r0["temperature"], r1["temperature"]) and torch.equal(r0["vector"], r1["vector"])
    assert torch.allclose(r0["temperature"], single["temperature"], rtol=1e-4)
    assert torch.allclose(r0["vector"], single["vector"], rtol=1e-3)
    assert r0["lts_crops"] == r1["lts_crops"] == single["lts_crops"] == 12
