"""
A minimal training script for DiT on pre-extracted VAE latents (single process).
Without --feature-path it trains on random stand-in latents, which is enough to check the plumbing.
"""
import argparse
import logging
import os
from collections import OrderedDict
from copy import deepcopy
from glob import glob
from time import time

import torch
from torch.utils.data import DataLoader, Dataset

from diffusion import create_diffusion
from models import DiT_models

# the first flag below was False when we tested this script but True makes A100 training a lot faster:
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True


#################################################################################
#                             Training Helper Functions                         #
#################################################################################

@torch.no_grad()
def update_ema(ema_model, model, decay=0.9999):
    """
    Step the EMA model towards the current model.
    """
    ema_params = OrderedDict(ema_model.named_parameters())
    model_params = OrderedDict(model.named_parameters())

    for name, param in model_params.items():
        # TODO: Consider applying only to params that require_grad to avoid small numerical changes of pos_embed
        ema_params[name].mul_(decay).add_(param.data, alpha=1 - decay)


def requires_grad(model, flag=True):
    """
    Set requires_grad flag for all parameters in a model.
    """
    for p in model.parameters():
        p.requires_grad = flag


def create_logger(logging_dir):
    logging.basicConfig(
        level=logging.INFO,
        format='[\033[34m%(asctime)s\033[0m] %(message)s',
        datefmt='%Y-%m-%d %H:%M:%S',
        handlers=[logging.StreamHandler(), logging.FileHandler(f"{logging_dir}/log.txt")]
    )
    return logging.getLogger(__name__)


class LatentDataset(Dataset):
    """Pre-extracted latents (features/*.pt holding {"x": [4, H/8, W/8], "y": int}), or random stand-ins."""

    def __init__(self, feature_path, latent_size, num_classes, length):
        self.files = sorted(glob(f"{feature_path}/*.pt")) if feature_path else None
        self.latent_size, self.num_classes, self.length = latent_size, num_classes, length

    def __len__(self):
        return len(self.files) if self.files else self.length

    def __getitem__(self, idx):
        if self.files:
            item = torch.load(self.files[idx])
            return item["x"], item["y"]
        g = torch.Generator().manual_seed(idx)
        y = idx % self.num_classes
        x = torch.randn(4, self.latent_size, self.latent_size, generator=g) * 0.5 + (y / self.num_classes - 0.5)
        return x, y


#################################################################################
#                                  Training Loop                                #
#################################################################################

def main(args):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.global_seed)

    # Setup an experiment folder:
    os.makedirs(args.results_dir, exist_ok=True)
    experiment_index = len(glob(f"{args.results_dir}/*"))
    model_string_name = args.model.replace("/", "-")
    experiment_dir = f"{args.results_dir}/{experiment_index:03d}-{model_string_name}"
    checkpoint_dir = f"{experiment_dir}/checkpoints"
    os.makedirs(checkpoint_dir, exist_ok=True)
    logger = create_logger(experiment_dir)
    logger.info(f"Experiment directory created at {experiment_dir}")

    # Create model:
    assert args.image_size % 8 == 0, "Image size must be divisible by 8 (for the VAE encoder)."
    latent_size = args.image_size // 8
    model = DiT_models[args.model](input_size=latent_size, num_classes=args.num_classes)
    # Note that parameter initialization is done within the DiT constructor
    ema = deepcopy(model).to(device)  # Create an EMA of the model for use after training
    requires_grad(ema, False)
    model = model.to(device)
    diffusion = create_diffusion(timestep_respacing="", diffusion_steps=args.diffusion_steps)  # default: 1000 steps, linear noise schedule
    logger.info(f"DiT Parameters: {sum(p.numel() for p in model.parameters()):,}")

    # Setup optimizer (we used default Adam betas=(0.9, 0.999) and a constant learning rate of 1e-4 in our paper):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)

    # Setup data:
    dataset = LatentDataset(args.feature_path, latent_size, args.num_classes,
                            length=args.steps_per_epoch * args.global_batch_size)
    loader = DataLoader(dataset, batch_size=args.global_batch_size, shuffle=True,
                        num_workers=args.num_workers, drop_last=True)
    logger.info(f"Dataset contains {len(dataset):,} latents ({args.feature_path or 'random'})")

    # Prepare models for training:
    update_ema(ema, model, decay=0)  # Ensure EMA is initialized with synced weights
    model.train()  # important! This enables embedding dropout for classifier-free guidance
    ema.eval()  # EMA model should always be in eval mode

    # Variables for monitoring/logging purposes:
    train_steps = 0
    log_steps = 0
    running_loss = 0
    start_time = time()

    logger.info(f"Training for {args.epochs} epochs...")
    for epoch in range(args.epochs):
        logger.info(f"Beginning epoch {epoch}...")
        for x, y in loader:
            x = x.to(device)
            y = y.to(device)
            t = torch.randint(0, diffusion.num_timesteps, (x.shape[0],), device=device)
            model_kwargs = dict(y=y)
            loss_dict = diffusion.training_losses(model, x, t, model_kwargs)
            loss = loss_dict["loss"].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            update_ema(ema, model, decay=args.ema_decay)

            # Log loss values:
            running_loss += loss.item()
            log_steps += 1
            train_steps += 1
            if train_steps % args.log_every == 0:
                end_time = time()
                steps_per_sec = log_steps / (end_time - start_time)
                avg_loss = running_loss / log_steps
                logger.info(f"(step={train_steps:07d}) Train Loss: {avg_loss:.4f}, Train Steps/Sec: {steps_per_sec:.2f}")
                running_loss = 0
                log_steps = 0
                start_time = time()

            # Save DiT checkpoint:
            if train_steps % args.ckpt_every == 0 and train_steps > 0:
                checkpoint = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "args": args}
                checkpoint_path = f"{checkpoint_dir}/{train_steps:07d}.pt"
                torch.save(checkpoint, checkpoint_path)
                logger.info(f"Saved checkpoint to {checkpoint_path}")

    checkpoint = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "args": args}
    checkpoint_path = f"{checkpoint_dir}/{train_steps:07d}.pt"
    torch.save(checkpoint, checkpoint_path)
    logger.info(f"Saved final checkpoint to {checkpoint_path}")

    model.eval()  # important! This disables randomized embedding dropout
    # do any sampling/FID calculation/etc. with ema (or model) in eval mode ...
    n = args.num_samples
    z = torch.randn(n, 4, latent_size, latent_size, device=device)
    y = torch.arange(n, device=device) % args.num_classes
    z = torch.cat([z, z], 0)
    y = torch.cat([y, torch.full_like(y, args.num_classes)], 0)
    sample_diffusion = create_diffusion(str(args.num_sampling_steps), diffusion_steps=args.diffusion_steps)
    samples = sample_diffusion.p_sample_loop(
        model.forward_with_cfg, z.shape, z, clip_denoised=False,
        model_kwargs=dict(y=y, cfg_scale=args.cfg_scale), device=device,
    )
    samples, _ = samples.chunk(2, dim=0)  # Remove null class samples
    torch.save(samples.cpu(), f"{experiment_dir}/samples.pt")
    logger.info("Done!")


if __name__ == "__main__":
    # Default args here will train a tiny DiT; use --model DiT-S/4 for real runs.
    parser = argparse.ArgumentParser()
    parser.add_argument("--feature-path", type=str, default=None)
    parser.add_argument("--results-dir", "--out", type=str, default="results")
    parser.add_argument("--model", type=str, choices=list(DiT_models.keys()), default="DiT-T/4")
    parser.add_argument("--image-size", type=int, choices=[128, 256, 512], default=256)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1400)
    parser.add_argument("--steps-per-epoch", type=int, default=100, help="only used for random latents")
    parser.add_argument("--global-batch-size", type=int, default=16)
    parser.add_argument("--global-seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--ckpt-every", type=int, default=50_000)
    parser.add_argument("--diffusion-steps", type=int, default=1000)
    parser.add_argument("--ema-decay", type=float, default=0.9999)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--num-sampling-steps", type=int, default=50)
    parser.add_argument("--cfg-scale", type=float, default=4.0)
    args = parser.parse_args()
    main(args)
