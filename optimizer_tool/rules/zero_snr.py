"""Zero terminal SNR for v-prediction (Lin et al. 2023, "Common Diffusion Noise Schedules and
Sample Steps are Flawed").

Linear, scaled-linear and clipped cosine schedules all end with alphas_cumprod[-1] > 0: at
the last training timestep the input still carries some signal. The model learns to use it,
but sampling starts from pure noise, where that signal is absent — images come out with
medium brightness and washed-out contrast. With v-prediction the fix is cheap: rescale the
betas so that alphas_cumprod[-1] == 0 (diffusers ``rescale_betas_zero_snr=True``, or the
paper's ``rescale_zero_terminal_snr(betas)``), and sample from the last timestep ("trailing"
spacing). With epsilon-prediction zero terminal SNR is ill-posed, so these rules only apply
when v-prediction is configured. This — not the cosine offset s — is the fix for schedules
that never reach pure noise.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

from optimizer_tool.findings import Severity
from optimizer_tool.index import CallSite, UnitIndex, literal
from optimizer_tool.rules.base import Hit, Rule
from optimizer_tool.semantics import (
    beta_schedule,
    configured,
    diffusers_scheduler_class,
    prediction_type,
    pretrained_scheduler_loads,
)

KEY = "zero-snr"
TITLE = "Zero terminal SNR with v-prediction"
SAFE_FIX = False  # changes the training objective

RESCALE_SETTINGS = ("rescale_betas_zero_snr", "rescale_zero_terminal_snr", "zero_terminal_snr", "zero_snr", "enforce_zero_terminal_snr", "use_zero_snr", "use_zero_terminal_snr", "zsnr")
RESCALE_FUNCTION = re.compile(r"(rescale|enforce|make|to)_?(betas_)?zero_?(terminal_)?snr|zero_?terminal_?snr", re.I)


def _rescale_calls(index: UnitIndex) -> list[CallSite]:
    """Calls (not definitions) of a zero-terminal-SNR rescaling function."""
    return [c for c in index.calls if RESCALE_FUNCTION.search(c.method or c.func_text or "")]


def rescaling(index: UnitIndex) -> bool | None:
    """True: terminal SNR is rescaled to 0; False: it is not (by default); None: cannot tell."""
    flags = configured(index, RESCALE_SETTINGS, lambda s: "on" if s.value is True else "off" if s.value is False else None)
    if "on" in flags.by_value:
        return True
    calls = _rescale_calls(index)
    if any(not c.guards for c in calls):
        return True
    if calls:  # behind a flag: on unless the flag's default says off
        return False if flags.value == "off" else None
    if flags.value == "off":
        return False
    unknown = [s for s in index.setting(*RESCALE_SETTINGS) if not s.known]
    return None if unknown else False


# Defaults when a linear schedule does not state its betas: DDPM / diffusers (1e-4 .. 0.02) and
# Stable Diffusion's scaled_linear (0.00085 .. 0.012), 1000 steps.
LINEAR_DEFAULTS = {"linear": (1e-4, 0.02), "scaled": (0.00085, 0.012)}
# Above this alphas_cumprod[-1] the leftover signal is visible in samples (Stable Diffusion: ~0.0047).
MATERIAL_ALPHA_BAR = 1e-3


def terminal_alpha_bar(index: UnitIndex, setting) -> float | None:
    """alphas_cumprod[-1] of a linear / scaled-linear schedule, from its settings or the usual defaults."""
    value = str(setting.value).lower() if isinstance(setting.value, str) else ""
    scaled = value in ("scaled_linear", "sqrt_linear", "quad", "quadratic")
    if not scaled and value not in ("linear", "linear_scaled"):
        return None

    def one(names, kind):
        values = {s.value for s in index.setting(*names) if s.known and isinstance(s.value, kind) and not isinstance(s.value, bool)}
        return values.pop() if len(values) == 1 else None

    steps = one(("num_train_timesteps", "diffusion_steps", "num_timesteps", "ddpm_num_steps", "n_timestep", "num_diffusion_timesteps"), int) or 1000
    start, end = LINEAR_DEFAULTS["scaled" if scaled else "linear"]
    start = one(("beta_start", "linear_start", "beta_1"), float) or start
    end = one(("beta_end", "linear_end", "beta_t"), float) or end
    if steps < 2 or not 0 < start < end < 1:
        return None
    if steps != 1000 and not setting.owner.startswith("diffusers"):
        return None  # own code often rescales the betas to the number of steps (improved-diffusion: 1000 / T)
    alpha_bar = 1.0
    for i in range(steps):
        fraction = i / (steps - 1)
        beta = (math.sqrt(start) + (math.sqrt(end) - math.sqrt(start)) * fraction) ** 2 if scaled else start + (end - start) * fraction
        alpha_bar *= 1 - min(beta, 0.999)
    return alpha_bar


def _unrescaled_schedule(index: UnitIndex):
    """(setting, family) of a v-prediction schedule that is not rescaled to zero terminal SNR, else None."""
    if rescaling(index) is not False:
        return None
    if any(c.kwarg("beta_schedule") is None and c.kwarg("trained_betas") is None for c in pretrained_scheduler_loads(index)):
        return None  # the schedule comes from a stored config
    schedule = beta_schedule(index)
    family = schedule.value
    if family is None:
        return None
    return schedule.where(family) or prediction_type(index).where("v"), family


class _VPrediction(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return prediction_type(index).value == "v"


class TerminalSnrNotZero(_VPrediction):
    code = "ZSNR001"
    severity = Severity.MISSING
    title = "v-prediction schedule rescaled to zero terminal SNR"
    message = "v-prediction is configured but the schedule is not rescaled to zero terminal SNR: alphas_cumprod[-1] stays slightly above 0, so training never shows the model pure noise while sampling starts from it (Lin et al. 2023)"
    explain = """
    Every common schedule ends with a little signal left: linear DDPM (alphas_cumprod[-1] ~ 4e-5),
    Stable Diffusion's scaled_linear (~0.0047), and the cosine schedule whose betas are clipped to
    0.999 / 0.9999. The model learns to read that leftover signal at t = T, but sampling starts from
    pure Gaussian noise that has none, so it cannot produce very dark or very bright images and
    samples look washed out (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
    Flawed"). With v-prediction the model stays well defined at SNR = 0, so rescale the schedule:
    diffusers `DDPMScheduler(..., rescale_betas_zero_snr=True)` (and `timestep_spacing="trailing"`
    for sampling), or apply the paper's `rescale_zero_terminal_snr(betas)` (shift and scale
    sqrt(alphas_cumprod) so the last value is 0) in your own scheduler.

    Only applies with v-prediction: with epsilon-prediction the target at SNR = 0 is undefined.
    A schedule loaded from a pretrained config is not judged (it may already be rescaled).
    """
    VALID = [
        "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler(beta_schedule='scaled_linear', prediction_type='v_prediction', rescale_betas_zero_snr=True, timestep_spacing='trailing')\n",
        # the paper's function, applied in the project's scheduler
        "import torch\nfrom dataclasses import dataclass\n\n@dataclass\nclass Config:\n    prediction_type: str = 'v_prediction'\n    beta_schedule: str = 'linear'\n\ndef rescale_zero_terminal_snr(betas):\n    return betas\n\nclass Scheduler:\n    def __init__(self, T=1000):\n        betas = torch.linspace(1e-4, 0.02, T)\n        self.betas = rescale_zero_terminal_snr(betas)\n",
        # epsilon trainer: nothing to judge
        "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler(beta_schedule='linear', prediction_type='epsilon')\n",
        # a pretrained schedule may already be rescaled
        "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler.from_pretrained(path, subfolder='scheduler', prediction_type='v_prediction')\n",
    ]
    INVALID = [
        "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2', prediction_type='v_prediction')\n",
        # DDPM's linear schedule: alphas_cumprod[-1] ~ 4e-5
        "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type='v_prediction')\n",
        {
            "train.py": "import torch\nfrom config import Config\nfrom scheduler import Scheduler\ncfg = Config()\nsched = Scheduler(cfg.beta_schedule, cfg.prediction_type)\nfor x in data:\n    loss = (model(x) - sched.get_velocity(x, torch.randn_like(x), t)).pow(2).mean()\n    loss.backward()\n    opt.step()\n",
            "config.py": "from dataclasses import dataclass\n\n@dataclass\nclass Config:\n    beta_schedule: str = 'cosine'\n    prediction_type: str = 'v_prediction'\n",
            "scheduler.py": "import math, torch\n\nclass Scheduler:\n    def __init__(self, beta_schedule='linear', prediction_type='epsilon'):\n        self.prediction_type = prediction_type\n        self.betas = self._cosine_beta_schedule(1000)\n\n    def _cosine_beta_schedule(self, timesteps, s=0.008):\n        x = torch.linspace(0, timesteps, timesteps + 1)\n        a = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2\n        return torch.clip(1 - a[1:] / a[:-1], 0.0001, 0.9999)\n",
        },
        # the rescaling exists but is off by default
        "import argparse\nfrom diffusers import DDPMScheduler\nparser = argparse.ArgumentParser()\nparser.add_argument('--prediction_type', default='v_prediction')\nparser.add_argument('--rescale_betas_zero_snr', action='store_true')\nargs = parser.parse_args()\nnoise_scheduler = DDPMScheduler(beta_schedule='linear', prediction_type=args.prediction_type, rescale_betas_zero_snr=args.rescale_betas_zero_snr)\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        found = _unrescaled_schedule(index)
        if found is None:
            return
        setting, family = found
        alpha_bar = terminal_alpha_bar(index, setting)
        if alpha_bar is not None and alpha_bar >= MATERIAL_ALPHA_BAR:
            return  # ZSNR003 reports it as a bug
        kind = {"cosine": "clipped cosine", "linear": "linear"}.get(family, repr(setting.value) if isinstance(setting.value, str) else family)
        measured = f"alphas_cumprod[-1] ~ {alpha_bar:.1e}" if alpha_bar is not None else "its last beta is clipped below 1, so alphas_cumprod[-1] > 0"
        yield Hit.at(setting, f"v-prediction is configured but the {kind} schedule is not rescaled to zero terminal SNR ({measured}): training never sees pure noise, sampling starts from it; rescale the betas (diffusers rescale_betas_zero_snr=True, Lin et al. 2023)")


class MaterialTerminalSnr(_VPrediction):
    code = "ZSNR003"
    severity = Severity.BUG
    title = "v-prediction schedule reaches (near) pure noise"
    message = "v-prediction is configured with a schedule that keeps visible signal at the last timestep (alphas_cumprod[-1] >= 1e-3, like Stable Diffusion's scaled_linear): samples are stuck at medium brightness; rescale the betas to zero terminal SNR (Lin et al. 2023)"
    explain = """
    Stable Diffusion's scaled_linear schedule (0.00085 .. 0.012 over 1000 steps) ends at
    alphas_cumprod[-1] ~ 0.0047: at t = T the input still carries ~7% of the image. The model learns
    to take the overall brightness from that leftover signal, and since sampling starts from pure
    noise it produces only medium-brightness images (Lin et al. 2023, the motivating bug of the paper).
    With v-prediction, rescale the betas to zero terminal SNR (`rescale_betas_zero_snr=True`, or the
    paper's `rescale_zero_terminal_snr(betas)`) and sample with `timestep_spacing="trailing"`.
    Schedules that end much closer to pure noise (clipped cosine, DDPM's linear) are ZSNR001.
    """
    VALID = [TerminalSnrNotZero.VALID[0], TerminalSnrNotZero.INVALID[0]]
    INVALID = [
        "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', prediction_type='v_prediction')\n",
        "import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--beta_schedule', default='scaled_linear')\nparser.add_argument('--prediction_type', default='v_prediction')\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        found = _unrescaled_schedule(index)
        if found is None:
            return
        setting, family = found
        alpha_bar = terminal_alpha_bar(index, setting)
        if alpha_bar is None or alpha_bar < MATERIAL_ALPHA_BAR:
            return
        yield Hit.at(setting, f"v-prediction is configured but the {setting.value!r} schedule ends at alphas_cumprod[-1] ~ {alpha_bar:.4f}: the last timestep still shows the image, so samples are stuck at medium brightness; rescale the betas to zero terminal SNR (rescale_betas_zero_snr=True, Lin et al. 2023)")


class LeadingTimestepSpacing(_VPrediction):
    code = "ZSNR002"
    severity = Severity.INFO
    title = "zero-SNR schedule sampled from the last timestep"
    message = "the schedule is rescaled to zero terminal SNR but sampling uses the default 'leading' timestep spacing, which never starts at t = T, the only pure-noise step; use timestep_spacing='trailing'"
    explain = """
    Lin et al. (2023) pair zero terminal SNR with "trailing" timestep spacing: diffusers' default
    "leading" spacing with 50 of 1000 steps starts sampling at t = 981, not at t = 999, so the first
    step still assumes a little signal. Pass `timestep_spacing="trailing"` to the scheduler that is
    rescaled with `rescale_betas_zero_snr=True` (and to the scheduler used for sampling).
    """
    VALID = [
        TerminalSnrNotZero.VALID[0],
        "from diffusers import DDIMScheduler\nnoise_scheduler = DDIMScheduler.from_pretrained(path, subfolder='scheduler', prediction_type='v_prediction', rescale_betas_zero_snr=True, timestep_spacing='trailing')\n",
    ]
    INVALID = [
        "from diffusers import DDIMScheduler\nnoise_scheduler = DDIMScheduler(beta_schedule='scaled_linear', prediction_type='v_prediction', rescale_betas_zero_snr=True)\n",
        "from diffusers import DDIMScheduler\nnoise_scheduler = DDIMScheduler.from_pretrained(path, subfolder='scheduler', prediction_type='v_prediction', rescale_betas_zero_snr=True, timestep_spacing='leading')\n",
    ]

    def _rescaled(self, index: UnitIndex) -> list[CallSite]:
        return [
            c for c in index.calls
            if (diffusers_scheduler_class(c) or c.method in ("from_pretrained", "from_config") and c.receiver.endswith("Scheduler"))
            and literal(c.kwarg("rescale_betas_zero_snr")) is True
        ]

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and bool(self._rescaled(index))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for call in self._rescaled(index):
            spacing = call.kwarg("timestep_spacing")
            if spacing is None or literal(spacing) in ("leading", "linspace"):
                yield Hit.at(call)
