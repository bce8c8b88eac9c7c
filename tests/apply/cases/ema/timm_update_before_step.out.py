"""Text-to-video diffusion at 128x128x16 in plain PyTorch (timm EMA, diffusers noise scheduler).

    python train.py --data data/how2sign/manifest.jsonl --out runs/v128
"""
import argparse
import math
from pathlib import Path

import lpips
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from timm.utils import ModelEmaV2
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from signgen.data import VideoTextDataset
from signgen.models import FrozenCLIPTextEmbedder, VideoUNet


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=str, required=True)
    p.add_argument("--out", type=str, default="runs/v128")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--model-channels", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=0.9995)
    p.add_argument("--lpips-weight", type=float, default=0.05)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--resume", type=str, default=None)
    return p.parse_args()


@torch.no_grad()
def sample(model, text_encoder, noise_scheduler, prompts, args, device, steps=50):
    context = text_encoder(prompts)
    x = torch.randn(len(prompts), 3, args.num_frames, args.image_size, args.image_size, device=device)
    noise_scheduler.set_timesteps(steps)
    for t in noise_scheduler.timesteps:
        model_output = model(x, t.expand(len(prompts)).to(device), context)
        x = noise_scheduler.step(model_output, t, x).prev_sample
    return x.clamp(-1, 1)


def main():
    args = parse_args()
    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                    prediction_type="v_prediction")
    text_encoder = FrozenCLIPTextEmbedder("openai/clip-vit-base-patch32").to(device)
    model = VideoUNet(in_channels=3, model_channels=args.model_channels, channel_mult=(1, 2, 4, 4),
                      num_frames=args.num_frames, context_dim=512).to(device)
    ema = ModelEmaV2(model, decay=args.ema_decay)
    perceptual = lpips.LPIPS(net="vgg").to(device).eval().requires_grad_(False)

    dataset = VideoTextDataset(args.data, image_size=args.image_size, num_frames=args.num_frames)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=8, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    total_steps = args.epochs * len(loader)

    def lr_lambda(step):
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps)))

    scheduler = LambdaLR(optimizer, lr_lambda)
    writer = SummaryWriter(str(out / "tb"))

    step, start_epoch = 0, 0
    if args.resume:
        ckpt = torch.load(args.resume, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, start_epoch = ckpt["step"], ckpt["epoch"] + 1

    for epoch in range(start_epoch, args.epochs):
        model.train()
        for batch in loader:
            x0 = batch["video"].to(device)  # [B, 3, T, H, W] in [-1, 1]
            context = text_encoder(batch["text"])
            noise = torch.randn_like(x0)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],), device=device)
            noisy = noise_scheduler.add_noise(x0, noise, t)
            target = noise_scheduler.get_velocity(x0, noise, t)

            with torch.autocast("cuda", dtype=torch.bfloat16):
                pred = model(noisy, t, context)
            pred = pred.float()
            mse = F.mse_loss(pred, target)

            alpha_bar = noise_scheduler.alphas_cumprod.to(device)[t].view(-1, 1, 1, 1, 1)
            x0_pred = alpha_bar.sqrt() * noisy - (1 - alpha_bar).sqrt() * pred
            lp = perceptual(x0_pred.clamp(-1, 1), x0).mean()
            loss = mse + args.lpips_weight * lp

            loss.backward()
            optimizer.step()
            ema.update(model)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            if step % args.log_every == 0:
                writer.add_scalar("loss/total", loss.item(), step)
                writer.add_scalar("loss/lpips", lp.item(), step)
                writer.add_scalar("opt/lr", scheduler.get_last_lr()[0], step)
                writer.add_scalar("opt/grad_norm", grad_norm.item(), step)

        torch.save({"model": model.state_dict(), "ema": ema.module.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "epoch": epoch}, out / f"epoch_{epoch:03d}.pt")
        videos = sample(ema.module, text_encoder, noise_scheduler, ["HELLO", "THANK YOU"], args, device)
        torch.save(videos.cpu(), out / f"samples_{epoch:03d}.pt")


if __name__ == "__main__":
    main()
