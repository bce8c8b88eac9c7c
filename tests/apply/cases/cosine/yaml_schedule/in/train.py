import math

import torch
import yaml


def cosine_beta_schedule(timesteps, s=0.008):
    t = torch.linspace(0, timesteps, timesteps + 1) / timesteps
    alphas_cumprod = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return torch.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)


class Diffusion:
    def __init__(self, timesteps=1000, beta_schedule="cosine"):
        if beta_schedule == "linear":
            self.betas = torch.linspace(1e-4, 0.02, timesteps)
        else:
            self.betas = cosine_beta_schedule(timesteps)

    def training_step(self, batch, batch_idx):
        return self.loss(batch)


config = yaml.safe_load(open("configs/run.yaml"))
diffusion = Diffusion(**config["model"])
