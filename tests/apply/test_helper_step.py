"""Default ``apply`` on trainers whose optimizer step runs in a helper function the trainer calls
(VSehwag/minimal-diffusion's ``train_one_epoch(model, loader, ..., lrs, args)`` in ``main.py``,
Alokia/diffusion-DDIM-pytorch's ``train_one_epoch`` in ``utils/tools.py``): the EMA and the
learning-rate schedule are built where the optimizer is and handed to the helper as keyword
parameters (``ema_model=None``, ``lr_scheduler=None``), used there right after the step. Both fixes
used to refuse ("cannot reach `ema_model`", "runs in another function"). The patched trainers run,
the EMA is averaged and saved, the learning rate warms up and decays; where handing over is not
certain, both fixes refuse and say why."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from optimizer_tool.cli import app

HELPER = """\
import torch


def train_one_epoch(model, loader, optimizer, epoch):
    model.train()
    for (x,) in loader:
        noise = torch.randn_like(x)
        loss = (model(x + noise) - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print("lr", optimizer.param_groups[0]["lr"])
"""

MAIN = """\
import argparse

import torch
{import_helper}

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4))
    train_loader = torch.utils.data.DataLoader(data, batch_size=4)
    for epoch in range(args.epochs):
        train_one_epoch(model, train_loader, optimizer, epoch)
        torch.save({{"model": model.state_dict(), "optimizer": optimizer.state_dict()}}, "checkpoint.pt")


if __name__ == "__main__":
    main()
"""

SAME_MODULE = HELPER + "\n\n" + MAIN.format(import_helper="")

IN_TQDM = """\
import torch
from tqdm import tqdm


def train_one_epoch(model, loader, optimizer, epoch):
    model.train()
    with tqdm(loader) as data:
        for (x,) in data:
            noise = torch.randn_like(x)
            loss = (model(x + noise) - noise).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            print("lr", optimizer.param_groups[0]["lr"])
"""

METHOD = """\
import torch


class Loop:
    def train_one_epoch(self, model, loader, optimizer, epoch):
        for (x,) in loader:
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


""" + MAIN.format(import_helper="").replace("        train_one_epoch(", "        Loop().train_one_epoch(")


def _project(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_text(text)
    return tmp_path / "src" / "train.py"


def _apply(entry, *options: str):
    out = entry.parent.parent / "patched"
    result = CliRunner().invoke(app, ["apply", "--no-config", *options, "--out", str(out), str(entry)])
    return result, out


def _codes(path) -> set[str]:
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(path)])
    return {f["code"] for f in json.loads(result.stdout)["findings"]}


def _run(folder) -> list[float]:
    """Run the patched trainer; the learning rates it printed, one per optimizer step."""
    done = subprocess.run([sys.executable, "train.py"], cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("lr ")]


def _averaged_and_saved(out, steps: int) -> None:
    """The checkpoint holds an EMA averaged once per optimizer step, lagging behind the live weights."""
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    ema, live = checkpoint["ema"], checkpoint["model"]
    assert int(ema["n_averaged"]) == steps
    assert not torch.allclose(ema["module.weight"], live["weight"])


def _schedule_used(lrs: list[float], steps: int, base: float = 1e-2) -> None:
    assert len(lrs) == steps, lrs
    assert max(lrs) <= base + 1e-12 and lrs[-1] < max(lrs) and lrs[0] < max(lrs), lrs  # warms up, then decays


def test_the_ema_and_the_schedule_are_handed_to_a_helper_in_the_same_module(tmp_path):
    entry = _project(tmp_path, {"train.py": SAME_MODULE})
    assert {"EMA001", "LR001"} <= _codes(entry)
    result, out = _apply(entry)
    assert "fixed EMA001" in result.output and "fixed LR001" in result.output, result.output
    patched = (out / "train.py").read_text()
    assert "def train_one_epoch(model, loader, optimizer, epoch, ema_model=None, lr_scheduler=None):" in patched
    assert "train_one_epoch(model, train_loader, optimizer, epoch, ema_model=ema_model, lr_scheduler=lr_scheduler)" in (
        patched
    )
    assert "total_steps = args.epochs * len(train_loader)" in patched  # loops around the call x loops inside
    assert "        if ema_model is not None:\n            ema_model.update_parameters(model)" in patched
    assert "        if lr_scheduler is not None:\n            lr_scheduler.step()" in patched
    _schedule_used(_run(out), 24)
    _averaged_and_saved(out, 24)
    assert not {"EMA001", "EMA002", "LR001"} & _codes(out / "train.py")


def test_a_helper_in_another_module_gets_them_through_its_call(tmp_path):
    """Alokia: ``from utils.tools import train_one_epoch``; the epochs loop starts at ``start_epoch``
    and the helper walks ``tqdm(loader)`` under a ``with``."""
    main = (
        MAIN.format(import_helper="\nfrom utils.tools import train_one_epoch\n")
        .replace(
            "    for epoch in range(args.epochs):",
            "    start_epoch = 1\n    for epoch in range(start_epoch, args.epochs + 1):",
        )
        .replace("train_loader", "loader")
    )
    entry = _project(tmp_path, {"train.py": main, "utils/__init__.py": "", "utils/tools.py": IN_TQDM})
    result, out = _apply(entry)
    assert "fixed EMA001" in result.output and "fixed LR001" in result.output, result.output
    assert "total_steps = len(range(start_epoch, args.epochs + 1)) * len(loader)" in (out / "train.py").read_text()
    tools = (out / "utils" / "tools.py").read_text()
    assert "def train_one_epoch(model, loader, optimizer, epoch, ema_model=None, lr_scheduler=None):" in tools
    _schedule_used(_run(out), 24)
    _averaged_and_saved(out, 24)
    assert not {"EMA001", "LR001"} & _codes(out / "train.py")


def test_a_schedule_parameter_the_caller_leaves_at_none_gets_the_new_schedule(tmp_path):
    """VSehwag: ``train_one_epoch(..., lrs, args)`` steps ``lrs`` after the optimizer when it is not
    None, and ``main`` passes None: the schedule goes there, no second parameter is added."""
    helper = HELPER.replace("optimizer, epoch):", "optimizer, lrs, epoch):").replace(
        "        optimizer.step()\n", "        optimizer.step()\n        if lrs is not None:\n            lrs.step()\n"
    )
    main = MAIN.format(import_helper="").replace(
        "train_one_epoch(model, train_loader, optimizer, epoch)",
        "train_one_epoch(model, train_loader, optimizer, None, epoch)",
    )
    entry = _project(tmp_path, {"train.py": helper + "\n\n" + main})
    result, out = _apply(entry, "--only", "lr-schedule")
    assert "fixed LR001" in result.output, result.output
    patched = (out / "train.py").read_text()
    assert "def train_one_epoch(model, loader, optimizer, lrs, epoch):" in patched  # unchanged
    assert "train_one_epoch(model, train_loader, optimizer, lr_scheduler, epoch)" in patched
    assert patched.count(".step()") == 2  # optimizer and lrs in the helper: no second schedule step
    _schedule_used(_run(out), 24)


TWO_CALLERS = SAME_MODULE.replace(
    "\n\nif __name__",
    "\n\ndef finetune(model, loader, optimizer):\n    train_one_epoch(model, loader, optimizer, 0)\n\n\nif __name__",
)
REFUSED = {
    "another caller": (TWO_CALLERS, "is called from `finetune`"),
    "recursion": (
        SAME_MODULE.replace(
            '        print("lr"',
            "        if epoch > 10:\n"
            "            train_one_epoch(model, loader, optimizer, epoch - 1)\n"
            '        print("lr"',
        ),
        "is called from `train_one_epoch`",
    ),
    "star arguments": (
        SAME_MODULE.replace(
            "def train_one_epoch(model, loader, optimizer, epoch):",
            "def train_one_epoch(model, loader, optimizer, *rest):",
        ),
        "takes *args/**kwargs",
    ),
    "passed as a value": (
        SAME_MODULE.replace(
            "    for epoch in range(args.epochs):",
            "    step_fn = train_one_epoch\n    for epoch in range(args.epochs):",
        ),
        "used as a value",
    ),
    "a method": (
        METHOD,
        "is a method",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_both_fixes_refuse_a_helper_they_cannot_hand_over_to_and_say_why(tmp_path, case):
    text, reason = REFUSED[case]
    entry = _project(tmp_path, {"train.py": text})
    result = CliRunner().invoke(app, ["apply", "--no-config", "--only", "ema,lr-schedule", "--diff", str(entry)])
    refusals = [line for line in result.output.splitlines() if line.startswith("not applied:")]
    ema = next(line for line in refusals if "the ema fix" in line)
    lr = next(line for line in refusals if "the lr-schedule fix" in line)
    assert reason in ema and reason in lr, refusals


def test_a_name_the_helper_already_uses_is_not_shadowed(tmp_path):
    text = SAME_MODULE.replace("optimizer, epoch):", "optimizer, epoch, ema_model=None, lr_scheduler=None):")
    entry = _project(tmp_path, {"train.py": text})
    result = CliRunner().invoke(app, ["apply", "--no-config", "--only", "ema,lr-schedule", "--diff", str(entry)])
    assert "`ema_model` is already a name in `train_one_epoch`" in result.output, result.output
    assert "`lr_scheduler` is already a name in `train_one_epoch`" in result.output, result.output


def test_a_helper_that_does_not_receive_the_network_is_refused_with_a_patch_that_passes_it(tmp_path):
    """Alokia passes ``trainer`` (a wrapper around the model), not ``model``: the EMA update there
    would need the network too."""
    text = SAME_MODULE.replace(
        "train_one_epoch(model, train_loader", "train_one_epoch(torch.nn.Sequential(model), train_loader"
    )
    entry = _project(tmp_path, {"train.py": text})
    result = CliRunner().invoke(app, ["apply", "--no-config", "--only", "ema", "--diff", str(entry)])
    assert "`train_one_epoch` does not receive `model`, the network the EMA averages" in result.output, result.output
    assert "def train_one_epoch(..., ema_model=None, model=None)" in result.output


CALLBACK = """\
import argparse

import torch


class ModelCheckpoint:
    def __init__(self, filepath):
        self.filepath = filepath

    def step(self, metrics, **kwargs):
        torch.save(kwargs, self.filepath)


def train_one_epoch(model, loader, optimizer):
    for (x,) in loader:
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print("lr", optimizer.param_groups[0]["lr"])
    return loss.item()


def train(args):
    torch.manual_seed(0)
    start_epoch = 1
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = [(torch.randn(2, 4),) for _ in range(8)]
    checkpoint = ModelCheckpoint("checkpoint.pt")
    if args.resume:
        cp = torch.load("checkpoint.pt", weights_only=False)
        model.load_state_dict(cp["model"])
        optimizer.load_state_dict(cp["optimizer"])
        start_epoch = cp["epoch"] + 1
    for epoch in range(start_epoch, args.epochs + 1):
        loss = train_one_epoch(model, loader, optimizer)
        checkpoint.step(loss, model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch)
        if epoch == args.stop_after:
            break


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stop_after", type=int, default=0)
    train(parser.parse_args())
"""


def test_a_checkpoint_callback_that_saves_its_keywords_gets_the_schedule_and_a_resume_continues_it(tmp_path):
    """Alokia: the optimizer state goes to ``model_checkpoint.step(loss, optimizer=..., ...)``, which
    saves its ``**kwargs``; the schedule's state goes beside it, so a resumed run does not warm up again."""
    entry = _project(tmp_path, {"train.py": CALLBACK})
    result, out = _apply(entry, "--only", "lr-schedule")
    assert "fixed LR001" in result.output, result.output
    assert "lr_scheduler=lr_scheduler.state_dict())" in (out / "train.py").read_text()
    whole = _run(out)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["lr_scheduler"]["last_epoch"] == 24
    first = subprocess.run(
        [sys.executable, "train.py", "--stop_after", "2"], cwd=out, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = subprocess.run(
        [sys.executable, "train.py", "--resume"], cwd=out, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lrs = [float(line.split()[1]) for line in resumed.stdout.splitlines() if line.startswith("lr ")]
    assert lrs == pytest.approx(whole[16:])  # the third epoch's rates, as in the run that never stopped
