"""Where trained recognisers are kept, and getting one for a clip size (training it once if needed)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import torch

from .recogniser import Recogniser, load_recogniser, save_recogniser
from .training import TrainSettings, train_recogniser

__all__ = ["default_recogniser_path", "obtain_recogniser"]

logger = logging.getLogger(__name__)

CACHE_ENV = "T2S_EVAL_CACHE"


def default_recogniser_path(num_frames: int, image_size: int) -> Path:
    """``$T2S_EVAL_CACHE`` (default ``~/.cache/t2s/eval``) / ``recogniser-<size>px-<frames>f.pt``."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "t2s" / "eval")
    return root / f"recogniser-{image_size}px-{num_frames}f.pt"


def obtain_recogniser(
    path: Optional[str | os.PathLike], num_frames: int, image_size: int, device: str | torch.device = "cpu"
) -> tuple[Recogniser, dict[str, Any]]:
    """The recogniser at ``path``; without a path, the cached one for this clip size, trained and
    cached first when there is none (about two minutes at 64x64x16 on two CPU cores)."""
    if path is not None:
        model, metadata = load_recogniser(path, device)
        return model, {**metadata, "path": str(path)}
    cached = default_recogniser_path(num_frames, image_size)
    if not cached.is_file():
        logger.info("no recogniser for %d-frame %dpx clips yet: training one into %s", num_frames, image_size, cached)
        trained = train_recogniser(TrainSettings(num_frames=num_frames, image_size=image_size))
        save_recogniser(trained.model, cached, trained.metadata)
    model, metadata = load_recogniser(cached, device)
    return model, {**metadata, "path": str(cached)}
