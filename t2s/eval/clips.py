"""Real clips from the synthetic signer, and the conversions every metric shares.

Clips are float tensors ``[N, 3, T, H, W]`` in ``[-1, 1]``, the model's convention
(``Trainer.generate_samples`` returns them so). Each clip shows one gloss over all its
frames: that is what a one-gloss prompt asks the generator for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from t2s.data.synthetic import GLOSSES, Signer, render_sentence

__all__ = [
    "ClipSet",
    "check_clips",
    "per_gloss_labels",
    "render_clips",
    "render_real_clips",
    "resize_clips",
    "to_uint8_frames",
]

# Fixed seeds of the signer draws, so the recogniser's training clips, its held-out test clips
# and the reference clips of the Fréchet distance never share a signer.
TRAIN_SEED = 0
HELD_OUT_SEED = 1
REFERENCE_SEED = 2


@dataclass(frozen=True)
class ClipSet:
    """Clips with the gloss each one signs."""

    clips: torch.Tensor  # [N, 3, T, H, W] in [-1, 1]
    glosses: tuple[str, ...]


def per_gloss_labels(per_gloss: int, glosses: Sequence[str] = GLOSSES) -> tuple[str, ...]:
    """Each gloss ``per_gloss`` times, gloss by gloss: the labels of an evaluation set."""
    if per_gloss < 1:
        raise ValueError(f"per_gloss must be >= 1, got {per_gloss}")
    return tuple(gloss for gloss in glosses for _ in range(per_gloss))


def render_clips(
    glosses: Sequence[str], num_frames: int = 16, image_size: int = 64, seed: int = HELD_OUT_SEED
) -> ClipSet:
    """One one-gloss clip per entry of ``glosses``, each drawn by a random signer from ``seed``."""
    rng = np.random.default_rng(seed)
    frames = np.stack([render_sentence([g], num_frames, image_size, Signer.random(rng)) for g in glosses])
    return ClipSet(from_uint8_frames(frames), tuple(glosses))


def render_real_clips(per_gloss: int, num_frames: int = 16, image_size: int = 64, seed: int = HELD_OUT_SEED) -> ClipSet:
    """``per_gloss`` clips of every gloss of the vocabulary."""
    return render_clips(per_gloss_labels(per_gloss), num_frames, image_size, seed)


def from_uint8_frames(frames: np.ndarray) -> torch.Tensor:
    """``[N, T, H, W, 3]`` uint8 -> ``[N, 3, T, H, W]`` float in ``[-1, 1]``."""
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def to_uint8_frames(clips: torch.Tensor) -> np.ndarray:
    """``[N, 3, T, H, W]`` in ``[-1, 1]`` -> ``[N, T, H, W, 3]`` uint8 (values outside are clipped)."""
    scaled = (clips.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()


def check_clips(clips: torch.Tensor, glosses: Sequence[str], what: str = "clips") -> None:
    """Raise ``ValueError`` unless ``clips`` is ``[N, 3, T, H, W]`` with one known gloss per clip."""
    if clips.ndim != 5 or clips.shape[1] != 3:
        raise ValueError(f"{what}: expected a tensor [N, 3, T, H, W], got shape {tuple(clips.shape)}")
    if len(glosses) != clips.shape[0]:
        raise ValueError(f"{what}: {clips.shape[0]} clips but {len(glosses)} glosses; pass one gloss per clip")
    unknown = sorted(set(glosses) - set(GLOSSES))
    if unknown:
        raise ValueError(f"{what}: unknown glosses {unknown}; prompts must be single glosses of t2s.data.GLOSSES")


def resize_clips(clips: torch.Tensor, num_frames: int, image_size: int) -> torch.Tensor:
    """Resample ``[N, 3, T, H, W]`` clips to ``num_frames`` x ``image_size`` x ``image_size`` (trilinear)."""
    if clips.shape[2:] == (num_frames, image_size, image_size):
        return clips
    size = (num_frames, image_size, image_size)
    return F.interpolate(clips.float(), size=size, mode="trilinear", align_corners=False)
