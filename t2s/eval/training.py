"""Training the gloss recogniser on the synthetic signer's clips.

Training clips and held-out test clips are drawn with different seeds (``clips.TRAIN_SEED``
and ``clips.HELD_OUT_SEED``), so every test clip has a signer the recogniser never saw.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .clips import HELD_OUT_SEED, TRAIN_SEED, ClipSet, render_real_clips
from .recogniser import Recogniser, RecogniserConfig

__all__ = ["TrainSettings", "TrainedRecogniser", "accuracy", "train_recogniser"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    num_frames: int = 16
    image_size: int = 64
    train_per_gloss: int = 24
    test_per_gloss: int = 8
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 3e-3
    noise_std: float = 0.15  # training clips get Gaussian noise of up to this std, as generated clips are noisy
    seed: int = 0  # weight init and batch order; the signers come from the fixed clip seeds


@dataclass(frozen=True)
class TrainedRecogniser:
    model: Recogniser
    held_out_accuracy: float
    seconds: float
    metadata: dict


def accuracy(model: Recogniser, clip_set: ClipSet) -> float:
    """Share of ``clip_set`` whose predicted gloss is the true one."""
    _, predicted = model.embed_and_predict(clip_set.clips)
    return sum(p == g for p, g in zip(predicted, clip_set.glosses)) / len(clip_set.glosses)


def _augment(clips: torch.Tensor, noise_std: float, generator: torch.Generator) -> torch.Tensor:
    std = torch.rand(len(clips), 1, 1, 1, 1, generator=generator) * noise_std
    return (clips + std * torch.randn(clips.shape, generator=generator)).clamp(-1, 1)


def _train_epoch(
    model: Recogniser,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    data: ClipSet,
    settings: TrainSettings,
    generator: torch.Generator,
) -> float:
    model.train()
    targets = model.label_indices(data.glosses)
    order = torch.randperm(len(targets), generator=generator)
    total = 0.0
    for batch in order.split(settings.batch_size):
        loss = F.cross_entropy(model(_augment(data.clips[batch], settings.noise_std, generator)), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total += loss.item() * len(batch)
    return total / len(targets)


def train_recogniser(
    settings: TrainSettings = TrainSettings(), progress: Optional[Callable[[str], None]] = None
) -> TrainedRecogniser:
    """Render the clips, train, and measure top-1 accuracy on the held-out signers."""
    say = progress or logger.info
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    size = (settings.num_frames, settings.image_size)
    train = render_real_clips(settings.train_per_gloss, *size, seed=TRAIN_SEED)
    test = render_real_clips(settings.test_per_gloss, *size, seed=HELD_OUT_SEED)
    model = Recogniser(RecogniserConfig(num_frames=settings.num_frames, image_size=settings.image_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    steps = settings.epochs * -(-len(train.glosses) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.learning_rate, total_steps=steps)
    for epoch in range(settings.epochs):
        loss = _train_epoch(model, optimizer, schedule, train, settings, generator)
        say(f"epoch {epoch + 1}/{settings.epochs}: loss {loss:.4f}")
    held_out = accuracy(model, test)
    seconds = time.perf_counter() - start
    say(f"held-out top-1 accuracy {held_out:.4f} on {len(test.glosses)} clips ({seconds:.0f}s)")
    metadata = {
        "held_out_accuracy": held_out,
        "held_out_clips": len(test.glosses),
        "train_seed": TRAIN_SEED,
        "held_out_seed": HELD_OUT_SEED,
        "settings": asdict(settings),
        "seconds": seconds,
    }
    return TrainedRecogniser(model.eval(), held_out, seconds, metadata)
