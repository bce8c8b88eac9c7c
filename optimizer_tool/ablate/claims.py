"""What OPTIMIZATION_PLAN.md claims each optimization buys: its "Expected Results Summary" table.

The plan gives one "quality gain" per optimization, in percent, without naming the metric; where
it does name one it is FVD ("FVD improvement: -10% to -20%" for EMA, "+25-40% FVD improvement"
combined). The ablation therefore sets each claim beside the measured improvement of the Fréchet
distance (lower is better, so an improvement is a decrease). Keys the plan gives no number for
(zero-snr, clipping, monitoring) have no claim.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    """A claimed improvement range in percent, and where in the plan it is stated."""

    low: float
    high: float
    source: str

    def label(self) -> str:
        return f"+{self.low:g}-{self.high:g}%"

    def to_dict(self) -> dict[str, object]:
        return {"low_percent": self.low, "high_percent": self.high, "source": self.source}


_TABLE = "OPTIMIZATION_PLAN.md, Expected Results Summary"

CLAIMS: dict[str, Claim] = {
    "ema": Claim(10, 15, _TABLE),
    "cosine": Claim(5, 8, _TABLE),
    "offset": Claim(2, 3, _TABLE),
    "vpred": Claim(3, 5, _TABLE),
    "lr-schedule": Claim(2, 4, _TABLE),
    "lpips": Claim(5, 10, _TABLE),
    "resolution": Claim(20, 30, _TABLE + " (96x96)"),
}

# The plan's "Combined Expected Improvement (without resolution increase)": every key above but resolution.
COMBINED = Claim(25, 40, "OPTIMIZATION_PLAN.md, Combined Expected Improvement (without resolution increase)")
COMBINED_KEYS = frozenset(key for key in CLAIMS if key != "resolution")


def claim_for(keys: tuple[str, ...]) -> Claim | None:
    """The plan's claim for an arm of these keys: a key's own, or the combined one when the arm holds
    exactly the combination the plan adds up; none for other combinations (the plan gives none)."""
    if len(keys) == 1:
        return CLAIMS.get(keys[0])
    return COMBINED if frozenset(keys) == COMBINED_KEYS else None
