"""Shapes of public trainers from the sixth held-out set (validation/heldout6) that ``check`` got
wrong at first sight, most of them wrong passes: a clipped grad norm taken for a logged learning
rate, ``0`` and ``0.0`` taken for two different defaults, an openai-style defaults dict, an
evaluator's trainer beside a training loop checked on its own, a flow-matching fine-tune whose
scheduler config is loaded, and a script whose training itself is behind a mode flag."""

from __future__ import annotations

from optimizer_tool.testing import unit_verdicts as verdicts

# the noise-regression step of a loop over ``x``
STEP = """\
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (x.shape[0],))
        loss = F.mse_loss(model(x + noise, t), noise)
        optimizer.zero_grad()
        loss.backward()
"""

# DMD2: wandb gets the grad norm clip_grad_norm_ returns, the lr never
DMD2 = f"""\
import argparse

import torch
import torch.nn.functional as F
import wandb
from accelerate import Accelerator

parser = argparse.ArgumentParser()
parser.add_argument("--generator_lr", type=float, default=1e-5)
parser.add_argument("--max_grad_norm", type=float, default=10.0)
args = parser.parse_args()
accelerator = Accelerator()
model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(model.parameters(), lr=args.generator_lr)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 1000)
model, optimizer = accelerator.prepare(model, optimizer)
for x in loader:
{STEP.replace("        ", "    ")}    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    optimizer.step()
    scheduler.step()
    wandb.log({{"loss": loss.item(), "generator_grad_norm": grad_norm.item()}})
"""


def test_a_clipped_grad_norm_is_no_logged_learning_rate(tmp_path):
    found = verdicts(tmp_path, {"train.py": DMD2})
    # was present (a wrong pass): the norm's clip reads a model the lr-named flag's optimizer steps
    assert found["monitoring"]["state"] == "missing"
    assert "learning rate" in found["monitoring"]["reason"]
    logged = DMD2.replace(
        '"generator_grad_norm": grad_norm.item()}',
        '"generator_grad_norm": grad_norm.item(), "lr": scheduler.get_last_lr()[0]}',
    )
    assert verdicts(tmp_path / "lr", {"train.py": logged})["monitoring"]["state"] == "present"


# e3_diffusion_for_molecules: ``--ema_decay`` defaults to 0, a shipped YAML says 0.0
E3 = f"""\
import argparse
import copy

import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--ema_decay", type=float, default=0)
args = parser.parse_args()
model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
if args.ema_decay > 0:
    model_ema = copy.deepcopy(model)
else:
    model_ema = model
for x in loader:
    if True:
{STEP}        optimizer.step()
        if args.ema_decay > 0:
            for p_ema, p in zip(model_ema.parameters(), model.parameters()):
                p_ema.data.mul_(args.ema_decay).add_(p.data, alpha=1 - args.ema_decay)
"""


def test_zero_and_zero_point_zero_are_one_default(tmp_path):
    files = {"train.py": E3, "configs/qm9.yaml": "ema_decay: 0.0\n"}
    # was present (a wrong pass): 0 and 0.0 disagreed, so the guard was undecidable
    assert verdicts(tmp_path, files)["ema"]["state"] == "off-by-default"


# Diffusion-LM (improved-diffusion): the flags come from a defaults dict
OPENAI = """\
import argparse

import torch
import torch.nn.functional as F


def add_dict_to_argparser(parser, default_dict):
    for k, v in default_dict.items():
        parser.add_argument(f"--{k}", default=v, type=type(v))


class TrainLoop:
    def __init__(self, model, lr, gradient_clipping=-1.0):
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr)
        self.gradient_clipping = gradient_clipping

    def grad_clip(self):
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.gradient_clipping)

    def run_loop(self, loader):
        for x in loader:
            model = self.model
            optimizer = self.opt
STEP            if self.gradient_clipping > 0:
                self.grad_clip()
            self.opt.step()


def main():
    parser = argparse.ArgumentParser()
    add_dict_to_argparser(parser, dict(lr=1e-4, gradient_clipping=-1.0))
    args = parser.parse_args()
    model = torch.nn.Linear(4, 4)
    TrainLoop(model, lr=args.lr, gradient_clipping=args.gradient_clipping).run_loop(load())


if __name__ == "__main__":
    main()
""".replace("STEP", STEP.replace("        ", "            "))


def test_a_defaults_dict_keyword_decides_a_guard(tmp_path):
    # was present (a wrong pass): ``gradient_clipping=-1.0`` of the defaults dict was no default
    assert verdicts(tmp_path, {"train.py": OPENAI})["clipping"]["state"] == "off-by-default"


# MDM / CLoSD: a training loop checked on its own, beside the evaluators' trainers that clip
LOOP = """\
import torch
import torch.nn.functional as F


class TrainLoop:
    def __init__(self, args, model, diffusion, data):
        self.args, self.model, self.diffusion, self.data = args, model, diffusion, data
        self.opt = torch.optim.AdamW(model.parameters(), lr=args.lr)

    def run_loop(self):
        for x in self.data:
            loss = self.diffusion.training_losses(self.model, x)["loss"].mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
"""
EVAL_TRAINERS = """\
import torch
from torch.nn.utils import clip_grad_norm_


class CompTrainer:
    def __init__(self, opt, net):
        self.opt, self.net = opt, net

    @staticmethod
    def clip_norm(network_list):
        for network in network_list:
            clip_grad_norm_(network.parameters(), 0.5)

    def train(self, loader):
        optimizer = torch.optim.Adam(self.net.parameters())
        for x in loader:
            loss = self.net(x).mean()
            loss.backward()
            self.clip_norm([self.net])
            optimizer.step()
"""


def test_an_evaluators_trainer_beside_the_loop_does_not_clip_for_it(tmp_path):
    files = {
        "train/training_loop.py": LOOP.replace("import torch\n", "import torch\n\nfrom eval import trainers\n", 1),
        "train/__init__.py": "",
        "eval/__init__.py": "",
        "eval/trainers.py": EVAL_TRAINERS,
        "pyproject.toml": '[project]\nname = "mdm"\nversion = "0"\n',
    }
    found = verdicts(tmp_path, files, entry="train/training_loop.py")
    # was present (a wrong pass): CompTrainer.clip_norm, which nothing the loop runs calls
    assert found["clipping"]["state"] == "missing"


# LTX-Video-Trainer: a flow-matching fine-tune whose scheduler config is loaded from the hub
LTX = """\
import torch
from diffusers import FlowMatchEulerDiscreteScheduler


def train(model, loader, path):
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for latents in loader:
        noise = torch.randn_like(latents)
        sigmas = torch.rand(latents.shape[0])[:, None, None]
        noisy = (1 - sigmas) * latents + sigmas * noise
        loss = ((model(noisy, sigmas) - (noise - latents)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""


def test_a_flow_matching_schedulers_config_hides_no_schedule(tmp_path):
    found = verdicts(tmp_path, {"train.py": LTX})
    # were decided-elsewhere: "read from a pretrained scheduler config"
    assert found["cosine"]["state"] == "n/a"
    assert found["vpred"]["state"] == "present"
    assert found["zero-snr"]["state"] == "present"
    epsilon = LTX.replace("FlowMatchEulerDiscreteScheduler", "DDPMScheduler")
    assert verdicts(tmp_path / "eps", {"train.py": epsilon})["cosine"]["state"] == "decided-elsewhere"


# PNDM: the script samples by default; ``--runner train`` trains (and clips)
PNDM = """\
import argparse

import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--runner", type=str, default="sample")
args = parser.parse_args()


def train(model, loader):
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    for x in loader:
STEP        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()


if args.runner == "train":
    train(torch.nn.Linear(4, 4), load())
else:
    sample()
""".replace("STEP", STEP)


def test_the_mode_flag_that_keeps_training_off_is_no_switch_of_clipping(tmp_path):
    found = verdicts(tmp_path, {"train.py": PNDM})
    # was off-by-default: "`args.runner == 'train'` is false by default"
    assert found["clipping"]["state"] == "present"


# jannerm/diffuser's Trainer: the loss is ``self.model.loss(*batch)`` of the model it receives
RECEIVED_MODEL = """\
import copy

import torch


class Trainer:
    def __init__(self, diffusion_model, dataset, train_lr=2e-5):
        self.model = diffusion_model
        self.ema_model = copy.deepcopy(self.model)
        self.dataset = dataset
        self.optimizer = torch.optim.Adam(diffusion_model.parameters(), lr=train_lr)

    def train(self, n_train_steps):
        for step in range(n_train_steps):
            batch = next(self.dataset)
            loss, infos = self.model.loss(*batch)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
"""

# CSDI's utils.train: the model it is handed computes the loss; ``model.train()`` is torch's
HANDED_MODEL = """\
import torch


def train(model, config, train_loader, valid_loader=None):
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    for epoch_no in range(config["epochs"]):
        model.train()
        for train_batch in train_loader:
            optimizer.zero_grad()
            loss = model(train_batch)
            loss.backward()
            optimizer.step()
"""


def test_a_loss_method_of_a_received_model_is_decided_by_who_builds_it(tmp_path):
    found = verdicts(tmp_path, {"training.py": RECEIVED_MODEL}, entry="training.py")
    # was unknown: ``.loss`` was no loss method (the pattern read ``losse``/``losses``)
    assert found["cosine"]["state"] == "decided-elsewhere"
    assert "self.model.loss" in found["cosine"]["reason"]


def test_a_received_model_that_returns_the_loss_is_decided_by_who_passes_it(tmp_path):
    found = verdicts(tmp_path, {"utils.py": HANDED_MODEL}, entry="utils.py")
    # was unknown: ``model.train()`` looked like a call of train(), which made the model built here
    assert found["vpred"]["state"] == "decided-elsewhere"
    assert "`model`" in found["vpred"]["reason"]
