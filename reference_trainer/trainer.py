"""Diffusion trainer for the text-to-sign UNet3D.

DDIM noise schedule, MSE on the configured prediction target, AdamW with linear warm-up and
cosine decay, gradient accumulation, gradient clipping, bf16 autocast on CUDA, TensorBoard
scalars, a metrics.jsonl line per optimizer step, and resumable checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from itertools import islice
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter

from t2s.data import write_video
from t2s.models import TextEncoder, TextEncoderConfig, UNet3D, UNet3DConfig

from . import run_dir
from .config import Config, ConfigError, config_from_dict
from .schedulers.ddim import DDIMScheduler

logger = logging.getLogger(__name__)
# Progress bars and logs share one stderr console, so stdout carries only results.
console = Console(stderr=True)

CHECKPOINT_KEYS = (
    "model_state_dict",
    "text_encoder_state_dict",
    "optimizer_state_dict",
    "lr_scheduler_state_dict",
    "global_step",
    "epoch",
    "config",
    "rng_state",
)


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message names the file."""


def read_checkpoint_config(path: str | os.PathLike) -> Config:
    """The training config stored in a checkpoint, read without loading the weights into memory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["config"]
    except Exception as exc:  # pickle, zip, mmap and missing-key errors all mean "not our checkpoint"
        raise CheckpointError(f"{path}: not a reference_trainer checkpoint ({exc})") from exc
    return config_from_dict(data, source=str(path))


def build_unet_config(config: Config) -> UNet3DConfig:
    return UNet3DConfig.preset(
        config.model.preset,
        model_channels=config.model.model_channels,
        image_size=config.data.image_size,
        num_frames=config.data.num_frames,
        context_dim=config.model.text_embed_dim,
    )


def build_text_encoder(config: Config) -> TextEncoder:
    if config.model.text_encoder == "tiny":
        return TextEncoder.tiny(embed_dim=config.model.text_embed_dim)
    return TextEncoder.from_pretrained(
        TextEncoderConfig(backbone=config.model.text_encoder, embed_dim=config.model.text_embed_dim)
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def sample_filename(index: int, prompt: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:40] or "prompt"
    return f"sample_{index:02d}_{slug}.gif"


class Trainer:
    def __init__(self, config: Config, train_dataset: Optional[Dataset] = None, device: Optional[str] = None):
        self.config = config
        self.model_config = config.model
        self.data_config = config.data
        self.train_config = config.train
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.output_dir = Path(self.train_config.output_dir)
        self.use_bf16 = self.device.type == "cuda" and self.train_config.mixed_precision == "bf16"

        seed_everything(self.train_config.seed)

        self.text_encoder = build_text_encoder(config).to(self.device)
        self.unet_config = build_unet_config(config)
        self.model = UNet3D(self.unet_config).to(self.device)
        self.noise_scheduler = DDIMScheduler(
            num_train_timesteps=self.train_config.num_train_timesteps,
            beta_schedule=self.train_config.beta_schedule,
            prediction_type=self.train_config.prediction_type,
        )

        self.train_dataloader: Optional[DataLoader] = None
        if train_dataset is not None:
            # Reseeded with seed + epoch at every epoch, so the data order of an epoch does not
            # depend on whether the run was resumed.
            self.data_generator = torch.Generator()
            self.train_dataloader = DataLoader(
                train_dataset,
                batch_size=self.train_config.batch_size,
                shuffle=True,
                drop_last=True,
                num_workers=self.data_config.num_workers,
                pin_memory=self.device.type == "cuda",
                generator=self.data_generator,
            )
            accum = self.train_config.gradient_accumulation_steps
            if len(self.train_dataloader) < accum:
                raise ConfigError(
                    f"{len(train_dataset)} training clips make {len(self.train_dataloader)} batches of "
                    f"{self.train_config.batch_size}, fewer than gradient_accumulation_steps={accum}; "
                    "add data or lower train.batch_size / train.gradient_accumulation_steps"
                )

        self.trainable_parameters = list(self.model.parameters()) + [
            p for p in self.text_encoder.parameters() if p.requires_grad
        ]
        self.optimizer = torch.optim.AdamW(
            self.trainable_parameters,
            lr=self.train_config.learning_rate,
            weight_decay=self.train_config.weight_decay,
        )
        self.lr_scheduler = self._create_lr_scheduler()

        # Generation-only trainers (no dataset) write no event files.
        self.writer = SummaryWriter(log_dir=str(self.output_dir / "tensorboard")) if train_dataset is not None else None
        self.metrics_path = self.output_dir / "metrics.jsonl"

        self.global_step = 0
        self.epoch = 0  # completed epochs; the one in progress is reported as epoch + 1
        self._window_losses: List[float] = []  # micro-batch losses of the current accumulation window

        logger.info(
            "UNet3D: %.2fM parameters; trainable total: %.2fM; device %s%s",
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            sum(p.numel() for p in self.trainable_parameters) / 1e6,
            self.device,
            " (bf16 autocast)" if self.use_bf16 else "",
        )

    # ------------------------------------------------------------------ schedule

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch; trailing batches that cannot fill an accumulation window are skipped."""
        if self.train_dataloader is None:
            return 1
        return len(self.train_dataloader) // self.train_config.gradient_accumulation_steps

    def _create_lr_scheduler(self) -> LambdaLR:
        """Linear warm-up to the base LR, then cosine decay to 0 at the last optimizer step."""
        total_steps = self.steps_per_epoch * self.train_config.num_epochs
        warmup_steps = self.train_config.warmup_steps

        def lr_lambda(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

        return LambdaLR(self.optimizer, lr_lambda)

    # ------------------------------------------------------------------ training

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def _training_target(self, videos: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        prediction_type = self.noise_scheduler.prediction_type
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(videos, noise, timesteps)
        return videos

    def train_step(self, batch: Dict[str, Any]) -> float:
        """Forward and backward of one micro-batch; every ``gradient_accumulation_steps`` calls it also
        clips, steps the optimizer and the LR schedule, and logs. Returns the micro-batch loss."""
        self.model.train()
        accum = self.train_config.gradient_accumulation_steps
        videos = batch["video"].to(self.device, non_blocking=True)

        noise = torch.randn_like(videos)
        timesteps = torch.randint(
            0, self.noise_scheduler.num_train_timesteps, (videos.shape[0],), device=self.device
        )
        noisy_videos = self.noise_scheduler.add_noise(videos, noise, timesteps)
        target = self._training_target(videos, noise, timesteps)

        with self._autocast():
            text = self.text_encoder(list(batch["text"]))
            noise_pred = self.model(noisy_videos, timesteps, text.tokens, context_mask=text.mask)
            loss = F.mse_loss(noise_pred, target)  # autocast computes mse_loss in float32

        (loss / accum).backward()
        micro_loss = loss.item()
        self._window_losses.append(micro_loss)
        if len(self._window_losses) < accum:
            return micro_loss

        torch.nn.utils.clip_grad_norm_(self.trainable_parameters, self.train_config.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]  # the LR this step uses
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1

        step_loss = sum(self._window_losses) / len(self._window_losses)
        self._window_losses.clear()
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({"step": self.global_step, "epoch": self.epoch + 1, "loss": step_loss, "lr": lr}) + "\n")
        if self.global_step % self.train_config.log_every == 0:
            self.writer.add_scalar("train/loss", step_loss, self.global_step)
            self.writer.add_scalar("train/lr", lr, self.global_step)
        return micro_loss

    def train(self) -> None:
        if self.train_dataloader is None:
            raise RuntimeError("this Trainer was built without a training dataset; pass train_dataset")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._truncate_metrics()
        micro_batches = self.steps_per_epoch * self.train_config.gradient_accumulation_steps
        num_epochs = self.train_config.num_epochs
        if self.epoch >= num_epochs:
            logger.warning("nothing to train: the run already completed %d of %d epochs", self.epoch, num_epochs)
            return
        logger.info(
            "training epochs %d..%d, %d optimizer steps per epoch (batch %d x %d accumulation)",
            self.epoch + 1, num_epochs, self.steps_per_epoch,
            self.train_config.batch_size, self.train_config.gradient_accumulation_steps,
        )

        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=console,
        )
        with progress:
            task = progress.add_task("epoch", total=micro_batches, loss=float("nan"))
            for epoch in range(self.epoch, num_epochs):
                self.data_generator.manual_seed(self.train_config.seed + epoch)
                progress.reset(task, description=f"epoch {epoch + 1}/{num_epochs}")
                for batch in islice(self.train_dataloader, micro_batches):
                    loss = self.train_step(batch)
                    progress.update(task, advance=1, loss=loss)
                self.epoch = epoch + 1
                self._save_epoch_checkpoints()
        self.writer.flush()

    def _save_epoch_checkpoints(self) -> None:
        """latest.pt after every epoch (a link to epoch_<N>.pt, written every save_every_epochs and after the last)."""
        checkpoint_dir = self.output_dir / "checkpoints"
        latest = checkpoint_dir / "latest.pt"
        if self.epoch % self.train_config.save_every_epochs == 0 or self.epoch == self.train_config.num_epochs:
            path = self.save_checkpoint(checkpoint_dir / f"epoch_{self.epoch}.pt")
            run_dir.update_latest(path, latest)
        else:
            self.save_checkpoint(latest)

    def _truncate_metrics(self) -> None:
        """Keep only the steps this run has already done (none for a fresh run, up to the checkpoint on resume)."""
        run_dir.drop_metrics_after(self.metrics_path, self.global_step)

    # ------------------------------------------------------------------ checkpoints

    def _text_encoder_state(self) -> Dict[str, torch.Tensor]:
        # A tiny backbone is random, so it must travel with the checkpoint; a pretrained one is
        # reloaded from its id, and only the trainable projection is saved.
        if self.model_config.text_encoder == "tiny":
            return self.text_encoder.state_dict()
        trainable = {name for name, p in self.text_encoder.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.text_encoder.state_dict().items() if k in trainable}

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the full training state atomically (temporary file in the same folder, flushed, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = {
            "model_state_dict": self.model.state_dict(),
            "text_encoder_state_dict": self._text_encoder_state(),
            "text_encoder_config": self.text_encoder.config_dict(),
            "unet_config": self.unet_config.to_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "lr_scheduler_state_dict": self.lr_scheduler.state_dict(),
            "global_step": self.global_step,
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "rng_state": _get_rng_state(),
        }
        tmp = run_dir.fresh_temp_path(path)
        try:
            torch.save(checkpoint, tmp)
            run_dir.commit(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("saved checkpoint %s (step %d)", path, self.global_step)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore weights, optimizer, LR schedule, counters and RNG states, so training continues the same run."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            checkpoint = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # pickle, zip and weights_only errors all mean "not our checkpoint"
            raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
        missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
        if missing:
            raise CheckpointError(f"{path}: not a reference_trainer checkpoint, missing {', '.join(missing)}")
        try:
            self.model.load_state_dict(checkpoint["model_state_dict"])
            self.text_encoder.load_state_dict(
                checkpoint["text_encoder_state_dict"], strict=self.model_config.text_encoder == "tiny"
            )
            self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: does not match the configured model ({exc}); build the Trainer from the checkpoint's config"
            ) from exc
        self.lr_scheduler.load_state_dict(checkpoint["lr_scheduler_state_dict"])
        self.global_step = checkpoint["global_step"]
        self.epoch = checkpoint["epoch"]
        _set_rng_state(checkpoint["rng_state"])
        logger.info("loaded %s: %d epochs, %d steps done", path, self.epoch, self.global_step)

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def generate_samples(
        self,
        prompts: Sequence[str],
        num_inference_steps: Optional[int] = None,
        output_dir: Optional[str | os.PathLike] = None,
    ) -> torch.Tensor:
        """DDIM-sample one clip per prompt; returns [N, 3, T, H, W] in [-1, 1] and writes one GIF each."""
        prompts = list(prompts)
        steps = num_inference_steps or self.train_config.num_inference_steps
        output_dir = Path(output_dir) if output_dir is not None else self.output_dir / "samples"
        was_training = self.model.training
        self.model.eval()

        self.noise_scheduler.set_timesteps(steps)
        # A private generator: sampling must not shift the training RNG streams.
        generator = torch.Generator(device=self.device).manual_seed(self.train_config.seed)
        shape = (len(prompts), self.unet_config.in_channels, self.data_config.num_frames,
                 self.data_config.image_size, self.data_config.image_size)
        sample = torch.randn(shape, generator=generator, device=self.device)
        with self._autocast():
            text = self.text_encoder(prompts)
        for t in self.noise_scheduler.timesteps:
            timesteps = torch.full((len(prompts),), int(t), device=self.device, dtype=torch.long)
            with self._autocast():
                model_output = self.model(sample, timesteps, text.tokens, context_mask=text.mask)
            sample = self.noise_scheduler.step(model_output.float(), t, sample).prev_sample
        videos = sample.clamp(-1, 1).cpu()

        self.model.train(was_training)
        output_dir.mkdir(parents=True, exist_ok=True)
        for i, (prompt, video) in enumerate(zip(prompts, videos)):
            write_video(output_dir / sample_filename(i, prompt), video)
        return videos


# ---------------------------------------------------------------------------- helpers


def _get_rng_state() -> Dict[str, Any]:
    """RNG states as tensors and plain types, so checkpoints load with weights_only=True."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss_next": py_gauss},
    }


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].cpu().numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(int(x) for x in py_state["state"].tolist()), py_state["gauss_next"]))
