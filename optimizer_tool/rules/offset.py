"""The cosine-schedule offset s = 0.008 (the plan's priority 5, "noise schedule offset").

Nichol & Dhariwal's cosine schedule is alpha_bar(t) = f(t) / f(0) with
f(t) = cos((t/T + s) / (1 + s) * pi/2)^2 and s = 0.008. Without s the betas near t = 0 are
vanishingly small: the first timesteps are practically noise-free and the network cannot
predict the noise there. The plan calls this a "noise offset"; it is *not* the offset noise
of diffusers' ``--noise_offset`` (a per-channel shift of the sampled noise), and it is not
the fix for schedules that never reach pure noise either — that is zero-terminal-SNR
rescaling (the ``zero-snr`` rules).

Judged: the project's own cosine schedule code (``_cosine_beta_schedule``,
``cosine_beta_schedule``, any ``cos(... * pi / 2) ** 2`` in a schedule function, LDM's
``torch.cos(alphas).pow(2)``), through the local variables and parameter defaults it uses.
Library schedules (diffusers ``squaredcos_cap_v2``, improved-diffusion / DiT ``"cosine"``)
already have the offset. Cosine learning-rate schedules are not noise schedules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import libcst as cst

from optimizer_tool.contract import Applicability, CannotFix, Fix, FixContext, Hit, Rule
from optimizer_tool.edit.edits import replace
from optimizer_tool.edit.templates import parse_expression, with_comment, with_param
from optimizer_tool.edit.tree import enclosing
from optimizer_tool.findings import Severity, State
from optimizer_tool.index import CallSite, UnitIndex, code_of, dotted, literal
from optimizer_tool.knowledge.configured import expression_nodes
from optimizer_tool.knowledge.diffusion import (
    BETA_SCHEDULE_SETTINGS,
    beta_schedule,
    inherited,
    schedule_from_run_config,
)
from optimizer_tool.knowledge.objective import without_betas

KEY = "offset"
TITLE = "Cosine-schedule offset s"
ORDER = 30  # place in the checklist: the plan's order
DIFFUSION_ONLY = True
# the config keys that choose the schedule the offset belongs to
CONFIG_KEYS = BETA_SCHEDULE_SETTINGS

COS_CALLS = ("torch.cos", "math.cos", "numpy.cos", "np.cos", "jax.numpy.cos", "jnp.cos")
# Learning-rate schedules use cosines too; they are never noise schedules.
LR_CONTEXT = re.compile(r"lr|learning|warmup|lambda|anneal|optim|momentum|ema|decay", re.I)
NOISE_FUNCTION = re.compile(r"cos|beta|alpha|schedule|noise|snr|gamma|diffusion", re.I)
NOISE_CLASS = re.compile(r"diffusion|ddpm|ddim|schedul|sampler|noise|gaussian", re.I)
COSINE_FUNCTION = re.compile(r"cos", re.I)
OFFSET_NAMES = {"s", "offset", "cosine_s", "cos_s", "cosine_offset", "schedule_offset", "s_offset"}
MODULE_NAMES = {"math", "np", "numpy", "torch", "jnp", "pi"}


@dataclass
class CosineSchedule:
    """One cosine noise schedule in the project's code and what its argument adds."""

    call: CallSite
    terms: list[float | None] = field(default_factory=list)  # offsets added to t/T (None: value unknown)
    zero: bool = False  # an offset that is 0
    divides: bool = False  # divided by (1 + s), or by 1.008
    unclear: bool = False  # an addition we cannot read

    @property
    def where(self) -> str:
        fn = self.call.function
        return f"`{fn.qualname}`" if fn else "the module"

    @property
    def has_offset(self) -> bool:
        return any(t is None or t > 0 for t in self.terms)


def cosine_schedules(index: UnitIndex) -> list[CosineSchedule]:
    found = []
    for call in index.calls_to(*COS_CALLS):
        fn = call.function
        if fn is not None and LR_CONTEXT.search(fn.name):
            continue
        if not (
            fn is not None and (NOISE_FUNCTION.search(fn.name) or (fn.class_name and NOISE_CLASS.search(fn.class_name)))
        ):
            continue
        if not call.args:
            continue
        nodes = _argument_closure(index, call)
        if not _has_half_pi(nodes):
            continue
        squared = _squared(index, call)
        if squared is False or (squared is None and not (fn and COSINE_FUNCTION.search(fn.name))):
            continue  # cos(t * pi/2) alone is alpha in v-diffusion, not Nichol's alpha_bar
        found.append(_read_offset(index, call, nodes))
    return found


def _argument_closure(index: UnitIndex, call: CallSite, depth: int = 3) -> list[cst.CSTNode]:
    """The cos argument plus the definitions (in the same function) of the names it uses."""
    nodes: list[cst.CSTNode] = []
    seen: set[int] = set()
    frontier = [call.args[0].value]
    for _ in range(depth + 1):
        names = set()
        for root in frontier:
            if id(root) in seen:
                continue
            seen.add(id(root))
            for node in expression_nodes(root):
                nodes.append(node)
                if isinstance(node, cst.Name) and node.value not in MODULE_NAMES:
                    names.add(node.value)
        frontier = [
            a.value for a in index.assigns if a.function == call.function and a.path == call.path and a.target in names
        ]
    return nodes


def _has_half_pi(nodes: list[cst.CSTNode]) -> bool:
    pi = half = False
    for node in nodes:
        if (isinstance(node, cst.Name) and node.value == "pi") or (
            isinstance(node, cst.Attribute) and node.attr.value == "pi"
        ):
            pi = True
        value = literal(node) if isinstance(node, (cst.Integer, cst.Float)) else None
        if isinstance(value, (int, float)):
            if value in (2, 0.5):
                half = True
            elif abs(value - math.pi / 2) < 1e-3:
                pi = half = True
    return pi and half


def _squared(index: UnitIndex, call: CallSite) -> bool | None:
    """``cos(...) ** 2`` / ``cos(...).pow(2)``: True; used another way: False; not seen (a return): None."""
    containers = [a.value for a in index.assigns if a.function == call.function and a.path == call.path]
    containers += [c.node for c in index.calls if c.function == call.function and c.path == call.path and c is not call]
    seen = False
    for container in containers:
        for node in expression_nodes(container):
            if isinstance(node, cst.BinaryOperation) and node.left is call.node:
                return isinstance(node.operator, cst.Power) and literal(node.right) in (2, 2.0)
            if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.value is call.node:
                method = node.func.attr.value
                return method == "square" or (
                    method == "pow" and bool(node.args) and literal(node.args[0].value) in (2, 2.0)
                )
            seen = seen or node is call.node
    return False if seen else None


def _value_of(index: UnitIndex, call: CallSite, node: cst.BaseExpression) -> object:
    """The number a name stands for in the schedule function (local literal or parameter default)."""
    value = literal(node)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    name = dotted(node)
    if not name:
        return None
    leaf = name.rsplit(".", 1)[-1]
    fn = call.function
    values = [literal(a.value) for a in index.assigns if a.function == fn and a.path == call.path and a.target == name]
    if fn is not None:
        values += [
            s.value
            for s in index.settings
            if s.kind == "param-default" and s.path == call.path and s.owner == fn.qualname and s.name == leaf.lower()
        ]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return numbers[0] if len(numbers) == 1 and len(values) == 1 else None


def _read_offset(index: UnitIndex, call: CallSite, nodes: list[cst.CSTNode]) -> CosineSchedule:
    found = CosineSchedule(call)
    for node in nodes:
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide):
            right = node.right
            if (
                isinstance(right, cst.BinaryOperation)
                and isinstance(right.operator, cst.Add)
                and (_is_one(right.left) or _is_one(right.right))
            ):
                found.divides = True
            value = literal(right)
            if isinstance(value, float) and 1 < value <= 1.1:
                found.divides = True
        if not (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add)):
            continue
        if _is_one(node.left) or _is_one(node.right):
            continue  # ``1 + s`` (the divisor) or ``T + 1``
        for side in (node.left, node.right):
            if not isinstance(side, (cst.Name, cst.Attribute, cst.Integer, cst.Float)):
                continue
            value = _value_of(index, call, side)
            leaf = dotted(side).rsplit(".", 1)[-1] if dotted(side) else ""
            if isinstance(value, (int, float)):
                if value == 0:
                    found.zero = True
                elif 0 < value < 0.1:
                    found.terms.append(float(value))
            elif leaf in OFFSET_NAMES:
                found.terms.append(None)
            elif leaf:
                found.unclear = True
    return found


def _is_one(node: cst.BaseExpression) -> bool:
    return isinstance(node, (cst.Integer, cst.Float)) and literal(node) in (1, 1.0)


_SCHEDULER = """\
import math
import torch

class NoiseScheduler:
    def __init__(self, T=1000):
        self.betas = self._cosine_beta_schedule(T)

    def _cosine_beta_schedule(self, timesteps, s=0.008):
        steps = timesteps + 1
        x = torch.linspace(0, timesteps, steps)
        alphas_cumprod = torch.cos({argument}) ** 2
        alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
        betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
        return torch.clip(betas, 0.0001, 0.9999)
"""


def _scheduler(argument: str) -> str:
    return _SCHEDULER.format(argument=argument)


_SELECTED = """\
import torch
from config import Config
from scheduler import NoiseScheduler
cfg = Config()
sched = NoiseScheduler(cfg.beta_schedule)
for x in loader:
    loss = sched.loss(model, x)
    loss.backward()
    optimizer.step()
"""


def _selected(argument: str, schedule: str = "cosine") -> dict:
    return {
        "train.py": _SELECTED,
        "config.py": (
            f"from dataclasses import dataclass\n\n@dataclass\nclass Config:\n    beta_schedule: str = {schedule!r}\n"
        ),
        "scheduler.py": _scheduler(argument).replace(
            "def __init__(self, T=1000):", "def __init__(self, beta_schedule, T=1000):"
        ),
    }


class NoCosineOffset(Rule):
    code = "OFF001"
    severity = Severity.MISSING
    title = "cosine schedule has the offset s = 0.008"
    message = (
        "the cosine schedule has no offset s: alpha_bar(t) = cos(t/T * pi/2)^2 makes the first betas"
        " vanishingly small, so the earliest timesteps are practically noise-free and the noise there"
        " cannot be predicted (Nichol & Dhariwal use s = 0.008)"
    )
    explain = """
    Nichol & Dhariwal (2021) define the cosine schedule as alpha_bar(t) = f(t) / f(0),
    f(t) = cos((t/T + s) / (1 + s) * pi/2)^2 with s = 0.008, "to prevent beta_t from being too small
    near t = 0": with s = 0 the first beta is ~2.5e-6 (4e-5 with s = 0.008, T = 1000) and the first
    timesteps carry practically no noise, which the network cannot predict. This is the cosine-schedule offset s. It is not diffusers'
    `--noise_offset` (offset noise, a per-channel shift of the sampled noise), and it does not make the
    schedule reach pure noise at t = T (that is zero-terminal-SNR rescaling, the zero-snr rules).

    Fix: `torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2` with `s=0.008`. Library
    schedules (diffusers "squaredcos_cap_v2", improved-diffusion "cosine") already have it.
    """  # noqa: E501
    VALID = [
        _scheduler("((x / timesteps) + s) / (1 + s) * math.pi * 0.5"),
        # the plan's version: the offset in a local variable
        _scheduler("((x / timesteps + offset) / (1 + offset)) * math.pi * 0.5").replace(
            "        alphas_cumprod = torch.cos", "        offset = 0.008\n        alphas_cumprod = torch.cos"
        ),
        # improved-diffusion / DiT: the cosine lives in a lambda with the offset written out
        (
            "import math\n"
            "def get_named_beta_schedule(schedule_name, n):\n"
            "    if schedule_name == 'cosine':\n"
            "        return betas_for_alpha_bar(n, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)\n"
        ),
        # CompVis LDM: the offset is computed before the cos
        (
            "import numpy as np\n"
            "import torch\n"
            "def make_beta_schedule(schedule, n_timestep, cosine_s=8e-3):\n"
            "    timesteps = torch.arange(n_timestep + 1, dtype=torch.float64) / n_timestep + cosine_s\n"
            "    alphas = timesteps / (1 + cosine_s) * np.pi / 2\n"
            "    alphas = torch.cos(alphas).pow(2)\n"
            "    alphas = alphas / alphas[0]\n"
            "    return 1 - alphas[1:] / alphas[:-1]\n"
        ),
        # a cosine learning-rate schedule is not a noise schedule
        "import math\ndef lr_lambda(step):\n    return 0.5 * (1.0 + math.cos(math.pi * 2.0 * step / 1000))\n",
        # v-diffusion's alpha = cos(t pi/2) (not squared) is another parameterization
        (
            "import math, torch\n"
            "def t_to_alpha_sigma(t):\n"
            "    alpha = torch.cos(t * math.pi / 2)\n"
            "    sigma = torch.sin(t * math.pi / 2)\n"
            "    return alpha, sigma\n"
        ),
    ]
    INVALID = [
        # the reference trainer: linear selected, the cosine option lacks s
        _selected("(x / timesteps) * math.pi * 0.5", "linear"),
        (
            "import math, torch\n"
            "def cosine_beta_schedule(timesteps):\n"
            "    t = torch.linspace(0, 1, timesteps + 1)\n"
            "    alphas_cumprod = torch.cos(t * math.pi / 2) ** 2\n"
            "    return torch.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)\n"
        ),
        # an offset parameter that is 0
        (
            "import numpy as np\n"
            "def cosine_beta_schedule(timesteps, s=0.0):\n"
            "    x = np.linspace(0, timesteps, timesteps + 1)\n"
            "    alphas_cumprod = np.cos(((x / timesteps) + s) / (1 + s) * np.pi * 0.5) ** 2\n"
            "    return np.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)\n"
        ),
    ]

    in_use = False  # OFF003 judges the schedule the trainer selects

    def applies(self, index: UnitIndex) -> bool:
        return bool(cosine_schedules(index)) and _cosine_selected(index) == self.in_use

    def when_blind(self, index: UnitIndex) -> tuple[State, str] | None:
        schedules = cosine_schedules(index)
        library = inherited(index) if not schedules else None
        if library is not None:
            return State.NOT_APPLICABLE, f"{library}; a library's cosine schedule has its offset built in"
        if not schedules and not beta_schedule(index).by_value:
            kind = without_betas(index)  # else the schedule itself is not visible here: unknown
            return (State.NOT_APPLICABLE, f"{kind[1]}: no cosine schedule, no offset") if kind is not None else None
        if not schedules and _cosine_selected(index):
            # the run picks a cosine schedule whose code this check does not read (an installed package's
            # get_named_beta_schedule: fluent-pose-synthesis on CAMDM): whether it has the offset is not seen
            setting = beta_schedule(index).where("cosine")
            return (
                State.UNKNOWN,
                f"the run trains with a cosine schedule ({setting.name} = {setting.value!r}, {setting.path.name}:"
                f"{setting.line}) built by code this check does not read: whether it has the offset s is not seen",
            )
        if not schedules:
            return State.NOT_APPLICABLE, "no hand-written cosine schedule: the offset s only concerns one"
        lacking = [s for s in schedules if not (s.has_offset or s.unclear)]
        if lacking:
            return State.MISSING, f"the cosine schedule in use ({lacking[0].where}) has no offset s"
        return State.PRESENT, ""

    def when_passed(self, index: UnitIndex) -> tuple[State, str] | None:
        if self.in_use:
            return None
        # the cosine option has its offset, but the run trains on another schedule (DiT's linear,
        # LDM's default), or on one that could not be read: the offset is no part of this run
        offered = f"the cosine schedule in {cosine_schedules(index)[0].where} has the offset s"
        used = beta_schedule(index)
        if used.value == "cosine" or (used.value is None and "cosine" in used.by_value):
            return None  # a library's cosine, or settings that disagree: as the cosine verdict reads them
        if used.value is None:
            chosen = schedule_from_run_config(index)
            if chosen is not None:
                return State.ELSEWHERE, f"{offered}; {chosen}"
            return State.UNKNOWN, f"{offered}, but which schedule the run trains with could not be read"
        setting = used.where(used.value)
        return State.NOT_APPLICABLE, (
            f"the run trains with the {setting.value!r} schedule ({setting.name}, {setting.path.name}:"
            f"{setting.line}), not the cosine one: the offset only concerns it ({offered})"
        )

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for schedule in cosine_schedules(index):
            if schedule.has_offset or schedule.unclear and not schedule.zero:
                continue
            if schedule.divides and not schedule.zero:
                continue  # (t/T) / (1 + s): odd, but not a missing offset
            why = "its offset s is 0" if schedule.zero else "it computes cos(t/T * pi/2)^2 with no offset s"
            used = "the selected cosine schedule" if self.in_use else "the cosine schedule"
            yield Hit.at(
                schedule.call,
                f"{used} in {schedule.where} lacks the cosine-schedule offset s ({why}): the first betas are"
                " vanishingly small and the earliest timesteps practically noise-free; use cos((t/T + s) / (1 + s) *"
                " pi/2)^2 with s = 0.008 (Nichol & Dhariwal 2021)",
            )


def _cosine_selected(index: UnitIndex) -> bool:
    """The trainer selects a cosine schedule that is not a library's (diffusers' has the offset)."""
    schedule = beta_schedule(index)
    return schedule.value == "cosine" and not schedule.where("cosine").owner.startswith("diffusers")


class SelectedCosineWithoutOffset(NoCosineOffset):
    code = "OFF003"
    severity = Severity.BUG
    title = "the cosine schedule in use has the offset s"
    message = (
        "the trainer trains with a cosine schedule that lacks the offset s: the first betas are vanishingly"
        " small, so the earliest timesteps are practically noise-free and their noise cannot be predicted"
        " (Nichol & Dhariwal use s = 0.008)"
    )
    explain = (
        NoCosineOffset.explain
        + """
    OFF001 reports a cosine schedule without s that the trainer does not select (the optimization is
    missing); OFF003 reports it when the configured schedule is cosine, so training runs on it now.
    """
    )
    in_use = True
    VALID = [
        _selected("((x / timesteps) + s) / (1 + s) * math.pi * 0.5"),
        _selected("(x / timesteps) * math.pi * 0.5", "linear"),
    ]
    INVALID = [
        _selected("(x / timesteps) * math.pi * 0.5"),
        # LDM / Lightning style: the Python default says linear, the YAML the run loads says cosine
        {
            "train.py": (
                "import math\n"
                "import torch\n"
                "\n"
                "def cosine_beta_schedule(timesteps, max_beta=0.999):\n"
                "    t = torch.linspace(0, 1, timesteps + 1, dtype=torch.float64)\n"
                "    alphas_cumprod = torch.cos(t * math.pi / 2) ** 2\n"
                "    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=max_beta)\n"
                "\n"
                "class LitDiffusion:\n"
                "    def __init__(self, timesteps=1000, beta_schedule='linear'):\n"
                "        if beta_schedule == 'cosine':\n"
                "            betas = cosine_beta_schedule(timesteps)\n"
                "\n"
                "    def training_step(self, batch, batch_idx):\n"
                "        return self.loss(batch)\n"
            ),
            "configs/run.yaml": "model:\n  timesteps: 1000\n  beta_schedule: cosine\n",
        },
    ]


class OffsetNotRenormalised(Rule):
    code = "OFF002"
    severity = Severity.BUG
    title = "cosine offset divided by (1 + s)"
    message = (
        "the cosine schedule adds s to t/T but does not divide by (1 + s): its argument passes pi/2 before"
        " the last timestep, so alpha_bar reaches 0 early and rises again and the last betas are clipped"
        " nonsense"
    )
    explain = """
    The offset enters as (t/T + s) / (1 + s): the division keeps the argument of the cosine in
    [s/(1+s), 1] * pi/2, so alpha_bar falls monotonically to 0 exactly at t = T. Without it,
    cos((t/T + s) * pi/2) crosses zero at t = (1 - s) T and grows again: the last betas become 1
    (clipped to 0.999) and then negative (clipped to the minimum), and alpha_bar is not monotonic.

    Fix: divide by (1 + s): `torch.cos(((x / T) + s) / (1 + s) * math.pi * 0.5) ** 2`.
    """
    VALID = NoCosineOffset.VALID[:2]
    INVALID = [
        _scheduler("((x / timesteps) + s) * math.pi * 0.5"),
        (
            "import math, torch\n"
            "def cosine_beta_schedule(timesteps):\n"
            "    t = torch.linspace(0, 1, timesteps + 1)\n"
            "    alphas_cumprod = torch.cos((t + 0.008) * math.pi / 2) ** 2\n"
            "    return torch.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)\n"
        ),
    ]

    def applies(self, index: UnitIndex) -> bool:
        return any(s.has_offset for s in cosine_schedules(index))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for schedule in cosine_schedules(index):
            if schedule.has_offset and not schedule.divides:
                yield Hit.at(
                    schedule.call,
                    f"the cosine schedule in {schedule.where} adds the offset s but does not divide by (1 + s): the"
                    " cosine passes pi/2 before t = T, so alpha_bar reaches 0 early and rises again; use cos((t/T +"
                    " s) / (1 + s) * pi/2)^2",
                )


# --- fix -----------------------------------------------------------------------------------
OFFSET = 0.008
OFFSET_COMMENT = "the offset s keeps the first betas from vanishing (Nichol & Dhariwal 2021, s = 0.008)"
OFFSET_PATCH = """\
# the cosine of the schedule, with the offset s (a keyword parameter s: float = 0.008):
alphas_cumprod = torch.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2
alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
"""


class CosineOffsetFix(Fix):
    """Give the project's cosine schedule function the standard offset s = 0.008.

    The argument of the cosine, written as (t/T) times pi/2 in any order, becomes
    ``((t/T + s) / (1 + s)) * pi/2`` and the function gets a keyword parameter ``s: float = 0.008``
    (the signature is otherwise kept, so every caller works unchanged). An offset that is 0 gets
    0.008; an offset without the division by (1 + s) (OFF002) gets the division. Normalizing by
    the value at t = 0 is the function's own business: betas = 1 - a_t / a_(t-1) do not depend on
    it. A cosine whose argument is not a product of t/T and pi/2 is refused with the formula.
    """

    applicability = Applicability.UNSAFE  # changes the training objective

    codes = ("OFF001", "OFF002", "OFF003")

    def apply(self, ctx: FixContext, findings: list) -> None:
        index = ctx.index
        schedules = {(s.call.path, s.call.line, s.call.col): s for s in cosine_schedules(index)}
        edits: dict[Path, dict] = {}
        for finding in findings:
            where = (finding.location.path, finding.location.line, finding.location.col)
            schedule = schedules.get(where)
            if schedule is None:
                raise CannotFix(
                    finding.location.path,
                    finding.location.line,
                    "cannot find the cosine schedule this finding is about",
                    OFFSET_PATCH,
                )
            edits.setdefault(schedule.call.path, {}).update(self._edits(ctx, index, schedule))
        for path, changes in edits.items():
            ctx.update(path, replace(ctx.module(path), changes))

    def _edits(self, ctx: FixContext, index: UnitIndex, schedule: CosineSchedule) -> dict:
        call, fn = schedule.call, schedule.call.function
        module = ctx.module(call.path)
        if schedule.zero:
            return self._zero_to_offset(index, schedule, module)
        argument = _cos_argument(index, call)
        fraction, rebuild = _split_fraction(argument)
        if fn is None or _mentions_pi(index, call, fraction):
            raise CannotFix(
                call.path,
                call.line,
                f"the cosine in {schedule.where} is not written as (t/T) * pi/2, so the offset has no clear place",
                OFFSET_PATCH,
            )
        inner = code_of(fraction.with_changes(lpar=[], rpar=[]))
        if schedule.has_offset:  # OFF002: the offset is there, the division by (1 + s) is not
            name = _offset_term(fraction)
            new = parse_expression(module, f"(({inner}) / (1 + {name}))")
            ctx.note(
                f"{schedule.where}: the offset is now divided by (1 + {name}), so alpha_bar reaches 0 exactly at t = T"
            )
            return {argument: lambda _: rebuild(new)}
        used = set(fn.params) | {a.target for a in index.assigns if a.function == fn}
        name = next(n for n in ("s", "cosine_s", "schedule_offset") if n not in used)
        new = parse_expression(module, f"(({inner} + {name}) / (1 + {name}))")
        function = enclosing(module, call.node, cst.FunctionDef)
        statement = enclosing(module, call.node, cst.SimpleStatementLine)
        ctx.note(
            f"{schedule.where}: cos(((t/T + {name}) / (1 + {name})) * pi/2)^2 with a new parameter {name}={OFFSET}"
            " (Nichol & Dhariwal's cosine-schedule offset; not diffusers' --noise_offset)"
        )
        edits = {
            argument: lambda _: rebuild(new),
            function: lambda node: with_param(node, name, cst.Float(str(OFFSET)), "float"),
        }
        if statement is not None:
            edits[statement] = lambda node: with_comment(node, OFFSET_COMMENT)
        return edits

    def _zero_to_offset(self, index: UnitIndex, schedule: CosineSchedule, module: cst.Module) -> dict:
        """The offset exists and is 0: make it 0.008 where it is set (parameter default or local)."""
        fn = schedule.call.function
        values = [
            a.value
            for a in index.assigns
            if a.function == fn and a.path == schedule.call.path and a.target in OFFSET_NAMES and literal(a.value) == 0
        ]
        params = [
            p
            for p in (enclosing(module, schedule.call.node, cst.FunctionDef).params.params if fn else ())
            if p.name.value in OFFSET_NAMES and p.default is not None and literal(p.default) == 0
        ]
        if not values and not params:
            raise CannotFix(
                schedule.call.path,
                schedule.call.line,
                f"the offset of the cosine in {schedule.where} is 0 but set somewhere this fix cannot see",
                OFFSET_PATCH,
            )
        edits = {value: (lambda node: cst.Float(str(OFFSET))) for value in values}
        edits.update({p: (lambda node: node.with_changes(default=cst.Float(str(OFFSET)))) for p in params})
        return edits


def _cos_argument(index: UnitIndex, call: CallSite) -> cst.BaseExpression:
    """The cosine's argument, or the value of the one local variable it names (``cos(arg)``)."""
    node = call.args[0].value
    if isinstance(node, cst.Name):
        assigns = [
            a for a in index.assigns if a.function == call.function and a.path == call.path and a.target == node.value
        ]
        if len(assigns) == 1:
            return assigns[0].value
    return node


def _is_pi(node: cst.CSTNode) -> bool:
    return (isinstance(node, cst.Name) and node.value == "pi") or (
        isinstance(node, cst.Attribute) and node.attr.value == "pi"
    )


def _mentions_pi(index: UnitIndex, call: CallSite, fraction: cst.BaseExpression) -> bool:
    """The supposed t/T part still holds pi, itself or through a local (``half_pi = math.pi / 2``)."""
    names = {n.value for n in expression_nodes(fraction) if isinstance(n, cst.Name)}
    values = [
        fraction,
        *(a.value for a in index.assigns if a.function == call.function and a.path == call.path and a.target in names),
    ]
    return any(_is_pi(n) for value in values for n in expression_nodes(value))


def _half_pi(node: cst.BaseExpression) -> bool:
    """pi, a number, or a product/quotient of those: the pi/2 part of the argument."""
    if _is_pi(node):
        return True
    if isinstance(node, (cst.Integer, cst.Float)):
        return True
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Multiply, cst.Divide)):
        return _half_pi(node.left) and _half_pi(node.right)
    return False


def _split_fraction(node: cst.BaseExpression):
    """(the t/T part of a cosine argument written as (t/T) * pi/2 in any order, a function that
    puts a replacement for it back into the argument)."""
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Multiply, cst.Divide)):
        if _half_pi(node.right):
            inner, rebuild = _split_fraction(node.left)
            return inner, lambda new: node.with_changes(left=rebuild(new))
        if isinstance(node.operator, cst.Multiply) and _half_pi(node.left):
            inner, rebuild = _split_fraction(node.right)
            return inner, lambda new: node.with_changes(right=rebuild(new))
    return node, lambda new: new


def _offset_term(fraction: cst.BaseExpression) -> str:
    """The written offset in ``t/T + s`` (a name or a small number)."""
    for node in expression_nodes(fraction):
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
            for side in (node.right, node.left):
                value = literal(side)
                if (dotted(side).rsplit(".", 1)[-1] in OFFSET_NAMES) or (isinstance(value, float) and 0 < value < 0.1):
                    return code_of(side)
    return "s"
