"""The lr-schedule fix computes the run's optimizer steps from what the trainer has: an epochs flag
times the length of a loader built by a helper (dome272's ``dataloader = get_data(args)``), or a run
length named ``iterations`` (abarankab's ``args.iterations``). Both were refused ("cannot compute the
run's optimizer steps"). The patched trainer runs and its learning rate warms up and decays."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from optimizer_tool.cli import app

TRAIN = """\
import argparse

import torch
from torch import optim


def get_data(args):
    dataset = torch.utils.data.TensorDataset(torch.randn(16, 4))
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True)


def train(args):
    dataloader = get_data(args)
    model = torch.nn.Linear(4, 4)
    optimizer = optim.AdamW(model.parameters(), lr=args.lr)
    mse = torch.nn.MSELoss()
    for epoch in range(args.epochs):
        for i, (images,) in enumerate(dataloader):
            noise = torch.randn_like(images)
            loss = mse(noise, model(images + noise))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(epoch, optimizer.param_groups[0]["lr"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    train(parser.parse_args())
"""


def test_epochs_times_a_helper_built_loader_is_the_run_length(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ddpm.py").write_text(TRAIN)
    out = tmp_path / "patched"
    result = CliRunner().invoke(app, ["apply", "--only", "lr-schedule", "--out", str(out), str(tmp_path / "src")])
    assert "fixed LR001" in result.output, result.output
    assert "total_steps = args.epochs * len(dataloader)" in (out / "ddpm.py").read_text()
    done = subprocess.run([sys.executable, "ddpm.py"], cwd=out, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lrs = [float(line.split()[1]) for line in done.stdout.splitlines()]
    assert len(lrs) == 3 and lrs[-1] < lrs[0] < 3e-4 + 1e-12, lrs  # decays over the run, never above the base


def test_an_iterations_flag_is_the_run_length(tmp_path):
    text = TRAIN.replace('"--epochs", type=int, default=3', '"--iterations", type=int, default=12').replace(
        "for epoch in range(args.epochs):", "for epoch in range(args.iterations // len(dataloader)):"
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ddpm.py").write_text(text)
    result = CliRunner().invoke(app, ["apply", "--only", "lr-schedule", "--diff", str(tmp_path / "src")])
    assert "total_steps = args.iterations" in result.output, result.output
