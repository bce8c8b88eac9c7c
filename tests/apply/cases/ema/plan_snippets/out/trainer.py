"""Trainer for the text-to-sign UNet3D video diffusion model."""

import os
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch.optim import AdamW
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from config import DDIMConfig, ModelConfig, TrainConfig
from dataset import SignLanguageDataset, collate_fn
from models.text_encoder import CLIPTextEncoder
from models.unet3d import UNet3D
from schedulers.ddim import DDIMScheduler
from utils.video import save_video_grid


class Trainer:
    def __init__(self, model_config: ModelConfig, ddim_config: DDIMConfig, train_config: TrainConfig,
                 device: str = "cuda"):
        self.model_config = model_config
        self.ddim_config = ddim_config
        self.train_config = train_config
        self.device = torch.device(device if torch.cuda.is_available() else "cpu")
        self.use_amp = train_config.mixed_precision and self.device.type == "cuda"

        self.global_step = 0
        self.epoch = 0
        self.output_dir = Path(train_config.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

        self.text_encoder = CLIPTextEncoder(
            model_config.text_encoder_name,
            embed_dim=model_config.context_dim,
            max_length=model_config.max_text_length,
        ).to(self.device)
        self.model = UNet3D(
            in_channels=model_config.in_channels,
            model_channels=model_config.model_channels,
            channel_mult=model_config.channel_mult,
            num_res_blocks=model_config.num_res_blocks,
            attention_resolutions=model_config.attention_resolutions,
            num_heads=model_config.num_heads,
            context_dim=model_config.context_dim,
            dropout=model_config.dropout,
        ).to(self.device)

        from utils.ema import EMA  # This file already exists!

        # After creating model:
        self.use_ema = getattr(train_config, 'use_ema', True)
        if self.use_ema:
            self.ema = EMA(
                self.model,
                decay=0.999,
                update_every=1,
            )
        else:
            self.ema = None

        self.noise_scheduler = DDIMScheduler(
            num_train_timesteps=ddim_config.num_train_timesteps,
            beta_start=ddim_config.beta_start,
            beta_end=ddim_config.beta_end,
            beta_schedule=ddim_config.beta_schedule,
            prediction_type=ddim_config.prediction_type,
            clip_sample=ddim_config.clip_sample,
        )

        import lpips
        self.lpips_loss_fn = lpips.LPIPS(net='vgg').to(self.device).eval()
        self.lpips_weight = 0.1  # Weight for perceptual loss

        self.train_dataset = SignLanguageDataset(
            train_config.data_dir, split="train",
            image_size=model_config.image_size, num_frames=model_config.num_frames,
        )
        self.train_dataloader = DataLoader(
            self.train_dataset, batch_size=train_config.batch_size, shuffle=True,
            num_workers=train_config.num_workers, collate_fn=collate_fn, drop_last=True, pin_memory=True,
        )

        self.trainable_params = list(self.model.parameters()) + list(self.text_encoder.projection.parameters())
        self.optimizer = AdamW(self.trainable_params, lr=train_config.learning_rate,
                               weight_decay=train_config.weight_decay)
        self.lr_scheduler = self._create_lr_scheduler()
        self.scaler = torch.cuda.amp.GradScaler(enabled=self.use_amp)
        self.writer = SummaryWriter(log_dir=str(self.output_dir / "logs"))

    def _create_lr_scheduler(self):
        """Create learning rate scheduler with proper warmup and decay"""
        # Calculate total steps more accurately
        steps_per_epoch = len(self.train_dataloader) if hasattr(self, 'train_dataloader') else 1000
        total_steps = self.train_config.num_epochs * steps_per_epoch
        warmup_steps = min(self.train_config.warmup_steps, total_steps // 10)  # Cap at 10% of training
        
        # Warmup
        warmup_scheduler = LinearLR(
            self.optimizer,
            start_factor=0.001,  # Start from 0.1% of LR for gentle warmup
            end_factor=1.0,
            total_iters=warmup_steps,
        )
        
        # Cosine decay with minimum LR
        cosine_scheduler = CosineAnnealingLR(
            self.optimizer,
            T_max=total_steps - warmup_steps,
            eta_min=self.train_config.learning_rate * 0.01,  # Decay to 1% of original
        )
        
        return SequentialLR(
            self.optimizer,
            schedulers=[warmup_scheduler, cosine_scheduler],
            milestones=[warmup_steps],
        )

    def train_step(self, batch: Dict) -> Dict[str, float]:
        self.model.train()
        videos = batch["video"].to(self.device)  # [B, C, T, H, W] in [-1, 1]
        context, context_mask = self.text_encoder(batch["text"])

        noise = torch.randn_like(videos)
        timesteps = torch.randint(0, self.noise_scheduler.num_train_timesteps, (videos.shape[0],),
                                  device=self.device).long()
        noisy_videos = self.noise_scheduler.add_noise(videos, noise, timesteps)

        if self.ddim_config.prediction_type == "epsilon":
            target = noise
        elif self.ddim_config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(videos, noise, timesteps)
        else:
            raise ValueError(f"Unknown prediction type {self.ddim_config.prediction_type}")

        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
            noise_pred = self.model(noisy_videos, timesteps, context, context_mask)

            mse_loss = F.mse_loss(noise_pred, target)

            # Compute perceptual loss on first frame for efficiency
            with torch.no_grad():
                # Denormalize for LPIPS (expects [0,1])
                pred_frame = (noise_pred[:, :, 0] + 1) / 2  # First frame
                target_frame = (target[:, :, 0] + 1) / 2
                perceptual_loss = self.lpips_loss_fn(pred_frame, target_frame).mean()

            loss = mse_loss + self.lpips_weight * perceptual_loss

        # Log both losses
        if self.global_step % self.train_config.log_every == 0:
            self.writer.add_scalar("train/mse_loss", mse_loss.item(), self.global_step)
            self.writer.add_scalar("train/perceptual_loss", perceptual_loss.item(), self.global_step)

        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        lr = self.optimizer.param_groups[0]["lr"]

        if self.global_step % self.train_config.log_every == 0:
            # Existing logging
            self.writer.add_scalar("train/loss", loss.item(), self.global_step)
            self.writer.add_scalar("train/lr", lr, self.global_step)
            
            # NEW: EMA tracking
            if self.ema is not None:
                ema_params = [p for p in self.ema.shadow.values()]
                model_params = [p for p in self.model.parameters()]
                param_diff = sum((e - m).abs().mean() for e, m in zip(ema_params, model_params))
                self.writer.add_scalar("ema/param_difference", param_diff, self.global_step)
            
            # NEW: Gradient statistics
            total_norm = 0
            for p in self.model.parameters():
                if p.grad is not None:
                    total_norm += p.grad.data.norm(2).item() ** 2
            total_norm = total_norm ** 0.5
            self.writer.add_scalar("train/grad_norm", total_norm, self.global_step)

        torch.nn.utils.clip_grad_norm_(self.trainable_params, self.train_config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_scheduler.step()

        # In train_step(), after optimizer.step():
        if self.ema is not None:
            self.ema.update()

        self.global_step += 1
        return {"loss": loss.item(), "mse": mse_loss.item(), "lpips": perceptual_loss.item(), "lr": lr}

    def save_checkpoint(self, path: Path):
        checkpoint = {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model_state_dict": self.model.state_dict(),
            "text_projection_state_dict": self.text_encoder.projection.state_dict(),
            "optimizer_state_dict": self.optimizer.state_dict(),
            "lr_scheduler_state_dict": self.lr_scheduler.state_dict(),
            "scaler_state_dict": self.scaler.state_dict(),
            "model_config": asdict(self.model_config),
            "ddim_config": asdict(self.ddim_config),
        }
        if self.ema is not None:
            checkpoint["ema_state_dict"] = self.ema.state_dict()
        torch.save(checkpoint, path)
        torch.save(checkpoint, self.checkpoint_dir / "latest.pt")

    def load_checkpoint(self, path: str):
        checkpoint = torch.load(path, map_location=self.device)
        self.model.load_state_dict(checkpoint["model_state_dict"])
        self.text_encoder.projection.load_state_dict(checkpoint["text_projection_state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        self.lr_scheduler.load_state_dict(checkpoint["lr_scheduler_state_dict"])
        self.scaler.load_state_dict(checkpoint["scaler_state_dict"])
        self.epoch = checkpoint["epoch"] + 1
        self.global_step = checkpoint["global_step"]
        if self.ema is not None and "ema_state_dict" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema_state_dict"])

    @torch.no_grad()
    def generate_samples(self, prompts: List[str], num_inference_steps: Optional[int] = None) -> torch.Tensor:
        self.model.eval()
        if self.ema is not None:
            self.ema.apply_shadow()  # Use EMA weights for generation

        context, context_mask = self.text_encoder(prompts)
        shape = (len(prompts), self.model_config.in_channels, self.model_config.num_frames,
                 self.model_config.image_size, self.model_config.image_size)
        x = torch.randn(shape, device=self.device)
        self.noise_scheduler.set_timesteps(num_inference_steps or self.ddim_config.num_inference_steps)
        for t in self.noise_scheduler.timesteps:
            t_batch = torch.full((len(prompts),), int(t), device=self.device, dtype=torch.long)
            model_output = self.model(x, t_batch, context, context_mask)
            x = self.noise_scheduler.step(model_output, int(t), x, eta=self.ddim_config.eta)

        if self.ema is not None:
            self.ema.restore()  # Restore training weights
        self.model.train()
        return x.clamp(-1, 1)

    def train(self):
        if self.train_config.resume_from:
            self.load_checkpoint(self.train_config.resume_from)
        prompts = [self.train_dataset[i]["text"] for i in range(self.train_config.num_samples)]

        for epoch in range(self.epoch, self.train_config.num_epochs):
            self.epoch = epoch
            pbar = tqdm(self.train_dataloader, desc=f"Epoch {epoch + 1}/{self.train_config.num_epochs}")
            for batch in pbar:
                metrics = self.train_step(batch)
                pbar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")

            if (epoch + 1) % self.train_config.sample_every == 0:
                videos = self.generate_samples(prompts)
                save_video_grid(videos, self.output_dir / f"samples_epoch_{epoch + 1}.gif")
            if (epoch + 1) % self.train_config.save_every == 0 or epoch + 1 == self.train_config.num_epochs:
                self.save_checkpoint(self.checkpoint_dir / f"epoch_{epoch + 1}.pt")
        self.writer.close()
