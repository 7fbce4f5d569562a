"""Choosing λ from a loss table ``[n, Λ]``: conformal risk control, RCPS and Learn-then-Test.

- **CRC** (Angelopoulos et al., ICLR 2024): the smallest λ with ``n/(n+1) · R̂(λ) + B/(n+1) ≤ α``; then
  ``E[L_test(λ̂)] ≤ α`` for losses in ``[0, B]`` non-increasing in λ.
- **RCPS** (Bates et al., JACM 2021): the smallest λ whose upper confidence bound, and that of every larger λ,
  is below α; then ``P(R(λ̂) ≤ α) ≥ 1 − δ``. The bound is Hoeffding–Bentkus (``hb``, the default) or Hoeffding.
- **LTT** (Angelopoulos et al., 2021): Hoeffding–Bentkus p-values of ``H_λ: R(λ) > α`` tested in a fixed
  sequence from the safe end of the grid, stopping at the first one not rejected; any loss, monotone or not,
  and ``P(R(λ̂) ≤ α) ≥ 1 − δ``.

All three scan from the safe end (largest λ for CRC/RCPS, ``start`` for LTT) and stop at the first λ that fails,
so a non-monotone empirical curve can only make the answer more cautious. When even the safe end fails, the
answer is *infeasible*: the caller falls back to its trivial output and says so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

PROCEDURES = ("crc", "rcps", "ltt")
BOUNDS = ("hb", "hoeffding")


@dataclass(frozen=True)
class Selection:
    """The λ a procedure chose: ``index`` into the grid (``None``: infeasible), the calibration risk there and
    the quantity compared with α (CRC's adjusted risk, RCPS's upper bound, LTT's p-value)."""

    procedure: str
    alpha: float
    delta: float | None
    index: int | None
    risk: float
    statistic: float
    n: int

    @property
    def feasible(self) -> bool:
        return self.index is not None

    def to_dict(self) -> dict:
        return asdict(self)


def check_level(value: float, name: str) -> float:
    """``value`` as a float if it lies strictly between 0 and 1, else one clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return float(value)


def check_monotone(losses: torch.Tensor, tol: float = 1e-12) -> bool:
    """Whether every row of ``losses [n, Λ]`` is non-increasing in λ."""
    return bool((losses.diff(dim=1) <= tol).all())


def _last_valid_from_top(valid: torch.Tensor) -> int | None:
    """Scanning ``valid [Λ]`` from the largest index down, the last index of the valid run (``None``: none)."""
    if not bool(valid[-1]):
        return None
    failing = torch.nonzero(~valid).flatten()
    return 0 if failing.numel() == 0 else int(failing[-1]) + 1


def _selection(procedure: str, alpha: float, delta: float | None, index: int | None, risk: torch.Tensor,
               statistic: torch.Tensor, n: int, safe: int = -1) -> Selection:
    """(Infeasible: the risk and statistic at the safe end ``safe`` of the grid.)"""
    at = index if index is not None else safe
    return Selection(procedure, alpha, delta, index, float(risk[at]), float(statistic[at]), n)


def crc(losses: torch.Tensor, alpha: float, bound: float = 1.0) -> Selection:
    """Conformal risk control on ``losses [n, Λ]`` (values in ``[0, bound]``, non-increasing in λ)."""
    n = losses.shape[0]
    risk = losses.double().mean(0)
    adjusted = n / (n + 1) * risk + bound / (n + 1)
    return _selection("crc", alpha, None, _last_valid_from_top(adjusted <= alpha), risk, adjusted, n)


def _h1(r: torch.Tensor, a: float) -> torch.Tensor:
    """Kullback–Leibler divergence of Bernoulli(r) from Bernoulli(a), for r ≤ a (0·log 0 = 0)."""
    first = torch.where(r > 0, r * torch.log(r.clamp(min=1e-300) / a), torch.zeros_like(r))
    return first + (1 - r) * torch.log((1 - r) / (1 - a))


def binomial_cdf(k: torch.Tensor, n: int, p: float) -> torch.Tensor:
    """``P(Binomial(n, p) ≤ k)`` for integer-valued ``k`` (float64), from log-probabilities."""
    j = torch.arange(n + 1, dtype=torch.float64)
    log_pmf = (math.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma(n - j + 1)
               + j * math.log(p) + (n - j) * math.log1p(-p))
    cdf = torch.logcumsumexp(log_pmf, 0).exp().clamp(max=1.0)
    index = k.clamp(-1, n).long()
    return torch.where(index < 0, torch.zeros_like(k, dtype=torch.float64), cdf[index.clamp(min=0)])


def hb_p_values(risk: torch.Tensor, n: int, alpha: float, binary: bool = False) -> torch.Tensor:
    """Hoeffding–Bentkus p-values of ``H: R > α`` for empirical risks ``[Λ]`` of ``n`` losses in [0, 1]:
    ``min(exp(−n·h1(min(R̂, α), α)), c·P(Bin(n, α) ≤ ⌈nR̂⌉))`` with ``c = e`` (``1`` for 0/1 losses)."""
    risk = risk.double()
    hoeffding = torch.exp(-n * _h1(risk.clamp(max=alpha), alpha))
    bentkus = (1.0 if binary else math.e) * binomial_cdf(torch.ceil(n * risk - 1e-9), n, alpha)
    return torch.minimum(hoeffding, bentkus).clamp(max=1.0)


def rcps(losses: torch.Tensor, alpha: float, delta: float, bound: str = "hb") -> Selection:
    """Risk-controlling prediction sets on ``losses [n, Λ]`` (in [0, 1], non-increasing in λ)."""
    n = losses.shape[0]
    risk = losses.double().mean(0)
    if bound == "hoeffding":
        upper = risk + math.sqrt(math.log(1 / delta) / (2 * n))
        return _selection("rcps", alpha, delta, _last_valid_from_top(upper < alpha), risk, upper, n)
    if bound != "hb":
        raise ValueError(f"bound must be one of {', '.join(BOUNDS)}; got {bound!r}")
    p = hb_p_values(risk, n, alpha, binary=_binary(losses))
    return _selection("rcps", alpha, delta, _last_valid_from_top(p <= delta), risk, p, n)


def ltt(losses: torch.Tensor, alpha: float, delta: float, start: str = "top") -> Selection:
    """Learn-then-Test with fixed-sequence testing from ``start`` (``"top"``: the largest λ, for losses that
    fall with λ; ``"bottom"``: the smallest λ, e.g. the FDR of small masks) on ``losses [n, Λ]`` in [0, 1]."""
    n = losses.shape[0]
    risk = losses.double().mean(0)
    p = hb_p_values(risk, n, alpha, binary=_binary(losses))
    rejected = p <= delta
    if start == "top":
        index = _last_valid_from_top(rejected)
    elif start == "bottom":
        flipped = _last_valid_from_top(rejected.flip(0))
        index = None if flipped is None else risk.numel() - 1 - flipped
    else:
        raise ValueError(f"start must be 'top' or 'bottom', got {start!r}")
    return _selection("ltt", alpha, delta, index, risk, p, n, -1 if start == "top" else 0)


def _binary(losses: torch.Tensor) -> bool:
    return bool(((losses == 0) | (losses == 1)).all())


def select(losses: torch.Tensor, procedure: str, alpha: float, delta: float | None = None, bound: str = "hb",
           start: str = "top") -> Selection:
    """Run ``procedure`` (``crc``, ``rcps``, ``ltt``) at risk level ``alpha`` (and ``delta``)."""
    alpha = check_level(alpha, "alpha")
    if losses.ndim != 2 or losses.shape[0] == 0:
        raise ValueError(f"losses must be a non-empty table [n, Λ], got shape {tuple(losses.shape)}")
    if procedure == "crc":
        return crc(losses, alpha)
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure must be one of {', '.join(PROCEDURES)}; got {procedure!r}")
    delta = check_level(delta, "delta")
    return rcps(losses, alpha, delta, bound) if procedure == "rcps" else ltt(losses, alpha, delta, start)
