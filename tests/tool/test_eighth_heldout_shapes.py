"""Shapes of public trainers from the eighth held-out set (validation/heldout8) and of the earlier
sets' remaining unknowns: a schedule chosen by a constructor parameter the script's flag feeds
(diffusion-point-cloud), a schedule name set in a local just before the selector (MotionDiffuse),
a schedule passed from the run's config through a factory's ``**kwargs`` (Kandinsky 2), a
reparameterised sample that is no diffusion state (cleanrl's SAC), denoising score matching
(NCSNv2), a LightningModule reached from a hand-written loop, BigGAN's lower-case ``utils.ema``
and the EMA its training function receives, and a runner module that reads the config its script
names at run time."""

from __future__ import annotations

from optimizer_tool.testing import NOISE_STEP as STEP
from optimizer_tool.testing import unit_verdicts as verdicts

# diffusion-point-cloud: ``VarianceSchedule(..., mode=args.sched_mode)`` computing betas under ``if mode == 'linear':``
POINT_CLOUD = f"""\
import argparse

import torch
import torch.nn.functional as F


class VarianceSchedule(torch.nn.Module):
    def __init__(self, num_steps, beta_1, beta_T, mode="linear"):
        super().__init__()
        if mode == "linear":
            betas = torch.linspace(beta_1, beta_T, steps=num_steps)
        betas = torch.cat([torch.zeros([1]), betas], dim=0)
        self.register_buffer("betas", betas)


parser = argparse.ArgumentParser()
parser.add_argument("--sched_mode", type=str, default="linear")
args = parser.parse_args()
sched = VarianceSchedule(100, 1e-4, 0.02, mode=args.sched_mode)
model = torch.nn.Linear(4, 4)
optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
for x in loader:
    if True:
{STEP}"""


def test_a_schedule_chosen_by_a_constructor_parameter_the_flag_feeds(tmp_path):
    found = verdicts(tmp_path, {"train.py": POINT_CLOUD})
    # was unknown ("no noise schedule found"): the betas sit under ``if mode == 'linear':``
    assert found["cosine"]["state"] == "missing", found["cosine"]
    assert "sched_mode" in found["cosine"]["reason"]
    other = POINT_CLOUD.replace('default="linear")', 'default="quad")')
    assert verdicts(tmp_path / "quad", {"train.py": other})["cosine"]["state"] == "unknown"


# MotionDiffuse: ``beta_scheduler = 'linear'`` then ``get_named_beta_schedule(beta_scheduler, T)``
MOTIONDIFFUSE = f"""\
import torch
import torch.nn.functional as F
from improved_diffusion.gaussian_diffusion import get_named_beta_schedule


class DDPMTrainer:
    def __init__(self, model):
        self.model = model
        beta_scheduler = "linear"
        self.betas = get_named_beta_schedule(beta_scheduler, 1000)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)

    def train(self, loader):
        model, optimizer = self.model, self.optimizer
        for x in loader:
{STEP.replace("        ", "            ", 1).replace(chr(10) + "        ", chr(10) + "            ")}

if __name__ == "__main__":
    DDPMTrainer(torch.nn.Linear(4, 4)).train([])
"""


def test_a_schedule_name_set_in_a_local_before_the_selector(tmp_path):
    found = verdicts(tmp_path, {"train.py": MOTIONDIFFUSE})
    assert found["cosine"]["state"] == "missing", found["cosine"]  # was unknown


# Kandinsky 2: the factory gets the schedule through ``**config['diffusion_config']``, --config required
KANDINSKY = f"""\
import argparse

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from creation import create_gaussian_diffusion

parser = argparse.ArgumentParser()
parser.add_argument("--config", type=str, help="config path")
args = parser.parse_args()
config = OmegaConf.load(args.config)
diffusion = create_gaussian_diffusion(**config["diffusion_config"])
model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
for x in loader:
    if True:
{STEP}"""
CREATION = """\
import math

import numpy as np


def get_named_beta_schedule(schedule_name, num_diffusion_timesteps):
    if schedule_name == "linear":
        return np.linspace(1e-4, 0.02, num_diffusion_timesteps)
    elif schedule_name == "cosine":
        return betas_for_alpha_bar(num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)


def create_gaussian_diffusion(*, steps=1000, noise_schedule="linear"):
    betas = get_named_beta_schedule(noise_schedule, steps)
    return betas
"""


def test_a_schedule_passed_from_the_runs_config_through_kwargs(tmp_path):
    found = verdicts(tmp_path, {"train.py": KANDINSKY, "creation.py": CREATION})
    # was unknown ("no noise schedule found")
    assert found["cosine"]["state"] == "decided-elsewhere", found["cosine"]
    assert "**config" in found["cosine"]["reason"]


# cleanrl's SAC: ``x_t = normal.rsample()`` is a reparameterised action, no noised sample
SAC = """\
import torch
import torch.nn.functional as F

actor = torch.nn.Linear(4, 2)
qf1 = torch.nn.Linear(6, 1)
q_optimizer = torch.optim.Adam(qf1.parameters(), lr=1e-3)
actor_optimizer = torch.optim.Adam(actor.parameters(), lr=3e-4)
for obs, next_q_value in loader:
    mean, log_std = actor(obs).chunk(2, dim=-1)
    normal = torch.distributions.Normal(mean, log_std.exp())
    x_t = normal.rsample()
    y_t = torch.tanh(x_t)
    qf1_loss = F.mse_loss(qf1(torch.cat([obs, y_t], 1)).view(-1), next_q_value)
    q_optimizer.zero_grad()
    qf1_loss.backward()
    q_optimizer.step()
"""


def test_a_reparameterised_sample_is_no_diffusion_state(tmp_path):
    found = verdicts(tmp_path, {"train.py": SAC})
    # was a diffusion trainer ("uses x_t"): lpips missing, cosine unknown
    assert found["lpips"]["state"] == "n/a", found["lpips"]
    assert found["cosine"]["state"] == "n/a"
    noised = SAC.replace("x_t = normal.rsample()", "x_t = torch.sqrt(alpha) * mean + torch.sqrt(1 - alpha) * noise")
    assert verdicts(tmp_path / "ddpm", {"train.py": noised})["lpips"]["state"] != "n/a"


# NCSNv2: annealed denoising score matching
NCSN = """\
import torch

from dsm import anneal_dsm_score_estimation

sigmas = torch.tensor([1.0, 0.5, 0.1])
score = torch.nn.Linear(4, 4)
optimizer = torch.optim.Adam(score.parameters(), lr=1e-4)
for X in loader:
    loss = anneal_dsm_score_estimation(score, X, sigmas, None, 2.0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""
DSM = """\
import torch


def anneal_dsm_score_estimation(scorenet, samples, sigmas, labels=None, anneal_power=2.0):
    if labels is None:
        labels = torch.randint(0, len(sigmas), (samples.shape[0],))
    used_sigmas = sigmas[labels].view(samples.shape[0], *([1] * len(samples.shape[1:])))
    noise = torch.randn_like(samples) * used_sigmas
    perturbed_samples = samples + noise
    target = -1 / (used_sigmas**2) * noise
    scores = scorenet(perturbed_samples, labels)
    return (1 / 2.0 * ((scores - target) ** 2).sum(dim=-1) * used_sigmas.squeeze() ** anneal_power).mean()
"""


def test_denoising_score_matching_is_diffusion(tmp_path):
    found = verdicts(tmp_path, {"main.py": NCSN, "dsm.py": DSM}, entry="main.py")
    # every diffusion key was unknown ("no noising/denoising objective recognised")
    assert found["cosine"]["state"] == "n/a"  # continuous sigmas: no beta schedule
    assert "sigma" in found["cosine"]["reason"]
    assert found["lpips"]["state"] == "missing"


# Kandinsky 2's loop reaches a LightningModule (its MOVQ autoencoder) that does not train here
LIGHTNING_PART = """\
import pytorch_lightning as pl
import torch


class MOVQ(pl.LightningModule):
    def training_step(self, batch, batch_idx):
        return self(batch).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-4)
"""
LOOP_WITH_LIGHTNING_PART = f"""\
import torch
import torch.nn.functional as F

from movq import MOVQ

encoder = MOVQ()
model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
for x in loader:
    if True:
{STEP}"""


def test_a_lightning_module_a_hand_written_loop_reaches_does_not_decide_clipping(tmp_path):
    found = verdicts(tmp_path, {"train.py": LOOP_WITH_LIGHTNING_PART, "movq.py": LIGHTNING_PART})
    # was decided-elsewhere ("a Lightning module: clipping is an option of the Trainer")
    assert found["clipping"]["state"] == "missing", found["clipping"]


# BigGAN: ``ema = utils.ema(G, G_ema, decay, start)`` behind ``if config['ema']:`` (--ema store_true),
# updated in a training function that receives it
BIGGAN_UTILS = """\
import argparse


def prepare_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ema", action="store_true", default=False)
    parser.add_argument("--ema_decay", type=float, default=0.9999)
    return parser


class ema(object):
    def __init__(self, source, target, decay=0.9999, start_itr=0):
        self.source_dict = source.state_dict()
        self.target_dict = target.state_dict()
        self.decay = decay

    def update(self, itr=None):
        for key in self.source_dict:
            self.target_dict[key].data.copy_(
                self.target_dict[key].data * self.decay + self.source_dict[key].data * (1 - self.decay)
            )
"""
BIGGAN_FNS = """\
import torch


def GAN_training_function(G, D, ema, config):
    def train(x):
        G.optim.zero_grad()
        loss = torch.nn.functional.softplus(-D(G(x))).mean()
        loss.backward()
        G.optim.step()
        if config["ema"]:
            ema.update()
        return loss

    return train
"""
BIGGAN_TRAIN = """\
import copy

import torch

import train_fns
import utils


def run(config):
    G = torch.nn.Linear(4, 4)
    D = torch.nn.Linear(4, 1)
    G.optim = torch.optim.Adam(G.parameters(), lr=1e-4)
    if config["ema"]:
        G_ema = copy.deepcopy(G)
        ema = utils.ema(G, G_ema, config["ema_decay"])
    else:
        G_ema, ema = None, None
    train = train_fns.GAN_training_function(G, D, ema, config)
    for x in loader:
        train(x)


if __name__ == "__main__":
    run(vars(utils.prepare_parser().parse_args()))
"""


def test_a_lower_case_ema_class_and_an_ema_handed_to_the_training_function(tmp_path):
    files = {"train.py": BIGGAN_TRAIN, "train_fns.py": BIGGAN_FNS, "utils.py": BIGGAN_UTILS}
    # was missing: ``utils.ema`` was no EMA class
    assert verdicts(tmp_path, files)["ema"]["state"] == "off-by-default"
    # was unknown ("built outside the code the entry reaches"): the function receives it
    fns = verdicts(tmp_path / "fns", files, entry="train_fns.py")["ema"]
    assert fns["state"] == "decided-elsewhere", fns
    assert "GAN_training_function" in fns["reason"]


# ncsnv2: ``main.py --config`` (no default) runs ``runners/ncsn_runner.py``, re-exported by ``runners/__init__.py``
NCSN_MAIN = """\
import argparse

import yaml

from runners import *


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=str, required=True)
    args = parser.parse_args()
    with open(args.config) as f:
        config = yaml.safe_load(f)
    NCSNRunner(args, config).train()


if __name__ == "__main__":
    main()
"""
NCSN_RUNNER = """\
import copy

import torch


class NCSNRunner:
    def __init__(self, args, config):
        self.args, self.config = args, config

    def train(self):
        score = torch.nn.Linear(4, 4)
        optimizer = torch.optim.Adam(score.parameters(), lr=1e-4)
        if self.config.model.ema:
            ema_helper = copy.deepcopy(score)
        for x in loader:
            noise = torch.randn_like(x)
            loss = torch.nn.functional.mse_loss(score(x + noise), noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if self.config.model.ema:
                for e, p in zip(ema_helper.parameters(), score.parameters()):
                    e.data.mul_(0.999).add_(p.data, alpha=0.001)
"""


def test_a_runner_module_reads_the_config_its_script_names_at_run_time(tmp_path):
    files = {
        "setup.py": "",  # the repository's root, where the runner's importers are searched
        "main.py": NCSN_MAIN,
        "runners/__init__.py": "from runners.ncsn_runner import *\n",
        "runners/ncsn_runner.py": NCSN_RUNNER,
        "configs/cifar10.yml": "model:\n  ema: true\n",
        "configs/celeba.yml": "model:\n  ema: false\n",
    }
    found = verdicts(tmp_path, files, entry="runners/ncsn_runner.py")
    # was present: alone, the module had no config, so ``self.config.model.ema`` was taken as on
    assert found["ema"]["state"] == "decided-elsewhere", found["ema"]


# Grad-TTS / diffwave (audio), PVD (point clouds), Janner's diffuser (control trajectories): no images
AUDIO = f"""\
import torch
import torch.nn.functional as F
import torchaudio

model = torch.nn.Conv2d(1, 1, 3, padding=1)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
image_size = 1024  # mel frames, not pixels
for path in files:
    audio, sr = torchaudio.load(path)
    x = torch.stft(audio, 1024, return_complex=True).abs()[None]
    if True:
{STEP}"""


def test_audio_has_no_training_resolution(tmp_path):
    found = verdicts(tmp_path, {"train.py": AUDIO})
    # was present ("trains at 1024 px") or unknown: the 2D convolution runs over mel spectrograms
    assert found["resolution"]["state"] == "n/a", found["resolution"]
    assert "audio" in found["resolution"]["reason"]
    images = AUDIO.replace("import torchaudio", "import torchaudio\nfrom PIL import Image").replace(
        "audio, sr = torchaudio.load(path)", "audio = Image.open(path)"
    )
    assert verdicts(tmp_path / "images", {"train.py": images})["resolution"]["state"] != "n/a"


# I-JEPA: its own WarmupCosineSchedule sets the coming iteration's lr; stepping it first skips nothing
IJEPA = """\
import torch


class WarmupCosineSchedule(object):
    def __init__(self, optimizer, warmup_steps, start_lr, ref_lr, T_max):
        self.optimizer = optimizer
        self._step = 0.0
        self.warmup_steps, self.start_lr, self.ref_lr, self.T_max = warmup_steps, start_lr, ref_lr, T_max

    def step(self):
        self._step += 1
        new_lr = self.start_lr + self._step / max(1, self.warmup_steps) * (self.ref_lr - self.start_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr
        return new_lr


model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(model.parameters())
scheduler = WarmupCosineSchedule(optimizer, warmup_steps=40, start_lr=2e-4, ref_lr=1e-3, T_max=1000)
for x in loader:
    _new_lr = scheduler.step()
    loss = model(x).pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""


def test_a_projects_own_scheduler_stepped_first_is_no_bug(tmp_path):
    from optimizer_tool.testing import findings_for

    codes = {f.code for f in findings_for({"train.py": IJEPA}, tmp_path)}
    assert "LR006" not in codes  # was a false bug: "the schedule skips its first value"
    torch_schedule = IJEPA.replace(
        "scheduler = WarmupCosineSchedule(optimizer, warmup_steps=40, start_lr=2e-4, ref_lr=1e-3, T_max=1000)",
        "scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=1000)",
    )
    assert "LR006" in {f.code for f in findings_for({"train.py": torch_schedule}, tmp_path / "torch")}


# FiT: ``--cfgdir`` names the configs at run time; the import of the diffusion factory is broken in
# the repository (``fit.schedulers`` for ``fit/scheduler/``), so the code that reads the schedule is unseen
FIT = f"""\
import argparse

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fit.schedulers.improved_diffusion import create_diffusion

parser = argparse.ArgumentParser()
parser.add_argument("--cfgdir", nargs="*", default=list())
args = parser.parse_args()
config = OmegaConf.merge(*[OmegaConf.load(c) for c in args.cfgdir])
diffusion = create_diffusion(noise_schedule=config.diffusion.noise_schedule)
model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
for x in loader:
    if True:
{STEP}"""


def test_a_run_time_config_read_by_code_an_unresolved_import_hides(tmp_path):
    files = {
        "setup.py": "",
        "train.py": FIT,
        "fit/__init__.py": "",
        "fit/scheduler/__init__.py": "",
        "configs/fit.yaml": "diffusion:\n  noise_schedule: linear\n",
    }
    found = verdicts(tmp_path, files)
    # with the factory unseen, "no code branch takes cosine" cannot be said: not missing
    assert found["cosine"]["state"] == "decided-elsewhere", found["cosine"]
    assert "--cfgdir" in found["cosine"]["reason"]
