from dataclasses import dataclass

import torch


@dataclass
class Config:
    prediction_type: str = "v_prediction"


@torch.no_grad()
def sample(model, x, alphas_cumprod, timesteps):
    for t in timesteps:
        a = alphas_cumprod[t]
        eps = model(x, t)
        x0 = (x - torch.sqrt(1 - a) * eps) / torch.sqrt(a)
        x = ddim_step(x0, eps, t)
    return x
