"""Mergeable streaming accumulators: binned calibration sums and conformal score histograms."""
from segcal._lazy import lazy_exports

_EXPORTS = {"segcal.stats.binned": "BinnedStats equal_width_bins logit_bin_edges logit_bins",
            "segcal.stats.equal_mass": "equal_mass_ece", "segcal.stats.score_histogram": "ScoreBins ScoreHistogram"}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
