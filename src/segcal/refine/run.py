"""`segcal refine`: turn a coarse-mask dataset into a hybrid dataset with a trained model.

``refine_dataset(ckpt, "datasets/Deformation", rule=RefineRule(threshold=0.5))`` runs the model
over the coarse images (``P_COARSE`` of a prepared project, or any folder dataset), combines
each coarse mask with the prediction under :mod:`segcal.refine.rules` and writes the
next ``P_H<k>``: the refined images plus, by default, the accurate ``P_BASELINE`` images with
their masks unchanged. The output folder also holds ``provenance.json`` (source data, model
checkpoint, rule, thresholds, totals), ``refine_stats.csv`` (counts per image) and
``preview.png``. An existing output is refused unless ``overwrite``; everything is written to
a temporary folder first, so an error leaves nothing behind.
"""
from __future__ import annotations

import csv
import io
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from segcal.data.files import read_image, write_png
from segcal.models.lightning import SegModel
from segcal.pipeline.inference import experiment_of, load_model
from segcal.refine.predict import predict_original
from segcal.refine.project import (
    PROVENANCE_FILE,
    Project,
    atomic_folders,
    check_new_folder,
    is_folder_dataset,
    link_or_copy,
    open_for_model,
    read_provenance,
    start_folder_dataset,
    write_json,
)
from segcal.refine.rules import RefineRule, refine_mask

STATS_FILE = "refine_stats.csv"
PREVIEW_FILE = "preview.png"


@dataclass
class RefineResult:
    out: Path
    provenance: dict


def resolve_data(data: str | Path) -> tuple[Path, Project | None]:
    """The coarse folder for ``--data``: ``P_COARSE`` of a prepared project ``P``, else ``P`` itself."""
    path = Path(data)
    project = Project(path)
    if project.is_prepared():
        return project.coarse, project
    if is_folder_dataset(path):
        parent = Project(path.with_name(path.name[: -len("_COARSE")])) if path.name.endswith("_COARSE") else None
        return path, parent
    raise FileNotFoundError(f"--data {path}: neither a folder dataset (images/ + masks/) nor a prepared project "
                            f"({project.coarse} not found; run `segcal prepare-hybrid` first)")


def next_hybrid(project: Project) -> Path:
    """The first ``P_H<k>`` (k = 1, 2, ...) that does not exist yet."""
    k = 1
    while project.hybrid(k).exists():
        k += 1
    return project.hybrid(k)


def fit_conformal(model: SegModel, checkpoint: Path, calibration: Path | None, batch_size: int,
                  progress: bool, remap: str | list | None = None):
    """Imagewise conformal calibrator of ``model`` on ``calibration`` (a folder, its masks remapped
    like the coarse ones) or its run's val split."""
    from torch.utils.data import DataLoader

    from segcal.batch import Batch
    from segcal.conformal.calibrator import ImagewiseCalibrator
    from segcal.data.base import SplitDataset
    from segcal.pipeline.inference import run_model
    from segcal.pipeline.sources import datamodule_for
    from segcal.refine.predict import model_transform

    if calibration is not None:
        source = open_for_model(model, calibration, remap, "--calibration")
        dataset = SplitDataset(source, range(len(source)), model_transform(model))
        where = str(calibration)
    else:
        dm = datamodule_for(checkpoint, model)
        if "val" not in dm.split_names:
            raise ValueError("confidence 'conformal' calibrates on the model's validation split, but its run has "
                             "none; pass --calibration FOLDER (accurate masks the model was not trained on)")
        dataset = dm.dataset("val")
        where = f"{dm.cfg.root} (val split of the model's run, {len(dataset)} images)"
    loader = DataLoader(dataset, batch_size=batch_size)
    stream = (Batch(logits, batch["mask"]) for logits, batch in run_model(model, loader, "calibrate", progress))
    cp = ImagewiseCalibrator(model.num_classes, kind="logits", head=model.head, ignore_index=model.ignore_index)
    return cp.fit(stream), where


def _stats_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def refine_dataset(checkpoint: str | Path, data: str | Path, out: str | Path | None = None,
                   rule: RefineRule | None = None, accurate: str | Path | None = "auto",
                   remap: str | list | None = None, calibration: str | Path | None = None,
                   overwrite: bool = False, device: str = "auto", batch_size: int = 8, preview: int = 4,
                   progress: bool = True) -> RefineResult:
    """Write the hybrid dataset ``out`` (default: the next ``P_H<k>``); see the module docstring.

    ``accurate``: ``"auto"`` (``P_BASELINE`` when ``data`` is a prepared project), a folder
    dataset whose images are added unchanged, or ``None``. ``calibration``: accurate folder for
    ``rule.confidence="conformal"`` (default: the validation split of the model's run).
    """
    rule = (rule or RefineRule()).validate()
    checkpoint = Path(checkpoint)
    coarse_dir, project = resolve_data(data)
    if out is None:
        if project is None:
            raise ValueError("--out is required when --data is a plain folder dataset (not a prepared project)")
        out = next_hybrid(project)
    out = Path(out)
    check_new_folder(out, overwrite)
    if out.resolve() in (coarse_dir.resolve(), Path(data).resolve()):
        raise ValueError(f"--out {out} is the input data folder; write the hybrid dataset to a new folder")
    if accurate == "auto":
        accurate = project.baseline if project is not None and project.baseline.is_dir() else None
    model = load_model(checkpoint, device)
    ignore, data_cfg = model.ignore_index, experiment_of(model).data
    coarse = open_for_model(model, coarse_dir, remap, "--data")
    extra = open_for_model(model, Path(accurate), remap, "--accurate") if accurate is not None else None
    if extra is not None:
        clash = sorted(set(extra.names) & set(coarse.names))
        if clash:
            raise ValueError(f"{len(clash)} image name(s) are both in {coarse_dir} and {accurate}: {clash[:5]}")
    calibrator, cal_where = None, None
    if rule.confidence == "conformal":
        calibrator, cal_where = fit_conformal(model, checkpoint, Path(calibration) if calibration else None,
                                              batch_size, progress, remap)
    totals: Counter = Counter()
    rows, shown = [], []
    with atomic_folders([out], overwrite) as (tmp,):
        start_folder_dataset(tmp, model.class_names)
        for pred in predict_original(model, coarse, batch_size, calibrator, rule.alpha, progress=progress,
                                     description=f"refine -> {out.name}"):
            hybrid, stats = refine_mask(pred.mask, pred.probs, rule, pred.sets, pred.known, ignore)
            image_path = coarse.images[pred.name]
            link_or_copy(image_path, tmp / "images" / image_path.name)
            write_png(tmp / "masks" / f"{pred.name}.png", hybrid)
            totals.update(stats)
            rows.append({"name": pred.name, **stats})
            if len(shown) < preview:
                shown.append((pred.name, read_image(image_path), pred.mask, hybrid))
        for i in range(len(extra) if extra is not None else 0):
            sample = extra.load(i)
            link_or_copy(extra.images[sample.name], tmp / "images" / extra.images[sample.name].name)
            write_png(tmp / "masks" / f"{sample.name}.png", sample.mask)
        provenance = {
            "kind": "hybrid", "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "coarse_data": str(coarse_dir.resolve()), "coarse_provenance": read_provenance(coarse_dir),
            "accurate_data": str(Path(accurate).resolve()) if extra is not None else None,
            "model": {"checkpoint": str(checkpoint.resolve()), "train_data": data_cfg.root,
                      "classes": model.class_names, "head": model.head, "image_size": list(data_cfg.image_size),
                      "resize": data_cfg.resize},
            "rule": rule.describe(), "calibration": cal_where,
            "num_refined": len(rows), "num_accurate": len(extra) if extra is not None else 0,
            "counts": dict(totals), "per_image": STATS_FILE,
        }
        write_json(tmp / PROVENANCE_FILE, provenance)
        (tmp / STATS_FILE).write_text(_stats_csv(rows))
        if shown:
            from segcal.plots.refinement import plot_hybrid_preview

            names, images, coarse_masks, hybrids = zip(*shown)
            plot_hybrid_preview(list(images), list(coarse_masks), list(hybrids), list(names), model.num_classes,
                                ignore, tmp / PREVIEW_FILE)
    return RefineResult(out, provenance)

