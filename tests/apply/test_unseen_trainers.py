"""Default ``apply`` on the shapes of public trainers outside both validation sets
(validation/unseen/README.md): sampling through ``accelerator.unwrap_model(model).sample(...)``
(uyo9ko/flow-matching-deepspeed), the live model handed to a sampling helper while the EMA is a
state dict kept on ``args`` and averaged in a helper (VSehwag/minimal-diffusion), an EMA that is an
attribute of a wrapper instance (yuanzhi-zhu/mini_edm). The patched trainers run, and sample with
the averaged weights where the fix says so."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from optimizer_tool.cli import app
from optimizer_tool.testing import run_script as _run

ACCELERATE = """\
import argparse

import pytest
import torch
from accelerate import Accelerator


class Flow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 4)

    def forward(self, x):
        noise = torch.randn_like(x)
        return (self.net(x + noise) - noise).pow(2).mean()

    @torch.no_grad()
    def sample(self, noise):
        return self.net.weight.detach().clone()  # stands for the samples: which weights drew them


def training_function(args):
    torch.manual_seed(0)
    accelerator = Accelerator()
    model = Flow()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-1)
    loader = torch.utils.data.DataLoader(torch.randn(16, 4), batch_size=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    step = 0
    samples = None
    for epoch in range(args.epochs):
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(batch)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                step += 1
            logs = {"loss": loss.detach().item()}
            accelerator.log(logs, step=step)
            if accelerator.is_main_process and step % 2 == 0:
                samples = accelerator.unwrap_model(model).sample(torch.randn(2, 4, device=accelerator.device))
    accelerator.save_state("checkpoint")
    live = accelerator.unwrap_model(model).net.weight.detach()
    print("sampled-with", samples.sum().item(), "live", live.sum().item())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    training_function(parser.parse_args())


if __name__ == "__main__":
    main()
"""

STATE_DICT_ON_ARGS = """\
import argparse
import copy

import pytest
import torch


def train_one_epoch(model, loader, optimizer, args):
    for x in loader:
        noise = torch.randn_like(x)
        loss = (model(x + noise) - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        new_dict = model.state_dict()
        for k, v in args.ema_dict.items():
            args.ema_dict[k] = args.ema_w * args.ema_dict[k] + (1 - args.ema_w) * new_dict[k]


def sample_images(n, model, args):
    return model(torch.randn(n, 4)), model.weight.detach().clone()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ema_w", type=float, default=0.9)
    parser.add_argument("--sampling-only", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-1)
    if args.sampling_only:
        images, weights = sample_images(8, model, args)
        return
    loader = [torch.randn(2, 4) for _ in range(8)]
    args.ema_dict = copy.deepcopy(model.state_dict())
    for epoch in range(args.epochs):
        train_one_epoch(model, loader, optimizer, args)
        images, weights = sample_images(8, model, args)
        torch.save(weights, "sampled_with.pt")
        torch.save(model.state_dict(), "model.pt")
        torch.save(args.ema_dict, "model_ema.pt")


if __name__ == "__main__":
    main()
"""

WRAPPER_INSTANCE = """\
import copy

import pytest
import torch


class Wrapper:
    def __init__(self, model):
        self.model = model
        self.ema = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update_ema(self, beta=0.9):
        for pe, p in zip(self.ema.parameters(), self.model.parameters()):
            pe.copy_(p.detach().lerp(pe, beta))


if __name__ == "__main__":
    torch.manual_seed(0)
    net = Wrapper(torch.nn.Linear(4, 4))
    optimizer = torch.optim.Adam(net.model.parameters(), lr=1e-2)
    for step in range(30):
        x = torch.randn(2, 4)
        noise = torch.randn_like(x)
        loss = (net.model(x + noise) - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        net.update_ema()
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.4f}")
            torch.save(net.ema.state_dict(), f"ema_{step}.pth")
"""


def _write(tmp_path, text: str):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(text)
    return tmp_path / "src" / "train.py"


def _apply(tmp_path, text: str, *options: str):
    entry = _write(tmp_path, text)
    out = tmp_path / "patched"
    result = CliRunner().invoke(app, ["apply", "--no-config", *options, "--out", str(out), str(entry)])
    return result, out


def _findings(path) -> dict[str, dict]:
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(path)])
    return {f["code"]: f for f in json.loads(result.stdout)["findings"]}


def test_an_accelerate_sampler_on_the_unwrapped_model_samples_the_new_ema(tmp_path):
    result, out = _apply(tmp_path, ACCELERATE)
    assert result.exit_code in (0, 1), result.output
    assert "fixed EMA001" in result.output
    patched = (out / "train.py").read_text()
    assert "accelerator.unwrap_model(ema_model.module).sample(" in patched
    assert "used for sampling" in patched
    assert "EMA008" not in _findings(out / "train.py")
    words = _run(out).stdout.split()
    sampled, live = float(words[words.index("sampled-with") + 1]), float(words[words.index("live") + 1])
    assert abs(sampled - live) > 1e-4  # the averaged weights, lagging behind the live ones


def test_a_live_model_handed_to_a_sampling_helper_is_swapped_for_a_state_dict_ema(tmp_path):
    found = _findings(_write(tmp_path, STATE_DICT_ON_ARGS))
    assert "EMA002" not in found  # averaged entry by entry in the helper that receives ``args``
    assert found["EMA008"]["severity"] == "bug"
    sampling = [i + 1 for i, line in enumerate(STATE_DICT_ON_ARGS.splitlines()) if "= sample_images(" in line]
    assert found["EMA008"]["location"]["row"] == sampling[-1]  # not the --sampling-only branch above the EMA
    out = tmp_path / "patched"
    result = CliRunner().invoke(app, ["apply", "--no-config", "--out", str(out), str(tmp_path / "src" / "train.py")])
    assert result.exit_code in (0, 1), result.output
    assert "fixed EMA008" in result.output
    assert "EMA008" not in _findings(out / "train.py")
    _run(out)
    sampled = torch.load(out / "sampled_with.pt")
    assert torch.equal(sampled, torch.load(out / "model_ema.pt")["weight"])
    assert not torch.equal(sampled, torch.load(out / "model.pt")["weight"])  # and training went on with the live ones
    _run(out, "--sampling-only")


def test_an_ema_kept_by_a_wrapper_instance_is_saved_and_its_drift_logged(tmp_path):
    found = _findings(_write(tmp_path, WRAPPER_INSTANCE))
    assert "EMA006" not in found  # ``torch.save(net.ema.state_dict(), ...)`` saves ``self.ema`` of ``Wrapper``
    assert "MON003" in found
    out = tmp_path / "patched"
    result = CliRunner().invoke(app, ["apply", "--no-config", "--out", str(out), str(tmp_path / "src" / "train.py")])
    assert result.exit_code in (0, 1), result.output
    assert "fixed MON003" in result.output
    assert "zip(net.ema.parameters(), net.model.parameters())" in (out / "train.py").read_text()
    drift = [float(line.rsplit("ema_drift", 1)[1]) for line in _run(out).stdout.splitlines() if "ema_drift" in line]
    assert len(drift) == 3 and drift[-1] > 0


POSTFIX_DICT = """\
import argparse

import pytest
import torch
from tqdm.auto import tqdm


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--use_clip_grad", action="store_true")
    args = parser.parse_args()
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = torch.utils.data.DataLoader(torch.randn(16, 4), batch_size=4)
    progress_bar = tqdm(total=len(loader) * 2)
    for epoch in range(2):
        for step, batch in enumerate(loader):
            loss = (model(batch) - batch).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            if args.use_clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            progress_bar.update(1)
            logs = {"loss": loss.detach().item(), "step": step}
            progress_bar.set_postfix(**logs)
            print(sorted(logs))
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "ckpt.pt")


if __name__ == "__main__":
    main()
"""


def test_a_conditional_grad_norm_joins_a_postfix_dict_under_its_condition(tmp_path):
    """filipbasara0/simple-diffusion: clipping behind ``--use_clip_grad`` and the loss shown through
    ``progress_bar.set_postfix(**logs)``: the gradient norm is added to ``logs`` under the flag (it
    exists only there), and the re-check sees it in the postfix."""
    result, out = _apply(tmp_path, POSTFIX_DICT, "--only", "monitoring")
    assert result.exit_code == 0, result.output
    patched = (out / "train.py").read_text()
    assert '    if args.use_clip_grad:\n                logs["grad_norm"] = float(grad_norm)' in patched
    assert "MON001" not in _findings(out / "train.py")
    plain = _run(out).stdout  # without the flag: no norm, no unbound name
    assert "grad_norm" not in plain
    clipped = _run(out, "--use_clip_grad")
    assert "'grad_norm'" in clipped.stdout and "grad_norm=" in clipped.stderr  # the bar's postfix shows it


SILENT_BAR = """\
import copy

import pytest
import torch
from tqdm import trange, tqdm


def ema(source, target, decay):
    with torch.no_grad():
        for s, t in zip(source.parameters(), target.parameters()):
            t.mul_(decay).add_(s, alpha=1 - decay)


def train(total_steps=12):
    net_model = torch.nn.Linear(4, 4)
    ema_model = copy.deepcopy(net_model)
    optim = torch.optim.Adam(net_model.parameters(), lr=2e-4)
    data = torch.randn(total_steps, 2, 4)
{loop}
            loss = (net_model(x) - x).pow(2).mean()
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net_model.parameters(), 1.0)
            optim.step()
            ema(net_model, ema_model, 0.99)
    torch.save({{"net_model": net_model.state_dict(), "ema_model": ema_model.state_dict()}}, "weights.pt")


if __name__ == "__main__":
    train()
"""
LOOPS = {
    "with-trange": "    with trange(total_steps) as pbar:\n        for step in pbar:\n            x = data[step]",
    "tqdm-assigned": "    if True:\n        pbar = tqdm(data)\n        for x in pbar:\n            pass",
}


@pytest.mark.parametrize("loop", LOOPS.values(), ids=LOOPS.keys())
def test_a_progress_bar_that_shows_nothing_gets_the_curves_as_its_postfix(tmp_path, loop):
    """atong01/conditional-flow-matching: ``with trange(FLAGS.total_steps) as pbar: for step in pbar:``
    and no line that shows the loss: the curves become the bar's postfix after the optimizer step."""
    result, out = _apply(tmp_path, SILENT_BAR.format(loop=loop), "--only", "monitoring")
    assert result.exit_code == 0, result.output
    assert "pbar.set_postfix(grad_norm=float(grad_norm)" in (out / "train.py").read_text()
    assert not {"MON001", "MON002", "MON003"} & set(_findings(out / "train.py"))
    shown = _run(out).stderr.rsplit("\r", 1)[-1]  # the bar's last refresh
    assert "grad_norm=" in shown and "ema_drift=" in shown
