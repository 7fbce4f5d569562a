"""`segcal evaluate`: segmentation quality, calibration and (when calibrated) conformal coverage.

One streaming pass over the test source accumulates, per batch:

* :class:`~segcal.metrics.segmentation.SegmentationMetrics` of the final prediction;
* :class:`~segcal.metrics.calibration.CalibrationMetrics` of the raw logits ("uncalibrated")
  and, when the bundle has a recalibrator, of the recalibrated logits (before/after);
* :class:`~segcal.conformal.evaluation.CoverageAccumulator` when the bundle has a conformal
  calibrator, plus prediction sets of the first few images at ``set_alpha`` for overlays;
* :class:`~segcal.pipeline.evaluate_risk.RiskEvaluation` when it has a risk controller (realized risk,
  areas and their spread over images, at the controller's α).

``<out>/evaluation.json`` and ``<out>/figures/*.png`` are written (see :mod:`segcal.report.build`
for the schema the report reads).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from segcal.batch import Batch
from segcal.calibrated import CalibrationBundle
from segcal.conformal.evaluation import (
    MIN_TEST_LABELS,
    CoverageAccumulator,
    CoverageResult,
)
from segcal.conformal.quantile import COVERAGE_LEVELS, levels_from_alpha
from segcal.errors import no_labels
from segcal.metrics.calibration import CalibrationMetrics
from segcal.metrics.calibration_results import CalibrationResults
from segcal.metrics.segmentation import SegmentationMetrics, quality_summary
from segcal.outputs import hard_labels
from segcal.pipeline.evaluate_figures import SetExamples, write_figures
from segcal.pipeline.evaluate_risk import RiskEvaluation, risk_figures
from segcal.pipeline.progress import track
from segcal.pipeline.results import (
    CalibrationSummary,
    CoverageSummary,
    EvaluationResult,
    FigureEntry,
    Recalibration,
    SegmentationQuality,
)
from segcal.pipeline.sources import ModelSource, Stream, source_name

SET_ALPHA = 0.1
NUM_SET_EXAMPLES = 4


@dataclass
class EvaluationRun:
    """What ``evaluate`` returns: the typed results (as written to ``evaluation.json``) and the tensors
    behind the figures (calibration results with maps, coverage with maps)."""

    result: EvaluationResult
    calibration: dict[str, CalibrationResults]
    coverage: CoverageResult | None


def _calibration_metrics(source, bins: int, boundary_width: int, class_maps: bool) -> CalibrationMetrics:
    return CalibrationMetrics(source.num_classes, bins=bins, ignore_index=source.ignore_index, head=source.head,
                              kind="logits", ece_map=True, class_maps=class_maps, boundary_width=boundary_width,
                              image_size=tuple(source.image_size))


def evaluate(source, bundle: CalibrationBundle | None = None, out_dir: str | Path | None = None, *,
             name: str = "evaluation", bins: int = 15, boundary_width: int = 3, class_maps: bool = False,
             alphas: list[float] | None = None, set_alpha: float = SET_ALPHA,
             num_set_examples: int = NUM_SET_EXAMPLES, min_test_labels: int = MIN_TEST_LABELS,
             segmentation_only: bool = False, baseline: str | None = None,
             progress: bool = True) -> EvaluationRun:
    """Evaluate ``source`` (see :mod:`segcal.pipeline.sources`) with ``bundle`` applied.

    Writes ``evaluation.json`` and figures into ``out_dir`` when given (figures only then).
    ``segmentation_only``: Dice, IoU, ... of the final prediction, no calibration or coverage.
    ``baseline``: the evaluation that already measured the uncalibrated model; then only what ``bundle``
    changes is measured: the recalibrated calibration metrics, segmentation quality only when the
    recalibrator can change the predicted class, and coverage.
    """
    start = time.time()
    bundle = bundle if bundle is not None else CalibrationBundle()
    recal, conformal = bundle.recalibration, bundle.conformal
    if conformal is not None:
        _check_alpha_on_grid(set_alpha, alphas)
    if segmentation_only:
        conformal = None
    changes_labels = recal is not None and not recal.preserves_argmax
    seg = SegmentationMetrics(source.num_classes, source.ignore_index) if baseline is None or changes_labels else None
    views = [] if segmentation_only else [*(["uncalibrated"] if baseline is None else []),
                                          *([recal.method] if recal is not None else [])]
    metrics = {view: _calibration_metrics(source, bins, boundary_width, class_maps) for view in views}
    coverage = None if conformal is None else CoverageAccumulator(conformal, alphas, min_test_labels)
    risk = None if bundle.risk is None or segmentation_only else RiskEvaluation(bundle.risk, num_set_examples)
    examples = SetExamples(num_set_examples if conformal is not None else 0, set_alpha)
    if isinstance(source, ModelSource) and recal is None:
        source = replace(source, keep_device=True)  # statistics on the model's device: no per-batch copy
    labelled, device = torch.zeros((), dtype=torch.long), torch.device("cpu")

    def step(batch: Batch) -> None:
        nonlocal labelled, device
        raw, labels = batch.logits, batch.labels
        if raw.device != device:  # once: the statistics follow the batches (coverage moves by itself)
            device = raw.device
            for metric in [*metrics.values(), *([seg] if seg is not None else [])]:
                metric.to(device)
        labelled = labelled.to(device) + (labels != source.ignore_index).sum()
        if "uncalibrated" in metrics:
            metrics["uncalibrated"].update(raw, labels)
        final = raw if recal is None else recal(raw, batch.images)
        if recal is not None and recal.method in metrics:
            metrics[recal.method].update(final, labels)
        if seg is not None:
            seg.update(hard_labels(final, source.head), labels)
        if conformal is not None:
            coverage.update(final, labels, "logits", source.head)
            examples.add(source, batch, conformal, final)
        if risk is not None:
            risk.update(source, batch, final)

    for batch in track(Stream(source), f"evaluate ({bundle.describe()})", enabled=progress):
        step(batch)
    if int(labelled) == 0:
        raise no_labels(source.ignore_index, source_name(source))

    results = {}
    for label, metric in metrics.items():
        results[label] = metric.compute()
        results[label].label = label
    cov = None if coverage is None else coverage.compute()
    quality = None
    if seg is not None:
        measured = quality_summary(seg.compute(), source.class_names, source.averaged)
        quality = SegmentationQuality.from_dict({**measured, "num_images": len(source)})
    result = EvaluationResult(
        name=name, source=source.describe(), segmentation=quality, baseline=baseline,
        calibration={label: CalibrationSummary.of(r) for label, r in results.items()},
        recalibration=None if recal is None else Recalibration(recal.method, dict(recal.info_)),
        conformal=None if cov is None else CoverageSummary.from_dict(cov.to_dict()),
        risk=None if risk is None else risk.compute(),
        set_alpha=set_alpha if cov else None)
    if out_dir is not None:
        folder = Path(out_dir)
        result.figures = [FigureEntry(**f) for f in write_figures(folder / "figures", list(results.values()), cov,
                                                                  conformal, source.class_names, examples)]
        if risk is not None:
            result.figures += [FigureEntry(**f) for f in risk_figures(folder / "figures", risk, source.class_names)]
        result.seconds = time.time() - start
        result.write(folder)
    result.seconds = time.time() - start
    return EvaluationRun(result, results, cov)


def _check_alpha_on_grid(alpha: float, alphas: list[float] | None) -> None:
    """``alpha`` (set-size map, overlays) must be one of the evaluated levels: fail before the pass."""
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha must lie strictly between 0 and 1, got {alpha}")
    levels = COVERAGE_LEVELS if alphas is None else levels_from_alpha(alphas, "--alphas").tolist()
    if not any(abs(1 - alpha - lv) < 1e-9 for lv in levels):
        raise ValueError(f"--alpha {alpha} is not on the evaluated grid 1 − α ∈ {sorted(levels)}; "
                         "add it to --alphas")
