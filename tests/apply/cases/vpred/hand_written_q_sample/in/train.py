import argparse

import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--prediction_type", default="epsilon", choices=["epsilon", "v_prediction"])
args = parser.parse_args()


def q_sample(x0, t, noise, alphas_cumprod):
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def train(model, loader, optimizer, alphas_cumprod):
    for x in loader:
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (x.shape[0],))
        loss = F.mse_loss(model(q_sample(x, t, noise, alphas_cumprod), t), noise)
        loss.backward()
        optimizer.step()
