"""Pixel-space DDPM with a cosine-annealed learning rate that neither warms up nor keeps a floor."""
import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    args = parser.parse_args()

    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    loader = DataLoader(torch.randn(512, 3, 32, 32), batch_size=args.batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    total_steps = args.epochs * len(loader)
    # one cosine over the whole run, per optimizer step
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), dim=0)

    for epoch in range(args.epochs):
        for x0 in loader:
            t = torch.randint(0, 1000, (x0.shape[0],))
            noise = torch.randn_like(x0)
            a = alphas_cumprod[t].view(-1, 1, 1, 1)
            loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise), noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()


if __name__ == "__main__":
    main()
