"""Dynamic time warping over a frame-to-frame cost matrix."""

from __future__ import annotations

import numpy as np

__all__ = ["dtw_mean_cost"]


def dtw_mean_cost(cost: np.ndarray) -> float:
    """Mean cost per aligned pair along the cheapest monotone alignment of two sequences.

    ``cost[i, j]`` is the cost of matching frame ``i`` of one sequence with frame ``j`` of
    the other. The alignment runs from ``(0, 0)`` to ``(n - 1, m - 1)`` in steps of
    ``(1, 0)``, ``(0, 1)`` or ``(1, 1)`` and minimises the total cost; the result is that
    total divided by the number of pairs on the path, so it is in the cost's unit.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"expected a non-empty 2-D cost matrix, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise ValueError("the cost matrix holds NaN or infinite values")
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    length = np.zeros((n + 1, m + 1), dtype=np.int64)
    total[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            # Equal totals: the longer path wins (its mean is lower), then the diagonal.
            options = (
                (total[i - 1, j - 1], -length[i - 1, j - 1], i - 1, j - 1),
                (total[i - 1, j], -length[i - 1, j], i - 1, j),
                (total[i, j - 1], -length[i, j - 1], i, j - 1),
            )
            best, _, pi, pj = min(options)
            total[i, j] = best + cost[i - 1, j - 1]
            length[i, j] = length[pi, pj] + 1
    return float(total[n, m] / length[n, m])
