"""Hand-trajectory error: the hands found in a clip against the gloss's true hand paths.

Per clip, the cost of matching frame ``i`` of the clip with frame ``j`` of the truth is the
symmetric chamfer distance between the hand centres found in frame ``i`` and the true
centres of frame ``j`` (the mean distance from each point to the nearest point of the
other set, averaged over both directions). It does not need to know which hand is which,
and it scores one found hand for two overlapping true ones fairly. A true hand whose
centre lies in front of the head or neck cannot be found by colour: it need not be found
in that frame, but a found hand may be matched to it. A frame with no hand found where one
should be costs ``miss_cost`` (default: half the frame
diagonal, more than any guess inside the frame can be off). The clip's error is the mean
cost along the dynamic-time-warping alignment (:func:`t2s.eval.dtw.dtw_mean_cost`), so a
gloss signed a little early or late is not punished.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from t2s.data.synthetic import Signer, hand_positions

from .dtw import dtw_mean_cost
from .hands import HandTrack, locate_hands

__all__ = ["chamfer", "trajectory_error", "true_hands"]


def chamfer(found: np.ndarray, visible: np.ndarray, true: np.ndarray, miss_cost: float) -> float:
    """Symmetric chamfer distance between found hands ``[k, 2]`` and true ones.

    Every true hand (``true``) may explain a found one, but only the ``visible`` ones must be
    found: a hand half in front of the face can be seen, but need not be.
    """
    if len(found) == 0:
        return miss_cost if len(visible) else 0.0
    to_true = np.linalg.norm(found[:, None, :] - true[None, :, :], axis=-1).min(axis=1).mean()
    if len(visible) == 0:
        return float(to_true)
    to_found = np.linalg.norm(visible[:, None, :] - found[None, :, :], axis=-1).min(axis=1).mean()
    return float(0.5 * (to_true + to_found))


def true_hands(gloss: str, num_frames: int, track: HandTrack) -> tuple[np.ndarray, np.ndarray]:
    """The true hand centres ``[T, 2, 2]`` for the signer's estimated shift, and ``[T, 2]`` whether
    each lies outside the head and neck (where it can be found)."""
    size = track.hidden.shape[0]
    truth = hand_positions([gloss], num_frames, size, Signer(shift_x=track.shift_x))
    cells = np.clip(np.floor(truth).astype(int), 0, size - 1)
    return truth, ~track.hidden[cells[..., 1], cells[..., 0]]


def trajectory_error(frames: np.ndarray, gloss: str, miss_cost: Optional[float] = None) -> float:
    """DTW mean hand-position error of a one-gloss clip ``[T, H, W, 3]`` uint8, in pixels."""
    track = locate_hands(frames)
    size = frames.shape[1]
    miss = size * np.sqrt(2) / 2 if miss_cost is None else miss_cost
    truth, visible = true_hands(gloss, frames.shape[0], track)
    cost = np.array([[chamfer(found, t[v], t, miss) for t, v in zip(truth, visible)] for found in track.points])
    return dtw_mean_cost(cost)
