"""What one argument of a perceptual call is: followed back through rescales, slices, casts and
assignments to the noise, the model's raw prediction, an x0 estimate or the data."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import libcst as cst

from optimizer_tool.index import FunctionInfo, UnitIndex, dotted, literal
from optimizer_tool.knowledge.training import assignments_of, call_of, names_in

# Where a traced tensor comes from.
NOISE_LIKE = {"noise", "velocity", "prediction"}
# A name alone (a parameter, a loop variable) only says "noise prediction" when it cannot mean anything else.
STRONG_PREDICTION_NAME = re.compile(
    r"^(noise_pred|pred_noise|eps|eps_pred|pred_eps|epsilon|v_pred|pred_v|noise_prediction|predicted_noise"
    r"|pred_velocity|v_prediction)$"
)
NOISE_NAME = re.compile(r"^(noise|noises|eps_target|velocity|v_target|target_noise)$")
X0_NAME = re.compile(
    r"x0|x_0|x_start|xstart|pred_original|original_sample|recon|clean|denoised|decoded|image|img|video|frame|pixel"
    r"|sample_gt|gt|latents?$",
    re.I,
)
ESTIMATE_NAME = re.compile(
    r"pred_?x0|x0_?(pred|hat|est)|pred_?xstart|xstart_?pred|x_start_pred|pred_original|original_sample|denoised"
    r"|recon|decoded",
    re.I,
)
X0_CALL = re.compile(
    r"predict_x0|predict_start|pred_x0|x0_from|_predict_xstart|predict_xstart|get_x0|predict_original|denoise"
    r"|decode|x_start",
    re.I,
)
MODEL_CALL = re.compile(
    r"(^|[._])(model|unet|net|denoiser|transformer|dit|eps_model|denoise_fn|network|backbone)$", re.I
)
ALPHA_NAME = re.compile(r"alpha|sqrt|sigma|snr|beta", re.I)
PASS_THROUGH = {
    "float",
    "half",
    "double",
    "bfloat16",
    "to",
    "cuda",
    "cpu",
    "contiguous",
    "clamp",
    "clamp_",
    "clip",
    "clip_",
    "type",
    "type_as",
    "requires_grad_",
    "detach_",
}
SHAPE_OPS = {
    "flatten",
    "reshape",
    "view",
    "squeeze",
    "select",
    "unbind",
    "index_select",
    "mean",
    "sum",
    "narrow",
    "movedim",
    "unflatten",
    "chunk",
    "split",
    "permute",
    "transpose",
    "repeat",
    "expand",
    "view_as",
    "reshape_as",
    "gather",
    "max",
    "min",
    "amax",
}
ARITH_METHODS = {
    "add": "add",
    "add_": "add",
    "sub": "sub",
    "sub_": "sub",
    "mul": "mul",
    "mul_": "mul",
    "div": "div",
    "div_": "div",
}
ARITH_OPERATORS = {cst.Add: "add", cst.Subtract: "sub", cst.Multiply: "mul", cst.Divide: "div"}


@dataclass
class Trace:
    """What one argument of a perceptual call is, followed back through rescales, slices and assignments."""

    source: str = "unknown"  # noise | velocity | prediction | x0 | data | unknown
    name: str = ""
    detached: bool = False
    reduced: bool = False  # a dimension indexed away or frames folded into the batch (4-D)
    opaque: bool = False  # went through an operation whose shape effect is unknown
    ops: list = field(default_factory=list)  # arithmetic with literals, outermost first: ('div', 2.0)

    @property
    def rescaled_to_unit(self) -> bool:
        """(x + 1) / 2, (x + 1) * 0.5, x * 0.5 + 0.5, x / 2 + 0.5."""
        for outer, inner in zip(self.ops, self.ops[1:]):
            if outer in (("div", 2.0), ("mul", 0.5)) and inner == ("add", 1.0):
                return True
            if outer == ("add", 0.5) and inner in (("mul", 0.5), ("div", 2.0)):
                return True
        return False


def trace(index: UnitIndex, node, function: FunctionInfo | None, line: int, depth: int = 0) -> Trace:
    t = Trace()
    _trace(index, node, function, line, t, depth)
    return t


def _number(node) -> float | None:
    value = literal(node)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _trace(index: UnitIndex, node, function, line: int, t: Trace, depth: int) -> None:
    """Walk ``node`` inward, recording on ``t``: each step either goes on with the expression it
    wraps (a cast, a slice, arithmetic with a literal) or classifies what it reached and stops."""
    for _ in range(40):
        if node is None or depth > 6:
            return
        if isinstance(node, cst.Subscript):
            node = _through_subscript(node, t)
        elif isinstance(node, cst.BinaryOperation):
            node = _through_arithmetic(node, t)
        elif isinstance(node, cst.Attribute) and not dotted(node):
            _classify_attribute(index, node, t)
            return
        elif isinstance(node, cst.Call):
            node = _through_call(index, node, t)
        else:
            _trace_name(index, node, function, line, t, depth)
            return


def _through_subscript(node: cst.Subscript, t: Trace):
    """``batch["video"]`` is data (stop); ``x[:, :, 0]`` indexes a dimension away and goes on with ``x``."""
    key = (
        literal(node.slice[0].slice.value)
        if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index)
        else None
    )
    if isinstance(key, str):  # batch["video"]
        t.name = t.name or key
        t.source = "data" if X0_NAME.search(key) else "unknown"
        return None
    if any(
        isinstance(e.slice, cst.Index)
        and not isinstance(e.slice.value, cst.Ellipsis)
        and not (isinstance(e.slice.value, cst.Name) and e.slice.value.value == "None")
        for e in node.slice
    ):
        t.reduced = True
    return node.value


def _through_arithmetic(node: cst.BinaryOperation, t: Trace):
    """Arithmetic with one literal (``(x + 1) / 2``) is recorded and goes on with the tensor; a
    formula over alphas / sigmas is an x0 estimate (stop)."""
    left, right = _number(node.left), _number(node.right)
    kind = ARITH_OPERATORS.get(type(node.operator))
    if kind and (left is not None) != (right is not None):
        t.ops.append((kind, left if left is not None else right))
        return node.right if left is not None else node.left
    names = names_in(node)
    if any(ALPHA_NAME.search(n) for n in names):
        t.source = "x0"
        t.name = t.name or _main_name(node)
    return None


def _classify_attribute(index: UnitIndex, node: cst.Attribute, t: Trace) -> None:
    """An attribute of a computed value: a scheduler output's x0 field, a model call's ``.sample``."""
    attr = node.attr.value
    if attr in ("pred_original_sample", "pred_xstart", "x0", "pred_x0", "denoised"):
        t.source = "x0"
        return
    if attr == "sample" and isinstance(node.value, cst.Call):
        _classify_call(index, node.value, t)
        return
    t.opaque = True


def _through_call(index: UnitIndex, node: cst.Call, t: Trace):
    """Casts, detaches, arithmetic and shape methods, ``rearrange`` and ``clamp`` go on with the
    tensor they take; any other call is classified (stop)."""
    func = node.func
    callee = dotted(func)
    args = [a.value for a in node.args if a.keyword is None and not a.star]
    if isinstance(func, cst.Attribute):
        inner = _through_method(func, args, t)
        if inner is not None:
            return inner
    leaf = callee.rsplit(".", 1)[-1] if callee else ""
    if leaf in ("rearrange",) and len(args) >= 2:
        pattern = literal(args[1])
        if isinstance(pattern, str) and "->" in pattern:
            out = pattern.split("->")[1]
            if len(re.findall(r"\([^)]*\)|[A-Za-z_]+", out)) <= 4:
                t.reduced = True
        else:
            t.opaque = True
        return args[0]
    if callee in ("torch.clamp", "torch.clip", "clamp") and args:
        return args[0]
    _classify_call(index, node, t)
    return None


def _through_method(func: cst.Attribute, args: list, t: Trace):
    """The receiver of ``x.detach()``, ``x.float()``, ``x.mul(0.5)``, ``x.flatten(...)``; None for
    any other method."""
    method = func.attr.value
    if method == "detach":
        t.detached = True
        return func.value
    if method in PASS_THROUGH:
        return func.value
    if method in ARITH_METHODS and len(args) == 1 and _number(args[0]) is not None:
        t.ops.append((ARITH_METHODS[method], _number(args[0])))
        return func.value
    if method in SHAPE_OPS:
        t.reduced = True
        return func.value
    return None


def _trace_name(index: UnitIndex, node, function, line: int, t: Trace, depth: int) -> None:
    """A variable: traced through its assignments before ``line`` (a merge of at most the last four),
    else classified by its name."""
    name = dotted(node)
    if not name:
        t.opaque = True
        return
    t.name = t.name or name
    assigned = [a for a in assignments_of(index, name, function, line) if a.line < line or name.startswith("self.")]
    if assigned:
        sources = []
        for assign in assigned[-4:]:
            sub = Trace(name=t.name, detached=t.detached, reduced=t.reduced, opaque=t.opaque, ops=list(t.ops))
            _trace(index, assign.value, assign.function, assign.line, sub, depth + 1)
            sources.append(sub)
        _merge(t, sources)
        return
    leaf = name.rsplit(".", 1)[-1]
    if STRONG_PREDICTION_NAME.search(leaf):
        t.source = "prediction"
    elif NOISE_NAME.search(leaf):
        t.source = "noise"
    elif ESTIMATE_NAME.search(leaf):
        t.source = "x0"
    elif X0_NAME.search(leaf):
        t.source = "data"
    if function is not None and leaf in function.params:
        t.opaque = True  # a parameter: its shape depends on the caller


def _main_name(node) -> str:
    names = sorted(n for n in names_in(node) if "." not in n)
    return names[0] if names else ""


def _merge(t: Trace, sources: list[Trace]) -> None:
    """Branches of an if (``target = noise`` / ``target = get_velocity(...)``): noise wins, else x0."""
    kinds = [s.source for s in sources]
    pick = (
        next((s for s in sources if s.source in NOISE_LIKE), None)
        or next((s for s in sources if s.source in ("x0", "data")), None)
        or sources[0]
    )
    t.source = pick.source if all(k != "unknown" for k in kinds) or pick.source in NOISE_LIKE else "unknown"
    t.detached = all(s.detached for s in sources)
    t.reduced = any(s.reduced for s in sources)
    t.opaque = any(s.opaque for s in sources)
    t.ops = pick.ops


def _classify_call(index: UnitIndex, node: cst.Call, t: Trace) -> None:
    callee = dotted(node.func)
    site = call_of(index, node)
    names = set(site.names) if site is not None else {callee}
    leaf = callee.rsplit(".", 1)[-1] if callee else ""
    if any(n.startswith("torch.randn") or n.endswith(("randn_like", ".randn", "normal_")) for n in names):
        t.source = "noise"
    elif leaf == "get_velocity":
        t.source = "velocity"
    elif X0_CALL.search(leaf):
        t.source = "x0"
    elif callee and MODEL_CALL.search(callee) or leaf in ("forward",) or (leaf == "apply_model"):
        t.source = "prediction"
    else:
        t.opaque = True
