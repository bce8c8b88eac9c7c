"""Percentile bootstrap confidence intervals over clips."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Estimate", "bootstrap"]

N_RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A metric on all clips and its percentile bootstrap interval."""

    value: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.value, "lo": self.lo, "hi": self.hi}

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.lo:.4g}, {self.hi:.4g}]"


def bootstrap(
    samples: tuple[np.ndarray, ...],
    statistic: Callable[..., float] = np.mean,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    debias: bool = False,
) -> Estimate:
    """``statistic(*samples)`` and its ``confidence`` percentile interval.

    Each resample draws the rows of every array in ``samples`` with replacement,
    independently (for a two-sample statistic such as a Fréchet distance, both sets are
    resampled). The same ``seed`` gives the same interval.

    ``debias=True`` is for statistics that resampling itself moves, such as a Fréchet distance
    (duplicated clips shrink the covariance estimates, so resampled distances run high): the
    draws are shifted by their bootstrap bias, ``mean(draws) - statistic``, before the
    percentiles are taken, and the interval is centred on the statistic again.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    arrays = tuple(np.asarray(s) for s in samples)
    if any(len(a) == 0 for a in arrays):
        raise ValueError("cannot bootstrap an empty sample")
    rng = np.random.default_rng(seed)
    value = float(statistic(*arrays))
    draws = np.array(
        [statistic(*(a[rng.integers(0, len(a), len(a))] for a in arrays)) for _ in range(n_resamples)], dtype=float
    )
    if debias:
        draws -= draws.mean() - value
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return Estimate(value, float(lo), float(hi))
