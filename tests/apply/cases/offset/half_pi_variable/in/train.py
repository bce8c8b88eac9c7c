import math

import torch


def cosine_beta_schedule(timesteps):
    half_pi = math.pi / 2
    t = torch.linspace(0, 1, timesteps + 1)
    alphas_cumprod = torch.cos(t * half_pi) ** 2
    return torch.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)


def train(model, loader, optimizer):
    betas = cosine_beta_schedule(1000)
    for x in loader:
        loss = (model(x, betas) - x).pow(2).mean()
        loss.backward()
        optimizer.step()
