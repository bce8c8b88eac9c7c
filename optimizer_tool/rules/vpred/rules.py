"""VPRED001-003: the model predicts v, and the loss target and the sampler follow the prediction type."""

from __future__ import annotations

import re
from typing import Iterable

from optimizer_tool.contract import Hit, Rule
from optimizer_tool.findings import Severity, State
from optimizer_tool.index import UnitIndex, literal
from optimizer_tool.knowledge.configured import default_applies
from optimizer_tool.knowledge.diffusion import (
    diffusers_scheduler_class,
    inherited,
    prediction_family,
    pretrained_denoiser,
    sigma_noising,
)
from optimizer_tool.knowledge.objective import (
    FLOW_REASON,
    configured_prediction,
    flow_path,
    karras_preconditioned,
    losses_on_noise,
    mentions_prediction,
)
from optimizer_tool.knowledge.training import SAMPLING_FUNCTION
from optimizer_tool.rules.vpred.facts import (
    EPS_HELPER,
    FROM_V_FUNCTION,
    SAMPLER_FUNCTION,
    X0_TARGET,
    computes_velocity,
    eps_to_x0,
    explicit_v,
)

# --- examples -------------------------------------------------------------------------------
_LOOP = """\
import torch
import torch.nn.functional as F
from config import TrainConfig
from diffusers import DDPMScheduler
cfg = TrainConfig()
noise_scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=cfg.prediction_type)
for x in loader:
    noise = torch.randn_like(x)
    t = torch.randint(0, 1000, (x.shape[0],))
    noisy = noise_scheduler.add_noise(x, noise, t)
    pred = model(noisy, t)
{target}
    loss.backward()
    optimizer.step()
"""
_BRANCHED = """\
    if cfg.prediction_type == "epsilon":
        target = noise
    elif cfg.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x, noise, t)
    loss = F.mse_loss(pred.float(), target.float())"""


def _trainer(prediction: str, target: str = "    loss = F.mse_loss(pred, noise)") -> dict:
    return {
        "train.py": _LOOP.format(target=target),
        "config.py": (
            "from dataclasses import dataclass\n"
            "\n"
            "@dataclass\n"
            "class TrainConfig:\n"
            "    learning_rate: float = 1e-4\n"
            f"    prediction_type: str = {prediction!r}\n"
        ),
    }


class EpsilonPrediction(Rule):
    switch_values = ("v_prediction", "v", "pred_v", "v-prediction", "velocity")
    code = "VPRED001"
    severity = Severity.MISSING
    title = "v-prediction target"
    message = (
        "the model predicts the noise (epsilon): its x0 estimate (x - sqrt(1 - a) * eps) / sqrt(a)"
        " amplifies errors at high noise, while v-prediction stays well conditioned at every noise level"
        " (Salimans & Ho 2022)"
    )
    explain = """
    With epsilon-prediction the clean-sample estimate divides by sqrt(alpha_bar_t), which goes to 0 at
    high noise: small errors in the predicted noise become large errors in x0, and sample quality and
    stability suffer at the noisy end of the chain. v-prediction, v = sqrt(a) * eps - sqrt(1 - a) * x0
    (Salimans & Ho 2022, used by Imagen Video and Stable Diffusion 2), keeps both the target and the x0
    estimate well scaled everywhere, and it allows a zero-terminal-SNR schedule.

    Fix: set the prediction type to v ("v_prediction" for diffusers and most own schedulers,
    objective="pred_v" for lucidrains, parameterization="v" for LDM) and make sure the loss target
    (`scheduler.get_velocity(x0, noise, t)`) and the sampler follow it (the VPRED002/VPRED003 checks).
    Fine-tuning a pretrained epsilon model keeps its prediction type, so the rule does not apply there.
    """
    VALID = [
        _trainer("v_prediction", _BRANCHED),
        (
            "from diffusers import DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler(beta_schedule='squaredcos_cap_v2', prediction_type='v_prediction')\n"
        ),
        (
            "from denoising_diffusion_pytorch import GaussianDiffusion\n"
            "diffusion = GaussianDiffusion(model, image_size=128, objective='pred_v')\n"
        ),
        # fine-tuning a pretrained epsilon UNet, the loss says epsilon but no setting chose it
        (
            "import torch\n"
            "import torch.nn.functional as F\n"
            "from diffusers import DDPMScheduler, UNet2DConditionModel\n"
            "unet = UNet2DConditionModel.from_pretrained(path, subfolder='unet')\n"
            "noise_scheduler = DDPMScheduler.from_pretrained(path, subfolder='scheduler')\n"
            "for x in loader:\n"
            "    noise = torch.randn_like(x)\n"
            "    loss = F.mse_loss(unet(noise_scheduler.add_noise(x, noise, t), t).sample, noise)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
        ),
        # the prediction type is deferred to the pretrained scheduler config (diffusers' default None)
        (
            "import argparse\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--prediction_type', type=str, default=None, help='epsilon or v_prediction')\n"
        ),
    ]
    INVALID = [
        _trainer("epsilon", _BRANCHED),
        # x0-prediction is no v-prediction either
        (
            "import argparse\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--prediction_type', default='sample', choices=['epsilon', 'sample'])\n"
        ),
        (
            "import argparse\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--prediction_type', type=str, default='epsilon', choices=['epsilon',"
            " 'v_prediction'])\n"
        ),
        # diffusers' default
        "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler(num_train_timesteps=1000)\n",
        (
            "from denoising_diffusion_pytorch import GaussianDiffusion\n"
            "diffusion = GaussianDiffusion(model, image_size=128, objective='pred_noise')\n"
        ),
        # improved-diffusion / DiT defaults
        (
            "def model_and_diffusion_defaults():\n"
            "    return dict(image_size=256, num_channels=128, noise_schedule='cosine', predict_xstart=False)\n"
        ),
        # no setting at all, but the loss is against the noise
        (
            "import torch\n"
            "import torch.nn.functional as F\n"
            "for x in loader:\n"
            "    noise = torch.randn_like(x)\n"
            "    t = torch.randint(0, 1000, (x.shape[0],))\n"
            "    loss = F.mse_loss(model(q_sample(x, t, noise), t), noise)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
        ),
    ]

    def applies(self, index: UnitIndex) -> bool:
        prediction = configured_prediction(index)
        # Fine-tuning a pretrained denoiser keeps its prediction type unless the trainer states one.
        return bool(prediction.by_value) and (prediction.explicit or pretrained_denoiser(index) is None)

    def when_blind(self, index: UnitIndex) -> tuple[State, str] | None:
        reason = inherited(index, "prediction type", "prediction_type")
        prediction = configured_prediction(index)
        loss = prediction.where("epsilon") if set(prediction.by_value) == {"epsilon"} else None
        if (
            reason is not None
            and loss is not None
            and not prediction.explicit
            and all(s.kind == "code" for s in prediction.by_value["epsilon"])
            and not _branches_on_prediction(index, loss)
        ):
            # the loss is written against the noise: whatever the pretrained config says, it trains epsilon
            return (
                State.MISSING,
                f"the loss always compares the model output with the sampled noise ({loss.path.name}:{loss.line}),"
                f" whatever the pretrained config says: the model is trained on epsilon ({reason}; switching a"
                " pretrained epsilon model to v means retraining it)",
            )
        if reason is not None:
            return State.ELSEWHERE, reason
        flow = flow_path(index)
        if flow is not None:
            return State.PRESENT, f"{FLOW_REASON} ({flow}): the network regresses a velocity, as v-prediction does"
        where = karras_preconditioned(index) if sigma_noising(index) else None
        if where is not None:
            return (
                State.PRESENT,
                f"the network is preconditioned as in EDM (c_skip/c_out, {where}): its target is well conditioned"
                " at every noise level, as v-prediction's is (Karras et al. 2022)",
            )
        return None

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        prediction = configured_prediction(index)
        if prediction.value not in ("epsilon", "x0"):
            return
        setting = prediction.where(prediction.value)
        if prediction.value == "x0":
            yield Hit.at(
                setting,
                f"the model predicts the clean sample x0 ({setting.name} = {setting.value!r}): an x0 target asks"
                " the network to reproduce its input at low noise and blurs at high noise; v-prediction stays"
                " well conditioned at every noise level (Salimans & Ho 2022)",
            )
            return
        if setting.kind == "code":
            why = "the loss compares the model output with the sampled noise"
        elif setting.kind == "library-default":
            why = f"{setting.owner.rsplit('.', 1)[-1]}(...) without prediction_type defaults to 'epsilon'"
        elif setting.kind == "param-default":
            why = default_applies(index, setting)
        else:
            why = f"{setting.name} = {setting.value!r}"
        yield Hit.at(
            setting,
            f"the model predicts the noise ({why}): its x0 estimate divides by sqrt(alpha_bar) and amplifies errors"
            " at high noise; v-prediction stays well conditioned at every noise level (Salimans & Ho 2022)",
        )


PREDICTION_BRANCH = re.compile(r"prediction_type|parameterization|pred_type|objective\s*==")


def _branches_on_prediction(index: UnitIndex, loss) -> bool:
    """The function computing ``loss`` reads the prediction type (``if
    noise_scheduler.config.prediction_type == "epsilon": target = noise``): the target follows it."""
    source = index.source(loss.path)
    lines = source.lines if source is not None else []
    fn = next((f for f in index.functions if f.path == loss.path and f.line <= loss.line <= f.end_line), None)
    start, end = (fn.line, fn.end_line) if fn is not None else (1, len(lines))
    return any(PREDICTION_BRANCH.search(line) for line in lines[start - 1 : end])


class _VConfigured(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return "v" in configured_prediction(index).by_value


class VTargetStillNoise(_VConfigured):
    code = "VPRED002"
    severity = Severity.BUG
    title = "loss target follows the prediction type"
    message = (
        "v-prediction is configured but the loss still compares the model output with the noise, so the"
        " model keeps learning epsilon while the sampler reads its output as v"
    )
    explain = """
    Changing `prediction_type` to "v_prediction" changes what the sampler expects, not what the loss
    trains: a loop with `F.mse_loss(model_pred, noise)` keeps teaching epsilon, and every sample is
    then decoded with the wrong formula. Compute the target from the prediction type:

        if prediction_type == "epsilon":
            target = noise
        elif prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(x0, noise, timesteps)  # sqrt(a) * noise - sqrt(1 - a) * x0
    """
    VALID = [
        _trainer("v_prediction", _BRANCHED),
        _trainer("epsilon"),
        # lucidrains: the target follows `objective`
        (
            "import torch\n"
            "import torch.nn.functional as F\n"
            "\n"
            "class GaussianDiffusion:\n"
            "    def __init__(self, model, objective='pred_v'):\n"
            "        self.objective = objective\n"
            "\n"
            "    def p_losses(self, x_start, t, noise=None):\n"
            "        noise = noise if noise is not None else torch.randn_like(x_start)\n"
            "        model_out = self.model(self.q_sample(x_start, t, noise), t)\n"
            "        if self.objective == 'pred_noise':\n"
            "            target = noise\n"
            "        elif self.objective == 'pred_v':\n"
            "            target = self.predict_v(x_start, t, noise)\n"
            "        return F.mse_loss(model_out, target)\n"
            "\n"
            "diffusion = GaussianDiffusion(model, objective='pred_v')\n"
        ),
    ]
    INVALID = [
        _trainer("v_prediction"),
        # a loss module instance, the v setting in argparse
        (
            "import argparse\n"
            "import torch\n"
            "from torch import nn\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--prediction_type', default='v_prediction')\n"
            "criterion = nn.MSELoss()\n"
            "for x in loader:\n"
            "    noise = torch.randn_like(x)\n"
            "    loss = criterion(model(q_sample(x, t, noise), t), noise)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
        ),
        # the target variable is only ever the noise
        _trainer(
            "v_prediction", "    target = noise\n    loss = F.mse_loss(pred.float(), target.float(), reduction='mean')"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if computes_velocity(index):
            return
        for call in losses_on_noise(index):
            yield Hit.at(call)


class SamplerAssumesEpsilon(_VConfigured):
    code = "VPRED003"
    severity = Severity.BUG
    title = "sampler follows the prediction type"
    message = (
        "v-prediction is configured but the sampler still reads the model output as epsilon, so samples are"
        " decoded with the wrong formula"
    )
    explain = """
    A v-prediction model's output must be turned into x0 and epsilon with x0 = sqrt(a) * x_t - sqrt(1 - a) * v
    and eps = sqrt(a) * v + sqrt(1 - a) * x_t. Two ways to miss it: a sampling scheduler built with another
    prediction type than the trainer's (`DDIMScheduler()` defaults to "epsilon"; build it with the same
    `prediction_type`, or `DDIMScheduler.from_config(noise_scheduler.config)`), and a hand-written sampler that
    computes x0 = (x_t - sqrt(1 - a) * out) / sqrt(a) without a v branch.
    """
    VALID = [
        (
            "from diffusers import DDIMScheduler, DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler(prediction_type='v_prediction')\n"
            "sampler = DDIMScheduler.from_config(noise_scheduler.config)\n"
        ),
        (
            "import torch\n"
            "from dataclasses import dataclass\n"
            "\n"
            "@dataclass\n"
            "class Config:\n"
            "    prediction_type: str = 'v_prediction'\n"
            "\n"
            "cfg = Config()\n"
            "\n"
            "def sample(model, x, a):\n"
            "    out = model(x)\n"
            "    if cfg.prediction_type == 'v_prediction':\n"
            "        x0 = a.sqrt() * x - (1 - a).sqrt() * out\n"
            "    else:\n"
            "        x0 = (x - (1 - a).sqrt() * out) / a.sqrt()\n"
            "    return x0\n"
        ),
    ]
    INVALID = [
        (
            "from diffusers import DDIMScheduler, DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler(prediction_type='v_prediction')\n"
            "sampler = DDIMScheduler(num_train_timesteps=1000)\n"
        ),
        # LDM style: parameterization switched to v, p_sample still converts with the epsilon helper
        (
            "import torch\n"
            "class LitDiffusion:\n"
            "    def __init__(self, parameterization='v'):\n"
            "        self.parameterization = parameterization\n"
            "\n"
            "    def get_v(self, x, noise, t):\n"
            "        return self.sqrt_alphas_cumprod[t] * noise - self.sqrt_one_minus_alphas_cumprod[t] * x\n"
            "\n"
            "    def predict_start_from_noise(self, x_t, t, noise):\n"
            "        return self.sqrt_recip_alphas_cumprod[t] * x_t - self.sqrt_recipm1_alphas_cumprod[t] * noise\n"
            "\n"
            "    @torch.no_grad()\n"
            "    def p_sample(self, model, x, t):\n"
            "        x_recon = self.predict_start_from_noise(x, t, model(x, t)).clamp(-1.0, 1.0)\n"
            "        return self.q_posterior(x_recon, x, t)\n"
            "\n"
            "model = LitDiffusion(parameterization='v')\n"
        ),
        (
            "import torch\n"
            "from dataclasses import dataclass\n"
            "\n"
            "@dataclass\n"
            "class Config:\n"
            "    prediction_type: str = 'v_prediction'\n"
            "\n"
            "@torch.no_grad()\n"
            "def sample(model, x, alphas_cumprod, timesteps):\n"
            "    for t in timesteps:\n"
            "        a = alphas_cumprod[t]\n"
            "        eps = model(x, t)\n"
            "        x0 = (x - torch.sqrt(1 - a) * eps) / torch.sqrt(a)\n"
            "        x = ddim_step(x0, eps, t)\n"
            "    return x\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        prediction = configured_prediction(index)
        if not explicit_v(prediction):
            return
        yield from _schedulers_reading_epsilon(index)
        if any(FROM_V_FUNCTION.search(f.name) for f in index.functions):
            return
        yield from _epsilon_helper_calls(index)
        yield from _epsilon_formulas(index)


def _schedulers_reading_epsilon(index: UnitIndex) -> Iterable[Hit]:
    """diffusers schedulers built without the trainer's prediction type, or with "epsilon"."""
    registered = any(c.method == "register_to_config" and c.kwarg("prediction_type") is not None for c in index.calls)
    for call in index.calls:
        cls = diffusers_scheduler_class(call)
        if cls is None or registered:
            continue
        node = call.kwarg("prediction_type")
        if node is None and not any(a.star == "**" for a in call.node.args):
            yield Hit.at(
                call,
                f"the trainer uses v-prediction but {cls}(...) is built without prediction_type, so it reads the"
                " model output as epsilon (the default); pass the same prediction_type or build it with"
                " .from_config(noise_scheduler.config)",
            )
        elif node is not None and prediction_family("prediction_type", literal(node)) == "epsilon":
            yield Hit.at(
                call,
                f'the trainer uses v-prediction but {cls}(...) is built with prediction_type="epsilon", so it'
                " reads the model output as the noise",
            )


def _epsilon_helper_calls(index: UnitIndex) -> Iterable[Hit]:
    """A sampler that converts the model output with an epsilon helper (``predict_start_from_noise``)."""
    for call in index.calls:
        fn = call.function
        if (
            fn is None
            or EPS_HELPER.search(fn.name)
            or not (SAMPLER_FUNCTION.search(fn.name) or SAMPLING_FUNCTION.search(fn.name))
        ):
            continue
        if not EPS_HELPER.search(call.method or call.func_text or "") or any(
            mentions_prediction(g) for g in call.guards
        ):
            continue
        yield Hit.at(
            call,
            f"the sampler `{fn.qualname}` turns the model output into x0 with {call.func_text}() (the epsilon"
            " formula) although the model is trained for v-prediction; use x0 = sqrt(a) * x - sqrt(1 - a) * v"
            " (or branch on the prediction type)",
        )


def _epsilon_formulas(index: UnitIndex) -> Iterable[Hit]:
    """A sampler that computes ``x0 = (x - sqrt(1 - a) * eps) / sqrt(a)`` without a prediction-type branch."""
    for assign in index.assigns:
        fn = assign.function
        if fn is None or EPS_HELPER.search(fn.name) or not SAMPLER_FUNCTION.search(fn.name):
            continue
        if not X0_TARGET.search(assign.target.rsplit(".", 1)[-1]) or not eps_to_x0(assign.value):
            continue
        if any(mentions_prediction(g) for c in index.calls_in(fn) for g in c.guards):
            continue  # the function dispatches on the prediction type
        yield Hit(
            assign.path,
            assign.line,
            assign.col,
            f"the sampler `{fn.qualname}` computes x0 as (x - sqrt(1 - a) * eps) / sqrt(a) although the model is"
            " trained for v-prediction; use x0 = sqrt(a) * x - sqrt(1 - a) * v (or branch on the prediction"
            " type)",
        )
