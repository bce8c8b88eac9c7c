"""Optional I3D features for a true FVD, from a local TorchScript file (never downloaded).

The file expected is the TorchScript I3D used by common FVD code (``i3d_torchscript.pt``,
StyleGAN-V / fvd-comparison), called as ``model(videos, rescale=False, resize=False,
return_features=True)`` on ``[N, 3, T, 224, 224]`` videos in ``[-1, 1]``; it returns 400-d
features. This project has no copy of it (nothing is fetched here), so this path is
tested with a stand-in TorchScript module of the same signature only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from .clips import resize_clips

__all__ = ["I3D_SIZE", "load_i3d"]

I3D_SIZE = 224


def load_i3d(path: str | os.PathLike, device: str | torch.device = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """A feature extractor ``clips [N, 3, T, H, W] in [-1, 1] -> [N, D]`` backed by the I3D at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"I3D weights not found: {path}; nothing is downloaded here: copy i3d_torchscript.pt to this "
            "machine and pass its path, or leave --i3d out to use the gloss recogniser's features"
        )
    try:
        model = torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a TorchScript file ({exc}); pass the TorchScript i3d_torchscript.pt") from exc

    @torch.no_grad()
    def extract(clips: torch.Tensor) -> torch.Tensor:
        videos = resize_clips(clips, clips.shape[2], I3D_SIZE).to(device)
        return model(videos, rescale=False, resize=False, return_features=True).float().cpu()

    return extract
