"""The training logs: ``logs/metrics.csv`` kept whole across resumes, and plain per-epoch lines when
the output is not a terminal (:class:`EpochLines`).

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a resumed run would
keep only its own epochs. :class:`ResumableCSVLogger` appends to the file instead (rows are flushed
every logging step, so a killed run loses at most the epoch it was in), and :func:`trim_log` drops the
rows a resumed run will write again (those after the checkpoint's epoch).
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from segcal.io.atomic import atomic_write_text
from segcal.pipeline.progress import duration, log_line


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _write_rows(path: Path, fieldnames: list[str], rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def trim_log(path: str | Path, last_epoch: int, global_step: int) -> int:
    """Keep the rows a run resumed from a checkpoint of (``last_epoch``, ``global_step``) will not log again:
    ``epoch <= last_epoch``, and for rows without an epoch (learning-rate rows) ``step < global_step``.
    Returns how many rows were dropped; a missing file is left alone."""
    path = Path(path)
    if not path.is_file():
        return 0
    fields, rows = _read_rows(path)

    def keep(row: dict[str, str]) -> bool:
        if row.get("epoch"):
            return float(row["epoch"]) <= last_epoch
        return not row.get("step") or float(row["step"]) < global_step

    kept = [r for r in rows if keep(r)]
    if len(kept) != len(rows):
        _write_rows(path, fields, kept)
    return len(rows) - len(kept)


class _AppendingWriter(ExperimentWriter):
    """Continues an existing ``metrics.csv`` (its header becomes the known keys); header rewrites are atomic."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            self.metrics_keys = _read_rows(path)[0]

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        path = Path(self.metrics_file_path)
        _write_rows(path, fieldnames, _read_rows(path)[1])


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<save_dir>/logs/metrics.csv`` that appends to an earlier run's rows."""

    def __init__(self, save_dir: str | Path) -> None:
        super().__init__(save_dir, name="logs", version="", flush_logs_every_n_steps=1)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class EpochLines(L.Callback):
    """One line per epoch on standard error: losses, the monitored metric, images/s and the time left.

    Used instead of the rich progress bar when the output goes to a file, so a long ``train`` is never
    silent in its log.
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.start, self.first_epoch, self.images = 0.0, 0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.first_epoch, self.images = time.monotonic(), trainer.current_epoch, 0
        if trainer.is_global_zero:
            log_line(f"training: epochs {trainer.current_epoch + 1}..{trainer.max_epochs}, "
                     f"{trainer.num_training_batches} batches per epoch")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
                           ) -> None:
        self.images += len(batch["image"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        elapsed = time.monotonic() - self.start
        metrics = trainer.callback_metrics
        shown = [f"{k} {float(metrics[k]):.4f}" for k in dict.fromkeys(("train/loss", "val/loss", self.monitor))
                 if k in metrics]
        eta = elapsed / max(epoch - self.first_epoch, 1) * (total - epoch)
        log_line(f"epoch {epoch}/{total}: " + ", ".join([*shown, f"{self.images / max(elapsed, 1e-9):.1f} images/s",
                                                           f"elapsed {duration(elapsed)}", f"eta {duration(eta)}"]))
