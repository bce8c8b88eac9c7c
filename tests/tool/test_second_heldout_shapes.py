"""Shapes of public trainers from the second held-out set (validation/heldout2) that ``check`` got
wrong: weights averaged in place in a ``zip`` loop whatever the averaged model is called (the
motion-diffusion-model ``model_avg``, DINO's momentum teacher, LCM's ``update_ema(target_unet.
parameters(), ...)``), an EMA optimizer wrapper that replaces the optimizer under a flag
(denoising-diffusion-gan), an EMA a factory returns under a flag (flow_matching), clipping behind a
callable's ``clip_grad=None`` default that no caller sets (MAE), an x0-predicting model and a loss
hard-wired to the noise while the scheduler comes from a pretrained config (IP-Adapter), a masked
autoencoder that draws no Gaussian noise (MAE, DINO: no diffusion trainer), an EMA saved through
its attribute name (ddpm-torch), a sampler or clipping trainer the entry never runs (LightningDiT,
motion-diffusion-model), the resolution of the dataset class a flag's default names (ddpm-torch)
and of a fixed-size dataset resized by a small default (denoising-diffusion-gan)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from optimizer_tool.cli import app
from optimizer_tool.testing import unit_verdicts as verdicts
from optimizer_tool.testing import write_example

# the end of the test programs' loops: one optimizer step per batch, then the script's entry
STEP_AND_RUN = """\
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


if __name__ == "__main__":
    main()
"""


LOOP = """\
import argparse
import copy

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--use_ema", action="store_true")
parser.add_argument("--beta", type=float, default=0.999)
args = parser.parse_args()


class Denoiser(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 4)

    def forward(self, x):
        noise = torch.randn_like(x)
        return (self.net(x + noise) - noise).pow(2).mean()

{helper}

def main():
    model = Denoiser()
{build}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x in [torch.randn(2, 4)] * 10:
        loss = model(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
{update}


if __name__ == "__main__":
    main()
"""


def loop(build: str, update: str, helper: str = "") -> dict[str, str]:
    return {"train.py": LOOP.format(build=build, update=update, helper=helper)}


MUL_ADD = """\
        with torch.no_grad():
            for p, p_avg in zip(model.parameters(), {avg}.parameters()):
                p_avg.data.mul_(args.beta).add_(p.data, alpha=1 - args.beta)"""
UPDATE_EMA = """
@torch.no_grad()
def update_ema(target_params, source_params, rate=0.99):
    for targ, src in zip(target_params, source_params):
        targ.detach().mul_(rate).add_(src, alpha=1 - rate)
"""


@pytest.mark.parametrize(
    "files,state",
    [
        (loop("    model_avg = copy.deepcopy(model)", MUL_ADD.format(avg="model_avg")), "present"),
        (loop("    teacher = Denoiser()", MUL_ADD.format(avg="teacher")), "present"),
        (
            loop(
                "    model_avg = None\n    if args.use_ema:\n        model_avg = copy.deepcopy(model)",
                "        if args.use_ema:\n"
                + MUL_ADD.format(avg="model_avg")
                .replace("\n", "\n    ")
                .replace("        with", "            with", 1),
            ),
            "off-by-default",
        ),
        (
            loop(
                "    target = Denoiser()\n    target.load_state_dict(model.state_dict())",
                "        update_ema(target.parameters(), model.parameters(), args.beta)",
                UPDATE_EMA,
            ),
            "present",
        ),
        # scaling alone, or copying stored weights back, averages nothing
        (
            loop(
                "    backup = copy.deepcopy(model)",
                "        for p, b in zip(model.parameters(), backup.parameters()):\n            b.data.copy_(p.data)",
            ),
            "missing",
        ),
    ],
    ids=["named-avg", "teacher", "avg-behind-flag", "update-function-on-parameter-lists", "copy-is-no-average"],
)
def test_weights_averaged_in_a_zip_loop_are_an_ema_whatever_the_name(tmp_path, files, state):
    assert verdicts(tmp_path, files)["ema"]["state"] == state


def test_an_ema_wrapper_that_replaces_the_optimizer_under_a_flag_is_off_by_default(tmp_path):
    helper = """
class EMA(torch.optim.Optimizer):
    def __init__(self, opt, ema_decay):
        self.optimizer, self.ema_decay = opt, ema_decay
        self.param_groups = opt.param_groups

    def step(self):
        self.optimizer.step()
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                state = self.optimizer.state[p]
                if "ema" not in state:
                    state["ema"] = p.data.clone()
                state["ema"].mul_(self.ema_decay).add_(p.data, alpha=1.0 - self.ema_decay)
"""
    files = loop("", "", helper)
    files["train.py"] = files["train.py"].replace(
        "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)\n",
        "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
        "    if args.use_ema:\n        optimizer = EMA(optimizer, ema_decay=args.beta)\n",
    )
    ema = verdicts(tmp_path, files)["ema"]
    assert ema["state"] == "off-by-default", ema


def test_an_ema_a_factory_returns_under_a_flag_is_off_by_default(tmp_path):
    helper = """
class EMA(torch.nn.Module):
    def __init__(self, model, decay=0.999):
        super().__init__()
        self.model = model
        self.shadow = [p.detach().clone() for p in model.parameters()]

    def forward(self, x):
        return self.model(x)

    def update_ema(self):
        for s, p in zip(self.shadow, self.model.parameters()):
            s.lerp_(p, 1 - 0.999)


def instantiate_model(use_ema):
    model = Denoiser()
    if use_ema:
        return EMA(model=model)
    return model
"""
    files = loop("", "        if args.use_ema:\n            model.update_ema()", helper)
    files["train.py"] = files["train.py"].replace(
        "    model = Denoiser()\n\n", "    model = instantiate_model(use_ema=args.use_ema)\n\n"
    )
    ema = verdicts(tmp_path, files)["ema"]
    assert ema["state"] == "off-by-default", ema
    assert "use_ema" in ema["reason"]


SCALER = """\
import torch


class NativeScaler:
    def __call__(self, loss, optimizer, clip_grad=None, parameters=None):
        loss.backward()
        if clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(parameters, clip_grad)
        optimizer.step()
"""
ENGINE = """\
import torch

import scaler


def train_one_epoch(model, loader, optimizer, loss_scaler: scaler.NativeScaler):
    for x in loader:
        noise = torch.randn_like(x)
        loss = (model(x + noise) - noise).pow(2).mean()
        loss_scaler(loss, optimizer, parameters=model.parameters())
"""
MAIN = """\
import torch

from engine import train_one_epoch
from scaler import NativeScaler


def main():
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train_one_epoch(model, [torch.randn(2, 4)] * 4, optimizer, NativeScaler())


if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("entry", ["main.py", "engine.py"])
def test_clipping_behind_a_default_no_caller_sets_is_missing_not_off(tmp_path, entry):
    files = {"main.py": MAIN, "engine.py": ENGINE, "scaler.py": SCALER}
    clipping = verdicts(tmp_path, files, entry)["clipping"]
    assert clipping["state"] == "missing", clipping
    assert "called without clip_grad" in clipping["reason"]


X0 = (
    """\
import torch


class GaussianDiffusion:
    def __init__(self, predict_xstart):
        self.predict_xstart = predict_xstart

    def training_losses(self, model, x, t):
        noise = torch.randn_like(x)
        target = x if self.predict_xstart else noise
        return (model(x + noise) - target).pow(2).mean()


def create_gaussian_diffusion():
    predict_xstart = True  # we always predict x_start
    return GaussianDiffusion(predict_xstart=predict_xstart)


def main():
    model = torch.nn.Linear(4, 4)
    diffusion = create_gaussian_diffusion()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x in [torch.randn(2, 4)] * 4:
        loss = diffusion.training_losses(model, x, 10)
"""
    + STEP_AND_RUN
)


def test_an_x0_predicting_model_has_no_v_prediction(tmp_path):
    vpred = verdicts(tmp_path, {"train.py": X0})["vpred"]
    assert vpred["state"] == "missing", vpred
    assert "x0" in vpred["reason"]


FINE_TUNE = """\
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel

unet = UNet2DConditionModel.from_pretrained("some/model", subfolder="unet")
noise_scheduler = DDPMScheduler.from_pretrained("some/model", subfolder="scheduler")
optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
for x in loader:
    noise = torch.randn_like(x)
    t = torch.randint(0, 1000, (x.shape[0],))
    noisy = noise_scheduler.add_noise(x, noise, t)
{target}
    loss = F.mse_loss(unet(noisy, t).sample, target)
    loss.backward()
    optimizer.step()
"""
BRANCHED = """\
    if noise_scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = noise_scheduler.get_velocity(x, noise, t)"""


@pytest.mark.parametrize(
    "target,state", [("    target = noise", "missing"), (BRANCHED, "decided-elsewhere")], ids=["hard-wired", "branched"]
)
def test_a_loss_hard_wired_to_the_noise_trains_epsilon_whatever_the_pretrained_config(tmp_path, target, state):
    vpred = verdicts(tmp_path, {"train.py": FINE_TUNE.format(target=target)})["vpred"]
    assert vpred["state"] == state, vpred


ROSTER = """\
import torch
from torch_ema import ExponentialMovingAverage as EMA


class Trainer:
    def __init__(self, model, optimizer, use_ema=True):
        self.model, self.optimizer, self.use_ema = model, optimizer, use_ema
        self.ema = EMA(model.parameters(), decay=0.9999)

    def train(self, loader):
        for x in loader:
            noise = torch.randn_like(x)
            loss = (self.model(x + noise) - noise).pow(2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.after_step()
        self.save_checkpoint("ckpt.pt")

    def after_step(self):
        self.ema.update()

    @property
    def trainees(self):
        roster = ["model", "optimizer"]
        if self.use_ema:
            roster.append({saved})
        return roster

    def save_checkpoint(self, path):
        chkpt = []
        for k, v in self.named_state_dicts():
            chkpt.append((k, v))
        torch.save(dict(chkpt), path)
        torch.save({"version": 1, "keys": ["model"]}, path + ".meta")  # literal dict/list arguments

    def named_state_dicts(self):
        for k in self.trainees:
            yield k, getattr(self, k).state_dict()
"""


@pytest.mark.parametrize("saved,bug", [('"ema"', False), ('"scaler"', True)], ids=["by-name", "not-saved"])
def test_an_ema_saved_through_its_attribute_name_is_saved(tmp_path, saved, bug):
    write_example({"trainer.py": ROSTER.replace("{saved}", saved)}, tmp_path)
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(tmp_path / "trainer.py")])
    codes = {f["code"] for f in json.loads(result.stdout)["findings"]}
    assert ("EMA006" in codes) is bug


UNCALLED_SAMPLER = """\
import torch
from ema_pytorch import EMA


def ode(drift, num_steps):
    return lambda x, model: drift(x, num_steps, model)


class Sampler:
    def drift(self, x, t, model):
        return model(x)

    def sample_ode(self, num_steps=50):
        drift = lambda x, t, model: self.drift(x, t, model)  # noqa: E731
        return ode(drift=drift, num_steps=num_steps)


def main():
    model = torch.nn.Linear(4, 4)
    ema = EMA(model, beta=0.999)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x in [torch.randn(2, 4)] * 4:
        noise = torch.randn_like(x)
        loss = (model(x + noise) - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update()


if __name__ == "__main__":
    main()
"""


def test_a_sampler_the_entry_never_builds_draws_no_samples(tmp_path):
    """LightningDiT: ``transport.Sampler.sample_ode`` sits in the package, train.py never calls it."""
    write_example({"train.py": UNCALLED_SAMPLER}, tmp_path)
    result = CliRunner().invoke(app, ["check", "--no-config", "--output-format", "json", str(tmp_path / "train.py")])
    codes = {f["code"] for f in json.loads(result.stdout)["findings"]}
    assert "EMA008" not in codes


MASKED_AUTOENCODER = (
    """\
import torch


class MAE(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 4)
        torch.nn.init.normal_(self.net.weight, std=0.02)

    def forward(self, x, mask_ratio=0.75):
        mask = (torch.rand(x.shape) < mask_ratio).float()
        pred = self.net(x * (1 - mask))
        loss = (pred - x) ** 2
        return (loss * mask).sum() / mask.sum()


def main():
    model = MAE()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x in [torch.rand(2, 4)] * 4:
        loss = model(x{noised})
"""
    + STEP_AND_RUN
)


@pytest.mark.parametrize(
    "noised,state", [("", "n/a"), (" + torch.randn_like(x)", "unknown")], ids=["no-gaussian-noise", "noised-input"]
)
def test_a_loss_of_its_own_without_gaussian_noise_is_no_diffusion_trainer(tmp_path, noised, state):
    found = verdicts(tmp_path, {"train.py": MASKED_AUTOENCODER.replace("{noised}", noised)})
    assert found["cosine"]["state"] == state, found["cosine"]


DATASET_CLASSES = """\
import argparse

import torch
import torchvision

DATASETS = {}


def register(name):
    def wrap(cls):
        DATASETS[name] = cls
        return cls

    return wrap


@register("cifar10")
class CIFAR10(torchvision.datasets.CIFAR10):
    resolution = (32, 32)


@register("celeba_hq")
class CelebA_HQ(torch.utils.data.Dataset):
    resolution = (256, 256)
"""
FID = """\
def inception_input():
    image_res = 299
    return image_res
"""
DATASET_TRAIN = (
    """\
import argparse

import torch

from datasets import DATASETS

parser = argparse.ArgumentParser()
parser.add_argument("--dataset", choices=DATASETS.keys(), default="{dataset}")
args = parser.parse_args()


def main():
    size = DATASETS[args.dataset].resolution
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x in [torch.randn(2, 4)] * 4:
        noise = torch.randn_like(x)
        loss = (model(x + noise) - noise).pow(2).mean()
"""
    + STEP_AND_RUN
)


@pytest.mark.parametrize("dataset,state", [("cifar10", "missing"), ("celeba_hq", "present")])
def test_the_resolution_is_that_of_the_dataset_class_the_default_names(tmp_path, dataset, state):
    files = {
        "train.py": DATASET_TRAIN.replace("{dataset}", dataset),
        "datasets.py": DATASET_CLASSES,
        "fid_score.py": FID,
    }
    resolution = verdicts(tmp_path, files)["resolution"]
    assert resolution["state"] == state, resolution


RESIZED_CIFAR = (
    """\
import argparse

import torch
import torchvision
import torchvision.transforms as T

parser = argparse.ArgumentParser()
parser.add_argument("--image_size", type=int, default=32)
args = parser.parse_args()


def main():
    data = torchvision.datasets.CIFAR10("data", transform=T.Compose([T.Resize(args.image_size), T.ToTensor()]))
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x, _ in data:
        noise = torch.randn_like(x)
        loss = (model(x + noise) - noise).pow(2).mean()
"""
    + STEP_AND_RUN
)


def test_a_fixed_size_dataset_resized_by_a_small_default_trains_small(tmp_path):
    resolution = verdicts(tmp_path, {"train.py": RESIZED_CIFAR})["resolution"]
    assert resolution["state"] == "missing", resolution


EVALUATOR_TRAINER = """\
import torch


class MatchingTrainer:
    def __init__(self, net):
        self.net = net
        self.opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step(self, loss):
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 0.5)
        self.opt.step()


def evaluator_dims():
    return 512
"""
MAIN_WITH_EVALUATOR = (
    """\
import torch

from evaluator import evaluator_dims


def main():
    model = torch.nn.Linear(4, evaluator_dims())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for x in [torch.randn(2, 4)] * 4:
        noise = torch.randn_like(x)
        loss = (model(x + noise) - noise).pow(2).mean()
"""
    + STEP_AND_RUN
)


def test_clipping_in_a_trainer_class_the_entry_never_builds_does_not_count(tmp_path):
    """motion-diffusion-model: its evaluator networks' trainer clips, in a module the loop imports."""
    clipping = verdicts(tmp_path, {"train.py": MAIN_WITH_EVALUATOR, "evaluator.py": EVALUATOR_TRAINER})["clipping"]
    assert clipping["state"] == "missing", clipping
    assert clipping["location"]["filename"] == "train.py"


ARRAY_SCHEDULE = """\
import argparse

import numpy as np
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--warmup_epochs", type=int, default=10)
args = parser.parse_args()


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0):
{body}


def train_one_epoch(model, loader, optimizer, lr_schedule, epoch):
    for it, x in enumerate(loader):
        it = len(loader) * epoch + it
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr_schedule[it]
        noise = torch.randn_like(x)
        loss = (model(x + noise) - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main():
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = [torch.randn(2, 4)] * 4
    lr_schedule = cosine_scheduler(5e-4, 1e-6, 100, len(loader), warmup_epochs=args.warmup_epochs)
    for epoch in range(100):
        train_one_epoch(model, loader, optimizer, lr_schedule, epoch)


if __name__ == "__main__":
    main()
"""
WARMUP_COSINE = """\
    warmup_iters = warmup_epochs * niter_per_ep
    warmup_schedule = np.linspace(0, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup_schedule, schedule))"""
CONSTANT = """\
    return np.full(epochs * niter_per_ep, base_value)"""


@pytest.mark.parametrize("body,present", [(WARMUP_COSINE, True), (CONSTANT, False)], ids=["warmup-cosine", "constant"])
def test_an_lr_array_built_by_the_caller_is_read_from_the_function_that_builds_it(tmp_path, body, present):
    """DINO: ``param_group["lr"] = lr_schedule[it]`` with ``lr_schedule = utils.cosine_scheduler(...)``."""
    schedule = verdicts(tmp_path, {"train.py": ARRAY_SCHEDULE.replace("{body}", body)})["lr-schedule"]
    assert (schedule["state"] == "present") is present, schedule
