"""The experiment config: data + model + loss + optimiser + training, loaded from YAML.

``load_experiment("configs/ccp_person.yaml", ["train.epochs=5", "data.root=/data/ccp"])``
reads the file, applies dotted overrides, builds validated dataclasses and raises one
``ValueError`` naming the offending key for unknown keys or invalid values.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

from segcal.configio import apply_overrides, from_dict, load_yaml
from segcal.data.config import DataConfig
from segcal.models.config import LossConfig, ModelConfig, OptimConfig

LOGGERS = ("csv", "tensorboard", "wandb")


@dataclass
class TrainConfig:
    """Lightning trainer settings. Every ``checkpoint_every`` epochs a checkpoint is kept
    (all of them: users pick an over-fitted one on purpose), plus ``best`` and ``last``.
    ``monitor`` is a logged metric: ``train/loss``, ``val/loss``, ``val/<m>`` (mean over the
    foreground classes) or ``val/<m>_<class>`` for ``m`` in dice, iou, recall, precision, accuracy."""

    epochs: int = 20  # number of training epochs
    checkpoint_every: int = 5
    monitor: str = "val/dice"  # logged metric that selects best.ckpt, e.g. val/dice, val/iou_<class>, val/loss
    monitor_mode: str = "max"  # max: higher monitor is better (dice, iou, ...); min: lower is better (val/loss)
    logger: str = "csv"  # csv (logs/metrics.csv) | tensorboard (adds tb/) | wandb (adds Weights & Biases; needs wandb)
    accelerator: str = "auto"  # Lightning accelerator: auto | cpu | gpu | cuda | mps
    devices: int = 1  # number of devices (GPUs or CPU processes); > 1 trains data-parallel (DDP)
    strategy: str = "auto"  # Lightning strategy: auto | ddp | ddp_spawn | fsdp | ...
    precision: str = "32-true"  # Lightning precision: 32-true | 16-mixed | bf16-mixed | 64-true
    resume: str | None = None  # checkpoint file to continue from; the run goes on in its run directory
    vis_samples: int = 8  # validation images shown in figures/samples.png (0: no figure)
    val_every: int = 1  # validate (and update best.ckpt) every N epochs
    limit_train_batches: float = 1.0  # training batches per epoch: a fraction if <= 1, a count if a whole number > 1
    deterministic: bool = True  # deterministic torch algorithms: reproducible runs, possibly slower
    progress: bool = True  # show progress bars

    def validate(self, prefix: str = "train") -> None:
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1", self.epochs),
            (self.checkpoint_every >= 1, "checkpoint_every", "an integer >= 1", self.checkpoint_every),
            (self.monitor_mode in ("min", "max"), "monitor_mode", "'min' or 'max'", self.monitor_mode),
            (self.monitor.startswith(("val/", "train/")), "monitor", "a logged metric such as 'val/dice'",
             self.monitor),
            (self.logger in LOGGERS, "logger", f"one of {LOGGERS}", self.logger),
            (self.devices >= 1, "devices", ">= 1", self.devices),
            (self.vis_samples >= 0, "vis_samples", ">= 0", self.vis_samples),
            (self.val_every >= 1, "val_every", ">= 1", self.val_every),
            (0 < self.limit_train_batches and (self.limit_train_batches <= 1
                                               or float(self.limit_train_batches).is_integer()),
             "limit_train_batches", "a fraction in (0, 1] or a whole number of batches", self.limit_train_batches),
        ]
        for ok, key, expected, value in checks:
            if not ok:
                raise ValueError(f"{prefix}.{key} must be {expected}, got {value!r}")
        if self.resume is not None and not Path(self.resume).is_file():
            raise ValueError(f"{prefix}.resume: checkpoint file not found: {self.resume}")


@dataclass
class ExperimentConfig:
    """Everything one run needs; written resolved to ``<run_dir>/config.yaml``."""

    name: str = "experiment"  # run name: runs go to <output_dir>/<name>/<YYYYmmdd-HHMMSS>; also the W&B run name
    seed: int = 42  # seeds weights, batch order, augmentation and mixup (the splits use data.split_seed)
    output_dir: str = "runs"  # parent folder of the run directories
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> ExperimentConfig:
        self.data.validate()
        self.model.validate()
        self.loss.validate()
        self.optim.validate()
        self.train.validate()
        factor = math.prod(self.model.strides)
        h, w = self.data.image_size
        if h % factor or w % factor:
            raise ValueError(
                f"data.image_size {list(self.data.image_size)} must be divisible by {factor}"
                f" (the product of model.strides {self.model.strides})"
            )
        return self


def experiment_from_dict(data: dict, overrides: list[str] | None = None) -> ExperimentConfig:
    """Validated :class:`ExperimentConfig` from a nested dict plus dotted overrides (``data`` is not modified)."""
    data = apply_overrides(copy.deepcopy(data), list(overrides or []))
    return from_dict(ExperimentConfig, data).validate()


def _blame(overrides: list[str], message: str) -> str:
    """The override(s) an error message is about: those whose key the message names, else all of them."""
    named = [o for o in overrides if o.partition("=")[0].strip() in message]
    return " ".join(named or overrides)


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML experiment (or the defaults when ``path`` is None) and apply overrides.

    Errors name their origin: the file when the file alone is invalid, else the override(s) at fault.
    """
    base = load_yaml(path) if path is not None else {}
    overrides = list(overrides or [])
    where = f"{path}: " if path is not None else ""
    try:
        experiment_from_dict(base)
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from exc
    try:
        return experiment_from_dict(base, overrides)
    except ValueError as exc:
        if str(exc).startswith("override "):
            raise
        raise ValueError(f"override {_blame(overrides, str(exc))}: {exc}") from exc
