"""Mask-level guarantees: conformal risk control (CRC, RCPS, LTT) of thresholded masks and sets, and
morphological margins (dilated / eroded masks that hold the truth). Pure tensor code, like the other core layers.

- :class:`RiskController`: the probability threshold that controls the FNR, FDR or multiclass miscoverage;
- :class:`MarginController`: the dilation (and erosion) margins of the predicted mask;
- :mod:`segcal.risk.procedures`: CRC, RCPS and LTT on any per-image loss table;
- :mod:`segcal.risk.morphology`: dilation, erosion and distance maps (2D and 3D, CPU or GPU).
"""
from segcal.risk.base import risk_from_state_dict
from segcal.risk.margin import MarginController, Margins
from segcal.risk.procedures import PROCEDURES, Selection
from segcal.risk.threshold import RiskController

__all__ = ["PROCEDURES", "MarginController", "Margins", "RiskController", "Selection", "risk_from_state_dict"]
