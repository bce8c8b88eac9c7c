"""Finding the hands in a clip by their colour.

The synthetic signer draws both hands in its skin tone, one of ``SKIN_TONES``; the face
and neck have the same colour. So, per clip:

1. the still picture is the per-pixel median over frames (the hands move, the body does not);
2. the skin tone is the palette tone that most pixels of the still picture's head area match;
3. the signer's sideways shift is the one whose face-and-neck template best overlaps the
   still picture's skin (intersection over union);
4. in each frame, skin-coloured pixels outside the (slightly grown) head and neck are hand
   pixels; the centroids of the two largest connected groups are the hands. A frame may
   show 0, 1 (hands overlapping, or one in front of the face) or 2 hands.

Hands in front of the face or neck cannot be told from them and are not looked for there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from t2s.data.synthetic import SKIN_TONES, skin_template

__all__ = ["HandTrack", "locate_hands"]

SKIN_DISTANCE = 30.0  # RGB distance within which a pixel counts as skin; the palette's other colours are > 40 away
SHIFTS = np.linspace(-0.06, 0.06, 25)  # candidate shifts; random signers use [-0.04, 0.04]
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class HandTrack:
    """What :func:`locate_hands` found in one clip."""

    points: tuple[np.ndarray, ...]  # per frame, [k, 2] hand centres (x, y) in pixels, k in 0..2
    shift_x: float  # the signer's estimated sideways shift, relative to the frame width
    hidden: np.ndarray  # [H, W] bool: head and neck, where hands are not looked for
    skin: tuple[int, int, int]  # the estimated skin tone


@functools.lru_cache(maxsize=8)
def _templates(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Face-and-neck masks ``[S, H, W]`` and grown head-and-neck masks (hair included), one per shift."""
    faces = np.stack([skin_template(image_size, float(s)) > 0.5 for s in SHIFTS])
    heads = np.stack([ndimage.binary_dilation(skin_template(image_size, float(s), hair=True) > 0) for s in SHIFTS])
    return faces, heads


def _skin_mask(pixels: np.ndarray, tone: tuple[int, int, int]) -> np.ndarray:
    distance = np.linalg.norm(pixels.astype(np.float32) - np.asarray(tone, np.float32), axis=-1)
    return distance < SKIN_DISTANCE


def _skin_tone(still: np.ndarray, head_area: np.ndarray) -> tuple[int, int, int]:
    counts = [int((_skin_mask(still, tone) & head_area).sum()) for tone in SKIN_TONES]
    return SKIN_TONES[int(np.argmax(counts))]


def _best_shift(still_skin: np.ndarray, faces: np.ndarray) -> int:
    overlap = (faces & still_skin).sum(axis=(1, 2))
    union = (faces | still_skin).sum(axis=(1, 2))
    return int(np.argmax(overlap / np.maximum(union, 1)))


def _hand_centres(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Centroids ``[k, 2]`` (x, y) of the (at most) two largest 8-connected groups of ``mask``."""
    labels, count = ndimage.label(mask, structure=_EIGHT_NEIGHBOURS)
    if count == 0:
        return np.zeros((0, 2))
    sizes = np.bincount(labels.ravel())[1:]
    keep = [i + 1 for i in np.argsort(-sizes, kind="stable")[:2] if sizes[i] >= min_pixels]
    if not keep:
        return np.zeros((0, 2))
    rows_cols = np.asarray(ndimage.center_of_mass(mask, labels, keep), dtype=np.float64)
    return rows_cols[:, ::-1] + 0.5  # (row, col) of pixel indices -> (x, y) of pixel centres


def locate_hands(frames: np.ndarray) -> HandTrack:
    """Hand centres in each frame of a clip ``[T, H, W, 3]`` uint8 (square frames)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"expected square frames [T, H, W, 3], got shape {frames.shape}")
    size = frames.shape[1]
    faces, heads = _templates(size)
    still = np.median(frames, axis=0)
    tone = _skin_tone(still, faces.any(axis=0))
    shift = _best_shift(_skin_mask(still, tone), faces)
    hidden = heads[shift]
    hands = _skin_mask(frames, tone) & ~hidden
    min_pixels = max(1, round(0.001 * size * size))  # 4 pixels at 64x64; a hand covers about 30 there
    points = tuple(_hand_centres(frame, min_pixels) for frame in hands)
    return HandTrack(points, float(SHIFTS[shift]), hidden, tone)
