"""The layers of docs/architecture.md hold: imports only go downwards, the core is pure, no import cycles."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = ("stats", "metrics", "calibrators", "conformal", "risk")
LAYER = {  # a module may import from its own layer and the layers below
    "_lazy": 0, "errors": 0, "estimator": 0, "methods": 0, "outputs": 0, "batch": 0, "classes": 0, "io": 0,
    "configio": 0,
    "stats": 1, "metrics": 2, "calibrators": 2, "conformal": 2, "risk": 2,
    "data": 3, "models": 3, "calibrated": 3, "plots": 3,
    "pipeline": 4, "refine": 4, "report": 4, "cli": 5,
}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (SRC / "segcal").rglob("*.py")}


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (function-level imports are lazy on purpose)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {i for i in _top_level_imports(p) if i.startswith("segcal")} for m, p in mods.items()}


def test_every_package_has_a_layer(graph):
    assert {_part(m) for m in graph if _part(m)} <= set(LAYER)


def test_imports_only_go_downwards(graph):
    wrong = [(m, i) for m, imports in graph.items() if _part(m) for i in imports
             if _part(i) and LAYER[_part(i)] > LAYER[_part(m)]]
    assert not wrong


def test_the_core_is_pure():
    banned = ("lightning", "matplotlib", "segcal.pipeline", "segcal.models", "segcal.data", "segcal.plots")
    for part in CORE:
        for path in (SRC / "segcal" / part).rglob("*.py"):
            text = path.read_text()
            assert not [b for b in banned if f"import {b}" in text or f"from {b}" in text], path
            assert "open(" not in text and ".write_text(" not in text and "torch.save(" not in text, path


def test_no_import_cycles(graph):
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for dep in graph.get(m, ()):
            dep = dep if dep in graph else dep.rsplit(".", 1)[0]
            if dep not in graph or dep == m:
                continue
            assert state.get(dep) != 1, " → ".join([*stack, m, dep])
            if dep not in state:
                visit(dep, [*stack, m])
        state[m] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
