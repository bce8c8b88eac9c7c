"""All metrics of a set of generated one-gloss clips, each with a bootstrap interval.

:func:`evaluate_clips` is the entry point for any code that has clips and the gloss each
was prompted with (the ``evaluate`` command, an ablation runner).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .bootstrap import CONFIDENCE, N_RESAMPLES, Estimate, bootstrap
from .clips import REFERENCE_SEED, ClipSet, check_clips, render_clips, to_uint8_frames
from .frechet import frechet_distance
from .recogniser import Recogniser
from .trajectory import trajectory_error

__all__ = ["EvaluationResult", "evaluate_clips"]

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]

# name, what it measures, which way is better
METRICS = {
    "back_translation": ("share of clips the recogniser reads as their prompt's gloss", "higher"),
    "frechet_distance": ("Fréchet distance to real clips on recogniser features (not I3D-FVD)", "lower"),
    "trajectory_error_px": ("DTW mean hand-position error, pixels", "lower"),
    "trajectory_error_norm": ("the same, as a share of the frame width", "lower"),
}


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, Estimate]
    per_gloss_accuracy: dict[str, float]
    num_clips: int
    num_real_clips: int
    clip_shape: tuple[int, int, int]  # T, H, W
    features: str
    n_resamples: int
    confidence: float
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the recogniser's metadata, the checkpoint

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {name: estimate.to_dict() for name, estimate in self.metrics.items()},
            "per_gloss_accuracy": self.per_gloss_accuracy,
            "num_clips": self.num_clips,
            "num_real_clips": self.num_real_clips,
            "clip_shape": list(self.clip_shape),
            "features": self.features,
            "bootstrap": {"n_resamples": self.n_resamples, "confidence": self.confidence},
            **self.extra,
        }

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def table(self) -> str:
        """A plain-text table: metric, value, interval, which way is better."""
        level = f"{self.confidence:.0%} CI"
        rows = [("metric", "value", level, "better")]
        for name, estimate in self.metrics.items():
            rows.append((name, f"{estimate.value:.4f}", f"[{estimate.lo:.4f}, {estimate.hi:.4f}]", METRICS[name][1]))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        shape = "x".join(map(str, self.clip_shape))
        lines.append(f"{self.num_clips} clips ({shape}) against {self.num_real_clips} real; features: {self.features}")
        return "\n".join(lines)


def _per_gloss_accuracy(correct: np.ndarray, glosses: Sequence[str]) -> dict[str, float]:
    labels = np.asarray(glosses)
    return {gloss: float(correct[labels == gloss].mean()) for gloss in dict.fromkeys(glosses)}


def _frechet_estimate(generated: np.ndarray, real: np.ndarray, ci: dict[str, Any]) -> Estimate:
    estimate = bootstrap((generated, real), frechet_distance, debias=True, **ci)
    return Estimate(estimate.value, max(estimate.lo, 0.0), estimate.hi)  # a distance is never negative


def evaluate_clips(
    clips: torch.Tensor,
    glosses: Sequence[str],
    recogniser: Recogniser,
    *,
    real: Optional[ClipSet] = None,
    features: Optional[FeatureExtractor] = None,
    features_name: Optional[str] = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> EvaluationResult:
    """Score generated clips ``[N, 3, T, H, W]`` in ``[-1, 1]``, clip ``i`` prompted with gloss ``glosses[i]``.

    ``real``: the reference clips of the Fréchet distance; by default the same glosses drawn
    by unseen signers (``clips.REFERENCE_SEED``) at the clips' size. ``features``: what the
    Fréchet distance compares (default: the recogniser's penultimate layer; see
    :func:`t2s.eval.i3d.load_i3d`), named in the report by ``features_name``. Intervals are
    percentile bootstraps over clips with ``seed``.
    """
    check_clips(clips, glosses, "generated clips")
    if real is None:
        real = render_clips(glosses, clips.shape[2], clips.shape[3], seed=REFERENCE_SEED)
    check_clips(real.clips, real.glosses, "real clips")
    generated_features, predicted = recogniser.embed_and_predict(clips)
    if features is None:
        real_features, _ = recogniser.embed_and_predict(real.clips)
    else:
        generated_features, real_features = features(clips), features(real.clips)
    correct = np.array([p == g for p, g in zip(predicted, glosses)], dtype=float)
    frames = to_uint8_frames(clips)
    errors = np.array([trajectory_error(clip, gloss) for clip, gloss in zip(frames, glosses)])
    ci = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    trajectory = bootstrap((errors,), **ci)
    size = clips.shape[-1]
    metrics = {
        "back_translation": bootstrap((correct,), **ci),
        "frechet_distance": _frechet_estimate(generated_features.numpy(), real_features.numpy(), ci),
        "trajectory_error_px": trajectory,
        "trajectory_error_norm": Estimate(trajectory.value / size, trajectory.lo / size, trajectory.hi / size),
    }
    return EvaluationResult(
        metrics=metrics,
        per_gloss_accuracy=_per_gloss_accuracy(correct, glosses),
        num_clips=len(glosses),
        num_real_clips=len(real.glosses),
        clip_shape=tuple(clips.shape[2:]),
        features=features_name or ("recogniser penultimate layer (64-d)" if features is None else "custom"),
        n_resamples=n_resamples,
        confidence=confidence,
    )
