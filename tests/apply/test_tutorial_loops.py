"""Default ``apply`` on the shape of the small public trainers (minDiffusion, Conditional_Diffusion_MNIST,
dome272, minRF, abarankab): a loop that only prints its loss into a progress bar, saves bare state
dicts and has no epochs setting. Each fix used to refuse there ("no metrics sink", "no checkpoint
dict", "cannot compute the run's optimizer steps"); the patched trainers run and do what the fixes say."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from optimizer_tool.cli import app
from optimizer_tool.testing import run_script as _run

TUTORIAL = """\
import torch
import torch.nn as nn
from tqdm import tqdm


class DDPM(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        noise = torch.randn_like(x)
        return ((self.net(x + noise) - noise) ** 2).mean()

    def sample(self, n):
        return self.net(torch.randn(n, 4))


def train(n_epoch: int = 3, out: str = "."):
    torch.manual_seed(0)
    ddpm = DDPM()
    data = torch.utils.data.TensorDataset(torch.randn(32, 4))
    dataloader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)
    optim = torch.optim.Adam(ddpm.parameters(), lr=1e-3)
    for i in range(n_epoch):
        ddpm.train()
        pbar = tqdm(dataloader)
        for (x,) in pbar:
            optim.zero_grad()
            loss = ddpm(x)
            loss.backward()
            pbar.set_description(f"loss: {loss.item():.4f}")
            optim.step()
        ddpm.eval()
        with torch.no_grad():
            xh = ddpm.sample(8)
        torch.save(ddpm.state_dict(), f"{out}/ddpm_{i}.pth")
        print("lr", optim.param_groups[0]["lr"])


if __name__ == "__main__":
    train()
"""


def _apply(tmp_path, text: str, *options: str):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(text)
    out = tmp_path / "patched"
    result = CliRunner().invoke(app, ["apply", *options, "--out", str(out), str(tmp_path / "src" / "train.py")])
    return result, out


def test_default_apply_places_ema_schedule_and_progress_curves_on_a_tutorial_loop(tmp_path):
    result, out = _apply(tmp_path, TUTORIAL)
    assert result.exit_code in (0, 1), result.output
    for code in ("EMA001", "LR001", "MON001"):
        assert f"fixed {code}" in result.output, result.output
    patched = (out / "train.py").read_text()
    assert "total_steps = n_epoch * len(dataloader)" in patched  # the loops say how long the run is
    assert 'torch.save(ema_ddpm.state_dict(), f"{out}/ddpm_{i}_ema.pth")' in patched  # beside the bare save
    assert "xh = ema_ddpm.module.sample(8)" in patched  # the sampler is a method of the network
    done = _run(out)
    assert "grad_norm" in done.stderr  # tqdm writes to stderr: the curves are on the progress line
    lrs = [float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("lr ")]
    assert len(lrs) == 3 and lrs[-1] < lrs[0] <= 1e-3, lrs
    live = torch.load(out / "ddpm_2.pth", weights_only=True)
    ema = torch.load(out / "ddpm_2_ema.pth", weights_only=True)
    first = torch.load(out / "ddpm_0_ema.pth", weights_only=True)
    key = "net.0.weight"
    assert not torch.equal(ema[f"module.{key}"], live[key])  # averaged, not a copy of the live weights
    assert not torch.equal(ema[f"module.{key}"], first[f"module.{key}"])  # and it moves: it is updated
    assert int(ema["n_averaged"]) == 24  # once per optimizer step: 3 epochs x 8 batches


def test_a_new_ema_is_updated_even_when_another_module_has_an_ema_helper(tmp_path):
    """dome272: ``modules.py`` defines an EMA class with an update method that the trainer never uses;
    its update is not the new EMA's (the fix once created the EMA and no update: a frozen copy)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "modules.py").write_text(
        "import torch\n\n\nclass EMA:\n    def __init__(self, beta):\n        self.beta = beta\n\n"
        "    def update_model_average(self, ma_model, current_model):\n"
        "        for c, m in zip(current_model.parameters(), ma_model.parameters()):\n"
        "            m.data = self.beta * m.data + (1 - self.beta) * c.data\n\n\n"
        "class Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.lin = torch.nn.Linear(4, 4)\n\n    def forward(self, x):\n        return self.lin(x)\n"
    )
    text = TUTORIAL.replace("import torch\n", "import torch\nfrom modules import Net\n", 1).replace(
        "        self.net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))",
        "        self.net = Net()",
    )
    (tmp_path / "src" / "train.py").write_text(text)
    out = tmp_path / "patched"
    result = CliRunner().invoke(app, ["apply", "--only", "ema", "--out", str(out), str(tmp_path / "src" / "train.py")])
    assert "fixed EMA001" in result.output, result.output
    assert "ema_ddpm.update_parameters(ddpm)" in (out / "train.py").read_text()


def test_progress_line_before_the_step_under_a_condition_is_refused(tmp_path):
    text = TUTORIAL.replace(
        '            pbar.set_description(f"loss: {loss.item():.4f}")\n',
        '            if i % 2 == 0:\n                pbar.set_description(f"loss: {loss.item():.4f}")\n',
    )
    result, _ = _apply(tmp_path, text, "--only", "monitoring")
    assert "under a condition the step is not under" in result.output, result.output


def test_set_postfix_after_the_step_gets_the_curves_as_keywords(tmp_path):
    text = TUTORIAL.replace('            pbar.set_description(f"loss: {loss.item():.4f}")\n', "").replace(
        "            optim.step()\n", "            optim.step()\n            pbar.set_postfix(MSE=loss.item())\n"
    )
    result, out = _apply(tmp_path, text, "--only", "monitoring")
    assert "fixed MON001" in result.output, result.output
    assert "pbar.set_postfix(MSE=loss.item(), grad_norm=float(grad_norm)" in (out / "train.py").read_text()
    _run(out)


def test_an_accumulation_guarded_step_gives_no_run_length_from_the_loops(tmp_path):
    text = TUTORIAL.replace("        for (x,) in pbar:\n", "        for j, (x,) in enumerate(pbar):\n").replace(
        "            optim.step()\n", "            if (j + 1) % 2 == 0:\n                optim.step()\n"
    )
    result, _ = _apply(tmp_path, text, "--only", "lr-schedule")
    assert "cannot compute the run's optimizer steps" in result.output, result.output


def test_a_step_loop_over_iterations_is_the_run_length(tmp_path):
    text = """\
import argparse

import torch


def cycle(loader):
    while True:
        yield from loader


def main(args):
    steps = args.n_steps
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    data = torch.utils.data.TensorDataset(torch.randn(16, 4))
    train_loader = cycle(torch.utils.data.DataLoader(data, batch_size=4))
    for iteration in range(1, steps + 1):
        (x,) = next(train_loader)
        loss = ((model(x) - x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if iteration % 5 == 0:
            print("lr", optimizer.param_groups[0]["lr"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n_steps", type=int, default=20)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    main(parser.parse_args())
"""
    result, out = _apply(tmp_path, text, "--only", "lr-schedule")
    assert "fixed LR001" in result.output, result.output
    assert "total_steps = len(range(1, steps + 1))" in (out / "train.py").read_text()
    lrs = [float(line.split()[1]) for line in _run(out).stdout.splitlines()]
    assert len(lrs) == 4 and lrs[-1] < lrs[1], lrs


def test_a_clip_under_a_condition_logs_its_norm_under_that_condition(tmp_path):
    """lucidrains' video Trainer clips only ``if exists(self.max_grad_norm)``, diffusers only ``if
    accelerator.sync_gradients``: the captured norm exists only there, so it is shown only there (the
    fix once read it unconditionally: refused by the def-use check, or an UnboundLocalError)."""
    text = TUTORIAL.replace(
        'def train(n_epoch: int = 3, out: str = "."):', 'def train(n_epoch: int = 3, out: str = ".", max_norm=None):'
    ).replace(
        "            optim.step()\n",
        "            if max_norm is not None:\n"
        "                torch.nn.utils.clip_grad_norm_(ddpm.parameters(), max_norm)\n"
        "            optim.step()\n",
    )
    result, out = _apply(tmp_path, text, "--only", "monitoring")
    assert "fixed MON001" in result.output, result.output
    patched = (out / "train.py").read_text()
    assert "grad_norm = torch.nn.utils.clip_grad_norm_(ddpm.parameters(), max_norm)" in patched
    assert '            if max_norm is not None:\n                pbar.set_postfix_str(f"grad_norm' in patched
    _run(out)  # without clipping: nothing shown, nothing unbound
    (out / "train.py").write_text(patched.replace("    train()\n", "    train(max_norm=1.0)\n"))
    assert "grad_norm" in _run(out).stderr


def test_a_named_metrics_dict_gets_a_conditional_entry_before_it_is_logged(tmp_path):
    text = """\
import json

import torch


def main(sync_every=1):
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with open("metrics.jsonl", "w") as f:
        for step in range(6):
            x = torch.randn(8, 4)
            loss = ((model(x) - x) ** 2).mean()
            loss.backward()
            if step % sync_every == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            logs = {"loss": loss.item(), "step": step}
            f.write(json.dumps(logs) + "\\n")


if __name__ == "__main__":
    main()
"""
    result, out = _apply(tmp_path, text, "--only", "monitoring")
    assert "fixed MON001" in result.output, result.output
    patched = (out / "train.py").read_text()
    assert 'if step % sync_every == 0:\n                logs["grad_norm"] = float(grad_norm)' in patched
    _run(out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["grad_norm"] > 0 for r in rows)


MAIN_GUARD = """\
import argparse

import torch


class RF:
    def __init__(self, model):
        self.model = model

    def forward(self, x):
        noise = torch.randn_like(x)
        return ((self.model(x + noise) - noise) ** 2).mean()

    @torch.no_grad()
    def sample(self, z):
        return self.model(z)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--wide", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.wide:
        model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    else:
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    rf = RF(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(3):
        for _ in range(10):
            loss = rf.forward(torch.randn(8, 4))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        images = rf.sample(torch.ones(2, 4))
        print("sample", float(images.sum()), float(model(torch.ones(2, 4)).sum()))
"""


def test_an_ema_in_a_main_block_with_a_wrapped_sampler_and_no_checkpoint(tmp_path):
    """minRF's shape: the network is built in ``if CIFAR: ... else: ...`` under ``if __name__ ==
    "__main__":``, sampled through ``rf = RF(model)``, and nothing is ever saved. The EMA was created
    after the whole ``__main__`` block (its update then read an unbound name) or refused ("no checkpoint
    dict"); it is built after the branches, averaged each step, and swapped in around ``rf.sample``."""
    result, out = _apply(tmp_path, MAIN_GUARD, "--only", "ema")
    assert "fixed EMA001" in result.output, result.output
    patched = (out / "train.py").read_text()
    assert patched.index("ema_model = AveragedModel(model") < patched.index("    rf = RF(model)")
    assert "model.load_state_dict(ema_model.module.state_dict())" in patched
    for line in _run(out).stdout.splitlines():
        _, averaged, live = line.split()
        assert averaged != live  # the sample comes from the averaged weights, the live ones come back


def test_an_ema_that_would_be_neither_saved_nor_sampled_is_refused(tmp_path):
    """A loop that saves nothing and draws no samples the fix can point at the EMA (andiac's MNIST
    script samples inline): a new EMA would be averaged and never used, so it is not added."""
    text = MAIN_GUARD.replace("        images = rf.sample(torch.ones(2, 4))\n", "        images = torch.ones(2, 4)\n")
    result, _ = _apply(tmp_path, text, "--only", "ema")
    assert "a new EMA would be averaged and never used" in result.output, result.output


def test_a_progress_bar_fed_a_named_dict_gets_the_curves_in_that_dict(tmp_path):
    """``logs = {"loss": ...}; progress_bar.set_postfix(**logs)`` (simple-diffusion) shows the loss: it was
    reported as "no progress line shows the loss"; the curves go into ``logs``."""
    text = TUTORIAL.replace('            pbar.set_description(f"loss: {loss.item():.4f}")\n', "").replace(
        "            optim.step()\n",
        '            optim.step()\n            logs = {"loss": loss.item()}\n            pbar.set_postfix(**logs)\n',
    )
    result, out = _apply(tmp_path, text, "--only", "monitoring")
    assert "fixed MON001" in result.output, result.output
    assert '"grad_norm": float(grad_norm)' in (out / "train.py").read_text()
    assert "grad_norm" in _run(out).stderr
