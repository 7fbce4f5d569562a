"""Calibrators by method name, and rebuilding a fitted one from its ``state_dict``.

===============  ====================================  ================  =========================
method           class                                 heads             arg-max preserved
===============  ====================================  ================  =========================
``temperature``  :class:`TemperatureScaling`           softmax, sigmoid  yes
``vector``       :class:`VectorScaling`                softmax, sigmoid  only if all ``T_c`` equal
``selective``    :class:`SelectiveScaling`             softmax, sigmoid  yes
``lts``          :class:`LocalTemperatureScaling`      softmax, sigmoid  yes
``histogram``    :class:`HistogramBinning`             softmax, sigmoid  no (mapped, renormalised)
``isotonic``     :class:`IsotonicCalibration`          softmax, sigmoid  no (mapped, renormalised)
``matrix``       :class:`MatrixScaling`                softmax, sigmoid  no
``dirichlet``    :class:`DirichletCalibration`         softmax, sigmoid  no
===============  ====================================  ================  =========================

A checkpoint stores ``calibrator.state_dict()`` (it carries its ``"method"``);
:func:`load_calibrator` rebuilds the fitted calibrator from it.
"""
from __future__ import annotations

from typing import Any

from segcal.calibrators.base import Calibrator
from segcal.calibrators.binning import HistogramBinning, IsotonicCalibration
from segcal.calibrators.lts import LocalTemperatureScaling
from segcal.calibrators.matrix import DirichletCalibration, MatrixScaling
from segcal.calibrators.selective import SelectiveScaling
from segcal.calibrators.temperature import TemperatureScaling, VectorScaling

CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.method: cls for cls in (TemperatureScaling, VectorScaling, MatrixScaling, DirichletCalibration,
                                SelectiveScaling, LocalTemperatureScaling, HistogramBinning, IsotonicCalibration)
}


def make_calibrator(method: str, **hyper_parameters: Any) -> Calibrator:
    """An unfitted calibrator of ``method`` (one of :data:`CALIBRATORS`) with the given hyper-parameters."""
    if method not in CALIBRATORS:
        raise ValueError(f"method must be one of {sorted(CALIBRATORS)}, got {method!r}")
    return CALIBRATORS[method](**hyper_parameters)


def load_calibrator(state: dict[str, Any]) -> Calibrator:
    """The fitted calibrator saved as ``state`` (from :meth:`Calibrator.state_dict`)."""
    if not isinstance(state, dict) or "method" not in state:
        raise ValueError("state must be a dict from Calibrator.state_dict() with a 'method' key")
    if state["method"] not in CALIBRATORS:
        raise ValueError(f"state['method'] must be one of {sorted(CALIBRATORS)}, got {state['method']!r}")
    return CALIBRATORS[state["method"]].from_state_dict(state)
