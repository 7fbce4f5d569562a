"""Run a trained model over a DataLoader, batch by batch."""
from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import torch

from segcal.configio import from_dict
from segcal.models.lightning import SegModel
from segcal.pipeline.config import ExperimentConfig
from segcal.pipeline.progress import track


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


UNREADABLE = (KeyError, TypeError, RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError)
"""What ``torch.load`` / ``load_from_checkpoint`` raise for a file that is not a (segcal) checkpoint."""


def checkpoint_file(checkpoint: str | Path) -> Path:
    """``checkpoint`` as a path, ``FileNotFoundError`` naming it when it is missing."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def load_model(checkpoint: str | Path, device: str = "auto") -> SegModel:
    """Load a :class:`SegModel` checkpoint in eval mode; errors name the file."""
    path = checkpoint_file(checkpoint)
    try:
        model = SegModel.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except UNREADABLE as exc:
        raise ValueError(f"{path}: not a segcal model checkpoint ({exc})") from exc
    return model.to(resolve_device(device)).eval()


def experiment_of(model: SegModel) -> ExperimentConfig:
    """The resolved experiment config stored in a model's checkpoint."""
    if not model.hparams.get("experiment"):
        raise ValueError("checkpoint has no stored experiment config; pass the data config explicitly")
    return from_dict(ExperimentConfig, model.hparams["experiment"])


@torch.no_grad()
def iterate_logits(model: SegModel, loader, description: str = "predict",
                   progress: bool = True) -> Iterator[tuple[torch.Tensor, dict]]:
    """Yield ``(logits [N, C_out, H, W] float32 on CPU, batch)`` for every batch of ``loader``."""
    device = next(model.parameters()).device
    for batch in track(loader, description, enabled=progress):
        logits = model(batch["image"].to(device)).float().cpu()
        yield logits, batch
