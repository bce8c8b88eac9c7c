"""Keyframe DDPM as a LightningModule; the Trainer is built here (fp16, no gradient clipping)."""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch.utils.data import DataLoader


class LitDiffusion(pl.LightningModule):
    def __init__(self, lr=1e-4, image_size=64):
        super().__init__()
        self.save_hyperparameters()
        self.model = UNet2DModel(sample_size=image_size)
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")

    def training_step(self, batch, batch_idx):
        noise = torch.randn_like(batch)
        t = torch.randint(0, 1000, (batch.shape[0],), device=batch.device)
        noisy = self.noise_scheduler.add_noise(batch, noise, t)
        loss = F.mse_loss(self.model(noisy, t).sample, noise)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    loader = DataLoader(torch.load(args.data), batch_size=16, shuffle=True)
    trainer = pl.Trainer(max_epochs=args.epochs, precision="16-mixed", log_every_n_steps=50)
    trainer.fit(LitDiffusion(lr=args.lr), loader)


if __name__ == "__main__":
    main()
