"""Small DDPM on synthetic blobs with SNR-weighted loss and a timestep curriculum.

    python train.py --epochs 10 --steps-per-epoch 200 --out runs/snr
"""
import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class Denoiser(nn.Module):
    def __init__(self, ch=16):
        super().__init__()
        self.ch = ch
        self.temb = nn.Linear(ch, ch)
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.mid = nn.Conv2d(ch, ch, 3, padding=1)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x, t):
        freqs = torch.exp(-math.log(10000) * torch.arange(self.ch // 2, device=x.device) / (self.ch // 2))
        ang = t.float()[:, None] * freqs[None]
        emb = self.temb(torch.cat([ang.sin(), ang.cos()], dim=1))[:, :, None, None]
        h = F.silu(self.inp(x) + emb)
        h = F.silu(self.mid(h)) + h
        return self.out(h)


def synthetic_batch(batch_size, size, generator):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centers = torch.rand(batch_size, 2, 1, 1, generator=generator) * 1.2 - 0.6
    blob = torch.exp(-((xx - centers[:, 0]) ** 2 + (yy - centers[:, 1]) ** 2) / 0.1)
    colors = torch.rand(batch_size, 3, 1, 1, generator=generator)
    return (blob[:, None] * colors) * 2 - 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--beta-start", type=float, default=0.0)
    parser.add_argument("--beta-end", type=float, default=0.02)
    parser.add_argument("--out", type=str, default="runs/snr")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="the EMA averages over ~1 / (1 - ema_decay) optimizer steps")
    args = parser.parse_args()

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    betas = torch.linspace(args.beta_start, args.beta_end, args.timesteps)
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    snr = alphas_cumprod / (1 - alphas_cumprod)

    model = Denoiser()
    # EMA of the weights: updated once per optimizer step, saved with the checkpoints, used for sampling
    ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay), use_buffers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    # curriculum: skip the low-noise end for the first half epoch, then cover [0, T) evenly
    curriculum_steps = max(1, args.steps_per_epoch // 2)

    step = 0
    with open(out / "metrics.jsonl", "w") as log:
        for epoch in range(args.epochs):
            for _ in range(args.steps_per_epoch):
                x0 = synthetic_batch(args.batch_size, args.image_size, gen)
                t_min = args.timesteps // 4 if step < curriculum_steps else 0
                t = torch.linspace(t_min, args.timesteps - 1, args.batch_size).round().long()
                noise = torch.randn_like(x0)
                a = alphas_cumprod[t].view(-1, 1, 1, 1)
                xt = a.sqrt() * x0 + (1 - a).sqrt() * noise

                # epsilon MSE weighted by SNR(t) == MSE on the implied x0 estimate
                per_sample = F.mse_loss(model(xt, t), noise, reduction="none").mean(dim=(1, 2, 3))
                loss = (snr[t] * per_sample).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                ema_model.update_parameters(model)
                step += 1
                log.write(json.dumps({"step": step, "epoch": epoch, "loss": loss.item()}) + "\n")
            print(f"epoch {epoch}: loss {loss.item():.4f}")
            torch.save({"model": model.state_dict(), "ema": ema_model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                        "step": step}, out / "checkpoint.pt")


if __name__ == "__main__":
    main()
