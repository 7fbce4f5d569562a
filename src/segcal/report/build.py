"""`segcal report RUN_DIR`: one self-contained HTML page from a run directory.

Inputs (all optional, at least one required)::

    config.yaml                  resolved experiment config            -> configuration
    summary.json                 demo summary lines                    -> summary
    val_metrics.json             validation metrics of best.ckpt       -> training
    figures/curves.png, samples.png                                    -> training
    eval/<name>/evaluation.json  segmentation, calibration, recalibration, conformal results and figures
    sweep/sweep.json             low-data sweep (CE vs n_cal)           -> sweep

Every section in :data:`REPORT_SECTIONS` is always present; a section whose inputs are missing says what is
missing and which ``segcal`` command produces it.
"""
from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any

from segcal.conformal.sweep import AT_90
from segcal.io.atomic import atomic_write_text
from segcal.pipeline.results import REPORT_LEVEL, CalibrationSummary, SegmentationQuality
from segcal.report.html import (
    Html,
    bullets,
    cards,
    esc,
    figure_grid,
    fmt,
    h3,
    info_block,
    join,
    kv_table,
    note,
    page,
    para,
    pre,
    section,
    table,
)
from segcal.report.inputs import (
    EvaluationFolder,
    RunInputs,
    dig,
    figures_from,
    load_run,
    per_class,
    with_class_columns,
)
from segcal.report.risk_section import risk_section

REPORT_SECTIONS = ("summary", "configuration", "training", "segmentation", "calibration", "recalibration",
                   "conformal", "sweep", "prediction-sets", "risk")
SECTION_TITLES = {"summary": "Summary", "configuration": "Configuration", "training": "Training",
                  "segmentation": "Segmentation quality", "calibration": "Calibration",
                  "recalibration": "Recalibration", "conformal": "Conformal prediction",
                  "sweep": "Low-data sweep", "prediction-sets": "Prediction sets",
                  "risk": "Mask-level guarantees"}
METRIC_ORDER = ("dice", "iou", "recall", "precision", "accuracy")
METRIC_NAMES = {"dice": "Dice", "iou": "IoU", "recall": "Recall", "precision": "Precision", "accuracy": "Accuracy"}
CONFIG_KEYS = ("name", "seed", "data.kind", "data.image_size", "model.arch", "train.epochs")
CONFORMAL_FIGURES = ("group_map", "window_map", "ce_map", "coverage_vs_nominal", "set_size_map")
FIGURE_GROUPS = ("calibration", "conformal", "prediction_sets", "risk")
CMD_TRAIN = "segcal train CONFIG"
CMD_EVALUATE = "segcal evaluate CHECKPOINT"
CMD_RECALIBRATE = "segcal calibrate CHECKPOINT --method temperature"
CMD_CONFORMAL = "segcal calibrate CHECKPOINT --method kandinsky-kmeans"
CMD_SWEEP = "segcal sweep CHECKPOINT"


def metrics_table(seg: SegmentationQuality) -> Html:
    """Classes × metrics (Dice, IoU, recall, precision, accuracy) plus the foreground mean row."""
    per_class = seg.per_class
    metrics = [m for m in METRIC_ORDER if m in per_class] + [m for m in per_class if m not in METRIC_ORDER]
    classes = [str(c) for c in seg.classes]
    n = max([len(classes)] + [len(v) for v in per_class.values() if isinstance(v, list)])
    rows = [[classes[i] if i < len(classes) else f"class {i}"] + [dig(per_class, m, i) for m in metrics]
            for i in range(n)]
    total = 0
    if seg.mean_foreground:
        rows.append([seg.mean_label] + [seg.mean(m) for m in metrics])
        total = 1
    extra = [f"{k.replace('_', ' ')} {fmt(getattr(seg, k))}" for k in ("overall_accuracy", "num_images")
             if getattr(seg, k) is not None]
    return join([table(["class", *[METRIC_NAMES.get(m, m) for m in metrics]], rows, total_rows=total),
                 para(" · ".join(extra)) if extra else ""])


def summary_section(run: RunInputs) -> Html:
    parts = [para(f"run directory: {run.run_dir.name}")]
    lines = dig(run.summary, "summary")
    if isinstance(lines, list) and lines:
        parts.append(bullets(lines))
    else:
        parts.append(para("Headline numbers of the evaluations in this run:"))
    heads: list[tuple[str, Any]] = []
    seg = next((e.result.segmentation for e in run.evaluations if e.result.segmentation), None) or run.val_metrics
    if seg is not None and seg.mean("dice") is not None:
        heads.append((f"Dice, {seg.mean_label}", seg.mean("dice")))
    eces: dict[str, Any] = {}
    for e in run.evaluations:
        for label, res in e.result.calibration.items():
            if res.ece is not None:
                eces.setdefault(f"ECE {label}", res.ece)
    heads += eces.items()
    for e in run.conformal:
        heads.append((f"CE {e.result.conformal.method} ({e.name})", e.result.conformal.mean_ce))
    if isinstance(dig(run.summary, "seconds"), (int, float)):
        heads.append(("run time (s)", f"{run.summary['seconds']:.0f}"))
    parts.append(cards(heads))
    return join(parts)


def configuration_section(run: RunInputs) -> Html:
    if run.config_text is None:
        return note("no config.yaml found", CMD_TRAIN)
    keys = [(k, dig(run.config, *k.split("."))) for k in CONFIG_KEYS]
    shown = [(k, v) for k, v in keys if v is not None]
    return join([kv_table(shown) if shown else "", pre(run.config_text)])


def training_section(run: RunInputs) -> Html:
    figs = [f for f in run.training_figures() if f.path.is_file()]
    if run.val_metrics is None and not figs:
        return note("no training outputs found (val_metrics.json, figures/curves.png, figures/samples.png)",
                    CMD_TRAIN)
    parts = []
    if run.val_metrics is not None:
        parts += [h3("Validation metrics (best checkpoint)"), metrics_table(run.val_metrics)]
    else:
        parts.append(note("no val_metrics.json found", CMD_TRAIN))
    missing = [f.shown for f in run.training_figures() if not f.path.is_file()]
    if missing:
        parts.append(note(f"missing figure(s): {', '.join(missing)}", CMD_TRAIN))
    parts.append(figure_grid(figs, wide=True))
    return join(parts)


def source_line(e: EvaluationFolder) -> Html:
    src = e.result.source
    bits = [f"{k}: {src[k]}" for k in ("checkpoint", "predictions", "split", "num_images", "head")
            if src.get(k) is not None]
    return para(" · ".join(bits)) if bits else Html("")


def segmentation_section(run: RunInputs) -> Html:
    evals = [e for e in run.evaluations if e.result.segmentation is not None]
    if not evals:
        return note("no evaluation found", CMD_EVALUATE)
    parts = []
    for e in evals:
        other = [f for f in e.result.figures if f.group not in FIGURE_GROUPS]
        groups = list(dict.fromkeys(f.group for f in other))
        figs = [fig for g in groups for fig in figures_from(other, g, e.folder, run.run_dir)]
        parts += [h3(e.name), source_line(e), metrics_table(e.result.segmentation), figure_grid(figs)]
    return join(parts)


def calibration_table(evals: list[EvaluationFolder], labels: tuple[str, ...] | None = None) -> Html:
    """One row per (evaluation, label): ECE, adaptive ECE, ..., NLL, then per-class ECE by class name."""
    entries = [(e, label, res) for e in evals for label, res in e.result.calibration.items()
               if labels is None or label in labels]
    rows = [[e.name, label, *res.row()] for e, label, res in entries]
    by_class = [per_class(e, res.classwise_ece) for e, _, res in entries]
    classes, rows = with_class_columns(rows, by_class)
    headers = ["evaluation", "probabilities", *[h for h, _ in CalibrationSummary.COLUMNS],
               *[f"ECE {c}" for c in classes]]
    return table(headers, rows, label_cols=2)


def calibration_section(run: RunInputs) -> Html:
    evals = [e for e in run.evaluations if e.result.calibration]
    if not evals:
        return note("no calibration measured", CMD_EVALUATE)
    binnings = list(dict.fromkeys(r.binning for e in evals for r in e.result.calibration.values() if r.binning))
    parts = [calibration_table(evals)]
    if binnings:
        parts.append(para("Binning: " + "; ".join(binnings)))
    plain = [e for e in evals if e.result.recalibration is None]
    for e in plain or evals:
        figs = [f for f in e.figures("calibration", run.run_dir) if plain or f.key != "reliability"]
        if figs:
            parts += [h3(f"Figures: {e.name}"), figure_grid(figs)]
    return join(parts)


def recalibration_section(run: RunInputs) -> Html:
    evals = [e for e in run.evaluations if e.result.recalibration is not None]
    if not evals:
        return note("no recalibrated evaluation found", f"{CMD_RECALIBRATE}, then {CMD_EVALUATE}")
    parts = []
    for e in evals:
        method = e.result.recalibration.method
        pair = ("uncalibrated", method) if method in e.result.calibration else None
        baseline = [b for b in run.evaluations if b.name == e.result.baseline]  # where "uncalibrated" was measured
        parts += [h3(f"{e.name}: {method}"), info_block(e.result.recalibration.info),
                  calibration_table([*baseline, e], pair)]
        rel = [f for f in e.figures("calibration", run.run_dir) if f.key == "reliability"]
        parts.append(figure_grid(rel, wide=True) if rel
                     else note(f"no reliability diagram listed in {e.name}", CMD_EVALUATE))
    return join(parts)


def conformal_section(run: RunInputs) -> Html:
    evals = run.conformal
    if not evals:
        return note("no conformal evaluation found", f"{CMD_CONFORMAL}, then {CMD_EVALUATE}")
    rows, by_class = [], []
    for e in evals:
        c = e.result.conformal
        rows.append([e.name, c.method, c.n_cal, c.num_groups, c.mean_ce])
        by_class.append(per_class(e, c.mean_ce_per_class))
    classes, rows = with_class_columns(rows, by_class)
    for row, e in zip(rows, evals):
        c = e.result.conformal
        at = c.at(REPORT_LEVEL)
        row += [at and at.coverage, at and at.mean_set_size, at and at.relative_set_size, at and at.multi_fraction,
                at and at.full_fraction, c.empty_fraction, c.trivial_fraction, c.num_test_images]
    level = f"@{REPORT_LEVEL}"
    headers = ["evaluation", "method", "n_cal", "groups", "mean CE", *[f"CE {c}" for c in classes],
               f"coverage {level}", f"mean set size {level}", f"set size / C {level}", f"> 1 class {level}",
               f"full sets {level}", "empty sets (grid mean)", "trivial thresholds (grid mean)", "test images"]
    mins = sorted({str(e.result.conformal.min_test_labels) for e in evals
                   if e.result.conformal.min_test_labels is not None})
    parts = [table(headers, rows, label_cols=2),
             para("CE: coverage error, mean over the 1\u2212\u03b1 grid of |coverage \u2212 (1\u2212\u03b1)| per pixel"
                  + (f", averaged over pixels with at least {'/'.join(mins)} test labels" if mins else "")
                  + ". A low CE is only useful with small sets: read it next to the set size and the share of "
                  "full sets (a method that gives up covers everything).")]
    order = {k: i for i, k in enumerate(CONFORMAL_FIGURES)}
    for e in evals:
        figs = sorted(e.figures("conformal", run.run_dir), key=lambda f: order.get(f.key, len(order)))
        parts += [h3(f"{e.name}: {e.result.conformal.method or 'conformal'}"),
                  figure_grid(figs) if figs else note(f"no conformal figures listed in {e.name}", CMD_EVALUATE)]
    return join(parts)


def sweep_section(run: RunInputs) -> Html:
    if run.sweep is None:
        return note("no sweep found (sweep/sweep.json)", CMD_SWEEP)
    summary = [s for s in run.sweep.get("summary") or [] if isinstance(s, dict)]
    methods = [str(m) for m in run.sweep.get("methods") or []]
    methods += [m for m in dict.fromkeys(str(s.get("method")) for s in summary) if m not in methods]
    n_cals = sorted({s.get("n_cal") for s in summary if isinstance(s.get("n_cal"), int)})
    cell = {(str(s.get("method")), s.get("n_cal")): s for s in summary}

    at_level = all(f"{AT_90[1]}_mean" in x for x in summary) and bool(summary)
    size_key = f"{AT_90[1]}_mean" if at_level else "mean_set_size_mean"

    def text(s: dict | None) -> str:
        if s is None:
            return fmt(None)
        mean, std, size = s.get("mean_ce_mean"), s.get("mean_ce_std"), s.get(size_key)
        return (("\u2013" if mean is None else f"{mean:.3f}") + (f" \u00b1 {std:.3f}" if std is not None else "")
                + ("" if size is None else f" ({size:.2f})"))

    rows = [[str(n), *[text(cell.get((m, n))) for m in methods]] for n in n_cals]
    size = f"mean set size at 1\u2212\u03b1 = {REPORT_LEVEL}" if at_level else "mean set size over the level grid"
    parts = [table(["n_cal", *methods], rows) if rows else note("sweep.json has no summary rows", CMD_SWEEP),
             para(f"cells: mean CE \u00b1 std over {fmt(run.sweep.get('repeats'))} repeats ({size})"
                  + (f"; logits recalibrated by {recal} first" if (recal := run.sweep.get("recalibration")) else ""))]
    figs = figures_from(run.sweep.get("figures") or [], "sweep", run.run_dir / "sweep", run.run_dir)
    parts.append(figure_grid(figs, wide=True))
    return join(parts)


def prediction_sets_section(run: RunInputs) -> Html:
    parts = []
    for e in run.evaluations:
        figs = e.figures("prediction_sets", run.run_dir)
        if figs:
            method = e.result.conformal.method if e.result.conformal else "conformal"
            parts += [h3(f"{e.name}: {method}"), figure_grid(figs)]
        elif e.result.conformal is not None:
            parts.append(note(f"no prediction-set overlays listed in {e.name}", CMD_EVALUATE))
    return join(parts) if parts else note("no prediction sets found", f"{CMD_CONFORMAL}, then {CMD_EVALUATE}")


SECTION_BUILDERS = {"summary": summary_section, "configuration": configuration_section,
                    "training": training_section, "segmentation": segmentation_section,
                    "calibration": calibration_section, "recalibration": recalibration_section,
                    "conformal": conformal_section, "sweep": sweep_section,
                    "prediction-sets": prediction_sets_section, "risk": risk_section}


def build_section(sid: str, run: RunInputs) -> Html:
    """The body of section ``sid``; input that does not follow the schema gives a warning, not a crash."""
    warn = Html("")
    if sid == "summary" and run.problems:
        warn = Html('<div class="warn">' + esc("Some files could not be read:") + bullets(run.problems) + "</div>")
    try:
        return join([warn, SECTION_BUILDERS[sid](run)])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        return join([warn, Html('<div class="warn">' + esc(f"could not render this section from the run's files "
                                                           f"({type(exc).__name__}: {exc})") + "</div>")])


def render_report(run: RunInputs, title: str | None = None) -> str:
    """The report of ``run`` as one HTML document."""
    name = dig(run.config, "name")
    title = title or f"segcal report: {name or run.run_dir.name}"
    try:
        version = metadata.version("segcal")
    except metadata.PackageNotFoundError:
        version = "unknown"
    sections = [section(sid, SECTION_TITLES[sid], build_section(sid, run)) for sid in REPORT_SECTIONS]
    return page(title, f"run directory {run.run_dir.resolve()}",
                [(sid, SECTION_TITLES[sid]) for sid in REPORT_SECTIONS], sections,
                f"generated by segcal {version} on {time.strftime('%Y-%m-%d %H:%M')}")


def build_report(run_dir: str | Path, out: str | Path | None = None, title: str | None = None) -> Path:
    """Write the self-contained HTML report of ``run_dir`` (default ``<run_dir>/report.html``); return its path."""
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.run_dir / "report.html"
    atomic_write_text(path, render_report(run, title))
    return path
