"""A ``LambdaLR``'s function read as a schedule: where it is defined (inline, a local function, a
local factory, ``functools.partial``), whether it warms up, decays and to what floor, and whether
its factor grows without bound (a warm-up that never ends)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import libcst as cst

from optimizer_tool.index import CallSite, FunctionInfo, UnitIndex, dotted
from optimizer_tool.knowledge.configured import expanded_names, expression_nodes
from optimizer_tool.knowledge.lr_schedule.lengths import number_literal
from optimizer_tool.knowledge.lr_schedule.schedule import Schedule
from optimizer_tool.knowledge.lr_schedule.vocabulary import (
    DECAY_CALLS,
    DECAY_WORD,
    EPOCH_WORD,
    FLOOR_WORD,
    STEP_WORD,
    TOTAL_SETTINGS,
    WARMUP_WORD,
)
from optimizer_tool.knowledge.training import assignments_of, call_of, names_in


def lambda_target(index: UnitIndex, node, call: CallSite, depth: int = 0):
    """The lambda or local function a LambdaLR runs: written inline, named, returned by a local
    factory (``LambdaLR(opt, warmup_cosine(warmup, total))``) or wrapped in ``functools.partial``."""
    if depth > 3 or node is None:
        return None
    if isinstance(node, cst.Lambda):
        return node
    if isinstance(node, (cst.Name, cst.Attribute)):
        target = dotted(node).rsplit(".", 1)[-1]
        fns = [f for f in index.functions if f.name == target and f.path == call.path]
        inner = [f for f in fns if call.function is not None and call.function.line <= f.line <= call.function.end_line]
        fns = inner or fns
        return fns[0] if len(fns) == 1 else None
    if isinstance(node, cst.Call):
        callee = dotted(node.func)
        if callee in ("partial", "functools.partial") and node.args:
            return lambda_target(index, node.args[0].value, call, depth + 1)
        leaf = callee.rsplit(".", 1)[-1]
        factories = [f for f in index.functions if f.name == leaf]
        if len(factories) != 1:
            return None
        factory = factories[0]
        for ret in index.returns:
            if ret.function != factory:
                continue
            if isinstance(ret.value, cst.Lambda):
                return ret.value
            name = dotted(ret.value)
            nested = [
                f
                for f in index.functions
                if f.name == name and f.path == factory.path and factory.line < f.line <= factory.end_line
            ]
            if len(nested) == 1:
                return nested[0]
    return None


@dataclass
class _LambdaBody:
    """What the function of a LambdaLR reads: its step parameter(s), every name it uses, its calls
    and the expressions it returns (the body of an inline lambda)."""

    params: tuple[str, ...]
    names: set[str]
    calls: list[CallSite]
    exprs: list
    inline: bool  # a lambda expression, not a local function


def _lambda_body(index: UnitIndex, call: CallSite, target) -> _LambdaBody | None:
    if isinstance(target, cst.Lambda):
        params = tuple(p.name.value for p in target.params.params)
        names = names_in(target.body)
        calls = [call_of(index, n) for n in expression_nodes(target.body) if isinstance(n, cst.Call)]
        calls = [c for c in calls if c is not None]
        names |= expanded_names(index, target.body, call.function, call.line)
        return _LambdaBody(params, names, calls, [target.body], inline=True)
    if isinstance(target, FunctionInfo):
        fn = target
        names: set[str] = set()
        params = fn.params[1:] if fn.params[:1] == ("self",) else fn.params
        calls = index.calls_in(fn)
        for c in calls:
            names |= names_in(c.node)
        for a in index.assigns:
            if a.function == fn:
                names |= names_in(a.value) | {a.target}
        for r in index.returns:
            if r.function == fn:
                names |= names_in(r.value)
        return _LambdaBody(params, names, calls, [r.value for r in index.returns if r.function == fn], inline=False)
    return None


def lambda_schedule(index: UnitIndex, call: CallSite, sched: Schedule) -> None:
    fn_node = call.arg(1, "lr_lambda")
    if isinstance(fn_node, cst.Call):
        sched.per_step = (
            True
            if any(
                STEP_WORD.search(n)
                for a in fn_node.args
                for n in expanded_names(index, a.value, call.function, call.line)
            )
            else None
        )
    body = _lambda_body(index, call, lambda_target(index, fn_node, call))
    if body is None:
        return
    _lambda_shape(index, call, sched, body)
    _lambda_unit(sched, body)
    _lambda_lengths(sched, body.names)


def _lambda_shape(index: UnitIndex, call: CallSite, sched: Schedule, body: _LambdaBody) -> None:
    """Warm-up, decay and floor from the names the function reads and the expressions it returns."""
    names, params = body.names, body.params
    sched.warmup = True if any(WARMUP_WORD.search(n) for n in names) else None
    decays = any(DECAY_WORD.search(n) for n in names) or any(DECAY_CALLS.search(c.func_text or "") for c in body.calls)
    sched.decay = True if decays else (False if sched.warmup else None)
    decaying = [
        e for e in body.exprs if any(DECAY_WORD.search(n) for n in names_in(e) if n not in params) or _has_decay_call(e)
    ]
    ends = [end_value(e) for e in decaying]
    floor = True if any(ends) else (False if ends and all(e is False for e in ends) else None)
    if any(FLOOR_WORD.search(n) for n in names):
        floor = True
    sched.floor = floor if sched.decay else None
    single = body.exprs if body.inline or len(body.exprs) == 1 else []
    if single and _capped_ramp(index, single[0], set(params), call) and not decays:
        # ``min((step + 1) / 5000, 1.0)`` in a function whatever its name: a warm-up, then constant
        sched.warmup, sched.decay, sched.floor = True, False, None
    if single and _growth(index, single[0], set(params), call) == "grow":
        sched.unbounded = True
        sched.unbounded_expr = single[0]
        sched.decay, sched.floor = None, None


def _lambda_unit(sched: Schedule, body: _LambdaBody) -> None:
    params = body.params
    unit_text = " ".join(params) + " " + " ".join(sorted(body.names))
    if params and re.search(r"epoch", params[0], re.I):
        sched.per_step = False
    elif (
        params
        and re.search(r"step|iter|^it$|^s$|update", params[0], re.I)
        or STEP_WORD.search(unit_text)
        and not EPOCH_WORD.search(unit_text)
    ):
        sched.per_step = True


def _lambda_lengths(sched: Schedule, names: set[str]) -> None:
    for name in sorted(names):
        if WARMUP_WORD.search(name) and sched.warmup_len is None:
            sched.warmup_len = cst.parse_expression(name) if _is_dotted(name) else None
    for name in sorted(names):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in TOTAL_SETTINGS or re.search(r"^(total|num_training|max_train|max)_?(steps|iters)$", leaf):
            sched.total_len = cst.parse_expression(name) if _is_dotted(name) else None
            break


RAMP_CAPS = {"min", "np.minimum", "numpy.minimum", "torch.minimum"}
EPOCH_COUNTERS = {"ep", "it", "i_iter", "cur_iter"}  # ddae: ``lr * min((ep + 1.0) / opt.warm_epoch, 1.0)``


def progress(name: str) -> bool:
    """A name that counts training progress: steps, iterations, images seen, epochs."""
    leaf = name.rsplit(".", 1)[-1]
    return bool(STEP_WORD.search(leaf) or EPOCH_WORD.search(leaf)) or leaf in EPOCH_COUNTERS


def warmup_then_constant(index: UnitIndex, item) -> bool:
    """``param_group["lr"] = lr * min(step / warmup, 1.0)`` (score_sde's ``optimize_fn``): one ramp
    in the step capped at a constant, times factors that do not read the step: a warm-up, then a
    constant rate, no decay. ``item`` is the ``ItemAssign``."""
    factors, todo = [], [item.value]
    while todo:
        node = todo.pop()
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply):
            todo += [node.left, node.right]
        else:
            factors.append(node)
    for ramp in factors:
        steps = {n for n in names_in(ramp) if progress(n) and not WARMUP_WORD.search(n)}
        others = [f for f in factors if f is not ramp]
        if steps and _capped_ramp(index, ramp, steps, item) and not any(names_in(f) & steps for f in others):
            return True
    return False


def _capped_ramp(index: UnitIndex, node, params: set[str], call: CallSite) -> bool:
    """``min(step / warmup, 1.0)`` (either order): a factor that grows with the step up to a constant cap."""
    if not (
        isinstance(node, cst.Call)
        and dotted(node.func) in RAMP_CAPS
        and len(node.args) == 2
        and not any(a.star for a in node.args)
    ):
        return False
    kinds = [_growth(index, a.value, params, call) for a in node.args]
    return "grow" in kinds and any(isinstance(k, tuple) for k in kinds)


def _growth(index: UnitIndex, node, params: set[str], call: CallSite, depth: int = 0):
    """'grow' when an expression keeps increasing with the step parameter without bound,
    ('const', value or None) when it does not depend on it, None when unknown."""
    if depth > 8 or node is None:
        return None
    value = number_literal(node)
    if value is not None:
        return ("const", value)
    if isinstance(node, (cst.Name, cst.Attribute)):
        name = dotted(node)
        if name in params:
            return "grow"
        assigned = assignments_of(index, name, call.function, call.line)
        if len(assigned) == 1:
            inner = _growth(index, assigned[0].value, params, call, depth + 1)
            return inner if isinstance(inner, tuple) else None
        return ("const", None)
    if isinstance(node, cst.BinaryOperation):
        a = _growth(index, node.left, params, call, depth + 1)
        b = _growth(index, node.right, params, call, depth + 1)
        return _binary_growth(node.operator, a, b)
    if isinstance(node, cst.Call):
        callee = dotted(node.func)
        args = [x.value for x in node.args if x.keyword is None]
        results = [_growth(index, x, params, call, depth + 1) for x in args]
        if all(isinstance(r, tuple) for r in results):
            return ("const", None)
        if callee in ("max",) and "grow" in results:
            return "grow"
        if callee in ("math.exp", "torch.exp", "np.exp", "exp", "float") and results == ["grow"]:
            return "grow"
        return None
    return None


def _binary_growth(op, a, b):
    """``_growth`` of ``left <op> right`` from the growth of both sides."""
    const_a, const_b = isinstance(a, tuple), isinstance(b, tuple)
    va, vb = (a[1] if const_a else None), (b[1] if const_b else None)
    if const_a and const_b:
        if isinstance(op, cst.Power) and va is not None and va > 1 and (vb is None or vb > 0):
            return ("const", 2.0)  # c ** positive with c > 1: a base above 1
        try:
            if va is not None and vb is not None:
                return (
                    "const",
                    {
                        cst.Add: va + vb,
                        cst.Subtract: va - vb,
                        cst.Multiply: va * vb,
                        cst.Divide: va / vb if vb else None,
                        cst.Power: va**vb,
                    }.get(type(op)),
                )
        except (OverflowError, ZeroDivisionError, TypeError):
            return ("const", None)
        return ("const", None)
    if isinstance(op, cst.Multiply) and (
        (a == "grow" and const_b and (vb is None or vb > 0)) or (b == "grow" and const_a and (va is None or va > 0))
    ):
        return "grow"
    if isinstance(op, cst.Add) and ((a == "grow" and const_b) or (b == "grow" and const_a)):
        return "grow"
    if isinstance(op, cst.Subtract) and a == "grow" and const_b:
        return "grow"
    if isinstance(op, cst.Divide) and a == "grow" and const_b and (vb is None or vb > 0):
        return "grow"
    if isinstance(op, cst.Power):
        if const_a and va is not None and va > 1 and b == "grow":
            return "grow"
        if a == "grow" and const_b and vb is not None and vb > 0:
            return "grow"
    return None


def _has_decay_call(node) -> bool:
    return any(isinstance(n, cst.Call) and DECAY_CALLS.search(dotted(n.func) or "") for n in expression_nodes(node))


def end_value(node) -> bool | None:
    """Where a decaying lambda ends: False at 0 (``0.5 * (1 + cos(pi * p))``, ``1 - p``,
    ``max(0.0, ...)``), True above a floor (``max(0.1, ...)``, ``0.1 + 0.9 * ...``), None unknown."""
    if isinstance(node, cst.Call):
        callee = dotted(node.func)
        args = [a.value for a in node.args if a.keyword is None]
        if callee in ("float", "int") and len(args) == 1:
            return end_value(args[0])
        if callee == "max" and len(args) == 2:
            for value, other in ((number_literal(args[0]), args[1]), (number_literal(args[1]), args[0])):
                if value is not None:
                    return True if value > 0 else (end_value(other) is True)
        return None
    if isinstance(node, cst.BinaryOperation):
        left, right = number_literal(node.left), number_literal(node.right)
        op = node.operator
        if isinstance(op, cst.Multiply):
            if left is not None and left > 0:
                return end_value(node.right)
            if right is not None and right > 0:
                return end_value(node.left)
            return None
        if isinstance(op, cst.Add):
            constant, other = (left, node.right) if left is not None else (right, node.left)
            if constant is None:
                return True if any(FLOOR_WORD.search(n) for n in names_in(node)) else None
            if (
                constant == 1
                and isinstance(other, cst.Call)
                and DECAY_CALLS.search(dotted(other.func) or "")
                and "cos" in dotted(other.func)
            ):
                return False  # 1 + cos(pi * progress): 0 at the end
            return True if constant > 0 else None
        if isinstance(op, cst.Subtract):
            return False if left == 1 and isinstance(node.right, (cst.Name, cst.Attribute)) else None
        if (
            isinstance(op, (cst.Divide, cst.FloorDivide))
            and isinstance(node.left, cst.BinaryOperation)
            and isinstance(node.left.operator, cst.Subtract)
        ):
            return False if right is None else None  # (total - step) / (total - warmup)
        return None
    return None


def _is_dotted(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", text))
