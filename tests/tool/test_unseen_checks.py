"""``check`` verdicts on shapes of public trainers outside both validation sets
(validation/unseen/README.md) that it used to credit wrongly: a weight swap that is undone before
the sampler runs, and a gradient norm logged only by a trainer class of an imported module that the
entry point never builds (atong01/conditional-flow-matching's ``MixedPrecisionTrainer``)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from optimizer_tool.cli import app
from optimizer_tool.testing import write_example

SWAPPED_SAMPLING = """\
import copy

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class Flow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 4)

    def forward(self, x):
        noise = torch.randn_like(x)
        return (self.net(x + noise) - noise).pow(2).mean()

    @torch.no_grad()
    def sample(self, noise):
        return self.net(noise)


def train(steps=10):
    model = Flow()
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(steps):
        loss = model(torch.randn(2, 4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update_parameters(model)
        torch.save({"model": model.state_dict(), "ema": ema.state_dict()}, "ckpt.pt")
        if step % 5 == 0:
            live_weights = copy.deepcopy(model.state_dict())
            model.load_state_dict(ema.module.state_dict())
            try:
{swapped}
            finally:
                model.load_state_dict(live_weights)
{after}


if __name__ == "__main__":
    train()
"""
SAMPLE = "samples = model.sample(torch.randn(2, 4))"


def _findings(tmp_path, files: dict[str, str]) -> dict[str, dict]:
    entry = write_example(files, tmp_path)
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(entry)])
    return {f["code"]: f for f in json.loads(result.stdout)["findings"]}


@pytest.mark.parametrize(
    "swapped,after,live",
    [
        ("                model.eval()", "            " + SAMPLE, True),  # the swap is undone before sample()
        ("                " + SAMPLE, "            model.train()", False),
    ],
    ids=["restored-before-sampling", "sampling-inside-the-swap"],
)
def test_samples_count_as_the_ema_only_inside_the_swap(tmp_path, swapped, after, live):
    found = _findings(tmp_path, {"train.py": SWAPPED_SAMPLING.replace("{swapped}", swapped).replace("{after}", after)})
    assert ("EMA008" in found) is live


CFM_TRAINER = """\
import torch
from pkg.fp16_util import zero_grad


def train():
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    for step in range(100):
        zero_grad(model.parameters())
        noise = torch.randn(2, 4)
        loss = (model(noise) - noise).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.4f}")


if __name__ == "__main__":
    train()
"""
FP16_UTIL = """\
import torch
from pkg import logger


def zero_grad(params):
    for p in params:
        p.grad = None


class MixedPrecisionTrainer:
    def __init__(self, model):
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters())

    def optimize(self):
        grad_norm = sum(p.grad.norm() ** 2 for p in self.model.parameters()) ** 0.5
        logger.logkv_mean("grad_norm", grad_norm)
        self.opt.step()
"""


def test_a_grad_norm_logged_by_a_class_the_entry_never_builds_does_not_count(tmp_path):
    found = _findings(
        tmp_path,
        {
            "train.py": CFM_TRAINER,
            "pkg/__init__.py": "",
            "pkg/fp16_util.py": FP16_UTIL,
            "pkg/logger.py": "def logkv_mean(key, value):\n    print(key, value)\n",
        },
    )
    assert "MON001" in found
    assert "discarded" in found["MON001"]["message"]  # ``clip_grad_norm_`` returns it: log that


IMAGEN_LIKE = """\
import contextlib

import torch
from ema_pytorch import EMA


class Cascade(torch.nn.Module):
    def __init__(self, unets):
        super().__init__()
        self.unets = torch.nn.ModuleList(unets)

    def forward(self, x, unet):
        noise = torch.randn_like(x)
        return (unet(x + noise) - noise).pow(2).mean()

    def p_sample_loop(self, unet, shape):
        return unet(torch.randn(shape))

    @torch.no_grad()
    def sample(self, shape):
        for unet in self.unets:
            img = self.p_sample_loop(unet, shape)
        return img


@contextlib.contextmanager
def use_ema_unets(cascade, ema):
    live = cascade.unets
    cascade.unets = torch.nn.ModuleList([ema.ema_model])
    try:
        yield
    finally:
        cascade.unets = live


def train(unet, steps=10):
    cascade = Cascade([unet])
    ema = EMA(unet, beta=0.999)
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-4)
    for step in range(steps):
        loss = cascade(torch.randn(2, 4), unet)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update()
    torch.save({"unet": unet.state_dict(), "ema": ema.state_dict()}, "ckpt.pt")
    with use_ema_unets(cascade, ema):
        samples = cascade.sample((2, 4))


if __name__ == "__main__":
    train(torch.nn.Linear(4, 4))
"""


def test_a_loop_variable_named_like_the_trained_network_is_not_the_live_model(tmp_path):
    """imagen-pytorch: ``for unet in self.unets: self.p_sample_loop(unet, ...)`` in a class runs
    whichever network its caller puts there; the trainer's ``unet`` is another variable. Not a bug
    the tool can prove (it was a false EMA008 [bug] on the check validation set)."""
    found = _findings(tmp_path, {"train.py": IMAGEN_LIKE})
    assert "EMA008" not in found
    live = IMAGEN_LIKE.replace(
        "    with use_ema_unets", "    samples = cascade.p_sample_loop(unet, (2, 4))\n    with use_ema_unets"
    )
    assert "EMA008" in _findings(tmp_path / "live", {"train.py": live})  # the trainer's own unet: live weights


OWN_EMA_SAMPLER = """\
from copy import deepcopy

import torch


class GaussianDiffusion(torch.nn.Module):
    def __init__(self, model, ema_decay=0.999):
        super().__init__()
        self.model = model
        self.ema_model = deepcopy(model)
        self.ema_decay = ema_decay

    def update_ema(self):
        with torch.no_grad():
            for e, p in zip(self.ema_model.parameters(), self.model.parameters()):
                e.mul_(self.ema_decay).add_(p, alpha=1 - self.ema_decay)

    @torch.no_grad()
    def sample(self, batch_size, use_ema=True):
        net = self.ema_model if use_ema else self.model
        return net(torch.randn(batch_size, 4))

    def forward(self, x):
        noise = torch.randn_like(x)
        return (self.model(x + noise) - noise).pow(2).mean()


def train(steps=8):
    diffusion = GaussianDiffusion(torch.nn.Linear(4, 4))
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=1e-3)
    for step in range(steps):
        loss = diffusion(torch.randn(2, 4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        diffusion.update_ema()
        if step % 4 == 0:
            samples = diffusion.sample(10)
            torch.save(diffusion.state_dict(), "model.pth")


if __name__ == "__main__":
    train()
"""


def test_a_sampler_of_the_class_that_keeps_the_ema_is_not_the_live_model(tmp_path):
    """abarankab/DDPM: ``diffusion.sample(10, device)`` where ``GaussianDiffusion.sample(...,
    use_ema=True)`` runs its own ``self.ema_model``: a false EMA008 [bug] (and a refused EMA fix)."""
    assert "EMA008" not in _findings(tmp_path, {"train.py": OWN_EMA_SAMPLER})
