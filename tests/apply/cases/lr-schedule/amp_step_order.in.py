"""Pixel-space DDPM/DDIM on synthetic shapes, mixed precision.

    python train.py --epochs 20 --steps-per-epoch 200 --out runs/amp
"""
import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset


def betas_for_alpha_bar(num_diffusion_timesteps, max_beta=0.999, alpha_transform_type="cosine"):
    """Same as diffusers.schedulers.scheduling_ddpm.betas_for_alpha_bar ("squaredcos_cap_v2")."""
    if alpha_transform_type == "cosine":
        def alpha_bar_fn(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    elif alpha_transform_type == "exp":
        def alpha_bar_fn(t):
            return math.exp(t * -12.0)
    else:
        raise ValueError(f"Unsupported alpha_transform_type: {alpha_transform_type}")

    betas = []
    for i in range(num_diffusion_timesteps):
        t1 = i / num_diffusion_timesteps
        t2 = (i + 1) / num_diffusion_timesteps
        betas.append(min(1 - alpha_bar_fn(t2) / alpha_bar_fn(t1), max_beta))
    return torch.tensor(betas, dtype=torch.float32)


class DDIMScheduler:
    """The bits of diffusers.DDIMScheduler this script needs (same argument names)."""

    def __init__(self, num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear"):
        if beta_schedule == "linear":
            self.betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        elif beta_schedule == "squaredcos_cap_v2":
            self.betas = betas_for_alpha_bar(num_train_timesteps)
        else:
            raise NotImplementedError(f"{beta_schedule} is not implemented")
        self.num_train_timesteps = num_train_timesteps
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    def add_noise(self, original_samples, noise, timesteps):
        a = self.alphas_cumprod.to(original_samples.device)[timesteps].view(-1, 1, 1, 1)
        return a.sqrt() * original_samples + (1 - a).sqrt() * noise

    @torch.no_grad()
    def sample(self, model, shape, num_inference_steps=25, device="cpu"):
        x = torch.randn(shape, device=device)
        ts = torch.linspace(self.num_train_timesteps - 1, 0, num_inference_steps).long().tolist()
        for i, t in enumerate(ts):
            a_t = self.alphas_cumprod[t]
            a_prev = self.alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            eps = model(x, torch.full((shape[0],), t, device=device, dtype=torch.long)).float()
            x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return x


class ShapesDataset(Dataset):
    """Random coloured rectangles on a flat background, in [-1, 1]."""

    def __init__(self, length, image_size=32, seed=0):
        self.length, self.image_size, self.seed = length, image_size, seed

    def __len__(self):
        return self.length

    def __getitem__(self, idx):
        g = torch.Generator().manual_seed(self.seed * 100003 + idx)
        s = self.image_size
        img = torch.rand(3, 1, 1, generator=g).expand(3, s, s).clone()
        x0, y0 = torch.randint(0, s // 2, (2,), generator=g).tolist()
        w, h = torch.randint(s // 4, s // 2, (2,), generator=g).tolist()
        img[:, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=g)
        return img * 2 - 1


class ResBlock(nn.Module):
    def __init__(self, ch, temb_ch):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.temb = nn.Linear(temb_ch, ch)
        self.norm2, self.conv2 = nn.GroupNorm(8, ch), nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(temb)[:, :, None, None]
        return x + self.conv2(F.silu(self.norm2(h)))


class TinyUNet(nn.Module):
    def __init__(self, ch=16):
        super().__init__()
        self.ch = ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, ch * 4), nn.SiLU(), nn.Linear(ch * 4, ch * 4))
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        self.mid = ResBlock(ch, ch * 4)
        self.up = nn.ConvTranspose2d(ch, ch, 4, stride=2, padding=1)
        self.out = ResBlock(ch, ch * 4)
        self.conv_out = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x, t):
        half = self.ch // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=x.device) / half)
        args = t.float()[:, None] * freqs[None]
        temb = self.time_mlp(torch.cat([args.sin(), args.cos()], dim=-1))
        h = self.conv_in(x)
        h = self.up(self.mid(self.down(h), temb)) + h
        return self.conv_out(F.silu(self.out(h, temb)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup-ratio", type=float, default=0.05)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--num-train-timesteps", type=int, default=1000)
    parser.add_argument("--out", type=str, default="runs/amp")
    parser.add_argument("--resume", type=str, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_amp = device.type == "cuda"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    noise_scheduler = DDIMScheduler(num_train_timesteps=args.num_train_timesteps, beta_schedule="squaredcos_cap_v2")
    dataset = ShapesDataset(args.steps_per_epoch * args.batch_size, args.image_size, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)

    model = TinyUNet().to(device)
    ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)

    total_steps = args.epochs * len(loader)
    warmup_steps = max(1, int(args.warmup_ratio * total_steps))

    def lr_lambda(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    lr_scheduler = LambdaLR(optimizer, lr_lambda)
    scaler = torch.cuda.amp.GradScaler(enabled=use_amp)

    start_epoch, global_step = 0, 0
    if args.resume:
        ckpt = torch.load(args.resume, map_location=device)
        model.load_state_dict(ckpt["model"])
        ema_model.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, global_step = ckpt["epoch"] + 1, ckpt["step"]

    log_file = open(out / "metrics.jsonl", "a")
    for epoch in range(start_epoch, args.epochs):
        model.train()
        t0 = time.time()
        for images in loader:
            images = images.to(device)
            noise = torch.randn_like(images)
            timesteps = torch.randint(0, noise_scheduler.num_train_timesteps, (images.shape[0],), device=device)
            noisy_images = noise_scheduler.add_noise(images, noise, timesteps)

            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                noise_pred = model(noisy_images, timesteps)
                loss = F.mse_loss(noise_pred.float(), noise)

            scaler.scale(loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            # unscale so the logged gradient norm is in real units
            scaler.unscale_(optimizer)
            grad_norm = torch.sqrt(sum(p.grad.detach().float().pow(2).sum() for p in model.parameters()))

            lr_scheduler.step()
            scaler.step(optimizer)
            scaler.update()
            ema_model.update_parameters(model)
            global_step += 1

            log_file.write(json.dumps({"step": global_step, "epoch": epoch, "loss": loss.item(),
                                       "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norm.item()}) + "\n")
        log_file.flush()
        print(f"epoch {epoch}: loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.2e} "
              f"({time.time() - t0:.1f}s)")

        torch.save(
            {
                "model": model.state_dict(),
                "ema": ema_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "step": global_step,
                "args": vars(args),
            },
            out / "checkpoint.pt",
        )

    samples = noise_scheduler.sample(ema_model.module, (8, 3, args.image_size, args.image_size), device=device)
    torch.save(samples.cpu(), out / "samples.pt")
    log_file.close()


if __name__ == "__main__":
    main()
