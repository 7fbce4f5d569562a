"""Shared fixtures: tiny experiment configs that train in seconds on CPU."""
import warnings

import pytest

from segcal.pipeline.config import experiment_from_dict

warnings.filterwarnings("ignore", message=".*treespec.*")


def tiny_experiment_dict(tmp_path, **sections) -> dict:
    d = {
        "name": "tiny",
        "seed": 7,
        "output_dir": str(tmp_path / "runs"),
        "data": {"kind": "synthetic", "synthetic": {"num_images": 24, "num_classes": 3, "height": 32, "width": 32},
                 "image_size": [32, 32], "splits": {"train": 8, "val": 4, "cal": 4, "test": 8}, "batch_size": 4},
        "model": {"channels": [8, 16], "strides": [2], "num_res_units": 1},
        "train": {"epochs": 2, "checkpoint_every": 1, "vis_samples": 2, "progress": False},
    }
    for key, value in sections.items():
        d.setdefault(key, {}).update(value)
    return d


def train_tiny(tmp, num_images: int, splits: dict) -> tuple:
    """``(run_dir, last checkpoint)`` of a one-epoch 3-class model on synthetic 32×32 images."""
    from segcal.pipeline.train import train

    d = tiny_experiment_dict(tmp, data={"synthetic": {"num_images": num_images, "num_classes": 3, "height": 32,
                                                      "width": 32}, "splits": splits},
                             train={"epochs": 1, "checkpoint_every": 1, "vis_samples": 0, "progress": False})
    result = train(experiment_from_dict(d), tmp / "run")
    return result.run_dir, result.last_checkpoint


@pytest.fixture
def tiny_cfg(tmp_path):
    return experiment_from_dict(tiny_experiment_dict(tmp_path))


def _mount_tmpfs(path, options: str) -> bool:
    import os
    import subprocess

    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _umount(path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def full_disk(tmp_path):
    """An empty folder on a nearly full tmpfs (needs root and mount rights; skipped otherwise): writes of more
    than a few KiB fail with ENOSPC."""
    import shutil

    mnt = tmp_path / "full"
    if not _mount_tmpfs(mnt, "size=1m"):
        pytest.skip("needs root and tmpfs mounts for a small full disk")
    out = mnt / "out"
    out.mkdir()
    (mnt / "filler").write_bytes(b"\0" * (shutil.disk_usage(mnt).free - 16 * 1024))
    yield out
    _umount(mnt)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody may write: a read-only tmpfs as root, a mode 0555 folder otherwise."""
    import os

    ro = tmp_path / "readonly"
    if os.geteuid() == 0:
        if not _mount_tmpfs(ro, "ro,size=64k"):
            pytest.skip("root without tmpfs mounts: cannot make a folder read-only")
        yield ro
        _umount(ro)
    else:
        ro.mkdir()
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)


def write_prediction_folder(folder, n: int = 10, size: int = 8, scale: float = 2.0, seed: int = 0):
    """A folder of ``n`` saved two-class softmax logits ``[2, size, size]`` with random labels."""
    import numpy as np

    from segcal.data.prediction_writer import PredictionWriter
    from segcal.data.predictions import PredictionFolder

    rng = np.random.default_rng(seed)
    with PredictionWriter(folder, classes=["bg", "fg"], head="softmax") as writer:
        for i in range(n):
            writer.add(f"im{i}", rng.normal(0, scale, (2, size, size)).astype(np.float32),
                       rng.integers(0, 2, (size, size)))
    return PredictionFolder(folder, batch_size=4)
