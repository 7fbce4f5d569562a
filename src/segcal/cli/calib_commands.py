"""`segcal evaluate | calibrate | predict | sweep | report`: build the source, run the pipeline, print."""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segcal.cli.commands import metrics_table, number, risk_table
from segcal.methods import METHODS as METHOD_NAMES

out = Console()
err = Console(stderr=True)



@contextmanager
def writing(target: Path, folder: bool = False) -> Iterator[Path]:
    """Lock output ``target`` against concurrent segcal runs and check it is writable before any work."""
    from segcal.io.atomic import (
        check_writable,
        new_dirs_removed_on_failure,
        output_lock,
    )

    with new_dirs_removed_on_failure(target if folder else target.parent), output_lock(target):
        check_writable(target if folder else target.parent)
        yield target


def run_dir_of(checkpoint: str | Path) -> Path:
    """``<run>`` for ``<run>/checkpoints/x.ckpt``, else the checkpoint's folder."""
    path = Path(checkpoint).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = [f"data.root={args.data}"] if getattr(args, "data", None) else []
    return extra + list(getattr(args, "overrides", []) or [])


def _folder(predictions: str, args: argparse.Namespace):
    from segcal.pipeline.sources import folder_source

    classes = args.classes.split(",") if args.classes else None
    folder = folder_source(predictions, args.masks, kind=args.kind, head=args.head, classes=classes,
                           ignore_index=args.ignore_index, batch_size=args.batch_size)
    out.print(folder.summary(), highlight=False)
    return folder


def build_source(args: argparse.Namespace, split: str, predictions: str | None = None) -> tuple[Any, Any]:
    """``(source, bundle)`` from CLI arguments: a model checkpoint over ``split``, or saved predictions."""
    from segcal.calibrated import (
        CalibrationBundle,
        has_model,
        load_bundle,
        read_checkpoint,
    )
    from segcal.pipeline.sources import model_source

    predictions = predictions or args.predictions
    if predictions:
        bundle = load_bundle(args.checkpoint) if args.checkpoint else CalibrationBundle()
        return _folder(predictions, args), bundle
    if not args.checkpoint:
        raise ValueError("give a CHECKPOINT, or --predictions DIR with saved predictions")
    if not has_model(read_checkpoint(args.checkpoint)):
        raise ValueError(f"{args.checkpoint}: a calibration file without model weights; "
                         "use it with --predictions DIR")
    return model_source(args.checkpoint, split, _overrides(args), args.device), load_bundle(args.checkpoint)


def calibration_table(result) -> Table:
    """Rows: the headline calibration numbers and per-class ECE of an
    :class:`~segcal.pipeline.results.EvaluationResult`; columns: uncalibrated / recalibrated."""
    calib = result.calibration
    table = Table(title=f"Calibration ({next(iter(calib.values())).binning})")
    table.add_column("metric")
    for label in calib:
        table.add_column(label, justify="right")
    rows = [(title, [getattr(r, name) for r in calib.values()]) for title, name in next(iter(calib.values())).COLUMNS]
    rows += [(f"ECE {name}", [r.classwise_ece[c] if c < len(r.classwise_ece) else None for r in calib.values()])
             for c, name in enumerate(result.classes)]
    for title, values in rows:
        table.add_row(title, *(number(v) for v in values))
    return table


def coverage_table(results: list, level: float = 0.9) -> Table:
    """Rows: CE next to informativeness (set size, full/empty sets) of
    :class:`~segcal.pipeline.results.CoverageSummary` results; one column per result."""
    table = Table(title=f"Conformal coverage (CE and empty sets averaged over the level grid; the rest at "
                        f"1 − α = {level})")
    table.add_column("")
    for r in results:
        table.add_column(r.method, justify="right")
    at = [r.at(level) for r in results]
    rows = [("calibration images", [r.n_cal for r in results], 0), ("groups", [r.num_groups for r in results], 0),
            ("mean CE", [r.mean_ce for r in results], 4),
            (f"coverage at {level}", [a and a.coverage for a in at], 4),
            (f"set size at {level}", [a and a.mean_set_size for a in at], 2),
            (f"set size / classes at {level}", [a and a.relative_set_size for a in at], 3),
            (f"> 1 class at {level}", [a and a.multi_fraction for a in at], 3),
            (f"full sets at {level}", [a and a.full_fraction for a in at], 3),
            ("empty sets", [r.empty_fraction for r in results], 3),
            ("trivial q̂ = 1", [r.trivial_fraction for r in results], 3)]
    for title, values, digits in rows:
        table.add_row(title, *(str(v) if digits == 0 and v is not None else number(v, digits) for v in values))
    return table


def evaluate(args: argparse.Namespace) -> int:
    from segcal.pipeline.evaluate import evaluate as run_evaluate

    if args.out:
        folder = Path(args.out)
    elif args.predictions:
        folder = Path(args.predictions) / "eval" / (Path(args.checkpoint).stem if args.checkpoint else "uncalibrated")
    elif args.checkpoint:
        folder = run_dir_of(args.checkpoint) / "eval" / f"{Path(args.checkpoint).stem}-{args.split}"
    else:
        raise ValueError("give a CHECKPOINT, or --predictions DIR with saved predictions")
    alphas = _alphas(args.alphas)
    with writing(folder, folder=True):
        source, bundle = build_source(args, args.split)
        _check_evaluate_memory(source, bundle, alphas, args)
        ev = run_evaluate(source, bundle, folder, name=folder.name, bins=args.bins,
                          boundary_width=args.boundary_width, alphas=alphas, set_alpha=args.alpha,
                          segmentation_only=args.segmentation_only, progress=not args.no_progress)
    r = ev.result
    if r.segmentation:
        out.print(metrics_table(r.segmentation, f"Segmentation ({r.segmentation.num_images} images)"))
    if r.calibration:
        out.print(calibration_table(r))
    if r.conformal:
        out.print(coverage_table([r.conformal]))
    if r.risk:
        out.print(risk_table(r.risk, r.classes))
    out.print(f"results: {folder / 'evaluation.json'}  figures: {folder / 'figures'}", highlight=False)
    return 0


def _check_evaluate_memory(source, bundle, alphas: list[float] | None, args: argparse.Namespace) -> None:
    """Print the evaluation's memory estimate and refuse it (unless ``--no-memory-check``) above the budget."""
    from segcal.conformal.quantile import COVERAGE_LEVELS
    from segcal.pipeline.memory import GIB, check_evaluate_memory

    conformal = bundle.conformal is not None and not args.segmentation_only
    levels = len(alphas) if alphas else len(COVERAGE_LEVELS)
    limit = None if args.max_memory is None else int(args.max_memory * GIB)
    if args.no_memory_check:
        return
    need, budget = check_evaluate_memory(source, levels, conformal, limit)
    shown = "" if budget is None else f" (budget {budget / GIB:.1f} GiB)"
    out.print(f"estimated peak memory: {need / GIB:.1f} GiB{shown}", highlight=False)


def _alphas(text: str | None) -> list[float] | None:
    """``--alphas A,B,...``: miscoverage levels, each strictly between 0 and 1."""
    if text is None:
        return None
    try:
        alphas = [float(a) for a in text.split(",")]
    except ValueError:
        raise ValueError(f"--alphas expects comma-separated numbers, e.g. 0.05,0.1,0.2; got {text!r}") from None
    from segcal.conformal.quantile import levels_from_alpha

    levels_from_alpha(alphas, "--alphas")  # checked even when the checkpoint has no conformal calibrator
    return alphas


def _params(items: list[str] | None) -> dict[str, Any]:
    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects NAME=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def params_table(method: str | None) -> Table:
    """``--list-params``: every tunable parameter of ``method`` (or of every method) with its default."""
    from segcal.pipeline.calibrate import method_params

    table = Table(title="Method parameters (segcal calibrate --method M --param NAME=VALUE)")
    for column in ("method", "parameter", "default"):
        table.add_column(column)
    for name in [method] if method else METHOD_NAMES:
        for i, (param, default) in enumerate(method_params(name).items()):
            table.add_row(name if i == 0 else "", param, repr(default))
        table.add_section()
    return table


def calibrate(args: argparse.Namespace) -> int:
    from segcal.calibrated import save_bundle
    from segcal.methods import CONFORMAL_METHODS, check_method
    from segcal.pipeline.calibrate import calibrate as run_calibrate

    if args.list_params:
        out.print(params_table(args.method))
        return 0
    if args.method is None:
        raise ValueError("--method is required (one of: " + ", ".join(METHOD_NAMES) + ")")
    check_method(args.method)
    if args.out:
        target = Path(args.out)
    elif args.predictions:
        target = Path(args.predictions) / "calibration" / f"{args.method}.pt"  # a subfolder: not read as a prediction
    elif args.checkpoint:
        ckpt = Path(args.checkpoint)
        target = ckpt.with_name(f"{ckpt.stem}.{args.method}{ckpt.suffix}")
    else:
        raise ValueError("give a CHECKPOINT, or --predictions DIR with saved predictions")
    with writing(target):
        source, bundle = build_source(args, args.split)
        params = _method_params(args)
        _print_memory_plan(source, args, params)
        bundle, record = run_calibrate(source, args.method, bundle=bundle, n_cal=args.n_cal, params=params,
                                       seed=args.seed, progress=not args.no_progress,
                                       memory_check=not args.no_memory_check, max_memory=args.max_memory)
        path = save_bundle(bundle, target, None if args.predictions else args.checkpoint)
    out.print(f"fitted {args.method} on {record['n_cal']} calibration images in {record['seconds']:.1f} s",
              highlight=False)
    if bundle.conformal is not None and args.method in CONFORMAL_METHODS:
        warning = bundle.conformal.trivial_warning(0.1)
        if warning:
            err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    shown = {k: v for k, v in record["info"].items()
             if isinstance(v, (int, float, str)) or k in ("temperature", "margins")}
    if shown:
        out.print(yaml.safe_dump(shown, sort_keys=False, width=100).rstrip(), highlight=False)
    hint = f"--predictions TEST_DIR {path}" if args.predictions else str(path)
    out.print(f"calibrated checkpoint: {path}\nnext: segcal evaluate {hint}", highlight=False)
    return 0


def _print_memory_plan(source, args: argparse.Namespace, params: dict) -> None:
    """The memory estimate of a conformal method and its budget, before the pass."""
    from segcal.pipeline.memory import GIB, memory_plan

    limit = None if args.max_memory is None else int(args.max_memory * GIB)
    plan = memory_plan(source, args.method, args.n_cal, params, limit)
    if plan is not None:
        budget = "" if plan[1] is None else f" (budget {plan[1] / GIB:.1f} GiB)"
        out.print(f"estimated peak memory: {plan[0] / GIB:.1f} GiB{budget}", highlight=False)


RISK_FLAGS = {"loss": "loss", "alpha": "alpha", "procedure": "procedure", "delta": "delta",
              "target_class": "target_class", "structure": "structure", "inner": "inner"}
"""``args`` attribute → parameter of the risk methods (``--structure``/``--inner``: margin only)."""


def _method_params(args: argparse.Namespace) -> dict:
    """``--param`` values, plus ``score`` from ``--score`` (conformal methods) and the risk-control flags
    (risk methods); each may be given once, as a flag or a ``--param``."""
    from segcal.methods import CONFORMAL_METHODS, RISK_METHODS

    params = _params(args.param)
    flags = {name: getattr(args, attr) for attr, name in RISK_FLAGS.items()
             if getattr(args, attr) is not None and getattr(args, attr) is not False}
    if args.score is not None:
        if args.method not in CONFORMAL_METHODS:
            raise ValueError(f"--score applies to conformal methods; {args.method} is not one")
        flags["score"] = args.score
    if flags.keys() & RISK_FLAGS.keys() and args.method not in RISK_METHODS:
        given = ", ".join(f"--{k.replace('_', '-')}" for k in flags if k in RISK_FLAGS)
        raise ValueError(f"{given} applies to --method risk or margin, not {args.method}")
    if args.method == "risk" and {"structure", "inner"} & flags.keys():
        raise ValueError("--structure and --inner apply to --method margin")
    for name, value in flags.items():
        if name in params:
            raise ValueError(f"give {name} once: --{name.replace('_', '-')} or --param {name}=..., not both")
        params[name] = value
    target = params.get("target_class")
    if isinstance(target, str) and target.isdigit():
        params["target_class"] = int(target)
    return params


def predict(args: argparse.Namespace) -> int:
    from segcal.pipeline.predict import predict as run_predict

    with writing(Path(args.out)):
        source, bundle = build_source(args, args.split)
        summary = run_predict(source, args.out, bundle, args.alpha, args.overwrite, progress=not args.no_progress,
                              original_size=args.original_size)
    sets = f", mean set size {summary['mean_set_size']:.3f} at α = {args.alpha}" if "mean_set_size" in summary else ""
    out.print(f"wrote {summary['num_images']} predictions ({summary['calibration']}{sets}) to {args.out}",
              highlight=False)
    return 0


def sweep(args: argparse.Namespace) -> int:
    from segcal.pipeline.sweep import run_sweep

    if bool(args.predictions) != bool(args.cal_predictions):
        raise ValueError("--predictions (test) and --cal-predictions (calibration pool) go together")
    if not args.out and not args.predictions and not args.checkpoint:
        raise ValueError("give a CHECKPOINT, or --predictions DIR with saved predictions")
    folder = Path(args.out) if args.out else (Path(args.predictions) / "sweep" if args.predictions
                                              else run_dir_of(args.checkpoint) / "sweep")
    params = {"kandinsky-kmeans": {"num_groups": yaml.safe_load(args.num_groups)}} if args.num_groups else {}
    if args.marginal:
        params = {m: {**params.get(m, {}), "marginal": True} for m in args.methods.split(",")}
    with writing(folder, folder=True):
        test, bundle = build_source(args, args.split)
        cal, _ = build_source(args, args.cal_split, args.cal_predictions)
        result = run_sweep(cal, test, folder, methods=args.methods.split(","),
                           n_cals=_n_cals(args.n_cals, len(cal)), repeats=args.repeats, seed=args.seed,
                           bundle=bundle, params=params, score=args.score, restart=args.restart,
                           progress=not args.no_progress)
    out.print(sweep_table(result))
    out.print(f"results: {folder / 'sweep.json'}  table: {folder / 'sweep.csv'}  figure: {folder / 'figures'}",
              highlight=False)
    return 0


def _n_cals(text: str | None, pool: int) -> list[int]:
    """``--n-cals``: the given sizes, or the default sizes below the pool size plus the whole pool."""
    from segcal.methods import DEFAULT_N_CALS

    if text is None:
        return sorted({n for n in DEFAULT_N_CALS if n < pool} | {pool})
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise ValueError(f"--n-cals expects comma-separated integers, got {text!r}") from None


def _sweep_columns() -> tuple[tuple[str, str, int], ...]:
    from segcal.conformal.sweep import AT_90

    return (("mean_ce", "mean CE ± std", 4), (AT_90[0], "coverage at 0.9", 3), (AT_90[1], "set size at 0.9", 2),
            (AT_90[2], "> 1 class at 0.9", 3), (AT_90[3], "full sets at 0.9", 3))


def sweep_table(result: dict) -> Table:
    """One row per (n_cal, method): CE mean ± std next to coverage, set size and full sets at 1 − α = 0.9."""
    table = Table(title=f"Low-data sweep, mean over {result['repeats']} random calibration subsets")
    table.add_column("n_cal", justify="right")
    table.add_column("method")
    for _, title, _ in _sweep_columns():
        table.add_column(title, justify="right")
    rows = {(r["method"], r["n_cal"]): r for r in result["summary"]}
    for n in result["n_cals"]:
        for m in result["methods"]:
            r, cells = rows[(m, n)], []
            for key, _, digits in _sweep_columns():
                mean, std = r.get(f"{key}_mean"), r.get(f"{key}_std")
                cell = "–" if mean is None else f"{mean:.{digits}f}"
                cells.append(cell + (f" ± {std:.{digits}f}" if key == "mean_ce" and mean is not None else ""))
            table.add_row(str(n) if m == result["methods"][0] else "", m, *cells)
        table.add_section()
    return table


def report(args: argparse.Namespace) -> int:
    from segcal.report.build import build_report

    target = Path(args.out) if args.out else Path(args.run_dir) / "report.html"
    if not Path(args.run_dir).is_dir():
        raise FileNotFoundError(f"run directory not found: {args.run_dir}")
    with writing(target):
        path = build_report(args.run_dir, target)
    out.print(f"report: {path}", highlight=False)
    return 0
