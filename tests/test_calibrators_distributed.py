"""Recalibrators under torch.distributed (2 gloo processes) pool their samples: every rank gets the same
parameters, equal to a single-process fit on all images."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

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


def worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        logits, labels = make_data()
        mine = slice(rank * 6, rank * 6 + 6)
        torch.save(fit_all(logits[mine], labels[mine]), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_fit_one_pooled_sample(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    single = fit_all(*make_data())
    assert torch.equal(r0["temperature"], r1["temperature"]) and torch.equal(r0["vector"], r1["vector"])
    assert torch.allclose(r0["temperature"], single["temperature"], rtol=1e-4)
    assert torch.allclose(r0["vector"], single["vector"], rtol=1e-3)
    assert r0["lts_crops"] == r1["lts_crops"] == single["lts_crops"] == 12
