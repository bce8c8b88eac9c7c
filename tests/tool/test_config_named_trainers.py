"""Shapes from the third held-out set's remaining failures (validation/heldout3: ResShift, and the
offset verdicts of every set): a trainer class a config names for the entry script to build, a
hand-written loop with its own ``training_step``, guided-diffusion's ``conv_nd``, an x0 objective
spelled ``xstart``, and the cosine offset of a schedule the run does not train with."""

from __future__ import annotations

from typer.testing import CliRunner

from optimizer_tool.cli import app
from optimizer_tool.testing import findings_for, write_example
from optimizer_tool.testing import unit_verdicts as verdicts

# ResShift main.py: the trainer class comes from the config the run names (the default is missing)
LAUNCH_BY_NAME = """\
import argparse
import importlib

from omegaconf import OmegaConf


def get_obj_from_str(string):
    module, cls = string.rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)


parser = argparse.ArgumentParser()
parser.add_argument("--cfg_path", type=str, default="./configs/training/ffhq256.yaml")
args = parser.parse_args()

if __name__ == "__main__":
    configs = OmegaConf.load(args.cfg_path)
    trainer = get_obj_from_str(configs.trainer.target)(configs)
    trainer.train()
"""
# ResShift trainer.py: a hand-written loop whose step method is called training_step
TRAINER = """\
import torch
import torch.nn.functional as F

from models.diffusion import GaussianDiffusion


class TrainerBase:
    def __init__(self, configs):
        self.configs = configs
        self.model = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.diffusion = GaussianDiffusion(predict_type=configs.diffusion.params.predict_type)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=configs.train.lr)

    def train(self):
        for data in self.loader:
            self.training_step(data)


class TrainerSR(TrainerBase):
    def training_step(self, data):
        self.optimizer.zero_grad()
        noise = torch.randn_like(data)
        t = torch.randint(0, 1000, (data.shape[0],))
        x_t = self.diffusion.q_sample(data, t, noise)
        loss = F.mse_loss(self.model(x_t), data)
        loss.backward()
        self.optimizer.step()
"""
DIFFUSION = """\
import torch


class GaussianDiffusion:
    def __init__(self, predict_type="xstart"):
        self.predict_type = predict_type
        self.betas = torch.linspace(1e-4, 0.02, 1000)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)

    def q_sample(self, x0, t, noise):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def target(self, x0, noise):
        if self.predict_type == "xstart":
            return x0
        elif self.predict_type == "epsilon":
            return noise
        raise ValueError(self.predict_type)
"""


def _config(predict_type: str) -> str:
    return (
        "trainer:\n  target: trainer.TrainerSR\n"
        f"diffusion:\n  params:\n    predict_type: {predict_type}\n"
        "train:\n  lr: 0.0001\n"
    )


def _project(**extra: str) -> dict[str, str]:
    return {
        "main.py": LAUNCH_BY_NAME,
        "trainer.py": TRAINER,
        "models/__init__.py": "",
        "models/diffusion.py": DIFFUSION,
        "configs/realsr.yaml": _config("xstart"),
        "configs/faceir.yaml": _config("xstart"),
        **extra,
    }


def test_the_trainer_class_a_config_names_is_the_code_the_entry_runs(tmp_path):
    found = verdicts(tmp_path, _project(), entry="main.py")
    # was unknown on every key: main.py imports no training code
    assert found["clipping"]["state"] == "missing"
    assert found["clipping"]["location"]["filename"] == "trainer.py"
    # its own training_step called by its own loop is no Lightning module whose Trainer clips
    assert "Lightning" not in found["clipping"]["reason"]


def test_an_x0_objective_spelled_xstart_is_no_v_prediction_whatever_config_the_run_names(tmp_path):
    found = verdicts(tmp_path, _project(), entry="main.py")
    assert found["vpred"]["state"] == "missing"
    assert "xstart" in found["vpred"]["reason"]
    # no shipped config and no branch of the code offers v: zero terminal SNR stays n/a
    assert found["zero-snr"]["state"] == "n/a"


def test_zero_snr_is_the_runs_choice_where_a_config_offers_v_prediction(tmp_path):
    files = _project(**{"configs/v.yaml": _config("v")})
    found = verdicts(tmp_path, files, entry="main.py")
    assert found["zero-snr"]["state"] == "decided-elsewhere"


# guided-diffusion's nn helper: a 3-D convolution for dims == 3 is no sign of video data
CONV_ND = """\
import torch.nn as nn


def conv_nd(dims, *args, **kwargs):
    if dims == 1:
        return nn.Conv1d(*args, **kwargs)
    elif dims == 2:
        return nn.Conv2d(*args, **kwargs)
    elif dims == 3:
        return nn.Conv3d(*args, **kwargs)
    raise ValueError(dims)
"""
LPIPS_TRAINER = """\
import lpips
import torch
import torch.nn.functional as F

from nn_util import conv_nd

model = conv_nd(2, 3, 3, 3, padding=1)
perceptual = lpips.LPIPS(net="vgg")
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
betas = torch.linspace(1e-4, 0.02, 1000)
alphas_cumprod = torch.cumprod(1 - betas, 0)
for x0 in loader:
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (x0.shape[0],))
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x0_pred = model(a.sqrt() * x0 + (1 - a).sqrt() * noise)
    loss = F.mse_loss(x0_pred, x0) + perceptual(x0_pred.clamp(-1, 1), x0).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


def test_a_conv_nd_helper_does_not_make_image_lpips_a_video_bug(tmp_path):
    files = {"train.py": LPIPS_TRAINER, "nn_util.py": CONV_ND}
    codes = {f.code for f in findings_for(files, tmp_path)}
    assert "LPIPS001" not in codes and "LPIPS005" not in codes  # the term is there, on 4-D images
    video = {**files, "nn_util.py": CONV_ND.replace("elif dims == 3:", "elif 3d_frames:").replace("3d_", "video_")}
    assert "LPIPS005" in {f.code for f in findings_for(video, tmp_path / "video")}


# improved-diffusion style: a linear default, a cosine option that has its offset
SCHEDULES = """\
import math

import numpy as np


def get_named_beta_schedule(schedule_name, n):
    if schedule_name == "linear":
        return np.linspace(1e-4, 0.02, n)
    elif schedule_name == "cosine":
        return betas_for_alpha_bar(n, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise NotImplementedError(schedule_name)


def betas_for_alpha_bar(n, alpha_bar, max_beta=0.999):
    return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)])
"""
SCHEDULED_TRAINER = """\
import torch
import torch.nn.functional as F

from schedules import get_named_beta_schedule

betas = torch.tensor(get_named_beta_schedule("{schedule}", 1000))
alphas_cumprod = torch.cumprod(1 - betas, 0)
model = torch.nn.Conv2d(3, 3, 3, padding=1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
for x0 in loader:
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (x0.shape[0],))
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise), noise)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


def test_the_offset_of_a_cosine_option_the_run_does_not_use_is_not_applicable(tmp_path):
    files = {"train.py": SCHEDULED_TRAINER.format(schedule="linear"), "schedules.py": SCHEDULES}
    found = verdicts(tmp_path, files)
    assert found["cosine"]["state"] == "missing"
    # was present: the cosine option has its offset, but the run trains on the linear schedule
    assert found["offset"]["state"] == "n/a"
    assert "'linear'" in found["offset"]["reason"]


def test_the_offset_of_the_cosine_schedule_in_use_is_present(tmp_path):
    files = {"train.py": SCHEDULED_TRAINER.format(schedule="cosine"), "schedules.py": SCHEDULES}
    assert verdicts(tmp_path, files)["offset"]["state"] == "present"


def test_an_ema_built_when_the_named_config_has_its_key_is_the_runs_choice(tmp_path):
    guarded = TRAINER.replace(
        "        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=configs.train.lr)\n",
        "        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=configs.train.lr)\n"
        "        if self.rank == 0 and hasattr(self.configs.train, 'ema_rate'):\n"
        "            self.ema = EMA(self.model, self.configs.train.ema_rate)\n",
    ).replace(
        "        self.optimizer.step()\n",
        "        self.optimizer.step()\n        if self.ema is not None:\n            self.ema.update()\n",
    )
    helper = (
        "import copy\n\n\nclass EMA:\n    def __init__(self, model, decay):\n"
        "        self.decay = decay\n        self.shadow = copy.deepcopy(model)\n\n"
        "    def update(self):\n        pass\n"
    )
    files = _project(**{"trainer.py": "from ema import EMA\n" + guarded, "ema.py": helper})
    found = verdicts(tmp_path, files, entry="main.py")
    # was present: the helper's deepcopy runs only when the run's config has ema_rate
    assert found["ema"]["state"] == "decided-elsewhere"
    assert "ema_rate" in found["ema"]["reason"]


def test_apply_fixes_the_trainer_class_a_config_names_where_check_reports_it(tmp_path):
    write_example(_project(), tmp_path)
    result = CliRunner().invoke(app, ["apply", "--select", "CLIP001", "--force", str(tmp_path / "main.py")])
    # was "nothing to fix": apply rebuilt the load without the config-named trainer check had reached
    assert result.exit_code == 0, result.output
    assert "clip_grad_norm_" in (tmp_path / "trainer.py").read_text()
