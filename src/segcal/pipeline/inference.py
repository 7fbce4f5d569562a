"""Run a trained model over a DataLoader, batch by batch."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from segcal.configio import from_dict
from segcal.io.checkpoint import read_checkpoint
from segcal.models.lightning import SegModel
from segcal.pipeline.config import ExperimentConfig
from segcal.pipeline.progress import track


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint") -> SegModel:
    """The :class:`SegModel` of an already read checkpoint dict (see :func:`read_checkpoint`), on the CPU."""
    try:
        model = SegModel(**ckpt["hyper_parameters"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a segcal model checkpoint ({type(exc).__name__}: {exc})") from exc
    return model


def load_model(checkpoint: str | Path, device: str = "auto") -> SegModel:
    """Load a :class:`SegModel` checkpoint (weights-only, never unpickling code) in eval mode; errors name
    the file."""
    model = model_from_checkpoint(read_checkpoint(checkpoint), checkpoint)
    return model.to(resolve_device(device)).eval()


def experiment_of(model: SegModel) -> ExperimentConfig:
    """The resolved experiment config stored in a model's checkpoint."""
    if not model.hparams.get("experiment"):
        raise ValueError("checkpoint has no stored experiment config; pass the data config explicitly")
    return from_dict(ExperimentConfig, model.hparams["experiment"])


def run_model(model: SegModel, loader, description: str = "predict", progress: bool = False,
              keep_device: bool = False) -> Iterator[tuple[torch.Tensor, dict]]:
    """The one loop that runs a model: ``(logits [N, C_out, H, W] float32, batch)`` for every batch
    ``{"image": [N, 3, H, W], ...}`` of ``loader``, under ``torch.inference_mode`` on the model's device.

    Logits come back on the CPU, or stay on the model's device with ``keep_device`` (for device-resident
    statistics: calibration on a GPU never copies them to the CPU)."""
    device = next(model.parameters()).device
    for batch in track(loader, description, enabled=progress):
        with torch.inference_mode():
            logits = model(batch["image"].to(device, non_blocking=True)).float()
        yield (logits if keep_device else logits.cpu()), batch
