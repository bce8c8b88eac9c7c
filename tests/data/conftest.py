from pathlib import Path

import pytest
from video_clip_helpers import pattern

from t2s.data.video_io import write_frames


@pytest.fixture
def make_clip(tmp_path: Path):
    """Write ``pattern(num_frames, height, width)`` to ``tmp_path / name`` (suffix picks the format)."""

    def make(name: str, num_frames: int = 4, height: int = 16, width: int = 16) -> Path:
        return write_frames(tmp_path / name, pattern(num_frames, height, width))

    return make
