"""The noisy input is computed inline, not by a scheduler's add_noise: nothing proves how to get x0 back."""
import torch
import torch.nn.functional as F


def train(model, loader, optimizer, alphas_cumprod):
    for x0 in loader:
        t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],))
        noise = torch.randn_like(x0)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noise_pred = model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t)
        loss = F.mse_loss(noise_pred, noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
