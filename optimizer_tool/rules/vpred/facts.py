"""What the vpred rules and fix know about a unit: the configured prediction type, whether the loss
is computed against the sampled noise, whether a v target is built, and the epsilon x0 formula."""

from __future__ import annotations

import re

import libcst as cst

from optimizer_tool.index import UnitIndex, dotted, literal
from optimizer_tool.knowledge.configured import (
    EXPLICIT_KINDS,
    Configured,
    expression_nodes,
)

VELOCITY_FUNCTION = re.compile(
    r"(^|_)(get_velocity|predict_v|get_v|velocity|get_v_target|compute_v|to_v|v_target|velocity_target)$"
)
VELOCITY_TARGET = re.compile(r"(^|\.)(v|velocity|v_target|target_v|v_t|vel)$")
FROM_V_FUNCTION = re.compile(r"from_v|v_to_|_v_to|xstart_from_v|x0_from_v", re.I)
EPS_HELPER = re.compile(r"from_(noise|eps)|eps_to|noise_to|_from_eps", re.I)
X0_TARGET = re.compile(r"x0|x_0|xstart|x_start|original|pred_x|clean|denoised|x_hat", re.I)
SAMPLER_FUNCTION = re.compile(r"(^|_)(step|p_sample|ddim_step|ddim_sample|sample|denoise|reverse)", re.I)


def computes_velocity(index: UnitIndex) -> bool:
    """The unit builds a v target somewhere: ``get_velocity(...)``, ``predict_v(...)``, ``v = ...``."""
    if any(VELOCITY_FUNCTION.search(c.method or c.func_text or "") for c in index.calls):
        return True
    return any(
        VELOCITY_TARGET.search(a.target) and not isinstance(a.value, (cst.Name, cst.Attribute)) for a in index.assigns
    )


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
