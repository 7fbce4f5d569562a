"""Lazy package exports (PEP 562): ``from segcal.data import FolderDataset`` imports only what it needs, so
``segcal --help`` and config validation never import torch."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, modules: dict[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package`` exporting, on first access, the space-separated
    names of each ``{module: "Name other_name"}`` entry."""
    exports = {name: module for module, names in modules.items() for name in names.split()}
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, list(exports)
