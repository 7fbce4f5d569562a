"""Run a test function on several gloo processes (``torch.distributed``) and collect what each rank returns."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank, world, folder, fn, args):
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(folder, 'init')}", rank=rank,
                            world_size=world)
    try:
        torch.set_num_threads(1)
        torch.save(fn(rank, world, *args), os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_ranks(fn, tmp_path, *args, world=2):
    """``fn(rank, world, *args)`` (a module-level function) on ``world`` gloo processes → every rank's return
    value, in rank order."""
    mp.spawn(_entry, args=(world, str(tmp_path), fn, args), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
