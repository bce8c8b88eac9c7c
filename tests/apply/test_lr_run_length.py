"""The lr-schedule fix computes the run's optimizer steps from what the trainer has: an epochs flag
times the length of a loader built by a helper (dome272's ``dataloader = get_data(args)``), or a run
length named ``iterations`` (abarankab's ``args.iterations``). Both were refused ("cannot compute the
run's optimizer steps"). The patched trainer runs and its learning rate warms up and decays."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from optimizer_tool.cli import app


def _apply_lr(tmp_path, name: str, text: str):
    """``apply --only lr-schedule --out`` on a one-file project: (report, patched folder)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / name).write_text(text)
    out = tmp_path / "patched"
    result = CliRunner().invoke(app, ["apply", "--only", "lr-schedule", "--out", str(out), str(tmp_path / "src")])
    return result, out


def _printed_lrs(folder, script: str, *flags: str) -> list[float]:
    """Run the patched trainer; the learning rates it prints (``lr <value>`` or ``<epoch> <value>``)."""
    done = subprocess.run([sys.executable, script, *flags], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [float(line.split()[1]) for line in done.stdout.splitlines()]


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
    result, out = _apply_lr(tmp_path, "ddpm.py", TRAIN)
    assert "fixed LR001" in result.output, result.output
    assert "total_steps = args.epochs * len(dataloader)" in (out / "ddpm.py").read_text()
    lrs = _printed_lrs(out, "ddpm.py")
    assert len(lrs) == 3 and lrs[-1] < lrs[0] < 3e-4 + 1e-12, lrs  # decays over the run, never above the base


def test_an_iterations_flag_is_the_run_length(tmp_path):
    text = TRAIN.replace('"--epochs", type=int, default=3', '"--iterations", type=int, default=12').replace(
        "for epoch in range(args.epochs):", "for epoch in range(args.iterations // len(dataloader)):"
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ddpm.py").write_text(text)
    result = CliRunner().invoke(app, ["apply", "--only", "lr-schedule", "--diff", str(tmp_path / "src")])
    assert "total_steps = args.iterations" in result.output, result.output


RESUME_FIRST = """\
import argparse

import torch


def main(args):
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = 0
    if args.ckpt is not None:
        state = torch.load(args.ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"] + 1
    data = torch.utils.data.TensorDataset(torch.randn(16, 4))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    for epoch in range(start, args.epochs):
        for (x,) in loader:
            loss = ((model(x) - x) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        print("lr", opt.param_groups[0]["lr"])
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, f"ckpt_{epoch}.pt")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--ckpt", type=str, default=None)
    main(parser.parse_args())
"""


def test_a_resume_before_the_schedule_is_built_restores_it_after(tmp_path):
    """SiT-style: the checkpoint is loaded before the loader the schedule's length needs is built, so
    the schedule is restored right after it is built, under the resume's own condition (it was
    restored before it existed: refused by the def-use check)."""
    result, out = _apply_lr(tmp_path, "train.py", RESUME_FIRST)
    assert "fixed LR001" in result.output, result.output
    assert 'if args.ckpt is not None:\n        if "lr_scheduler" in state:' in (out / "train.py").read_text()
    straight = _printed_lrs(out, "train.py")
    resumed = _printed_lrs(out, "train.py", "--ckpt", "ckpt_1.pt")
    assert len(straight) == 4 and resumed == straight[2:], (straight, resumed)


WARMUP_ONLY = """\
import argparse

import torch
from tqdm import trange

parser = argparse.ArgumentParser()
parser.add_argument("--total_steps", type=int, default=40)
parser.add_argument("--warmup", type=int, default=3)
args = parser.parse_args()


def warmup_lr(step):
    return min(step, args.warmup) / args.warmup


def train():
    model = torch.nn.Linear(4, 4)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda=warmup_lr)
    with trange(args.total_steps, dynamic_ncols=True) as pbar:
        for step in pbar:
            x = torch.randn(8, 4)
            loss = ((model(x) - x) ** 2).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            print("lr", sched.get_last_lr()[0])


if __name__ == "__main__":
    train()
"""


def test_a_warm_up_only_lambda_gets_a_cosine_factor(tmp_path):
    """pytorch-ddpm: ``LambdaLR(optim, lr_lambda=warmup_lr)`` with a module-level warm-up that then stays
    at 1 (LR002): the factor is multiplied by a cosine over the run down to 1% (it was refused: the
    function is not defined inside the function that builds the schedule)."""
    result, out = _apply_lr(tmp_path, "main.py", WARMUP_ONLY)
    assert "fixed LR002" in result.output, result.output
    assert "lr_lambda=lambda step: warmup_lr(step) * (args.min_lr_ratio + " in (out / "main.py").read_text()
    lrs = _printed_lrs(out, "main.py")
    peak = max(lrs)
    assert lrs.index(peak) <= 3 and 0.9e-3 < peak <= 1e-3, lrs  # the warm-up is kept
    assert 1e-5 - 1e-12 <= lrs[-1] < 0.05 * peak, lrs  # decays to the 1% floor by the end


def test_a_run_length_that_defaults_to_zero_is_no_end(tmp_path):
    """improved-diffusion: ``lr_anneal_steps=0`` means "train until stopped"; a schedule over it ended
    after one step (it was refused only by accident, on a later pass)."""
    text = """\
import torch


class TrainLoop:
    def __init__(self, model, lr=1e-4, lr_anneal_steps=0):
        self.model = model
        self.lr_anneal_steps = lr_anneal_steps
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.step = 0

    def run_step(self, x):
        loss = ((self.model(x) - x) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.step += 1

    def run_loop(self):
        while not self.lr_anneal_steps or self.step < self.lr_anneal_steps:
            self.run_step(torch.randn(4, 4))


if __name__ == "__main__":
    TrainLoop(torch.nn.Linear(4, 4)).run_loop()
"""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train_util.py").write_text(text)
    result = CliRunner().invoke(app, ["apply", "--only", "lr-schedule", "--diff", str(tmp_path / "src")])
    assert "the run length `lr_anneal_steps` defaults to 0 (train until stopped)" in result.output, result.output


def test_an_epochs_count_set_after_the_optimizer_moves_the_schedule_after_it(tmp_path):
    """A module-level loop whose ``num_epochs = 10`` is set after the optimizer: the schedule is built
    after that line (the loop-read length was refused: its name was not bound yet)."""
    text = """\
import torch
from torch.utils.data import DataLoader

model = torch.nn.Linear(2, 2)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
loader = DataLoader(torch.randn(64, 2), batch_size=8)
num_epochs = 3
for epoch in range(num_epochs):
    for x in loader:
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print("lr", optimizer.param_groups[0]["lr"])
"""
    result, out = _apply_lr(tmp_path, "train.py", text)
    assert "fixed LR001" in result.output, result.output
    patched = (out / "train.py").read_text()
    assert patched.index("num_epochs = 3") < patched.index("total_steps = num_epochs * len(loader)")
    lrs = _printed_lrs(out, "train.py")
    assert len(lrs) == 3 and lrs[-1] < lrs[0], lrs


DICT_CONFIG = """\
import torch


def training_function(config):
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"])
    max_train_steps = config["max_train_steps"]
    overall_step = 0
    while True:
        loss = model(torch.randn(2, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        overall_step += 1
        if overall_step >= max_train_steps:
            break


if __name__ == "__main__":
    training_function({"lr": 1e-4, "num_epochs": 20, "max_train_steps": 1000})
"""


def test_a_refusal_names_the_run_length_a_dict_sets_instead_of_denying_it(tmp_path):
    """uyo9ko/flow-matching-deepspeed: ``config["max_train_steps"]`` bounds the loop; the refusal said
    "no max-steps setting". It now says where the setting is and that the fix cannot read it there."""
    result, _ = _apply_lr(tmp_path, "train.py", DICT_CONFIG)
    assert result.exit_code == 2 or "not applied" in result.output, result.output
    assert "no max-steps setting" not in result.output
    line = next(i + 1 for i, text in enumerate(DICT_CONFIG.splitlines()) if '"max_train_steps": 1000' in text)
    assert f"`max_train_steps` is set in a dict (train.py:{line})" in result.output


SEPARATE_OPTIMIZER_FILE = """\
import argparse

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optim_checkpoint", default=None)
    args = parser.parse_args()
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if args.optim_checkpoint is not None:
        optimizer.load_state_dict(torch.load(args.optim_checkpoint))
    loader = torch.utils.data.DataLoader(torch.randn(8, 4), batch_size=4)
    for epoch in range(args.epochs):
        for x in loader:
            loss = (model(x) - x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.save(model.state_dict(), "model.pt")
        torch.save(optimizer.state_dict(), "optim.pt")


if __name__ == "__main__":
    main()
"""


def test_an_optimizer_restored_from_its_own_file_refuses_a_schedule_it_cannot_restore(tmp_path):
    """abarankab/DDPM: ``optimizer.load_state_dict(torch.load(args.optim_checkpoint))``. A schedule
    added without its own save and restore would start over (warm-up again) on every resumed run
    while the optimizer's state came back: refused, not written."""
    result, out = _apply_lr(tmp_path, "train.py", SEPARATE_OPTIMIZER_FILE)
    assert result.exit_code == 2, result.output
    assert "is restored from `torch.load(args.optim_checkpoint)`" in result.output
    assert "start the schedule over" in result.output
    assert not (out / "train.py").exists()
