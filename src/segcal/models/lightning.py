"""Lightning module: network + loss + optimiser, with per-class validation metrics."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch

from segcal.classes import averaged_classes
from segcal.configio import from_dict, to_dict
from segcal.errors import no_labels
from segcal.metrics.segmentation import QUALITY_METRICS, SegmentationMetrics, class_mean
from segcal.models.config import LossConfig, ModelConfig, OptimConfig
from segcal.models.losses import SegmentationLoss, Target
from segcal.models.networks import build_network
from segcal.outputs import hard_labels


class SegModel(L.LightningModule):
    """Segmentation model trained with Lightning.

    Logs ``train/loss``, ``val/loss`` and, per epoch, ``val/<metric>`` (mean over foreground
    classes 1..C-1) and ``val/<metric>_<class>`` for Dice, IoU, recall, precision, accuracy.
    ``experiment`` (the resolved experiment config) is stored in every checkpoint so a
    checkpoint alone can rebuild its data pipeline.
    """

    def __init__(self, model: dict, loss: dict, optim: dict, num_classes: int, class_names: list[str],
                 ignore_index: int = 255, mixup_alpha: float = 0.0, mixup_seed: int = 0,
                 experiment: dict | None = None, mean_classes: list[int] | None = None,
                 class_colors: list | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = from_dict(ModelConfig, model, "model")
        self.optim_cfg = from_dict(OptimConfig, optim, "optim")
        self.num_classes = num_classes
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.mixup_alpha = mixup_alpha
        self.averaged = list(mean_classes) if mean_classes is not None else averaged_classes(self.class_names)
        self.class_colors = None if class_colors is None else [None if c is None else tuple(c) for c in class_colors]
        self.net = build_network(self.model_cfg, num_classes)
        self.criterion = SegmentationLoss(from_dict(LossConfig, loss, "loss"), num_classes,
                                          self.model_cfg.head, ignore_index)
        self.val_metrics = SegmentationMetrics(num_classes, ignore_index)
        self._mixup_gen = torch.Generator().manual_seed(mixup_seed)
        self._labelled = {"train": 0, "val": 0}  # labelled pixels seen this epoch, per split

    @property
    def head(self) -> str:
        return self.model_cfg.head

    @classmethod
    def from_configs(cls, model: ModelConfig, loss: LossConfig, optim: OptimConfig, num_classes: int,
                     class_names: list[str], ignore_index: int = 255, mixup_alpha: float = 0.0,
                     mixup_seed: int = 0, experiment: Any = None, mean_classes: list[int] | None = None,
                     class_colors: list | None = None) -> SegModel:
        return cls(to_dict(model), to_dict(loss), to_dict(optim), num_classes, class_names, ignore_index,
                   mixup_alpha, mixup_seed, to_dict(experiment) if experiment is not None else None, mean_classes,
                   None if class_colors is None else [None if c is None else list(c) for c in class_colors])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C_out, H, W]`` for images ``[N, 3, H, W]``."""
        return self.net(images)

    def _count_labelled(self, split: str, labels: torch.Tensor) -> None:
        self._labelled[split] += int((labels != self.ignore_index).sum())

    def _check_labelled(self, split: str) -> None:
        """Refuse an epoch without supervision (its loss would be 0 and its Dice NaN), on any rank."""
        seen = self.trainer.strategy.reduce(torch.tensor(float(self._labelled[split]), device=self.device),
                                            reduce_op="sum")
        self._labelled[split] = 0
        if float(seen) == 0:
            raise no_labels(self.ignore_index, f"split {split!r}")

    def on_train_epoch_start(self) -> None:
        self._labelled["train"] = 0

    def on_train_epoch_end(self) -> None:
        self._check_labelled("train")

    def on_validation_epoch_start(self) -> None:
        self._labelled["val"] = 0

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["mask"]
        self._count_labelled("train", labels)
        target: torch.Tensor | Target = labels
        if self.mixup_alpha > 0:
            from segcal.data.mixup import mixup_batch

            images, soft, valid = mixup_batch(images, labels, self.mixup_alpha, self.num_classes,
                                              self.ignore_index, self._mixup_gen)
            target = Target(soft * valid.unsqueeze(1), valid)
        loss = self.criterion(self(images), target)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch["image"])
        self._count_labelled("val", batch["mask"])
        loss = self.criterion(logits, batch["mask"])
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(logits), sync_dist=True)
        self.val_metrics.update(self.predict_labels(logits), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._check_labelled("val")
        results = self.val_metrics.compute()
        self.val_metrics.reset()
        for name in QUALITY_METRICS:
            per_class = results[name]
            self.log(f"val/{name}", class_mean(per_class, self.averaged).float(), prog_bar=name in ("dice", "recall"))
            for cname, value in zip(self.class_names, per_class):
                self.log(f"val/{name}_{cname}", value.float())

    def predict_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Hard labels ``[N, H, W]`` from logits (argmax, or p > 0.5 for a binary sigmoid head)."""
        return hard_labels(logits, self.head)

    def configure_optimizers(self):
        o = self.optim_cfg
        params = self.parameters()
        if o.name == "adam":
            opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        elif o.name == "adamw":
            opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        if o.scheduler == "cosine_restarts":
            sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=o.t0, T_mult=o.t_mult,
                                                                         eta_min=o.min_lr)
        elif o.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=o.step_size, gamma=o.gamma)
        else:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
