"""What the vpred rules and fix know about a unit: the configured prediction type, whether the loss
is computed against the sampled noise, whether a v target is built, and the epsilon x0 formula."""

from __future__ import annotations

import re
from functools import lru_cache

import libcst as cst

from optimizer_tool.index import Assign, CallSite, FunctionInfo, UnitIndex, dotted, literal
from optimizer_tool.knowledge.configured import (
    EXPLICIT_KINDS,
    Configured,
    expression_nodes,
    find_call,
    synthetic_setting,
)
from optimizer_tool.knowledge.diffusion import (
    PREDICTION_FLAGS,
    PREDICTION_SETTINGS_LOOSE,
    PREDICTION_SETTINGS_STRICT,
    prediction_type,
)
from optimizer_tool.knowledge.training import SAMPLING_FUNCTION

LOSS_FUNCTIONS = (
    "torch.nn.functional.mse_loss",
    "torch.nn.functional.l1_loss",
    "torch.nn.functional.smooth_l1_loss",
    "torch.nn.functional.huber_loss",
    "*.mean_flat",
    "mean_flat",
)
LOSS_MODULES = ("torch.nn.MSELoss", "torch.nn.L1Loss", "torch.nn.SmoothL1Loss", "torch.nn.HuberLoss")
RANDN = (
    "torch.randn_like",
    "torch.randn",
    "torch.normal",
    "numpy.random.randn",
    "numpy.random.normal",
    "torch.randn_like",
)
NOISE_NAMES = {"noise", "eps", "epsilon", "gaussian_noise", "noises", "true_noise", "noise_gt", "gt_noise"}
PREDICTION_NAMES = set(PREDICTION_SETTINGS_STRICT) | set(PREDICTION_SETTINGS_LOOSE) | set(PREDICTION_FLAGS)
VELOCITY_FUNCTION = re.compile(
    r"(^|_)(get_velocity|predict_v|get_v|velocity|get_v_target|compute_v|to_v|v_target|velocity_target)$"
)
VELOCITY_TARGET = re.compile(r"(^|\.)(v|velocity|v_target|target_v|v_t|vel)$")
FROM_V_FUNCTION = re.compile(r"from_v|v_to_|_v_to|xstart_from_v|x0_from_v", re.I)
EPS_HELPER = re.compile(r"from_(noise|eps)|eps_to|noise_to|_from_eps", re.I)
X0_TARGET = re.compile(r"x0|x_0|xstart|x_start|original|pred_x|clean|denoised|x_hat", re.I)
SAMPLER_FUNCTION = re.compile(r"(^|_)(step|p_sample|ddim_step|ddim_sample|sample|denoise|reverse)", re.I)


# --- what the loss compares with ---------------------------------------------------------
def _loss_calls(index: UnitIndex) -> list[CallSite]:
    modules = {a.target for a in index.assigns if a.call is not None and a.call.matches(LOSS_MODULES)}
    calls = [c for c in index.calls if c.matches(LOSS_FUNCTIONS) or (c.func_text and c.func_text in modules)]
    return [
        c
        for c in calls
        if not c.no_grad
        and not (c.function and SAMPLING_FUNCTION.search(c.function.name) and not c.function.name.startswith("train"))
    ]


def operands(call: CallSite) -> list[str]:
    if call.matches(("*.mean_flat", "mean_flat")):
        return (
            [
                dotted(n)
                for n in expression_nodes(call.args[0].value)
                if isinstance(n, (cst.Name, cst.Attribute)) and dotted(n)
            ]
            if call.args
            else []
        )
    nodes = [a.value for a in call.args[:2]] + [call.kwarg(k) for k in ("input", "target") if call.kwarg(k) is not None]
    names = []
    for node in nodes:
        while (
            isinstance(node, cst.Call)
            and isinstance(node.func, cst.Attribute)
            and node.func.attr.value
            in {"float", "to", "double", "half", "detach", "type", "contiguous", "reshape", "view", "flatten"}
        ):
            node = node.func.value
        if dotted(node):
            names.append(dotted(node))
    return names


def local_assigns(index: UnitIndex, function: FunctionInfo | None, name: str) -> list[Assign]:
    return [a for a in index.assigns if a.function == function and a.target == name]


def is_noise(index: UnitIndex, function: FunctionInfo | None, name: str, depth: int = 0) -> bool:
    """``name`` holds the sampled Gaussian noise (``noise = torch.randn_like(x)``, an alias of it,
    or a parameter/variable conventionally called ``noise``)."""
    if depth > 4:
        return False
    assigns = local_assigns(index, function, name)
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
            for node in expression_nodes(assign.value)
            if isinstance(node, cst.Call)
        )
        if not sampled:
            return False
    return True


@lru_cache(maxsize=4096)
def mentions_prediction(guard: str) -> bool:
    try:
        expr = cst.parse_expression(guard)
    except cst.ParserSyntaxError:
        return False
    for node in expression_nodes(expr):
        leaf = (
            node.value if isinstance(node, cst.Name) else node.attr.value if isinstance(node, cst.Attribute) else None
        )
        if leaf and leaf.lower() in PREDICTION_NAMES:
            return True
    return False


def losses_on_noise(index: UnitIndex) -> list[CallSite]:
    """Training losses whose target is the sampled noise, with no branch on the prediction type."""
    found = []
    for call in _loss_calls(index):
        if any(mentions_prediction(g) for g in call.guards):
            continue
        if any(is_noise(index, call.function, name) for name in operands(call)):
            found.append(call)
    return found


def computes_velocity(index: UnitIndex) -> bool:
    """The unit builds a v target somewhere: ``get_velocity(...)``, ``predict_v(...)``, ``v = ...``."""
    if any(VELOCITY_FUNCTION.search(c.method or c.func_text or "") for c in index.calls):
        return True
    return any(
        VELOCITY_TARGET.search(a.target) and not isinstance(a.value, (cst.Name, cst.Attribute)) for a in index.assigns
    )


def configured_prediction(index: UnitIndex) -> Configured:
    evidence = [synthetic_setting("prediction_type", "epsilon", "code", call) for call in losses_on_noise(index)]
    return prediction_type(index, evidence)


def explicit_v(configured: Configured) -> bool:
    return any(s.kind in EXPLICIT_KINDS for s in configured.by_value.get("v", []))


# --- the epsilon formula for x0 ------------------------------------------------------------
def _sqrt_like(node: cst.BaseExpression) -> bool:
    for current in expression_nodes(node):
        if isinstance(current, cst.Call) and (dotted(current.func).rsplit(".", 1)[-1] in ("sqrt", "rsqrt")):
            return True
        if (
            isinstance(current, cst.BinaryOperation)
            and isinstance(current.operator, cst.Power)
            and literal(current.right) in (0.5, -0.5)
        ):
            return True
        if isinstance(current, (cst.Name, cst.Attribute)) and "sqrt" in (dotted(current) or "").lower():
            return True
    return False


def eps_to_x0(node: cst.BaseExpression) -> bool:
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
