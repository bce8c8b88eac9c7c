"""Effects of an arm over the baseline, with confidence intervals over seeds.

Per seed the effect is ``arm metric - baseline metric`` (both trained with that seed on the same
data and budget): pairing by seed removes what the seed does to both. Over the seeds, the effect
is given as the mean and a **95 % Student-t interval**, ``mean +- t(0.975, n-1) * sd / sqrt(n)``.
Not a bootstrap: with the handful of seeds an ablation can afford (3), a bootstrap over seeds has
only a few distinct resamples and its percentile interval is too narrow; the t-interval is the
standard for small paired samples (it assumes the per-seed effects are roughly normal). One seed
gives no interval.

The improvement is the same per seed as a percentage of the baseline, signed so that positive is
better whichever way the metric points (a Fréchet distance that drops 10 % is +10 %), which is how
the plan states its claims. A baseline of 0 at some seed leaves it undefined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from optimizer_tool.ablate.claims import Claim

CONFIDENCE = 0.95
# t(0.975, df) for df = 1..30; above 30 the df=30 value is used (slightly wider than exact: conservative).
_T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip

BETTER = "better"
WORSE = "worse"
WITHIN_NOISE = "within noise"
ONE_SEED = "1 seed: no CI"


def t_quantile(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"a t-interval needs at least 1 degree of freedom, got {df}")
    return _T_975[min(df, len(_T_975)) - 1]


@dataclass(frozen=True)
class Interval:
    """The mean of per-seed values and its 95 % t-interval (none from a single value)."""

    mean: float
    lo: Optional[float]
    hi: Optional[float]
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def half_width(self) -> Optional[float]:
        return None if self.hi is None else self.hi - self.mean

    def to_dict(self) -> dict[str, object]:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n, "per_seed": list(self.values)}


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean and 95 % Student-t interval of ``values`` (at least one)."""
    if not values:
        raise ValueError("no values: an interval needs at least one seed")
    n, mean = len(values), math.fsum(values) / len(values)
    if n == 1:
        return Interval(mean, None, None, tuple(values))
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, tuple(values))


@dataclass(frozen=True)
class Effect:
    """What an arm changes in one metric, over the seeds it shares with the baseline."""

    metric: str
    better: str  # "higher" or "lower"
    seeds: tuple[int, ...]
    difference: Interval  # arm - baseline, in the metric's units
    improvement: Optional[Interval]  # percent of the baseline, positive = better

    @property
    def verdict(self) -> str:
        """better / worse when the interval of the difference excludes 0, else within noise."""
        lo, hi = self.difference.lo, self.difference.hi
        if lo is None or hi is None:
            return ONE_SEED
        if lo <= 0 <= hi:
            return WITHIN_NOISE
        return BETTER if (lo > 0) == (self.better == "higher") else WORSE

    def to_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "better": self.better,
            "seeds": list(self.seeds),
            "difference": self.difference.to_dict(),
            "improvement_percent": None if self.improvement is None else self.improvement.to_dict(),
            "verdict": self.verdict,
        }


def effect(metric: str, better: str, baseline: Mapping[int, float], arm: Mapping[int, float]) -> Optional[Effect]:
    """The paired effect over the seeds both have; None when they share none."""
    if better not in ("higher", "lower"):
        raise ValueError(f"{metric}: 'better' must be 'higher' or 'lower', got {better!r}")
    seeds = tuple(sorted(set(baseline) & set(arm)))
    if not seeds:
        return None
    difference = mean_interval([arm[s] - baseline[s] for s in seeds])
    sign = 1.0 if better == "higher" else -1.0
    improvement = None
    if all(baseline[s] != 0 for s in seeds):
        improvement = mean_interval([sign * (arm[s] - baseline[s]) / abs(baseline[s]) * 100 for s in seeds])
    return Effect(metric, better, seeds, difference, improvement)


def against_claim(improvement: Optional[Interval], claim: Optional[Claim]) -> str:
    """Where the claimed range lies relative to the measured interval of the improvement."""
    if claim is None:
        return "no claim"
    if improvement is None or improvement.lo is None or improvement.hi is None:
        return "cannot tell"
    if improvement.hi < claim.low:
        return "CI below claim"
    if improvement.lo > claim.high:
        return "CI above claim"
    return "CI overlaps claim"
