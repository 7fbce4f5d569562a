"""Reading a segcal run directory for the report: config, summaries, evaluations, sweep.

Unreadable files do not stop the report: they are collected in :attr:`RunInputs.problems` and shown.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from segcal.io.jsonio import read_json
from segcal.metrics.calibration_results import lookup
from segcal.pipeline.results import EvaluationResult, FigureEntry, SegmentationQuality
from segcal.report.html import Fig

T = TypeVar("T")


def dig(d: Any, *keys: Any) -> Any:
    """``d[k0][k1]...`` or ``None`` where any level is absent."""
    return lookup(d, keys)


@dataclass
class EvaluationFolder:
    """One ``eval/<name>/`` folder: its typed results (figure paths are relative to the folder)."""
    folder: Path
    result: EvaluationResult

    @property
    def name(self) -> str:
        return self.result.name

    def class_names(self, n: int) -> list[str]:
        """The first ``n`` class names, ``class i`` where the evaluation names fewer."""
        names = self.result.classes[:n]
        return names + [f"class {i}" for i in range(len(names), n)]

    def listed(self, group: str) -> list[FigureEntry]:
        """The figure entries of ``group``."""
        return [f for f in self.result.figures if f.group == group]

    def figures(self, group: str, run_dir: Path) -> list[Fig]:
        return figures_from(self.listed(group), group, self.folder, run_dir)


@dataclass
class RunInputs:
    """Everything the report reads from a run directory; ``problems`` collects unreadable files."""
    run_dir: Path
    config_text: str | None = None
    config: dict | None = None
    summary: dict | None = None
    val_metrics: SegmentationQuality | None = None
    evaluations: list[EvaluationFolder] = field(default_factory=list)
    sweep: dict | None = None
    problems: list[str] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.run_dir).as_posix()
        except ValueError:
            return str(path)

    def read_json(self, path: Path) -> dict | None:
        if not path.is_file():
            return None
        try:
            data = read_json(path)
        except (OSError, ValueError) as exc:
            self.problems.append(f"could not read {self.rel(path)}: {exc}")
            return None
        if not isinstance(data, dict):
            self.problems.append(f"could not read {self.rel(path)}: expected a JSON object")
            return None
        return data

    def training_figures(self) -> list[Fig]:
        figs = self.run_dir / "figures"
        return [Fig("Training curves", figs / "curves.png", "figures/curves.png"),
                Fig("Sample predictions (image / true mask / prediction)", figs / "samples.png", "figures/samples.png")]

    @property
    def conformal(self) -> list[EvaluationFolder]:
        return [e for e in self.evaluations if e.result.conformal is not None]


def figures_from(entries: list, group: str, folder: Path, run_dir: Path) -> list[Fig]:
    """The figures of ``group`` in ``entries`` (:class:`FigureEntry` or their JSON; paths relative to ``folder``)."""
    out = []
    for f in entries:
        f = FigureEntry(**{k: str(f.get(k) or "") for k in ("key", "title", "path", "group")}) if isinstance(f, dict) \
            else f
        if isinstance(f, FigureEntry) and f.group == group and f.path:
            path = folder / f.path
            shown = path.relative_to(run_dir).as_posix() if path.is_relative_to(run_dir) else str(path)
            out.append(Fig(f.title or f.key or path.stem, path, shown, f.key))
    return out


def load_run(run_dir: str | Path) -> RunInputs:
    """Read every known part of ``run_dir``; raise if the folder is absent or holds none of them."""
    root = Path(run_dir)
    if not root.exists():
        raise FileNotFoundError(f"run_dir: folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"run_dir: expected a run directory, got a file: {root}")
    run = RunInputs(root)
    config_path = root / "config.yaml"
    if config_path.is_file():
        run.config_text = config_path.read_text(encoding="utf-8", errors="replace")
        try:
            loaded = yaml.safe_load(run.config_text)
            run.config = loaded if isinstance(loaded, dict) else None
        except yaml.YAMLError as exc:
            run.problems.append(f"could not parse config.yaml: {exc}")
    run.summary = run.read_json(root / "summary.json")
    val = run.read_json(root / "val_metrics.json")
    run.val_metrics = None if val is None else SegmentationQuality.from_dict(val)
    for path in sorted((root / "eval").glob("*/evaluation.json")):
        data = run.read_json(path)
        if data is None:
            continue
        try:
            result = EvaluationResult.from_dict({"name": path.parent.name, **data})
        except (TypeError, ValueError) as exc:
            run.problems.append(f"could not read {run.rel(path)}: {exc}")
            continue
        run.evaluations.append(EvaluationFolder(path.parent, result))
    run.sweep = run.read_json(root / "sweep" / "sweep.json")
    found = (any(x is not None for x in (run.config_text, run.summary, run.val_metrics, run.sweep))
             or run.evaluations or run.problems or any(f.path.is_file() for f in run.training_figures()))
    if not found:
        raise ValueError(f"run_dir: {root} contains none of config.yaml, summary.json, val_metrics.json, "
                         "figures/, eval/*/evaluation.json, sweep/sweep.json — is it a segcal run directory?")
    return run


def per_class(e: EvaluationFolder, values: Any) -> dict[str, Any]:
    """Class name → value for a per-class list of ``e`` (``{}`` if it is not a list)."""
    return dict(zip(e.class_names(len(values)), values)) if isinstance(values, list) else {}


def with_class_columns(rows: list[list[Any]], by_class: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Append one column per class named in any row (union in order of appearance)."""
    classes = list(dict.fromkeys(c for d in by_class for c in d))
    return classes, [r + [d.get(c) for c in classes] for r, d in zip(rows, by_class)]
