"""`segcal train`: fit a segmentation model with Lightning and write a complete run directory.

Run directory layout::

    config.yaml            resolved experiment config
    manifests/<split>.txt  image names per split (train/val/cal/test)
    checkpoints/           epochNNN.ckpt every k epochs (all kept), best.ckpt, last.ckpt
    logs/metrics.csv       per-epoch losses and metrics, kept whole across resumes (TensorBoard/W&B optional)
    figures/curves.png     train/val loss and validation metrics per epoch
    figures/samples.png    image / true mask / predicted mask for N validation images
    val_metrics.json       per-class Dice, IoU, recall, precision, accuracy of best.ckpt
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
)
from lightning.pytorch.loggers import TensorBoardLogger

from segcal.classes import averaged_classes
from segcal.configio import dump_yaml
from segcal.data.datamodule import build_datamodule
from segcal.data.labels import target_class_colors
from segcal.data.transforms import denormalize
from segcal.io.checkpoint import read_checkpoint, write_checkpoint
from segcal.io.jsonio import write_json
from segcal.models.lightning import SegModel
from segcal.pipeline.config import ExperimentConfig
from segcal.pipeline.evaluate_seg import evaluate_segmentation_model
from segcal.pipeline.inference import load_model, run_model
from segcal.pipeline.progress import interactive
from segcal.pipeline.results import SegmentationQuality
from segcal.pipeline.training_log import EpochLines, ResumableCSVLogger, trim_log
from segcal.plots.training import plot_curves, plot_samples, read_metrics_csv

# Lightning's start-up tips and a torch-internal deprecation add nothing for our users.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*treespec.*")


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    checkpoints: list[Path]
    val_metrics: SegmentationQuality | None  # of the best checkpoint on the validation split (None on DDP ranks > 0)
    seconds: float


RUN_DIR_ENV = "SEGCAL_RUN_DIR"


def new_run_dir(cfg: ExperimentConfig) -> Path:
    """``<output_dir>/<name>/<YYYYmmdd-HHMMSS>`` (suffixed if it already exists)."""
    base = Path(cfg.output_dir) / cfg.name / time.strftime("%Y%m%d-%H%M%S")
    run_dir, k = base, 1
    while run_dir.exists():
        run_dir, k = base.with_name(f"{base.name}-{k}"), k + 1
    return run_dir


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written like every segcal output: a unique temporary sibling, then a rename
    (Lightning's default writes to the system temp folder and copies across filesystems)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        write_checkpoint(checkpoint, path)


def _logger(cfg: ExperimentConfig, run_dir: Path):
    csv_logger = ResumableCSVLogger(run_dir)
    if cfg.train.logger == "tensorboard":
        return [csv_logger, TensorBoardLogger(run_dir, name="tb", version="")]
    if cfg.train.logger == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return [csv_logger, WandbLogger(name=cfg.name, save_dir=str(run_dir))]
    return csv_logger


def _newest_readable(damaged: Path) -> Path | None:
    """The readable training checkpoint next to ``damaged`` with the most optimiser steps (periodic ones first)."""
    found = []
    for path in damaged.parent.glob("*.ckpt"):
        if path == damaged:
            continue
        try:
            ckpt = read_checkpoint(path)
        except (ValueError, OSError):
            continue
        if "state_dict" in ckpt and "epoch" in ckpt:
            found.append((int(ckpt.get("global_step", 0)), path.name.startswith("epoch"), path))
    return max(found)[2] if found else None


def check_resume(checkpoint: str | Path) -> tuple[int, int]:
    """``(epoch, global_step)`` stored in resume checkpoint ``checkpoint``, read safely; a damaged file gets
    one error that names the newest readable checkpoint next to it."""
    try:
        ckpt = read_checkpoint(checkpoint)
        if "state_dict" not in ckpt or "epoch" not in ckpt:
            raise ValueError(f"{checkpoint}: not a training checkpoint (no state_dict / epoch)")
    except ValueError as exc:
        best = _newest_readable(Path(checkpoint))
        hint = f"; the newest readable checkpoint there is {best} (resume with --resume {best})" if best else ""
        raise ValueError(f"cannot resume: {exc}{hint}") from exc
    return int(ckpt["epoch"]), int(ckpt.get("global_step", 0))


def train(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> TrainResult:
    """Train per ``cfg``; returns paths and the best checkpoint's validation metrics."""
    start = time.time()
    if run_dir is None and os.environ.get("LOCAL_RANK", "0") != "0" and RUN_DIR_ENV in os.environ:
        run_dir = os.environ[RUN_DIR_ENV]  # a DDP worker launched by rank 0: share its run directory
    resumed = check_resume(cfg.train.resume) if cfg.train.resume else None
    if run_dir is None:
        run_dir = Path(cfg.train.resume).parent.parent if cfg.train.resume else new_run_dir(cfg)
    run_dir = Path(run_dir)
    if resumed is not None and os.environ.get("LOCAL_RANK", "0") == "0":
        trim_log(run_dir / "logs" / "metrics.csv", *resumed)  # rows after the checkpoint are logged again
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())  # inherited by the processes Lightning launches
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = build_datamodule(cfg.data, seed=cfg.seed)
    manifests = run_dir / "manifests"
    if manifests.is_dir():
        dm.load_manifests(manifests)
    dm.setup()
    dm.write_manifests(manifests)
    dump_yaml(cfg, run_dir / "config.yaml")

    model = SegModel.from_configs(cfg.model, cfg.loss, cfg.optim, cfg.data.num_classes, dm.class_names,
                                  cfg.data.ignore_index, cfg.data.augment.mixup_alpha, cfg.seed, cfg,
                                  averaged_classes(dm.class_names, cfg.data.mean_classes),
                                  target_class_colors(cfg.data))
    ckpt_dir = run_dir / "checkpoints"
    periodic = ModelCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                               every_n_epochs=cfg.train.checkpoint_every, save_top_k=-1, save_last=True,
                               save_on_train_epoch_end=True)  # also on epochs without validation (val_every > 1)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=cfg.train.monitor,
                           mode=cfg.train.monitor_mode, save_top_k=1, auto_insert_metric_name=False,
                           enable_version_counter=False)
    callbacks = [periodic, best, LearningRateMonitor(logging_interval="epoch")]
    bars = cfg.train.progress and interactive()
    if cfg.train.progress:  # a bar on a terminal, one line per epoch in a log file
        callbacks.append(RichProgressBar() if bars else EpochLines(cfg.train.monitor))
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs, accelerator=cfg.train.accelerator, devices=cfg.train.devices,
        strategy=cfg.train.strategy, precision=cfg.train.precision, logger=_logger(cfg, run_dir),
        callbacks=callbacks, check_val_every_n_epoch=cfg.train.val_every,
        limit_train_batches=None if cfg.train.limit_train_batches == 1.0 else cfg.train.limit_train_batches,
        deterministic=cfg.train.deterministic,
        enable_progress_bar=bars, log_every_n_steps=1, default_root_dir=run_dir,
        enable_model_summary=False, plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(model, datamodule=dm, ckpt_path=cfg.train.resume, weights_only=True)

    best_path = Path(best.best_model_path) if best.best_model_path else ckpt_dir / "last.ckpt"
    if not trainer.is_global_zero:  # under DDP only rank 0 writes the figures and val_metrics.json
        return TrainResult(run_dir, best_path, ckpt_dir / "last.ckpt", [], None, time.time() - start)
    figures = run_dir / "figures"
    metrics_csv = run_dir / "logs" / "metrics.csv"
    if metrics_csv.is_file():
        plot_curves(read_metrics_csv(metrics_csv), figures / "curves.png")
    best_model = load_model(best_path, "cpu")
    val = evaluate_segmentation_model(best_model, dm.dataloader("val"), progress=cfg.train.progress)
    val["checkpoint"] = str(best_path)
    write_json(run_dir / "val_metrics.json", val)
    if cfg.train.vis_samples > 0:
        write_samples(best_model, dm.dataset("val"), cfg, figures / "samples.png")
    return TrainResult(run_dir, best_path, ckpt_dir / "last.ckpt", sorted(ckpt_dir.glob("epoch*.ckpt")),
                       SegmentationQuality.from_dict(val), time.time() - start)


def write_samples(model: SegModel, dataset, cfg: ExperimentConfig, path: Path) -> Path:
    """Figure of image / true mask / predicted mask for the first ``vis_samples`` items."""
    items = [dataset[i] for i in range(min(cfg.train.vis_samples, len(dataset)))]
    images = torch.stack([it["image"] for it in items])
    ((logits, _),) = run_model(model, [{"image": images}])
    preds = model.predict_labels(logits).numpy()
    rgb = np.stack([denormalize(img, cfg.data).permute(1, 2, 0).numpy() for img in images])
    truths = np.stack([it["mask"].numpy() for it in items])
    return plot_samples(rgb, truths, preds, [it["name"] for it in items], model.class_names,
                        cfg.data.ignore_index, path, colors=model.class_colors)
