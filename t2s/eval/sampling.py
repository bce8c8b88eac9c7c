"""Sampling evaluation clips from a reference_trainer checkpoint with the trainer's own sampler.

reference_trainer is imported when a checkpoint is sampled, not with t2s.eval: the library
does not depend on the trainer otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import torch

__all__ = ["checkpoint_clip_shape", "sample_checkpoint"]


def checkpoint_clip_shape(checkpoint: str | os.PathLike) -> tuple[int, int]:
    """``(num_frames, image_size)`` of the clips a checkpoint generates, read from its config."""
    from reference_trainer import run_dir
    from reference_trainer.trainer import read_checkpoint_config

    config = read_checkpoint_config(run_dir.resolve_latest(Path(checkpoint)))
    return config.data.num_frames, config.data.image_size


def sample_checkpoint(
    checkpoint: str | os.PathLike,
    glosses: Sequence[str],
    per_gloss: int,
    output_dir: str | os.PathLike,
    steps: Optional[int] = None,
    device: Optional[str] = None,
) -> torch.Tensor:
    """``per_gloss`` clips of every gloss, each prompted with the gloss alone, gloss by gloss; GIFs go to
    ``output_dir``. Returns the clips ``[len(glosses) * per_gloss, 3, T, H, W]`` in ``[-1, 1]``."""
    from reference_trainer import run_dir
    from reference_trainer.trainer import Trainer, read_checkpoint_config

    checkpoint = run_dir.resolve_latest(Path(checkpoint))  # a kill may have left latest.pt behind an epoch file
    config = read_checkpoint_config(checkpoint)
    if steps is not None and not 1 <= steps <= config.train.num_train_timesteps:
        raise ValueError(f"--steps must be between 1 and {config.train.num_train_timesteps}, got {steps}")
    if config.train.num_threads > 0:
        torch.set_num_threads(config.train.num_threads)
    trainer = Trainer(config, device=device)
    trainer.load_checkpoint(checkpoint)
    # One call per gloss: each call restarts the sampling noise from the seed, so repeats of a prompt must
    # share a call to differ (and every gloss starts from the same noises).
    clips = [
        trainer.generate_samples([g] * per_gloss, num_inference_steps=steps, output_dir=output_dir) for g in glosses
    ]
    return torch.cat(clips)
