"""Fréchet distance between two sets of clip features (FID/FVD's formula).

``d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))``, with
``tr((S_a S_b)^(1/2))`` taken as the sum of the square roots of the eigenvalues of
``S_a S_b`` (real and non-negative for covariance matrices, up to rounding).

By default the features are the gloss recogniser's penultimate layer: an FVD analogue for
this synthetic domain, not I3D-FVD (see docs/evaluation.md and :mod:`t2s.eval.i3d`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["frechet_distance"]


def _statistics(features: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"{what}: need features [N, D] with N >= 2 to estimate a covariance, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a [N, D]`` and ``b [M, D]``."""
    mu_a, cov_a = _statistics(a, "first feature set")
    mu_b, cov_b = _statistics(b, "second feature set")
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sizes differ: {mu_a.shape[0]} and {mu_b.shape[0]}")
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b).real
    sqrt_trace = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu_a - mu_b
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * sqrt_trace, 0.0))
