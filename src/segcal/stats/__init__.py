"""Mergeable streaming accumulators: binned calibration sums and conformal score histograms."""
from segcal._lazy import lazy_exports

_EXPORTS = {
    "BinnedStats": "segcal.stats.binned",
    "equal_width_bins": "segcal.stats.binned",
    "logit_bin_edges": "segcal.stats.binned",
    "logit_bins": "segcal.stats.binned",
    "equal_mass_ece": "segcal.stats.equal_mass",
    "ScoreBins": "segcal.stats.score_histogram",
    "ScoreHistogram": "segcal.stats.score_histogram",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
