"""Rounds of refinement: each model's quality on ``P_EVAL`` appended to the project's table.

``record_round(ckpt, "datasets/Deformation", "H1")`` evaluates the model on ``P_EVAL`` at the
masks' original resolution (predictions resized back, see :mod:`segcal.refine.predict`),
appends one row to ``P_rounds.csv`` and redraws ``P_rounds.png``. Columns: :data:`ROUND_COLUMNS`
(metrics are foreground means over classes 1..C-1).
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import torch

from segcal.io.atomic import atomic_write_text
from segcal.metrics.segmentation import SegmentationMetrics, quality_summary
from segcal.models.lightning import SegModel
from segcal.pipeline.inference import experiment_of, load_model
from segcal.pipeline.results import SegmentationQuality
from segcal.refine.predict import predict_original
from segcal.refine.project import Project, open_for_model

METRICS = ("iou", "dice", "recall", "precision", "accuracy")
ROUND_COLUMNS = ("round", *METRICS, "num_images", "train_data", "eval_data", "checkpoint", "created")


def evaluate_original(model: SegModel, source, batch_size: int = 8, progress: bool = True) -> dict:
    """Per-class and foreground-mean quality of ``model`` on ``source`` at the masks' own size.

    The predicted label is the most probable class after resizing the probabilities back;
    pixels the model never saw (``resize: crop`` borders) are left out.
    """
    metrics = SegmentationMetrics(model.num_classes, model.ignore_index)
    n = 0
    for pred in predict_original(model, source, batch_size, progress=progress, description="evaluate"):
        truth = torch.from_numpy(pred.mask).masked_fill(~torch.from_numpy(pred.known), model.ignore_index)
        metrics.update(torch.from_numpy(pred.probs.argmax(0))[None], truth[None])
        n += 1
    return {**quality_summary(metrics.compute(), model.class_names, model.averaged), "num_images": n}


def read_rounds(path: str | Path) -> list[dict]:
    """Rows of a rounds table (metrics as floats); ``[]`` when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in ROUND_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: not a rounds table (missing columns {missing})")
    for row in rows:
        for m in METRICS:
            row[m] = float(row[m])
        row["num_images"] = int(row["num_images"])
    return rows


def append_round(path: str | Path, row: dict, replace: bool = False) -> list[dict]:
    """Append ``row`` to the table at ``path`` (atomically); a repeated round name needs ``replace``."""
    rows = read_rounds(path)
    same = [i for i, r in enumerate(rows) if r["round"] == row["round"]]
    if same and not replace:
        raise ValueError(f"{path} already has a round {row['round']!r}; choose another name or pass --replace")
    rows = [r for r in rows if r["round"] != row["round"]] if replace else rows
    index = same[0] if same else len(rows)
    rows.insert(index, {c: row[c] for c in ROUND_COLUMNS})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ROUND_COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return rows


def record_round(checkpoint: str | Path, project: str | Path, round_name: str, eval_data: str | Path | None = None,
                 table: str | Path | None = None, train_data: str | None = None, replace: bool = False,
                 device: str = "auto", batch_size: int = 8, progress: bool = True) -> tuple[dict, list[dict], Path]:
    """Evaluate ``checkpoint`` on ``P_EVAL`` (or ``eval_data``), append the row, redraw the plot.

    Returns ``(row, all rows, plot path)``. ``train_data`` defaults to the model's ``data.root``.
    """
    from segcal.plots.refinement import plot_rounds

    proj = Project(Path(project))
    eval_dir = Path(eval_data) if eval_data is not None else proj.eval
    table = Path(table) if table is not None else proj.rounds_csv
    if not round_name or "," in round_name:
        raise ValueError(f"--round must be a non-empty name without commas, got {round_name!r}")
    model = load_model(checkpoint, device)
    source = open_for_model(model, eval_dir, what="eval data")
    result = evaluate_original(model, source, batch_size, progress)
    quality = SegmentationQuality.from_dict(result)
    row = {"round": round_name, **{m: quality.mean(m) for m in METRICS},
           "num_images": result["num_images"], "train_data": train_data or experiment_of(model).data.root,
           "eval_data": str(eval_dir), "checkpoint": str(Path(checkpoint).resolve()),
           "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    rows = append_round(table, row, replace)
    plot = plot_rounds(rows, table.with_suffix(".png"))
    return row, rows, plot


def rounds_report(project: str | Path, table: str | Path | None = None) -> tuple[list[dict], Path]:
    """The rounds table of ``project`` and its (re)drawn plot."""
    from segcal.plots.refinement import plot_rounds

    table = Path(table) if table is not None else Project(Path(project)).rounds_csv
    rows = read_rounds(table)
    if not rows:
        raise FileNotFoundError(f"no rounds recorded yet: {table} not found (run `segcal refine-eval` first)")
    return rows, plot_rounds(rows, table.with_suffix(".png"))
