"""v-prediction instead of epsilon-prediction (plan priority 6).

An epsilon-predicting model must recover x0 as (x_t - sqrt(1 - a) * eps) / sqrt(a): at high
noise (a -> 0) every error in eps is amplified, and at the last timestep the target says
nothing about the image. Predicting v = sqrt(a) * eps - sqrt(1 - a) * x0 (Salimans & Ho 2022)
keeps the target and the x0 estimate well conditioned at every noise level, and is what
progressive distillation, Imagen Video and Stable Diffusion 2 use.

Switching is one setting — but only if everything that assumes epsilon follows: the loss
target (``scheduler.get_velocity(x0, noise, t)`` instead of ``noise``) and the sampler's x0 /
epsilon estimates. The plan's "just change prediction_type, no code changes needed" is true
only for code that branches on the prediction type.

Recognised: ``prediction_type`` (config defaults, argparse, YAML, diffusers scheduler
keywords and their ``"epsilon"`` default), lucidrains ``objective='pred_noise'|'pred_v'``,
LDM ``parameterization='eps'|'v'``, improved-diffusion / DiT ``predict_xstart=False``, and a
loss computed against the sampled noise with no branch on the prediction type.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

import libcst as cst

from optimizer_tool.cstedit import enclosing, manual_setting_patch, replace, set_settings, spelling, statements, with_comment, with_keyword
from optimizer_tool.findings import Severity
from optimizer_tool.index import Assign, CallSite, FunctionInfo, UnitIndex, code_of, dotted, literal
from optimizer_tool.rules.base import CannotFix, Fix, FixContext, Hit, Rule
from optimizer_tool.semantics import (
    DIFFUSERS_SCHEDULER,
    EXPLICIT_KINDS,
    PREDICTION_FLAGS,
    PREDICTION_SETTINGS_LOOSE,
    PREDICTION_SETTINGS_STRICT,
    SAMPLING_FUNCTION,
    Configured,
    diffusers_scheduler_class,
    expression_nodes,
    find_call,
    prediction_family,
    prediction_type,
    pretrained_denoiser,
    synthetic_setting,
)

KEY = "vpred"
TITLE = "v-prediction"
SAFE_FIX = False  # changes the training objective

LOSS_FUNCTIONS = (
    "torch.nn.functional.mse_loss", "torch.nn.functional.l1_loss", "torch.nn.functional.smooth_l1_loss",
    "torch.nn.functional.huber_loss", "*.mean_flat", "mean_flat",
)
LOSS_MODULES = ("torch.nn.MSELoss", "torch.nn.L1Loss", "torch.nn.SmoothL1Loss", "torch.nn.HuberLoss")
RANDN = ("torch.randn_like", "torch.randn", "torch.normal", "numpy.random.randn", "numpy.random.normal", "torch.randn_like")
NOISE_NAMES = {"noise", "eps", "epsilon", "gaussian_noise", "noises", "true_noise", "noise_gt", "gt_noise"}
PREDICTION_NAMES = set(PREDICTION_SETTINGS_STRICT) | set(PREDICTION_SETTINGS_LOOSE) | set(PREDICTION_FLAGS)
VELOCITY_FUNCTION = re.compile(r"(^|_)(get_velocity|predict_v|get_v|velocity|get_v_target|compute_v|to_v|v_target|velocity_target)$")
VELOCITY_TARGET = re.compile(r"(^|\.)(v|velocity|v_target|target_v|v_t|vel)$")
FROM_V_FUNCTION = re.compile(r"from_v|v_to_|_v_to|xstart_from_v|x0_from_v", re.I)
EPS_HELPER = re.compile(r"from_(noise|eps)|eps_to|noise_to|_from_eps", re.I)
X0_TARGET = re.compile(r"x0|x_0|xstart|x_start|original|pred_x|clean|denoised|x_hat", re.I)
SAMPLER_FUNCTION = re.compile(r"(^|_)(step|p_sample|ddim_step|ddim_sample|sample|denoise|reverse)", re.I)


# --- what the loss compares with ---------------------------------------------------------
def _loss_calls(index: UnitIndex) -> list[CallSite]:
    modules = {a.target for a in index.assigns if a.call is not None and a.call.matches(LOSS_MODULES)}
    calls = [c for c in index.calls if c.matches(LOSS_FUNCTIONS) or (c.func_text and c.func_text in modules)]
    return [c for c in calls if not c.no_grad and not (c.function and SAMPLING_FUNCTION.search(c.function.name) and not c.function.name.startswith("train"))]


def _operands(call: CallSite) -> list[str]:
    if call.matches(("*.mean_flat", "mean_flat")):
        return [dotted(n) for n in expression_nodes(call.args[0].value) if isinstance(n, (cst.Name, cst.Attribute)) and dotted(n)] if call.args else []
    nodes = [a.value for a in call.args[:2]] + [call.kwarg(k) for k in ("input", "target") if call.kwarg(k) is not None]
    names = []
    for node in nodes:
        while isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in {"float", "to", "double", "half", "detach", "type", "contiguous", "reshape", "view", "flatten"}:
            node = node.func.value
        if dotted(node):
            names.append(dotted(node))
    return names


def _assigns(index: UnitIndex, function: FunctionInfo | None, name: str) -> list[Assign]:
    return [a for a in index.assigns if a.function == function and a.target == name]


def is_noise(index: UnitIndex, function: FunctionInfo | None, name: str, depth: int = 0) -> bool:
    """``name`` holds the sampled Gaussian noise (``noise = torch.randn_like(x)``, an alias of it,
    or a parameter/variable conventionally called ``noise``)."""
    if depth > 4:
        return False
    assigns = _assigns(index, function, name)
    if not assigns:
        return name.rsplit(".", 1)[-1] in NOISE_NAMES
    for assign in assigns:
        alias = dotted(assign.value)
        if alias and alias != name:
            if not is_noise(index, function, alias, depth + 1):
                return False
            continue
        sampled = any(
            (site := find_call(index, node)) is not None and site.matches(RANDN)
            for node in expression_nodes(assign.value) if isinstance(node, cst.Call)
        )
        if not sampled:
            return False
    return True


@lru_cache(maxsize=4096)
def _mentions_prediction(guard: str) -> bool:
    try:
        expr = cst.parse_expression(guard)
    except cst.ParserSyntaxError:
        return False
    for node in expression_nodes(expr):
        leaf = node.value if isinstance(node, cst.Name) else node.attr.value if isinstance(node, cst.Attribute) else None
        if leaf and leaf.lower() in PREDICTION_NAMES:
            return True
    return False


def losses_on_noise(index: UnitIndex) -> list[CallSite]:
    """Training losses whose target is the sampled noise, with no branch on the prediction type."""
    found = []
    for call in _loss_calls(index):
        if any(_mentions_prediction(g) for g in call.guards):
            continue
        if any(is_noise(index, call.function, name) for name in _operands(call)):
            found.append(call)
    return found


def computes_velocity(index: UnitIndex) -> bool:
    """The unit builds a v target somewhere: ``get_velocity(...)``, ``predict_v(...)``, ``v = ...``."""
    if any(VELOCITY_FUNCTION.search(c.method or c.func_text or "") for c in index.calls):
        return True
    return any(VELOCITY_TARGET.search(a.target) and not isinstance(a.value, (cst.Name, cst.Attribute)) for a in index.assigns)


def _prediction(index: UnitIndex) -> Configured:
    evidence = [synthetic_setting("prediction_type", "epsilon", "code", call) for call in losses_on_noise(index)]
    return prediction_type(index, evidence)


def _explicit_v(configured: Configured) -> bool:
    return any(s.kind in EXPLICIT_KINDS for s in configured.by_value.get("v", []))


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
        "config.py": f"from dataclasses import dataclass\n\n@dataclass\nclass TrainConfig:\n    learning_rate: float = 1e-4\n    prediction_type: str = {prediction!r}\n",
    }


class EpsilonPrediction(Rule):
    code = "VPRED001"
    severity = Severity.MISSING
    title = "v-prediction target"
    message = "the model predicts the noise (epsilon): its x0 estimate (x - sqrt(1 - a) * eps) / sqrt(a) amplifies errors at high noise, while v-prediction stays well conditioned at every noise level (Salimans & Ho 2022)"
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
        "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler(beta_schedule='squaredcos_cap_v2', prediction_type='v_prediction')\n",
        "from denoising_diffusion_pytorch import GaussianDiffusion\ndiffusion = GaussianDiffusion(model, image_size=128, objective='pred_v')\n",
        # x0-prediction is not epsilon
        "import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--prediction_type', default='sample', choices=['epsilon', 'sample'])\n",
        # fine-tuning a pretrained epsilon UNet, the loss says epsilon but no setting chose it
        "import torch\nimport torch.nn.functional as F\nfrom diffusers import DDPMScheduler, UNet2DConditionModel\nunet = UNet2DConditionModel.from_pretrained(path, subfolder='unet')\nnoise_scheduler = DDPMScheduler.from_pretrained(path, subfolder='scheduler')\nfor x in loader:\n    noise = torch.randn_like(x)\n    loss = F.mse_loss(unet(noise_scheduler.add_noise(x, noise, t), t).sample, noise)\n    loss.backward()\n    optimizer.step()\n",
        # the prediction type is deferred to the pretrained scheduler config (diffusers' default None)
        "import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--prediction_type', type=str, default=None, help='epsilon or v_prediction')\n",
    ]
    INVALID = [
        _trainer("epsilon", _BRANCHED),
        "import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--prediction_type', type=str, default='epsilon', choices=['epsilon', 'v_prediction'])\n",
        # diffusers' default
        "from diffusers import DDPMScheduler\nnoise_scheduler = DDPMScheduler(num_train_timesteps=1000)\n",
        "from denoising_diffusion_pytorch import GaussianDiffusion\ndiffusion = GaussianDiffusion(model, image_size=128, objective='pred_noise')\n",
        # improved-diffusion / DiT defaults
        "def model_and_diffusion_defaults():\n    return dict(image_size=256, num_channels=128, noise_schedule='cosine', predict_xstart=False)\n",
        # no setting at all, but the loss is against the noise
        "import torch\nimport torch.nn.functional as F\nfor x in loader:\n    noise = torch.randn_like(x)\n    t = torch.randint(0, 1000, (x.shape[0],))\n    loss = F.mse_loss(model(q_sample(x, t, noise), t), noise)\n    loss.backward()\n    optimizer.step()\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        prediction = _prediction(index)
        # Fine-tuning a pretrained denoiser keeps its prediction type unless the trainer states one.
        return bool(prediction.by_value) and (prediction.explicit or pretrained_denoiser(index) is None)

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        prediction = _prediction(index)
        if prediction.value != "epsilon":
            return
        setting = prediction.where("epsilon")
        if setting.kind == "code":
            why = "the loss compares the model output with the sampled noise"
        elif setting.kind == "library-default":
            why = f"{setting.owner.rsplit('.', 1)[-1]}(...) without prediction_type defaults to 'epsilon'"
        elif setting.kind == "param-default":
            why = f"{setting.owner}() is called without {setting.name}, whose default is {setting.value!r}"
        else:
            why = f"{setting.name} = {setting.value!r}"
        yield Hit.at(setting, f"the model predicts the noise ({why}): its x0 estimate divides by sqrt(alpha_bar) and amplifies errors at high noise; v-prediction stays well conditioned at every noise level (Salimans & Ho 2022)")


class _VConfigured(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return "v" in _prediction(index).by_value


class VTargetStillNoise(_VConfigured):
    code = "VPRED002"
    severity = Severity.BUG
    title = "loss target follows the prediction type"
    message = "v-prediction is configured but the loss still compares the model output with the noise, so the model keeps learning epsilon while the sampler reads its output as v"
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
        "import torch\nimport torch.nn.functional as F\n\nclass GaussianDiffusion:\n    def __init__(self, model, objective='pred_v'):\n        self.objective = objective\n\n    def p_losses(self, x_start, t, noise=None):\n        noise = noise if noise is not None else torch.randn_like(x_start)\n        model_out = self.model(self.q_sample(x_start, t, noise), t)\n        if self.objective == 'pred_noise':\n            target = noise\n        elif self.objective == 'pred_v':\n            target = self.predict_v(x_start, t, noise)\n        return F.mse_loss(model_out, target)\n\ndiffusion = GaussianDiffusion(model, objective='pred_v')\n",
    ]
    INVALID = [
        _trainer("v_prediction"),
        # a loss module instance, the v setting in argparse
        "import argparse\nimport torch\nfrom torch import nn\nparser = argparse.ArgumentParser()\nparser.add_argument('--prediction_type', default='v_prediction')\ncriterion = nn.MSELoss()\nfor x in loader:\n    noise = torch.randn_like(x)\n    loss = criterion(model(q_sample(x, t, noise), t), noise)\n    loss.backward()\n    optimizer.step()\n",
        # the target variable is only ever the noise
        _trainer("v_prediction", "    target = noise\n    loss = F.mse_loss(pred.float(), target.float(), reduction='mean')"),
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
    message = "v-prediction is configured but the sampler still reads the model output as epsilon, so samples are decoded with the wrong formula"
    explain = """
    A v-prediction model's output must be turned into x0 and epsilon with x0 = sqrt(a) * x_t - sqrt(1 - a) * v
    and eps = sqrt(a) * v + sqrt(1 - a) * x_t. Two ways to miss it: a sampling scheduler built with another
    prediction type than the trainer's (`DDIMScheduler()` defaults to "epsilon"; build it with the same
    `prediction_type`, or `DDIMScheduler.from_config(noise_scheduler.config)`), and a hand-written sampler that
    computes x0 = (x_t - sqrt(1 - a) * out) / sqrt(a) without a v branch.
    """
    VALID = [
        "from diffusers import DDIMScheduler, DDPMScheduler\nnoise_scheduler = DDPMScheduler(prediction_type='v_prediction')\nsampler = DDIMScheduler.from_config(noise_scheduler.config)\n",
        "import torch\nfrom dataclasses import dataclass\n\n@dataclass\nclass Config:\n    prediction_type: str = 'v_prediction'\n\ncfg = Config()\n\ndef sample(model, x, a):\n    out = model(x)\n    if cfg.prediction_type == 'v_prediction':\n        x0 = a.sqrt() * x - (1 - a).sqrt() * out\n    else:\n        x0 = (x - (1 - a).sqrt() * out) / a.sqrt()\n    return x0\n",
    ]
    INVALID = [
        "from diffusers import DDIMScheduler, DDPMScheduler\nnoise_scheduler = DDPMScheduler(prediction_type='v_prediction')\nsampler = DDIMScheduler(num_train_timesteps=1000)\n",
        # LDM style: parameterization switched to v, p_sample still converts with the epsilon helper
        "import torch\nclass LitDiffusion:\n    def __init__(self, parameterization='v'):\n        self.parameterization = parameterization\n\n    def get_v(self, x, noise, t):\n        return self.sqrt_alphas_cumprod[t] * noise - self.sqrt_one_minus_alphas_cumprod[t] * x\n\n    def predict_start_from_noise(self, x_t, t, noise):\n        return self.sqrt_recip_alphas_cumprod[t] * x_t - self.sqrt_recipm1_alphas_cumprod[t] * noise\n\n    @torch.no_grad()\n    def p_sample(self, model, x, t):\n        x_recon = self.predict_start_from_noise(x, t, model(x, t)).clamp(-1.0, 1.0)\n        return self.q_posterior(x_recon, x, t)\n\nmodel = LitDiffusion(parameterization='v')\n",
        "import torch\nfrom dataclasses import dataclass\n\n@dataclass\nclass Config:\n    prediction_type: str = 'v_prediction'\n\n@torch.no_grad()\ndef sample(model, x, alphas_cumprod, timesteps):\n    for t in timesteps:\n        a = alphas_cumprod[t]\n        eps = model(x, t)\n        x0 = (x - torch.sqrt(1 - a) * eps) / torch.sqrt(a)\n        x = ddim_step(x0, eps, t)\n    return x\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        prediction = _prediction(index)
        if not _explicit_v(prediction):
            return
        registered = any(c.method == "register_to_config" and c.kwarg("prediction_type") is not None for c in index.calls)
        for call in index.calls:
            cls = diffusers_scheduler_class(call)
            if cls is None or registered:
                continue
            node = call.kwarg("prediction_type")
            if node is None and not any(a.star == "**" for a in call.node.args):
                yield Hit.at(call, f"the trainer uses v-prediction but {cls}(...) is built without prediction_type, so it reads the model output as epsilon (the default); pass the same prediction_type or build it with .from_config(noise_scheduler.config)")
            elif node is not None and prediction_family("prediction_type", literal(node)) == "epsilon":
                yield Hit.at(call, f"the trainer uses v-prediction but {cls}(...) is built with prediction_type=\"epsilon\", so it reads the model output as the noise")
        if any(FROM_V_FUNCTION.search(f.name) for f in index.functions):
            return
        for call in index.calls:
            fn = call.function
            if fn is None or EPS_HELPER.search(fn.name) or not (SAMPLER_FUNCTION.search(fn.name) or SAMPLING_FUNCTION.search(fn.name)):
                continue
            if not EPS_HELPER.search(call.method or call.func_text or "") or any(_mentions_prediction(g) for g in call.guards):
                continue
            yield Hit.at(call, f"the sampler `{fn.qualname}` turns the model output into x0 with {call.func_text}() (the epsilon formula) although the model is trained for v-prediction; use x0 = sqrt(a) * x - sqrt(1 - a) * v (or branch on the prediction type)")
        for assign in index.assigns:
            fn = assign.function
            if fn is None or EPS_HELPER.search(fn.name) or not SAMPLER_FUNCTION.search(fn.name):
                continue
            if not X0_TARGET.search(assign.target.rsplit(".", 1)[-1]) or not _eps_to_x0(assign.value):
                continue
            if any(_mentions_prediction(g) for c in index.calls_in(fn) for g in c.guards):
                continue  # the function dispatches on the prediction type
            yield Hit(assign.path, assign.line, assign.col, f"the sampler `{fn.qualname}` computes x0 as (x - sqrt(1 - a) * eps) / sqrt(a) although the model is trained for v-prediction; use x0 = sqrt(a) * x - sqrt(1 - a) * v (or branch on the prediction type)")


def _sqrt_like(node: cst.BaseExpression) -> bool:
    for current in expression_nodes(node):
        if isinstance(current, cst.Call) and (dotted(current.func).rsplit(".", 1)[-1] in ("sqrt", "rsqrt")):
            return True
        if isinstance(current, cst.BinaryOperation) and isinstance(current.operator, cst.Power) and literal(current.right) in (0.5, -0.5):
            return True
        if isinstance(current, (cst.Name, cst.Attribute)) and "sqrt" in (dotted(current) or "").lower():
            return True
    return False


def _eps_to_x0(node: cst.BaseExpression) -> bool:
    """``(x - sqrt(1 - a) * eps) / sqrt(a)``."""
    if not (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide)):
        return False
    left = node.left
    if not (isinstance(left, cst.BinaryOperation) and isinstance(left.operator, cst.Subtract)):
        return False
    product = left.right
    if not (isinstance(product, cst.BinaryOperation) and isinstance(product.operator, cst.Multiply)):
        return False
    return _sqrt_like(node.right) and _sqrt_like(product)


# --- fix -----------------------------------------------------------------------------------
# What "v" is called, per setting name; the first spelling the project's code accepts is used.
V_VALUES = {"objective": ("pred_v",), "parameterization": ("v",), "pred_objective": ("pred_v",)}
V_DEFAULT = ("v_prediction", "v", "pred_v", "velocity", "v-prediction")
TARGET_COMMENT = "the loss target follows the prediction type: v = sqrt(a) * noise - sqrt(1 - a) * x0 (Salimans & Ho 2022)"
TARGET_PATCH = """\
if prediction_type == "v_prediction":
    target = noise_scheduler.get_velocity(x0, noise, timesteps)  # sqrt(a) * noise - sqrt(1 - a) * x0
else:
    target = noise
loss = F.mse_loss(model_output, target)
"""
SAMPLER_PATCH = """\
# the model output is v: x0 and the noise follow from it
x0 = alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * model_output
eps = alpha_bar.sqrt() * model_output + (1 - alpha_bar).sqrt() * x_t
"""


class VPredictionFix(Fix):
    """Train and sample with v-prediction, consistently.

    VPRED001: the prediction type becomes v where the trainer sets it (dataclass default, argparse
    default, scheduler keyword; added to diffusers schedulers that rely on their epsilon default),
    in the spelling the code accepts ("v_prediction", lucidrains "pred_v", LDM "v"). The change
    makes the vpred rules judge the loss target and the sampler, and apply runs this fix again on
    what they report; when they report nothing, the fix notes where the code already follows v.
    VPRED002: a loss against the sampled noise gets a target that branches on the scheduler's
    prediction type and uses its ``get_velocity`` (the ``add_noise(x0, noise, t)`` call of the
    same function names x0 and t); without such a scheduler the patch is printed instead.
    VPRED003: a diffusers sampling scheduler gets the trainer's ``prediction_type``; a
    hand-written epsilon sampler is refused with the v formulas.
    """

    codes = ("VPRED001", "VPRED002", "VPRED003")

    def apply(self, ctx: FixContext, findings: list) -> None:
        index = ctx.index
        codes = {f.code for f in findings}
        edits: dict = {}
        if "VPRED001" in codes:
            self._configure_v(ctx, index)
        for finding in findings:
            where = (finding.location.path, finding.location.line, finding.location.col)
            call = next((c for c in index.calls if (c.path, c.line, c.col) == where), None)
            if finding.code == "VPRED002":
                edits.setdefault(where[0], {}).update(self._branch_target(ctx, index, call, finding))
            elif finding.code == "VPRED003":
                edits.setdefault(where[0], {}).update(self._sampler_follows(ctx, index, call, finding))
        for path, changes in edits.items():
            ctx.update(path, replace(ctx.module(path), changes))

    def _configure_v(self, ctx: FixContext, index: UnitIndex) -> None:
        changes = []
        for setting in _prediction(index).by_value.get("epsilon", []):
            if setting.kind == "code":
                raise CannotFix(setting.path, setting.line, "the loss is computed against the noise and no setting chooses the prediction type: add one and branch the target on it", TARGET_PATCH)
            if setting.name in PREDICTION_FLAGS:
                if PREDICTION_FLAGS[setting.name] != "v":
                    raise CannotFix(setting.path, setting.line, f"{setting.name} chooses between epsilon and x0 only: this code has no v-prediction to switch to", TARGET_PATCH)
                changes.append((setting, True))
                continue
            value = spelling(index, setting, V_VALUES.get(setting.name, V_DEFAULT), "v_prediction")
            if value is None or setting.kind == "config-file":
                raise CannotFix(setting.path, setting.line, f"cannot set {setting.name} to v-prediction here" + (" (a data file this fix does not edit)" if value else ": the project's code accepts no v-prediction value"), manual_setting_patch(setting, value or "v_prediction"))
            changes.append((setting, value))
        for line in set_settings(ctx, changes):
            ctx.note(f"{line} (retrain from scratch: the model learns another target)")
        if computes_velocity(index) and not losses_on_noise(index):
            site = next((c for c in index.calls if VELOCITY_FUNCTION.search(c.method or c.func_text or "")), None)
            where = f" (`{site.func_text}` in `{site.function.qualname}`)" if site is not None and site.function else ""
            ctx.note(f"verified: the loss target already follows the prediction type{where}")

    def _branch_target(self, ctx: FixContext, index: UnitIndex, loss: CallSite | None, finding) -> dict:
        if loss is None or loss.function is None:
            raise CannotFix(finding.location.path, finding.location.line, "cannot find the loss this finding is about", TARGET_PATCH)
        fn = loss.function
        operand = next(name for name in _operands(loss) if is_noise(index, fn, name))
        add_noise = next((c for c in index.calls_in(fn) if c.method == "add_noise" and len(c.args) >= 3), None)
        if add_noise is None:
            raise CannotFix(loss.path, loss.line, f"`{fn.qualname}` has no scheduler.add_noise(x0, noise, t) call that names x0 and the timesteps for the v target", TARGET_PATCH)
        condition = _prediction_type_of(index, add_noise.receiver)
        if condition is None:
            raise CannotFix(loss.path, loss.line, f"{add_noise.receiver} has no get_velocity() and prediction_type to build the v target from", TARGET_PATCH)
        module = ctx.module(loss.path)
        x0, noise, t = (code_of(a.value) for a in add_noise.args[:3])
        aliases = [a for a in _assigns(index, fn, operand) if dotted(a.value) and dotted(a.value) != operand]
        if len(aliases) == 1:  # ``target = noise``: that assignment becomes the branch
            anchor, name, keep = aliases[0].value, operand, None
        else:
            used = {a.target for a in index.assigns if a.function == fn}
            name = next(n for n in ("target", "loss_target", "v_target") if n not in used)
            anchor, keep = loss.node, next(n for n in expression_nodes(loss.node) if isinstance(n, (cst.Name, cst.Attribute)) and dotted(n) == operand)
        statement = enclosing(module, anchor, cst.SimpleStatementLine)
        if statement is None:
            raise CannotFix(loss.path, loss.line, "the loss is not a statement of its own line", TARGET_PATCH)
        branch = statements(
            f'if {condition} == "v_prediction":\n    {name} = {add_noise.receiver}.get_velocity({x0}, {noise}, {t})\nelse:\n    {name} = {noise}\n',
            module,
        )
        branch[0] = with_comment(branch[0].with_changes(leading_lines=statement.leading_lines), TARGET_COMMENT)
        ctx.note(f"`{fn.qualname}`: the loss target is {add_noise.receiver}.get_velocity(...) under v-prediction, the noise otherwise")
        if keep is None:
            return {statement: lambda node: cst.FlattenSentinel(branch)}
        return {
            keep: lambda node: cst.Name(name),
            statement: lambda node: cst.FlattenSentinel([*branch, node.with_changes(leading_lines=[])]),
        }

    def _sampler_follows(self, ctx: FixContext, index: UnitIndex, call: CallSite | None, finding) -> dict:
        if call is None or diffusers_scheduler_class(call) is None:
            raise CannotFix(finding.location.path, finding.location.line, "the sampler reads the model output as epsilon in hand-written code; convert it as v", SAMPLER_PATCH)
        trained = next(
            (c.kwarg("prediction_type") for c in index.calls if c is not call and diffusers_scheduler_class(c) and c.kwarg("prediction_type") is not None
             and prediction_family("prediction_type", literal(c.kwarg("prediction_type"))) != "epsilon"),
            None,
        )
        value = trained if trained is not None else cst.SimpleString('"v_prediction"')
        ctx.note(f"{diffusers_scheduler_class(call)}(...) at line {call.line} now reads the model output as v (prediction_type={code_of(value)})")
        return {call.node: lambda node: with_keyword(node, "prediction_type", value)}


def _prediction_type_of(index: UnitIndex, scheduler: str) -> str | None:
    """The expression holding ``scheduler``'s prediction type, when it also has ``get_velocity``."""
    origins = index.origins(scheduler)
    if any(DIFFUSERS_SCHEDULER.match(o) for o in origins):
        return f"{scheduler}.config.prediction_type"
    classes = {o.rsplit(".", 1)[-1] for o in origins}
    own = {f.class_name for f in index.functions_named("get_velocity") if f.class_name in classes}
    if own and any(a.target == "self.prediction_type" and a.function and a.function.class_name in own for a in index.assigns):
        return f"{scheduler}.prediction_type"
    return None
