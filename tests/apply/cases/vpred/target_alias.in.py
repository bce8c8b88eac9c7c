"""Train a pixel-space video-frame DDPM with accelerate, in the style of the diffusers examples."""

import argparse

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler


def parse_args():
    parser = argparse.ArgumentParser(description="Train a video-frame DDPM.")
    parser.add_argument("--resolution", type=int, default=64, help="Frames are resized to this size.")
    parser.add_argument("--num_frames", type=int, default=16)
    parser.add_argument("--model_channels", type=int, default=96)
    parser.add_argument("--train_batch_size", type=int, default=2)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--max_train_steps", type=int, default=20000)
    parser.add_argument("--lr_warmup_steps", type=int, default=500)
    parser.add_argument("--ddpm_num_steps", type=int, default=1000)
    parser.add_argument("--ddpm_beta_schedule", type=str, default="linear", choices=["linear", "squaredcos_cap_v2"])
    parser.add_argument("--prediction_type", type=str, default="epsilon", choices=["epsilon", "v_prediction"])
    return parser.parse_args()


@torch.no_grad()
def log_validation(model, args, generator):
    scheduler = DDIMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule)
    scheduler.set_timesteps(50)
    image = torch.randn((1, 3, args.resolution, args.resolution), generator=generator)
    for t in scheduler.timesteps:
        image = scheduler.step(model(image, t).sample, t, image).prev_sample
    return image


def main():
    args = parse_args()
    accelerator = Accelerator(gradient_accumulation_steps=4)
    model = UNet2DModel(sample_size=args.resolution, block_out_channels=(args.model_channels, args.model_channels * 2))
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=args.ddpm_num_steps,
        beta_schedule=args.ddpm_beta_schedule,
        prediction_type=args.prediction_type,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps)
    train_dataloader = torch.utils.data.DataLoader(range(8), batch_size=args.train_batch_size)
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(model, optimizer, train_dataloader, lr_scheduler)
    for batch in train_dataloader:
        clean_images = batch["input"]
        noise = torch.randn_like(clean_images)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean_images.shape[0],), device=clean_images.device)
        noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
        with accelerator.accumulate(model):
            model_output = model(noisy_images, timesteps).sample
            target = noise  # the model predicts the noise
            loss = F.mse_loss(model_output.float(), target.float())
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
    log_validation(accelerator.unwrap_model(model), args, torch.Generator().manual_seed(0))


if __name__ == "__main__":
    main()
