"""A loop whose checkpoints are written by a helper that receives the objects it saves."""
import torch
import torch.nn.functional as F


def save_checkpoint(model, optimizer, path):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)


def main():
    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(100):
        x = torch.randn(4, 8)
        loss = F.mse_loss(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_checkpoint(model, optimizer, "checkpoint.pt")


if __name__ == "__main__":
    main()
