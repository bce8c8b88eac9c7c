"""Mixed precision with gradient accumulation: the clipping runs on every micro-batch, before the unscale."""
import torch
import torch.nn.functional as F


def train(model, loader, optimizer, accumulation_steps=4, max_grad_norm=1.0):
    scaler = torch.cuda.amp.GradScaler()
    for step, (noisy, t, noise) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = F.mse_loss(model(noisy, t), noise) / accumulation_steps
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if (step + 1) % accumulation_steps == 0:
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
