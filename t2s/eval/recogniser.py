"""The gloss recogniser: a small (2+1)D CNN that names the gloss a one-gloss clip signs.

Each block is a spatial 1x3x3 convolution followed by a temporal 3x1x1 one (R(2+1)D style).
The last feature map is pooled to a fixed 4x4x4 grid and flattened, so where the hands
are (which tells many glosses apart) survives into the classifier. The 64-d layer
before the classifier is the embedding the Fréchet distance uses.

Checkpoints are plain ``torch.save`` dicts that load with ``weights_only=True``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from t2s.data.synthetic import GLOSSES

from .clips import resize_clips

__all__ = ["FEATURE_DIM", "Recogniser", "RecogniserConfig", "RecogniserError", "load_recogniser", "save_recogniser"]

FORMAT = "t2s.eval.recogniser/1"
FEATURE_DIM = 64
_POOLED = (4, 4, 4)


class RecogniserError(Exception):
    """A recogniser checkpoint cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class RecogniserConfig:
    num_frames: int = 16
    image_size: int = 64
    glosses: tuple[str, ...] = GLOSSES
    widths: tuple[int, ...] = field(default=(16, 32, 64))


def _block(cin: int, cout: int, temporal_stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, (3, 1, 1), stride=(temporal_stride, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class Recogniser(nn.Module):
    """Clips ``[N, 3, T, H, W]`` in ``[-1, 1]`` -> gloss logits; clips of another size are resized."""

    def __init__(self, config: RecogniserConfig = RecogniserConfig()) -> None:
        super().__init__()
        self.config = config
        widths = (3, *config.widths)
        # The first block keeps every frame; the later ones halve time as well as space.
        strides = [1] + [2] * (len(config.widths) - 1)
        self.blocks = nn.Sequential(*(_block(a, b, t) for a, b, t in zip(widths, widths[1:], strides)))
        self.pool = nn.AdaptiveAvgPool3d(_POOLED)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * 64, FEATURE_DIM), nn.ReLU(inplace=True))
        self.classify = nn.Linear(FEATURE_DIM, len(config.glosses))

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """The penultimate embedding ``[N, 64]``."""
        clips = resize_clips(clips, self.config.num_frames, self.config.image_size)
        return self.embed(self.pool(self.blocks(clips)))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(clips))

    @torch.no_grad()
    def embed_and_predict(self, clips: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, list[str]]:
        """Features ``[N, 64]`` and the predicted gloss of each clip, in eval mode, batch by batch."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        features, labels = [], []
        for batch in clips.split(batch_size):
            embedding = self.features(batch.to(device))
            features.append(embedding.cpu())
            labels.extend(self.classify(embedding).argmax(1).tolist())
        self.train(was_training)
        return torch.cat(features), [self.config.glosses[i] for i in labels]

    def label_indices(self, glosses: Sequence[str]) -> torch.Tensor:
        index = {gloss: i for i, gloss in enumerate(self.config.glosses)}
        return torch.tensor([index[g] for g in glosses], dtype=torch.long)


def save_recogniser(model: Recogniser, path: str | os.PathLike, metadata: dict[str, Any]) -> Path:
    """Write the weights, the config and ``metadata`` (how it was trained, its held-out accuracy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = asdict(model.config)
    payload = {"format": FORMAT, "config": config, "state_dict": model.state_dict(), "metadata": metadata}
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)  # a crash never leaves a half-written recogniser under the real name
    return path


def load_recogniser(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Recogniser, dict[str, Any]]:
    """The recogniser stored at ``path`` (in eval mode) and its metadata."""
    path = Path(path)
    train_hint = f"train one with `python -m t2s.eval train-recogniser --out {path}`"
    if not path.is_file():
        raise RecogniserError(f"recogniser checkpoint not found: {path}; {train_hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and weights_only errors all mean "not a recogniser file"
        raise RecogniserError(f"{path}: not a readable recogniser checkpoint ({exc}); {train_hint}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise RecogniserError(f"{path}: field 'format' is {found!r}, expected {FORMAT!r}; {train_hint}")
    raw = payload["config"]
    config = RecogniserConfig(
        num_frames=int(raw["num_frames"]),
        image_size=int(raw["image_size"]),
        glosses=tuple(raw["glosses"]),
        widths=tuple(raw["widths"]),
    )
    model = Recogniser(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise RecogniserError(f"{path}: field 'state_dict' does not fit its config ({exc}); {train_hint}") from exc
    return model.to(device).eval(), dict(payload.get("metadata", {}))
