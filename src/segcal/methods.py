"""The calibration methods by their one name (CLI, Python, results and files), without importing them.

The CLI builds its help from these tables, so ``segcal --help`` stays light; the classes live in
:mod:`segcal.calibrators` (recalibration) and :mod:`segcal.conformal` (per-pixel conformal).
"""
from __future__ import annotations

from typing import Any

RECALIBRATION_METHODS = ("temperature", "vector", "matrix", "dirichlet", "selective", "lts", "histogram", "isotonic")
"""Map logits to calibrated logits (:data:`segcal.calibrators.CALIBRATORS` has the same keys)."""

CONFORMAL_METHODS: dict[str, tuple[str, dict[str, Any]]] = {  # name → (grouping, default parameters)
    "pixel": ("pixel", {}), "image": ("image", {}), "kandinsky-kmeans": ("kmeans", {}),
    "kandinsky-annuli": ("annuli", {}),
    "kandinsky-auto": ("kmeans", {"num_groups": "auto"}),  # number of groups chosen on held-out images
    "local": ("local", {}),  # locally pooled, globally conformalized (segcal.conformal.local_calibrator)
}
"""Per-pixel conformal calibration: the grouping of :class:`~segcal.conformal.ConformalCalibrator`, or
``"local"`` for :class:`~segcal.conformal.local_calibrator.LocalCalibrator`."""

RISK_METHODS = ("risk", "margin")
"""Mask-level guarantees (:mod:`segcal.risk`): ``risk`` controls the FNR, FDR or miscoverage of thresholded
masks / sets, ``margin`` calibrates dilation (and erosion) margins of the predicted mask."""

METHODS = (*RECALIBRATION_METHODS, *CONFORMAL_METHODS, *RISK_METHODS)

RISK_LOSSES = ("fnr", "fdr", "miscoverage")
"""Losses of ``--method risk`` (:mod:`segcal.risk.losses`)."""
MARGIN_LOSSES = ("cover", "fnr")
"""Losses of the outer mask of ``--method margin``."""
PROCEDURES = ("crc", "rcps", "ltt")
STRUCTURES = ("square", "cross", "disk")

SCORES = ("lac", "aps", "raps")
"""Conformity scores of every conformal method (:mod:`segcal.conformal.scores` registers them)."""

DEFAULT_N_CALS = (10, 25, 50, 100, 200, 500)
"""Calibration set sizes of the low-data sweep."""


def check_method(method: str) -> str:
    """``method`` if it is a known name, else ``ValueError`` listing them."""
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    return method
