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

import libcst as cst

from optimizer_tool.contract import Applicability, CannotFix, Fix, FixContext, Hit, Rule
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.settings import change_settings
from optimizer_tool.edit.templates import parse_statements, with_comment, with_keyword, with_param
from optimizer_tool.edit.tree import enclosing, node_at
from optimizer_tool.findings import Severity, State
from optimizer_tool.index import CallSite, UnitIndex, dotted, import_aliases, literal
from optimizer_tool.knowledge.configured import configured
from optimizer_tool.knowledge.diffusion import (
    BETAS_TARGET,
    PATH_SETTINGS,
    PREDICTION_KEYS,
    SCHEDULE_HELPER,
    beta_schedule,
    diffusers_scheduler_class,
    inherited,
    prediction_family,
    prediction_type,
    pretrained_scheduler_loads,
)
from optimizer_tool.knowledge.objective import configured_prediction, without_betas

KEY = "zero-snr"
TITLE = "Zero terminal SNR with v-prediction"
ORDER = 40  # place in the checklist: the plan's order
DIFFUSION_ONLY = True

RESCALE_SETTINGS = (
    "rescale_betas_zero_snr",
    "rescale_zero_terminal_snr",
    "zero_terminal_snr",
    "zero_snr",
    "enforce_zero_terminal_snr",
    "use_zero_snr",
    "use_zero_terminal_snr",
    "zsnr",
)
# the config keys that decide it: the rescale itself and the objective it needs
CONFIG_KEYS = RESCALE_SETTINGS + PREDICTION_KEYS
APPLIES_KEYS = PREDICTION_KEYS


def applies_with(name: str, value: object) -> bool:
    """A value of one of APPLIES_KEYS under which it applies: a v objective."""
    return prediction_family(name, value) == "v"


RESCALE_FUNCTION = re.compile(r"(rescale|enforce|make|to)_?(betas_)?zero_?(terminal_)?snr|zero_?terminal_?snr", re.I)


def _rescale_calls(index: UnitIndex) -> list[CallSite]:
    """Calls (not definitions) of a zero-terminal-SNR rescaling function."""
    return [c for c in index.calls if RESCALE_FUNCTION.search(c.method or c.func_text or "")]


def rescaling(index: UnitIndex) -> bool | None:
    """True: terminal SNR is rescaled to 0; False: it is not (by default); None: cannot tell."""
    flags = configured(
        index, RESCALE_SETTINGS, lambda s: "on" if s.value is True else "off" if s.value is False else None
    )
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
        values = {
            s.value
            for s in index.setting(*names)
            if s.known and isinstance(s.value, kind) and not isinstance(s.value, bool)
        }
        return values.pop() if len(values) == 1 else None

    steps = (
        one(
            (
                "num_train_timesteps",
                "diffusion_steps",
                "num_timesteps",
                "ddpm_num_steps",
                "n_timestep",
                "num_diffusion_timesteps",
            ),
            int,
        )
        or 1000
    )
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
        beta = (
            (math.sqrt(start) + (math.sqrt(end) - math.sqrt(start)) * fraction) ** 2
            if scaled
            else start + (end - start) * fraction
        )
        alpha_bar *= 1 - min(beta, 0.999)
    return alpha_bar


def _unrescaled_schedule(index: UnitIndex):
    """(setting, family) of a v-prediction schedule that is not rescaled to zero terminal SNR, else None."""
    if rescaling(index) is not False:
        return None
    if any(
        c.kwarg("beta_schedule") is None and c.kwarg("trained_betas") is None for c in pretrained_scheduler_loads(index)
    ):
        return None  # the schedule comes from a stored config
    schedule = beta_schedule(index)
    family = schedule.value
    if family is None:
        return None
    setting = schedule.where(family)
    if setting is not None and setting.name in PATH_SETTINGS:
        return None  # an interpolant's path (linear or GVP) ends at pure noise: alpha_1 = 0
    return setting or prediction_type(index).where("v"), family


class _VPrediction(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return prediction_type(index).value == "v"

    def when_blind(self, index: UnitIndex) -> tuple[State, str] | None:
        if configured_prediction(index).value is not None:
            return State.NOT_APPLICABLE, "the model does not predict v: zero terminal SNR is for v-prediction"
        reason = inherited(index, "prediction type", "prediction_type")
        if reason is not None:
            return State.ELSEWHERE, reason
        kind = without_betas(index)
        if kind is not None and kind[0] == "flow":
            return State.PRESENT, f"{kind[1]}: at t = 1 the input is pure noise, zero terminal SNR"
        return (State.NOT_APPLICABLE, f"{kind[1]}: no beta schedule to rescale") if kind is not None else None


class TerminalSnrNotZero(_VPrediction):
    code = "ZSNR001"
    severity = Severity.MISSING
    title = "v-prediction schedule rescaled to zero terminal SNR"
    message = (
        "v-prediction is configured but the schedule is not rescaled to zero terminal SNR:"
        " alphas_cumprod[-1] stays slightly above 0, so training never shows the model pure noise while"
        " sampling starts from it (Lin et al. 2023)"
    )
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
        (
            "from diffusers import DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler(beta_schedule='scaled_linear', prediction_type='v_prediction',"
            " rescale_betas_zero_snr=True, timestep_spacing='trailing')\n"
        ),
        # the paper's function, applied in the project's scheduler
        (
            "import torch\n"
            "from dataclasses import dataclass\n"
            "\n"
            "@dataclass\n"
            "class Config:\n"
            "    prediction_type: str = 'v_prediction'\n"
            "    beta_schedule: str = 'linear'\n"
            "\n"
            "def rescale_zero_terminal_snr(betas):\n"
            "    return betas\n"
            "\n"
            "class Scheduler:\n"
            "    def __init__(self, T=1000):\n"
            "        betas = torch.linspace(1e-4, 0.02, T)\n"
            "        self.betas = rescale_zero_terminal_snr(betas)\n"
        ),
        # epsilon trainer: nothing to judge
        (
            "from diffusers import DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler(beta_schedule='linear', prediction_type='epsilon')\n"
        ),
        # a pretrained schedule may already be rescaled
        (
            "from diffusers import DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler.from_pretrained(path, subfolder='scheduler',"
            " prediction_type='v_prediction')\n"
        ),
    ]
    INVALID = [
        (
            "from diffusers import DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule='squaredcos_cap_v2',"
            " prediction_type='v_prediction')\n"
        ),
        # DDPM's linear schedule: alphas_cumprod[-1] ~ 4e-5
        (
            "from diffusers import DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type='v_prediction')\n"
        ),
        {
            "train.py": (
                "import torch\n"
                "from config import Config\n"
                "from scheduler import Scheduler\n"
                "cfg = Config()\n"
                "sched = Scheduler(cfg.beta_schedule, cfg.prediction_type)\n"
                "for x in data:\n"
                "    loss = (model(x) - sched.get_velocity(x, torch.randn_like(x), t)).pow(2).mean()\n"
                "    loss.backward()\n"
                "    opt.step()\n"
            ),
            "config.py": (
                "from dataclasses import dataclass\n"
                "\n"
                "@dataclass\n"
                "class Config:\n"
                "    beta_schedule: str = 'cosine'\n"
                "    prediction_type: str = 'v_prediction'\n"
            ),
            "scheduler.py": (
                "import math, torch\n"
                "\n"
                "class Scheduler:\n"
                "    def __init__(self, beta_schedule='linear', prediction_type='epsilon'):\n"
                "        self.prediction_type = prediction_type\n"
                "        self.betas = self._cosine_beta_schedule(1000)\n"
                "\n"
                "    def _cosine_beta_schedule(self, timesteps, s=0.008):\n"
                "        x = torch.linspace(0, timesteps, timesteps + 1)\n"
                "        a = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2\n"
                "        return torch.clip(1 - a[1:] / a[:-1], 0.0001, 0.9999)\n"
            ),
        },
        # the rescaling exists but is off by default
        (
            "import argparse\n"
            "from diffusers import DDPMScheduler\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--prediction_type', default='v_prediction')\n"
            "parser.add_argument('--rescale_betas_zero_snr', action='store_true')\n"
            "args = parser.parse_args()\n"
            "noise_scheduler = DDPMScheduler(beta_schedule='linear', prediction_type=args.prediction_type,"
            " rescale_betas_zero_snr=args.rescale_betas_zero_snr)\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        found = _unrescaled_schedule(index)
        if found is None:
            return
        setting, family = found
        alpha_bar = terminal_alpha_bar(index, setting)
        if alpha_bar is not None and alpha_bar >= MATERIAL_ALPHA_BAR:
            return  # ZSNR003 reports it as a bug
        kind = {"cosine": "clipped cosine", "linear": "linear"}.get(
            family, repr(setting.value) if isinstance(setting.value, str) else family
        )
        measured = (
            f"alphas_cumprod[-1] ~ {alpha_bar:.1e}"
            if alpha_bar is not None
            else "its last beta is clipped below 1, so alphas_cumprod[-1] > 0"
        )
        yield Hit.at(
            setting,
            f"v-prediction is configured but the {kind} schedule is not rescaled to zero terminal SNR ({measured}):"
            " training never sees pure noise, sampling starts from it; rescale the betas (diffusers"
            " rescale_betas_zero_snr=True, Lin et al. 2023)",
        )


class MaterialTerminalSnr(_VPrediction):
    code = "ZSNR003"
    severity = Severity.BUG
    title = "v-prediction schedule reaches (near) pure noise"
    message = (
        "v-prediction is configured with a schedule that keeps visible signal at the last timestep"
        " (alphas_cumprod[-1] >= 1e-3, like Stable Diffusion's scaled_linear): samples are stuck at medium"
        " brightness; rescale the betas to zero terminal SNR (Lin et al. 2023)"
    )
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
        (
            "from diffusers import DDPMScheduler\n"
            "noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,"
            " beta_schedule='scaled_linear', prediction_type='v_prediction')\n"
        ),
        (
            "import argparse\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--beta_schedule', default='scaled_linear')\n"
            "parser.add_argument('--prediction_type', default='v_prediction')\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        found = _unrescaled_schedule(index)
        if found is None:
            return
        setting, family = found
        alpha_bar = terminal_alpha_bar(index, setting)
        if alpha_bar is None or alpha_bar < MATERIAL_ALPHA_BAR:
            return
        yield Hit.at(
            setting,
            f"v-prediction is configured but the {setting.value!r} schedule ends at alphas_cumprod[-1] ~"
            f" {alpha_bar:.4f}: the last timestep still shows the image, so samples are stuck at medium brightness;"
            " rescale the betas to zero terminal SNR (rescale_betas_zero_snr=True, Lin et al. 2023)",
        )


class LeadingTimestepSpacing(_VPrediction):
    code = "ZSNR002"
    severity = Severity.INFO
    title = "zero-SNR schedule sampled from the last timestep"
    message = (
        "the schedule is rescaled to zero terminal SNR but sampling uses the default 'leading' timestep"
        " spacing, which never starts at t = T, the only pure-noise step; use timestep_spacing='trailing'"
    )
    explain = """
    Lin et al. (2023) pair zero terminal SNR with "trailing" timestep spacing: diffusers' default
    "leading" spacing with 50 of 1000 steps starts sampling at t = 981, not at t = 999, so the first
    step still assumes a little signal. Pass `timestep_spacing="trailing"` to the scheduler that is
    rescaled with `rescale_betas_zero_snr=True` (and to the scheduler used for sampling).
    """
    VALID = [
        TerminalSnrNotZero.VALID[0],
        (
            "from diffusers import DDIMScheduler\n"
            "noise_scheduler = DDIMScheduler.from_pretrained(path, subfolder='scheduler',"
            " prediction_type='v_prediction', rescale_betas_zero_snr=True, timestep_spacing='trailing')\n"
        ),
    ]
    INVALID = [
        (
            "from diffusers import DDIMScheduler\n"
            "noise_scheduler = DDIMScheduler(beta_schedule='scaled_linear', prediction_type='v_prediction',"
            " rescale_betas_zero_snr=True)\n"
        ),
        (
            "from diffusers import DDIMScheduler\n"
            "noise_scheduler = DDIMScheduler.from_pretrained(path, subfolder='scheduler',"
            " prediction_type='v_prediction', rescale_betas_zero_snr=True, timestep_spacing='leading')\n"
        ),
    ]

    def _rescaled(self, index: UnitIndex) -> list[CallSite]:
        return [
            c
            for c in index.calls
            if (
                diffusers_scheduler_class(c)
                or c.method in ("from_pretrained", "from_config")
                and c.receiver.endswith("Scheduler")
            )
            and literal(c.kwarg("rescale_betas_zero_snr")) is True
        ]

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and bool(self._rescaled(index))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for call in self._rescaled(index):
            spacing = call.kwarg("timestep_spacing")
            if spacing is None or literal(spacing) in ("leading", "linspace"):
                yield Hit.at(call)


# --- fix -----------------------------------------------------------------------------------
FLAG = "rescale_betas_zero_snr"  # diffusers' name for it
# diffusers schedulers that take rescale_betas_zero_snr and timestep_spacing
RESCALABLE = {
    "DDPMScheduler",
    "DDIMScheduler",
    "DDPMParallelScheduler",
    "DDIMParallelScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
    "LCMScheduler",
    "TCDScheduler",
}
WHY = "zero terminal SNR (Lin et al. 2023): the schedule ends in pure noise, as sampling starts; needs v-prediction"
RESCALE_FUNCTION_TEXT = {
    "torch": """\
def rescale_zero_terminal_snr(betas: {torch}.Tensor) -> {torch}.Tensor:
    \"\"\"Rescale betas to zero terminal SNR (Lin et al. 2023, Algorithm 1): shift and scale
    sqrt(alphas_cumprod) so that it ends at exactly 0 and keeps its first value.\"\"\"
    alphas_bar_sqrt = {torch}.cumprod(1 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    return 1 - {torch}.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
""",
    "numpy": """\
def rescale_zero_terminal_snr(betas):
    \"\"\"Rescale betas to zero terminal SNR (Lin et al. 2023, Algorithm 1): shift and scale
    sqrt(alphas_cumprod) so that it ends at exactly 0 and keeps its first value.\"\"\"
    alphas_bar_sqrt = {numpy}.sqrt({numpy}.cumprod(1 - betas))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt**2
    return 1 - {numpy}.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
""",
}
MANUAL_PATCH = (
    RESCALE_FUNCTION_TEXT["torch"].format(torch="torch")
    + "\n# after the betas are computed, with v-prediction:\nbetas = rescale_zero_terminal_snr(betas)\n"
)


class ZeroTerminalSnrFix(Fix):
    """Rescale the v-prediction schedule to zero terminal SNR (Lin et al. 2023).

    A flag that exists but is off (``--rescale_betas_zero_snr`` store_true, a config field) is
    turned on. diffusers schedulers built in the trainer get ``rescale_betas_zero_snr=True`` and
    ``timestep_spacing="trailing"`` (ZSNR002: sampling must start at the pure-noise step). A
    project's own scheduler gets the paper's ``rescale_zero_terminal_snr(betas)`` at the top of its
    module and applies it to the betas behind a ``rescale_betas_zero_snr`` parameter (default
    False: the class keeps its behaviour for other callers); the trainer passes the config's new
    ``rescale_betas_zero_snr: bool = True`` field when the scheduler gets its prediction type from
    a config dataclass, else True. Betas registered as buffers or set in several functions are
    refused with the function and the one line to add.
    """

    applicability = Applicability.UNSAFE  # changes the training objective

    codes = ("ZSNR001", "ZSNR002", "ZSNR003")

    def apply(self, ctx: FixContext, findings: list) -> None:
        index, edits = ctx.index, Edits(ctx)
        # A flag that exists but is off decides for every scheduler that reads it.
        flags = [
            (s, True)
            for s in index.setting(*RESCALE_SETTINGS)
            if s.known and s.value is False and s.kind != "param-default"
        ]
        for line in change_settings(edits, flags):
            ctx.note(f"{line}: {WHY}")
        diffusers = [c for c in index.calls if diffusers_scheduler_class(c)]
        if diffusers:
            self._diffusers(ctx, edits, diffusers, rescale=not flags)
        elif not flags:
            self._own_scheduler(ctx, edits, index)
        edits.apply()

    def _diffusers(self, ctx: FixContext, edits: Edits, calls: list[CallSite], rescale: bool) -> None:
        for call in calls:
            cls = diffusers_scheduler_class(call)
            if cls not in RESCALABLE:
                raise CannotFix(
                    call.path,
                    call.line,
                    f"{cls} has no rescale_betas_zero_snr option; sample and train with DDPMScheduler/DDIMScheduler",
                    f'noise_scheduler = DDPMScheduler(..., {FLAG}=True, timestep_spacing="trailing")\n',
                )

            def edit(node: cst.Call, passed=call.kwarg(FLAG) is not None) -> cst.Call:
                if rescale and not passed:
                    node = with_keyword(node, FLAG, cst.Name("True"))
                spacing = next(
                    (a.value for a in node.args if a.keyword is not None and a.keyword.value == "timestep_spacing"),
                    None,
                )
                if spacing is None or literal(spacing) in ("leading", "linspace"):
                    node = with_keyword(node, "timestep_spacing", cst.SimpleString('"trailing"'))
                return node

            edits.replace(call.path, call.node, edit)
            ctx.note(f'{cls}(...) at {call.path.name}:{call.line}: {FLAG}=True, timestep_spacing="trailing" ({WHY})')

    def _own_scheduler(self, ctx: FixContext, edits: Edits, index: UnitIndex) -> None:
        assigns = [
            a
            for a in index.assigns
            if BETAS_TARGET.search(a.target) and a.function is not None and not SCHEDULE_HELPER.search(a.function.name)
        ]
        functions = list(dict.fromkeys(a.function for a in assigns))
        if len(functions) != 1:
            where = assigns[0] if assigns else None
            raise CannotFix(
                where.path if where else index.entry.path,
                where.line if where else 1,
                "cannot find the one place where the betas are set",
                MANUAL_PATCH,
            )
        fn, last = functions[0], assigns[-1]
        module = ctx.module(last.path)
        function_node = enclosing(module, last.value, cst.FunctionDef)
        body = function_node.body.body
        anchor = next((s for s in body if _contains(s, last.value)), None)
        kind = _array_library(ctx.module(last.path), index, last.path)
        if anchor is None or kind is None:
            raise CannotFix(
                last.path, last.line, f"cannot place the rescaling after the betas of `{fn.qualname}`", MANUAL_PATCH
            )
        betas = last.target
        guard = parse_statements(module, f"if {FLAG}:\n    {betas} = rescale_zero_terminal_snr({betas})\n")[0]
        guard = with_comment(guard, WHY)
        edits.replace(last.path, anchor, lambda node: cst.FlattenSentinel([node, guard]))
        if FLAG not in fn.params:
            edits.replace(last.path, function_node, lambda node: with_param(node, FLAG, cst.Name("False"), "bool"))
        if not any(RESCALE_FUNCTION.search(f.name) for f in index.functions if f.path == last.path):
            first = next((s for s in module.body if isinstance(s, (cst.ClassDef, cst.FunctionDef))), None)
            if first is None:
                raise CannotFix(
                    last.path, last.line, "no place for the rescaling function in the scheduler module", MANUAL_PATCH
                )
            library, alias = kind
            helper = parse_statements(module, RESCALE_FUNCTION_TEXT[library].format(**{library: alias}))[0]
            helper = helper.with_changes(leading_lines=first.leading_lines)
            edits.replace(last.path, first, lambda node: cst.FlattenSentinel([helper, node]))
        ctx.note(
            f"`{fn.qualname}`: {betas} = rescale_zero_terminal_snr({betas}) when {FLAG} (Lin et al. 2023); sampling"
            ' keeps the scheduler\'s timestep spacing: with "leading" spacing it never starts at the pure-noise step'
        )
        self._pass_flag(ctx, edits, index, fn)

    def _pass_flag(self, ctx: FixContext, edits: Edits, index: UnitIndex, fn) -> None:
        """Have the trainer turn the new scheduler parameter on: through a config field when the
        scheduler takes its prediction type from a config dataclass, else with True."""
        callee = fn.callee
        sites = [c for c in index.calls_named(callee) if c.function != fn]
        if not sites:
            raise CannotFix(
                fn.path,
                fn.line,
                f"`{callee}` is not built in this trainer, so nothing can turn {FLAG} on",
                f"{callee}(..., {FLAG}=True)\n",
            )
        config = next((s for s in prediction_type(index).by_value.get("v", []) if s.kind == "class-default"), None)
        field_added = False
        for site in sites:
            passed = dotted(site.kwarg("prediction_type"))
            if config is not None and passed.endswith("." + config.name):
                value = cst.parse_expression(passed[: -len(config.name)] + FLAG)
                field_added = True
            else:
                value = cst.Name("True")
            edits.replace(site.path, site.node, lambda node, value=value: with_keyword(node, FLAG, value))
        if field_added:
            module = ctx.module(config.path)
            statement = enclosing(
                module, node_at(module, config.line, config.col, cst.AnnAssign), cst.SimpleStatementLine
            )
            field = with_comment(parse_statements(module, f"{FLAG}: bool = True\n")[0], WHY)
            edits.replace(config.path, statement, lambda node: cst.FlattenSentinel([node, field]))
            ctx.note(f"{config.path.name}: new field {config.owner}.{FLAG} = True, passed to {callee}(...)")


def _contains(statement: cst.CSTNode, node: cst.CSTNode) -> bool:
    from optimizer_tool.knowledge.configured import expression_nodes

    return any(n is node for n in expression_nodes(statement))


def _array_library(module: cst.Module, index: UnitIndex, path) -> tuple[str, str] | None:
    """("torch" | "numpy", the name the module imports it as)."""
    source = index.source(path)
    aliases = import_aliases(source)
    for library in ("torch", "numpy"):
        local = next((name for name, origins in aliases.items() if library in origins), None)
        if local is not None:
            return library, local
    return None
