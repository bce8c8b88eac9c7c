"""Cosine noise schedule instead of a linear one (plan priority 2).

The linear beta schedule of DDPM (and Stable Diffusion's ``scaled_linear``) destroys the
signal long before the last timestep: the final stretch of the chain is almost pure noise
and teaches the model little, while the low-noise end is crossed in a few steps. The cosine
schedule of Nichol & Dhariwal (2021) spreads the signal-to-noise ratio evenly over the
timesteps and trains better at no cost.

Recognised: config dataclass defaults, argparse defaults, YAML/TOML keys and keywords named
``beta_schedule`` / ``noise_schedule`` / ``ddpm_beta_schedule``; diffusers schedulers built
without ``beta_schedule`` (their default is ``"linear"``); improved-diffusion / DiT
``get_named_beta_schedule("linear", n)`` and ``create_diffusion(noise_schedule="linear")``
defaults; ``betas = torch.linspace(...)`` run unconditionally. Cosine spellings: ``"cosine"``,
diffusers ``"squaredcos_cap_v2"``; ``"sigmoid"`` and other non-linear schedules pass. A
schedule loaded from a pretrained config (``DDPMScheduler.from_pretrained``) is unknown, and a
trainer that fine-tunes a pretrained denoiser keeps that model's schedule: nothing to judge.
"""

from __future__ import annotations

from typing import Iterable

from optimizer_tool.contract import Applicability, CannotFix, Fix, FixContext, Hit, Rule
from optimizer_tool.edit.settings import manual_setting_patch, set_settings
from optimizer_tool.findings import Severity, State
from optimizer_tool.index import UnitIndex
from optimizer_tool.knowledge.configured import default_applies
from optimizer_tool.knowledge.diffusion import (
    BETA_SCHEDULE_SETTINGS,
    COSINE_SCHEDULES,
    PATH_COSINE,
    PATH_SETTINGS,
    beta_schedule,
    inherited,
    pretrained_denoiser,
    pretrained_scheduler_loads,
    schedule_from_run_config,
)
from optimizer_tool.knowledge.objective import flow_path, without_betas
from optimizer_tool.knowledge.settings import spelling

KEY = "cosine"
TITLE = "Cosine noise schedule"
ORDER = 20  # place in the checklist: the plan's order
DIFFUSION_ONLY = True
# the config keys that choose the schedule (a flow trainer's path: SiT/REPA ``path_type``)
CONFIG_KEYS = (*BETA_SCHEDULE_SETTINGS, *PATH_SETTINGS)

_TRAINER = """\
import torch
import torch.nn.functional as F
from config import TrainConfig
cfg = TrainConfig()
for x in loader:
    noise = torch.randn_like(x)
    loss = F.mse_loss(model(x), noise)
    loss.backward()
    optimizer.step()
"""


def _config(schedule: str) -> dict:
    return {
        "train.py": _TRAINER,
        "config.py": (
            "from dataclasses import dataclass\n"
            "\n"
            "@dataclass\n"
            "class TrainConfig:\n"
            "    learning_rate: float = 1e-4\n"
            f"    beta_schedule: str = {schedule!r}\n"
        ),
    }


def _schedule_known(index: UnitIndex) -> bool:
    """The schedule is the trainer's own choice and we can see it."""
    if pretrained_denoiser(index) is not None:
        return False
    if any(c.kwarg("beta_schedule") is None for c in pretrained_scheduler_loads(index)):
        return False
    schedule = beta_schedule(index)
    if flow_path(index) is not None and all(s.kind == "code" for found in schedule.by_value.values() for s in found):
        # RectifiedFlow keeps score_sde's VP-SDE betas beside its straight path: the path is trained
        return False
    return bool(schedule.by_value)


def _describe(index: UnitIndex, setting) -> str:
    if setting.kind == "library-default":
        return (
            f"{setting.owner.rsplit('.', 1)[-1]}(...) without beta_schedule uses the library default {setting.value!r}"
        )
    if setting.kind == "code":
        return (
            "the betas are a torch/numpy linspace, a linear schedule"
            if setting.value == "linear"
            else f"the betas come from a {setting.value} schedule"
        )
    if setting.kind == "param-default":
        return default_applies(index, setting)
    if setting.kind == "config-file":
        return f"{setting.owner}: {setting.value}"
    return f"{setting.name} = {setting.value!r}"


class LinearSchedule(Rule):
    code = "COS001"
    switch_values = tuple(sorted(COSINE_SCHEDULES | set(PATH_COSINE)))
    severity = Severity.MISSING
    title = "cosine (or other non-linear) noise schedule"
    message = (
        "the noise schedule is linear: its last timesteps are nearly pure noise and teach little, while a"
        " cosine schedule (Nichol & Dhariwal 2021) spreads the signal-to-noise ratio evenly at no cost"
    )
    explain = """
    DDPM's linear betas (and Stable Diffusion's scaled_linear) push alphas_cumprod to almost zero
    long before the last timestep: a large share of the training steps see nearly pure noise,
    and the low-noise steps that shape details are few. The cosine schedule of Nichol & Dhariwal
    (2021), alpha_bar(t) = cos((t/T + s) / (1 + s) * pi/2)^2, keeps the signal-to-noise ratio
    falling evenly and improves likelihood and sample quality for free.

    Fix: set the schedule to "cosine" (your own scheduler, improved-diffusion `noise_schedule`,
    lucidrains `beta_schedule`) or "squaredcos_cap_v2" (diffusers `DDPMScheduler(beta_schedule=...)`).
    "sigmoid" and other non-linear schedules also pass. Fine-tuning a pretrained model keeps that
    model's schedule, so the rule does not apply there. Changing the schedule changes what the model
    learns: retrain from scratch, and compare samples.
    """
    VALID = [
        _config("cosine"),
        (
            "import argparse\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--beta_schedule', type=str, default='cosine', help='linear or cosine')\n"
        ),
        (
            "from diffusers import DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2')\n"
        ),
        # the schedule comes from a pretrained config: unknown, never claimed linear
        (
            "from diffusers import DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler.from_pretrained(args.pretrained_model_name_or_path,"
            " subfolder='scheduler')\n"
        ),
        # fine-tuning a pretrained UNet keeps its schedule
        (
            "from diffusers import DDPMScheduler, UNet2DConditionModel\n"
            "unet = UNet2DConditionModel.from_pretrained(path, subfolder='unet')\n"
            "noise_scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear')\n"
        ),
        (
            "from denoising_diffusion_pytorch import GaussianDiffusion, Unet\n"
            "model = Unet(dim=64)\n"
            "diffusion = GaussianDiffusion(model, image_size=128, timesteps=1000, beta_schedule='sigmoid')\n"
        ),
        "from improved_diffusion import gaussian_diffusion as gd\nbetas = gd.get_named_beta_schedule('cosine', 1000)\n",
        # comments and help strings are not a schedule; the dispatch on 'linear' is not a choice
        (
            "import torch\n"
            "# beta_schedule = 'linear'\n"
            "def make_betas(schedule, n):\n"
            "    if schedule == 'linear':\n"
            "        betas = torch.linspace(1e-4, 0.02, n)\n"
            "    else:\n"
            "        betas = cosine_beta_schedule(n)\n"
            "    return betas\n"
            "beta_schedule = 'cosine'\n"
        ),
    ]
    INVALID = [
        _config("linear"),
        (
            "import argparse\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--ddpm_beta_schedule', type=str, default='linear')\n"
        ),
        "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler(num_train_timesteps=1000)\n",
        (
            "from diffusers import DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule='scaled_linear')\n"
        ),
        (
            "import torch\n"
            "from torch import nn\n"
            "class DDPM(nn.Module):\n"
            "    def __init__(self, model, T=1000):\n"
            "        super().__init__()\n"
            "        self.model = model\n"
            "        self.register_buffer('betas', torch.linspace(1e-4, 0.02, T).double())\n"
        ),
        (
            "import torch\n"
            "class Diffusion:\n"
            "    def __init__(self, T=1000):\n"
            "        self.betas = torch.linspace(1e-4, 0.02, T)\n"
            "        self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)\n"
        ),
        "from improved_diffusion import gaussian_diffusion as gd\nbetas = gd.get_named_beta_schedule('linear', 1000)\n",
        # DiT: create_diffusion() relies on its noise_schedule="linear" default
        {
            "train.py": (
                "from diffusion import create_diffusion\n"
                "diffusion = create_diffusion(timestep_respacing='')\n"
                "for x, y in loader:\n"
                "    loss = diffusion.training_losses(model, x, t)['loss'].mean()\n"
                "    loss.backward()\n"
                "    opt.step()\n"
            ),
            "diffusion/__init__.py": (
                "from . import gaussian_diffusion as gd\n"
                "\n"
                "def create_diffusion(timestep_respacing, noise_schedule='linear',"
                " predict_xstart=False, diffusion_steps=1000):\n"
                "    betas = gd.get_named_beta_schedule(noise_schedule, diffusion_steps)\n"
                "    return betas\n"
            ),
            "diffusion/gaussian_diffusion.py": "def get_named_beta_schedule(name, n):\n    return name\n",
        },
    ]

    def applies(self, index: UnitIndex) -> bool:
        return _schedule_known(index)

    def when_blind(self, index: UnitIndex) -> tuple[State, str] | None:
        reason = inherited(index)
        if reason is not None:
            return State.ELSEWHERE, reason
        kind = without_betas(index)
        if kind is not None:
            return State.NOT_APPLICABLE, f"{kind[1]}: no beta schedule to make cosine"
        reason = schedule_from_run_config(index)
        if reason is not None:
            return State.ELSEWHERE, reason
        return (
            State.UNKNOWN,
            "no noise schedule found: no beta_schedule setting, scheduler or betas computation reached",
        )

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        schedule = beta_schedule(index)
        if schedule.value != "linear":
            return
        setting = schedule.where("linear")
        yield Hit.at(
            setting,
            f"the noise schedule is linear ({_describe(index, setting)}): its last timesteps are nearly pure noise"
            ' and teach little; a cosine schedule ("cosine", diffusers "squaredcos_cap_v2") spreads the'
            " signal-to-noise ratio evenly at no cost",
        )


# --- fix -----------------------------------------------------------------------------------
COSINE_SPELLINGS = ("cosine", *sorted(COSINE_SCHEDULES - {"cosine"}), *PATH_COSINE[:1])
COSINE_FUNCTION_PATCH = """\
def cosine_beta_schedule(timesteps, s=0.008):
    \"\"\"Nichol & Dhariwal (2021): alpha_bar(t) = cos((t/T + s) / (1 + s) * pi/2)^2.\"\"\"
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    alphas_cumprod = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return torch.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999).float()

betas = cosine_beta_schedule(num_timesteps)  # instead of torch.linspace(...)
"""


class CosineScheduleFix(Fix):
    """Set the schedule to cosine where the trainer chooses it: the dataclass default, the argparse
    default, the constructor keyword (diffusers ``beta_schedule="squaredcos_cap_v2"``, added when
    a diffusers scheduler relies on its linear default), a selector call's argument. The spelling
    is one the project's code accepts (its own ``"cosine"`` option, argparse ``choices``).

    Refused, with the change to make by hand: a schedule chosen in a YAML/TOML file (out of scope:
    comments and layout of data files are not ours to rewrite), and betas computed inline with
    ``torch.linspace`` (there is no cosine option to switch to). When the project's cosine
    function lacks the offset s, the re-check sees the schedule in use lacking it (OFF003) and
    apply adds the offset too (see ``optimizer_tool.apply``).
    """

    applicability = Applicability.UNSAFE  # changes the training objective

    codes = ("COS001",)

    def apply(self, ctx: FixContext, findings: list) -> None:
        index = ctx.index
        changes = []
        for setting in beta_schedule(index).by_value.get("linear", []):
            if setting.kind == "code":
                raise CannotFix(
                    setting.path,
                    setting.line,
                    "the betas are computed with a linspace, not chosen by a setting: there is no cosine option to"
                    " switch to",
                    COSINE_FUNCTION_PATCH,
                )
            value = spelling(index, setting, COSINE_SPELLINGS, "squaredcos_cap_v2")
            if setting.kind == "config-file" or value is None:
                why = (
                    f"{setting.owner} in {setting.path.name} is a data file this fix does not edit"
                    if setting.kind == "config-file"
                    else "the project's code has no cosine option for it"
                )
                raise CannotFix(
                    setting.path,
                    setting.line,
                    f"cannot switch {setting.name} to cosine: {why}",
                    manual_setting_patch(setting, value or "cosine")
                    if value or setting.kind == "config-file"
                    else COSINE_FUNCTION_PATCH,
                )
            changes.append((setting, value))
        for line in set_settings(ctx, changes):
            ctx.note(f"{line} (retrain from scratch: the schedule changes what the model learns)")
