"""Deterministic test clips for the data tests (a uniquely named module, not conftest,
so test files can import it without clashing with other test folders' conftest.py)."""

import numpy as np


def pattern(num_frames: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Smooth uint8 frames [T, H, W, 3]; the blue level encodes the frame index.

    Smooth content survives lossy codecs well, so frame order and values can be
    checked after an mp4 round trip.
    """
    shape = (num_frames, height, width)
    red = np.broadcast_to(np.linspace(40, 200, width)[None, None, :], shape)
    green = np.broadcast_to(np.linspace(40, 200, height)[None, :, None], shape)
    blue = np.broadcast_to(20 + np.arange(num_frames)[:, None, None] * (200 / max(num_frames - 1, 1)), shape)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def frame_index(video, num_source_frames: int) -> np.ndarray:
    """Recover the source frame index of each frame of a read clip from its blue level."""
    blue = (video[2].mean(dim=(1, 2)).numpy() + 1) * 127.5
    return np.rint((blue - 20) * max(num_source_frames - 1, 1) / 200).astype(int)
