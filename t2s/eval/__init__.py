"""Evaluation of generated sign clips (docs/evaluation.md).

A gloss recogniser trained on the synthetic signer reads generated one-gloss clips
(back-translation accuracy) and embeds them (a Fréchet distance to real clips, an FVD
analogue); the hands are found by colour and compared with the gloss's true paths
(DTW hand-trajectory error). Every metric comes with a percentile bootstrap interval.
"""

from .bootstrap import Estimate, bootstrap
from .cache import default_recogniser_path, obtain_recogniser
from .clips import ClipSet, per_gloss_labels, render_clips, render_real_clips
from .evaluate import EvaluationResult, evaluate_clips
from .frechet import frechet_distance
from .i3d import load_i3d
from .recogniser import Recogniser, RecogniserConfig, RecogniserError, load_recogniser, save_recogniser
from .training import TrainSettings, train_recogniser
from .trajectory import trajectory_error

__all__ = [
    "ClipSet",
    "Estimate",
    "EvaluationResult",
    "Recogniser",
    "RecogniserConfig",
    "RecogniserError",
    "TrainSettings",
    "bootstrap",
    "default_recogniser_path",
    "evaluate_clips",
    "frechet_distance",
    "load_i3d",
    "load_recogniser",
    "obtain_recogniser",
    "per_gloss_labels",
    "render_clips",
    "render_real_clips",
    "save_recogniser",
    "train_recogniser",
    "trajectory_error",
]
