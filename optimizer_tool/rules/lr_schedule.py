"""Learning-rate warm-up and decay (plan priority 7).

A diffusion model trained with Adam at a constant learning rate starts with large,
noisy updates of a random network and ends still bouncing around the optimum. A
short linear warm-up (a few hundred to a few thousand optimizer steps, at most
~10% of the run) and a decay for the rest of training (cosine to a floor of ~1%
of the base rate) give smoother and better converged training. The schedule must
advance once per optimizer step when it is written in steps, and after
``optimizer.step()``.

Recognised: diffusers/transformers ``get_scheduler`` and ``get_*_schedule_with_warmup``,
``torch.optim.lr_scheduler`` (``LinearLR`` + ``CosineAnnealingLR`` in ``SequentialLR``,
``OneCycleLR``, ``LambdaLR`` over steps, ``StepLR``...), timm schedulers, a hand-written
schedule that sets ``param_group["lr"]`` (improved-diffusion's ``lr_anneal_steps``),
Lightning ``configure_optimizers`` with its ``interval``.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import libcst as cst
import libcst.matchers as m

from optimizer_tool.codemod import (
    OPTIMIZER_CONSTRUCTORS,
    Edits,
    ensure_setting,
    expression,
    is_call_statement,
    module_name,
    names_in_node,
    optimizer_construction,
    set_default,
    setting_value,
    settings_home,
    statement,
)
from optimizer_tool.cstedit import insert_dict_element, node_at, string_literal, value_like, with_keyword
from optimizer_tool.findings import Severity
from optimizer_tool.index import CallSite, FunctionInfo, UnitIndex, code_of, dotted, literal
from optimizer_tool.rules.base import CannotFix, Fix, FixContext, Hit, Rule
from optimizer_tool.semantics import (
    ROLE_CONSTRUCTORS,
    assignments_of,
    configured,
    exclusive,
    expanded_names,
    expression_nodes,
    call_of,
    has_role,
    lr_scheduler_steps,
    memo,
    names_in,
    optimizer_steps,
    same_object,
    stepped_optimizer,
    trains,
)

KEY = "lr-schedule"
TITLE = "Learning-rate warm-up and decay"
SAFE_FIX = True

# --- what each scheduler does -------------------------------------------------------
HF_GETTERS = ("diffusers.optimization.get_scheduler", "transformers.get_scheduler", "transformers.optimization.get_scheduler", "*.get_scheduler")
HF_HELPER_NAMES = {
    "get_cosine_schedule_with_warmup", "get_linear_schedule_with_warmup", "get_constant_schedule_with_warmup", "get_polynomial_decay_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup", "get_cosine_with_min_lr_schedule_with_warmup", "get_constant_schedule",
}
HF_HELPER = re.compile(r"^get_(\w+?)_schedule(_with_warmup)?$|^get_(\w+)_schedule_with_warmup$")
TORCH = "torch.optim.lr_scheduler."
PER_EPOCH_CLASSES = {"StepLR", "MultiStepLR", "ExponentialLR", "ReduceLROnPlateau", "CosineAnnealingWarmRestarts", "MultiplicativeLR", "CyclicLR"}
TO_ZERO_NAMES = {"linear", "cosine", "cosine_with_restarts", "polynomial"}
FLOOR_NAMES = {"cosine_with_min_lr", "cosine_warmup_with_min_lr", "inverse_sqrt", "reduce_lr_on_plateau", "warmup_stable_decay", "piecewise_constant"}
CONSTANT_NAMES = {"constant"}
WARMUP_ONLY_NAMES = {"constant_with_warmup"}

# Names in lambdas and length arguments.
WARMUP_WORD = re.compile(r"warm", re.I)
STEP_WORD = re.compile(r"step|iter|update|batches|len\(|estimated_stepping", re.I)
EPOCH_WORD = re.compile(r"epoch", re.I)
DECAY_WORD = re.compile(r"(^|_)(decay|progress|anneal|remaining|frac|total|max_steps|max_train_steps|num_training_steps|train_steps|max_iters?|cos)", re.I)
FLOOR_WORD = re.compile(r"min_lr|lr_min|eta_min|floor|final_lr|end_lr|lr_end|min_ratio|min_factor|min_scale|minimum|final_factor|final_ratio", re.I)
DECAY_CALLS = re.compile(r"(^|\.)(cos|exp|pow)$")
SCHEDULE_HELPER = re.compile(r"(adjust|update|set|schedule|anneal|warmup|warm_up|get)_?(learning_rate|lr)|_?anneal_lr|lr_sched|cosine_lr|lr_schedule|step_lr|set_lr", re.I)

# Warm-up and run-length settings (LR004).
WARMUP_SETTINGS = ("warmup_steps", "lr_warmup_steps", "num_warmup_steps", "warmup_iters", "warmup_iterations", "warmup_updates")
TOTAL_SETTINGS = ("max_train_steps", "total_steps", "num_train_steps", "max_steps", "train_steps", "num_training_steps", "train_num_steps", "total_training_steps", "max_iters", "max_iterations", "total_iters_train", "num_iterations", "lr_anneal_steps")
NEUTRAL_FACTOR = re.compile(r"(^|\.)(num_processes|world_size|num_gpus|n_gpus|num_devices)$")
LIGHTNING_MANUAL = "automatic_optimization"


@dataclass(eq=False)
class Schedule:
    """One learning-rate schedule built (or hand-written) in the unit."""

    site: CallSite | None
    path: object
    line: int
    col: int
    kind: str  # library name: 'get_scheduler', 'LambdaLR', 'manual', 'helper'...
    warmup: bool | None = None
    decay: bool | None = None
    floor: bool | None = None  # decays to a floor > 0 (False: to zero), None unknown / no decay
    per_step: bool | None = None
    warmup_len: cst.BaseExpression | None = None
    total_len: cst.BaseExpression | None = None
    function: FunctionInfo | None = None
    parts: list["Schedule"] = field(default_factory=list)  # SequentialLR components
    unbounded: bool = False  # a lambda factor that grows without limit (a warm-up that never ends)
    unbounded_expr: cst.BaseExpression | None = None
    part_of: "Schedule | None" = None

    @property
    def constant(self) -> bool:
        return self.warmup is False and self.decay is False


@dataclass
class ScheduleFacts:
    schedules: list[Schedule]

    @property
    def present(self) -> bool:
        """Some schedule changes the learning rate during training (or may: unknown helpers count)."""
        return any(not s.constant for s in self.top)

    @property
    def top(self) -> list[Schedule]:
        return [s for s in self.schedules if s.part_of is None]


def schedule_facts(index: UnitIndex) -> ScheduleFacts:
    return memo(index, "lr_schedule.facts", lambda: _schedule_facts(index))


def _schedule_facts(index: UnitIndex) -> ScheduleFacts:
    schedules: list[Schedule] = []
    by_node: dict[int, Schedule] = {}
    for call in index.calls:
        sched = _from_constructor(index, call)
        if sched is not None:
            schedules.append(sched)
            by_node[id(call.node)] = sched
    # SequentialLR / ChainedScheduler: attach their components.
    for sched in schedules:
        if sched.kind in ("SequentialLR", "ChainedScheduler") and sched.site is not None:
            listed = sched.site.kwarg("schedulers")
            if listed is None and len(sched.site.args) > 1:
                listed = sched.site.args[1 if sched.kind == "SequentialLR" else 0].value
            for element in getattr(listed, "elements", []) or []:
                part = _resolve_part(index, element.value, sched, by_node)
                if part is not None:
                    part.part_of = sched
                    sched.parts.append(part)
            _combine(index, sched)
    for item in index.item_assigns:
        if item.key == "lr" and not isinstance(literal(item.value), (int, float)):
            names = expanded_names(index, item.value, item.function, item.line)
            scope = _function_names(index, item.function) | set().union(*[_function_names(index, f) for f in _local_callees(index, names)])
            decay = True if any(DECAY_WORD.search(n) or DECAY_CALLS.search(n) for n in names) else None
            warm = any(WARMUP_WORD.search(n) for n in names | scope)
            warmup = True if warm else (False if decay else None)
            if any(_off_by_default(index, n.rsplit(".", 1)[-1]) for n in names | scope if LENGTH_WORD.search(n.rsplit(".", 1)[-1])):
                decay, warmup = None, None  # improved-diffusion: lr_anneal_steps=0 turns the anneal off
            schedules.append(Schedule(None, item.path, item.line, item.col, "manual", warmup=warmup, decay=decay, function=item.function))
    known = {id(s.site.node) for s in schedules if s.site is not None}
    optimizer_names = _optimizer_names(index)
    assigned_to = {id(a.call.node): a.target for a in index.assigns if a.call is not None}
    for call in index.calls:
        if id(call.node) in known or call.method in ("step", "get_last_lr", "get_lr", "state_dict", "load_state_dict", "prepare", "register_for_checkpointing", "save_state", "load_state", "watch", "unwrap_model"):
            continue
        leaf = call.method or call.func_text
        target = assigned_to.get(id(call.node), "")
        helper = bool(leaf) and SCHEDULE_HELPER.search(leaf) and not re.search(r"noise|beta|diffusion", leaf, re.I)
        passes_optimizer = any(dotted(a.value) in optimizer_names for a in call.node.args)
        mentions_schedule = re.search(r"sched|(^|_)lr$|LR$", leaf or "", re.I) or any(
            re.search(r"sched", n, re.I) and not is_noise_helper(n) for a in call.node.args for n in names_in(a.value)
        ) or (re.search(r"sched", target.rsplit(".", 1)[-1], re.I) and not is_noise_helper(target))
        takes_optimizer = passes_optimizer and mentions_schedule and not is_noise_helper(leaf)
        if (helper or takes_optimizer) and not (leaf and _defines_local_schedule(index, leaf)):
            schedules.append(Schedule(call, call.path, call.line, call.col, "helper", function=call.function))
    # A scheduler handed in from elsewhere (a parameter, a factory in another package) but stepped here.
    for step in lr_scheduler_steps(index):
        if not schedules_of(index, ScheduleFacts(schedules), step.receiver):
            schedules.append(Schedule(None, step.path, step.line, step.col, "helper", function=step.function))
    # Optimizers that schedule themselves: schedule-free AdamW/SGD, Adafactor's relative step.
    for call in index.calls:
        leaf = call.method or call.func_text
        if leaf and ("ScheduleFree" in leaf or (leaf == "Adafactor" and literal(call.kwarg("relative_step")) is not False)):
            schedules.append(Schedule(call, call.path, call.line, call.col, "helper", function=call.function))
    # Lightning: configure_optimizers returns a scheduler we could not recognise (built by eval, a registry...).
    for fn in index.functions_named("configure_optimizers"):
        if any(s.function == fn for s in schedules):
            continue
        keyed = [s for s in index.setting("lr_scheduler", "scheduler") if s.kind == "dict" and s.path == fn.path and fn.line <= s.line <= fn.end_line]
        keyed += [i for i in index.item_assigns if i.key in ("lr_scheduler", "scheduler") and i.function == fn]
        pairs = [r for r in index.returns if r.function == fn and isinstance(r.value, (cst.Tuple, cst.List)) and len(r.value.elements) == 2]
        if keyed or pairs:
            where = (keyed or pairs)[0]
            schedules.append(Schedule(None, where.path, where.line, where.col, "helper", function=fn))
    return ScheduleFacts(schedules)


LENGTH_WORD = re.compile(r"anneal|decay_(steps|iters)|lr_(steps|iters)|warmup_(steps|iters)|schedule_steps", re.I)
OFF_KINDS_FIRST = ("config-file", "argparse", "class-default", "dict", "kwarg")


def _off_by_default(index: UnitIndex, leaf: str) -> bool:
    """A schedule length whose default is 0 / None (the hand-written schedule is off unless a run sets it)."""
    found = [s for s in index.setting(leaf) if s.known]
    explicit = [s for s in found if s.kind in OFF_KINDS_FIRST]
    chosen = explicit or [s for s in found if s.kind in ("param-default", "getattr-default")]
    return bool(chosen) and all(s.value in (0, None, False) and not isinstance(s.value, str) for s in chosen)


def _function_names(index: UnitIndex, fn: FunctionInfo | None) -> set[str]:
    """Every name the code of one function reads or assigns (its calls, assignments, returns, if-conditions)."""
    if fn is None:
        return set()

    def compute() -> set[str]:
        names: set[str] = set()
        for c in index.calls_in(fn):
            names |= names_in(c.node)
            for guard in c.guards:
                try:
                    names |= names_in(cst.parse_expression(guard))
                except cst.ParserSyntaxError:
                    pass
        for a in index.assigns:
            if a.function == fn:
                names |= names_in(a.value) | {a.target}
        for r in index.returns:
            if r.function == fn:
                names |= names_in(r.value)
        return names

    return memo(index, ("lr_schedule.function_names", fn), compute)


def _local_callees(index: UnitIndex, names: set[str]) -> list[FunctionInfo]:
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    return [f for f in index.functions if f.name in leaves]


def is_noise_helper(name: str) -> bool:
    return bool(re.search(r"noise|beta|diffusion|ddim|ddpm|timestep", name, re.I))


def _defines_local_schedule(index: UnitIndex, name: str) -> bool:
    """A local factory (``_create_lr_scheduler``): the schedules built inside it are judged instead."""
    return any(f.name == name for f in index.functions)


def _optimizer_names(index: UnitIndex) -> set[str]:
    pats = ROLE_CONSTRUCTORS["optimizer"]
    names = {a.target for a in index.assigns if a.call is not None and a.call.matches(pats)}
    names |= {n.rsplit(".", 1)[-1] for n in names}
    names |= {"optimizer", "opt", "optim", "self.optimizer", "self.opt", "self.optim"}
    return names


def _torch_class(call: CallSite) -> str | None:
    for name in call.qualnames:
        if name.startswith(TORCH):
            rest = name[len(TORCH):]
            if "." not in rest:
                return rest
    return None


def _from_constructor(index: UnitIndex, call: CallSite) -> Schedule | None:
    base = dict(site=call, path=call.path, line=call.line, col=call.col, function=call.function)
    if call.method == "get_scheduler" and (any(n.startswith(("diffusers.optimization", "transformers")) for n in call.qualnames) or (
        call.matches(HF_GETTERS) and not _defines_local_schedule(index, "get_scheduler") and call.arg(0, "name") is not None
    )) and not is_noise_helper(call.func_text):
        if any("diffusers.schedulers" in n for n in call.qualnames):
            return None
        name = _string_value(index, call.arg(0, "name"), call)
        sched = Schedule(kind="get_scheduler", warmup_len=call.arg(2, "num_warmup_steps"), total_len=call.arg(3, "num_training_steps"), **base)
        sched.per_step = _lengths_unit(index, call, sched.warmup_len, sched.total_len)
        sched.warmup = _positive(index, sched.warmup_len, call)
        if name is None:
            return sched
        name = name.lower()
        if name in CONSTANT_NAMES:
            sched.warmup, sched.decay = False, False
        elif name in WARMUP_ONLY_NAMES:
            sched.decay = False
            sched.warmup = True if sched.warmup is None else sched.warmup
        elif name in TO_ZERO_NAMES:
            sched.decay = True
            sched.floor = False if not (name == "polynomial" and _kwargs_mention(call, "lr_end")) else None
        elif name in FLOOR_NAMES:
            sched.decay, sched.floor = True, True
        return sched
    leaf = call.method or call.func_text
    helper = bool(HF_HELPER.match(leaf or "")) and not _defines_local_schedule(index, leaf)
    if helper and (any(n.startswith(("transformers", "diffusers")) for n in call.qualnames) or leaf in HF_HELPER_NAMES):
        warmup_len = call.arg(1, "num_warmup_steps")
        sched = Schedule(kind=leaf, warmup_len=warmup_len, total_len=call.arg(2, "num_training_steps"), **base)
        sched.per_step = _lengths_unit(index, call, sched.warmup_len, sched.total_len)
        sched.warmup = _positive(index, warmup_len, call)
        if leaf == "get_constant_schedule":
            sched.warmup, sched.decay = False, False
        elif leaf == "get_constant_schedule_with_warmup":
            sched.decay = False
        elif "min_lr" in leaf or "inverse_sqrt" in leaf:
            sched.decay, sched.floor = True, True
        elif leaf.startswith(("get_cosine", "get_linear")):
            sched.decay, sched.floor = True, False
        elif leaf.startswith("get_polynomial"):
            sched.decay = True
            sched.floor = None if call.kwarg("lr_end") is not None or len(call.args) > 3 else False
        return sched
    cls = _torch_class(call)
    if cls is not None:
        return _torch_schedule(index, call, cls, base)
    if any(n.startswith("timm.scheduler") for n in call.qualnames) and leaf and leaf[0].isupper():
        warm = call.kwarg("warmup_t")
        warm_n = _number(index, warm, call) if warm is not None else 0
        lr_min = call.kwarg("lr_min")
        floor_v = _number(index, lr_min, call) if lr_min is not None else 0
        return Schedule(kind=leaf, warmup=None if warm_n is None else warm_n > 0, decay=True, floor=None if floor_v is None else floor_v > 0,
                        warmup_len=warm, total_len=call.arg(1, "t_initial"), **base)
    return None


def _positive(index: UnitIndex, node, call: CallSite) -> bool | None:
    """Whether a length argument is > 0 (absent: 0); unknown factors such as ``num_processes`` keep their sign."""
    if node is None:
        return False
    q = _quantity(index, node, call.function, call.line)
    return None if q is None else q.coef > 0


def _torch_schedule(index: UnitIndex, call: CallSite, cls: str, base: dict) -> Schedule | None:
    if cls in ("LRScheduler", "_LRScheduler"):
        return None
    sched = Schedule(kind=cls, **base)
    if cls == "LinearLR":
        start = _number(index, call.arg(1, "start_factor"), call) if call.arg(1, "start_factor") is not None else 1 / 3
        end = _number(index, call.arg(2, "end_factor"), call) if call.arg(2, "end_factor") is not None else 1.0
        length = call.arg(3, "total_iters")
        sched.per_step = _length_unit(index, length, call)
        if start is not None and end is not None:
            if start < end:
                sched.warmup, sched.decay, sched.warmup_len = True, False, length
            elif start > end:
                sched.warmup, sched.decay, sched.floor, sched.total_len = False, True, end >= 1e-3, length
            else:
                sched.warmup, sched.decay = False, False
    elif cls == "ConstantLR":
        factor = _number(index, call.arg(1, "factor"), call) if call.arg(1, "factor") is not None else 1 / 3
        sched.warmup = None if factor is None else factor < 1
        sched.decay, sched.warmup_len = False, call.arg(2, "total_iters")
        sched.per_step = _length_unit(index, sched.warmup_len, call)
    elif cls == "CosineAnnealingLR":
        length = call.arg(1, "T_max")
        eta = call.arg(2, "eta_min")
        value = literal(eta) if eta is not None else 0
        sched.warmup, sched.decay, sched.total_len = False, True, length
        sched.floor = (value > 0) if isinstance(value, (int, float)) else _floor_expression(index, eta, call)
        sched.per_step = _length_unit(index, length, call)
    elif cls == "PolynomialLR":
        length = call.arg(1, "total_iters")
        sched.warmup, sched.decay, sched.floor, sched.total_len = False, True, False, length
        sched.per_step = _length_unit(index, length, call)
    elif cls == "OneCycleLR":
        sched.warmup, sched.decay = True, True
        sched.floor = False if call.kwarg("final_div_factor") is None else None
        total = call.kwarg("total_steps")
        sched.per_step = True if call.kwarg("steps_per_epoch") is not None else (_lengths_unit(index, call, total) if total is not None else None)
    elif cls == "LambdaLR":
        _lambda_schedule(index, call, sched)
    elif cls in PER_EPOCH_CLASSES:
        sched.warmup, sched.decay, sched.per_step = False, True, None
        if cls == "CosineAnnealingWarmRestarts":
            eta = call.kwarg("eta_min")
            value = literal(eta) if eta is not None else 0
            sched.floor = (value > 0) if isinstance(value, (int, float)) else None
    elif cls in ("SequentialLR", "ChainedScheduler"):
        pass  # combined from the parts
    else:
        return None
    return sched


def _floor_expression(index: UnitIndex, node, call: CallSite) -> bool | None:
    value = _number(index, node, call)
    if value is not None:
        return value > 0
    return True if any(FLOOR_WORD.search(n) or re.search(r"(^|\.)(lr|learning_rate|base_lr)$", n) for n in names_in(node)) else None


def _lengths_unit(index: UnitIndex, call: CallSite, *nodes) -> bool:
    """Library schedules that count optimizer steps (get_scheduler...): per step unless every length
    given is written in epochs (``num_training_steps=args.epochs``)."""
    units = [_length_unit(index, n, call) for n in nodes if n is not None and _number_literal(n) is None]
    return False if units and all(u is False for u in units) else True


def _length_unit(index: UnitIndex, node, call: CallSite) -> bool | None:
    """True when a length is written in optimizer steps, False in epochs, None unknown."""
    if node is None:
        return None
    names = expanded_names(index, node, call.function, call.line)
    text = " ".join(sorted(names)) + " " + code_of(node)
    if STEP_WORD.search(text):
        return True
    if EPOCH_WORD.search(text):
        return False
    return None


def _lambda_target(index: UnitIndex, node, call: CallSite, depth: int = 0):
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
            return _lambda_target(index, node.args[0].value, call, depth + 1)
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
            nested = [f for f in index.functions if f.name == name and f.path == factory.path and factory.line < f.line <= factory.end_line]
            if len(nested) == 1:
                return nested[0]
    return None


def _lambda_schedule(index: UnitIndex, call: CallSite, sched: Schedule) -> None:
    fn_node = call.arg(1, "lr_lambda")
    names: set[str] = set()
    params: tuple[str, ...] = ()
    calls: list[CallSite] = []
    fn = None
    if isinstance(fn_node, cst.Call):
        sched.per_step = True if any(STEP_WORD.search(n) for a in fn_node.args for n in expanded_names(index, a.value, call.function, call.line)) else None
    target = _lambda_target(index, fn_node, call)
    if isinstance(target, cst.Lambda):
        fn_node = target
        params = tuple(p.name.value for p in fn_node.params.params)
        names = names_in(fn_node.body)
        calls = [call_of(index, n) for n in expression_nodes(fn_node.body) if isinstance(n, cst.Call)]
        calls = [c for c in calls if c is not None]
        names |= expanded_names(index, fn_node.body, call.function, call.line)
    elif isinstance(target, FunctionInfo):
        fn = target
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
    else:
        return
    derived = set(params)
    local_assigns = [a for a in index.assigns if a.function == fn] if not isinstance(fn_node, cst.Lambda) else []
    for _ in range(3):
        derived |= {a.target for a in local_assigns if names_in(a.value) & derived}
    sched.warmup = True if any(WARMUP_WORD.search(n) for n in names) else None
    decays = any(DECAY_WORD.search(n) for n in names) or any(DECAY_CALLS.search(c.func_text or "") for c in calls)
    sched.decay = True if decays else (False if sched.warmup else None)
    exprs = [fn_node.body] if isinstance(fn_node, cst.Lambda) else [r.value for r in index.returns if r.function == fn]
    decaying = [e for e in exprs if any(DECAY_WORD.search(n) for n in names_in(e) if n not in params) or _has_decay_call(e)]
    ends = [_end_value(e) for e in decaying]
    floor = True if any(ends) else (False if ends and all(e is False for e in ends) else None)
    if any(FLOOR_WORD.search(n) for n in names):
        floor = True
    sched.floor = floor if sched.decay else None
    single = exprs if isinstance(fn_node, cst.Lambda) or len(exprs) == 1 else []
    if single and _capped_ramp(index, single[0], set(params), call) and not decays:
        # ``min((step + 1) / 5000, 1.0)`` in a function whatever its name: a warm-up, then constant
        sched.warmup, sched.decay, sched.floor = True, False, None
    if single and _growth(index, single[0], set(params), call) == "grow":
        sched.unbounded = True
        sched.unbounded_expr = single[0]
        sched.decay, sched.floor = None, None
    unit_text = " ".join(params) + " " + " ".join(sorted(names))
    if params and re.search(r"epoch", params[0], re.I):
        sched.per_step = False
    elif params and re.search(r"step|iter|^it$|^s$|update", params[0], re.I) or STEP_WORD.search(unit_text) and not EPOCH_WORD.search(unit_text):
        sched.per_step = True
    for name in sorted(names):
        if WARMUP_WORD.search(name) and sched.warmup_len is None:
            sched.warmup_len = cst.parse_expression(name) if _is_dotted(name) else None
    for name in sorted(names):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in TOTAL_SETTINGS or re.search(r"^(total|num_training|max_train|max)_?(steps|iters)$", leaf):
            sched.total_len = cst.parse_expression(name) if _is_dotted(name) else None
            break


def _capped_ramp(index: UnitIndex, node, params: set[str], call: CallSite) -> bool:
    """``min(step / warmup, 1.0)`` (either order): a factor that grows with the step up to a constant cap."""
    if not (isinstance(node, cst.Call) and dotted(node.func) == "min" and len(node.args) == 2 and not any(a.star for a in node.args)):
        return False
    kinds = [_growth(index, a.value, params, call) for a in node.args]
    return "grow" in kinds and any(isinstance(k, tuple) for k in kinds)


def _growth(index: UnitIndex, node, params: set[str], call: CallSite, depth: int = 0):
    """'grow' when an expression keeps increasing with the step parameter without bound,
    ('const', value or None) when it does not depend on it, None when unknown."""
    if depth > 8 or node is None:
        return None
    value = _number_literal(node)
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
        op = node.operator
        const_a, const_b = isinstance(a, tuple), isinstance(b, tuple)
        va, vb = (a[1] if const_a else None), (b[1] if const_b else None)
        if const_a and const_b:
            if isinstance(op, cst.Power) and va is not None and va > 1 and (vb is None or vb > 0):
                return ("const", 2.0)  # c ** positive with c > 1: a base above 1
            try:
                if va is not None and vb is not None:
                    return ("const", {cst.Add: va + vb, cst.Subtract: va - vb, cst.Multiply: va * vb, cst.Divide: va / vb if vb else None, cst.Power: va ** vb}.get(type(op)))
            except (OverflowError, ZeroDivisionError, TypeError):
                return ("const", None)
            return ("const", None)
        if isinstance(op, cst.Multiply) and ((a == "grow" and const_b and (vb is None or vb > 0)) or (b == "grow" and const_a and (va is None or va > 0))):
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


def _has_decay_call(node) -> bool:
    return any(isinstance(n, cst.Call) and DECAY_CALLS.search(dotted(n.func) or "") for n in expression_nodes(node))


def _number_literal(node) -> float | None:
    value = literal(node)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _end_value(node) -> bool | None:
    """Where a decaying lambda ends: False at 0 (``0.5 * (1 + cos(pi * p))``, ``1 - p``,
    ``max(0.0, ...)``), True above a floor (``max(0.1, ...)``, ``0.1 + 0.9 * ...``), None unknown."""
    if isinstance(node, cst.Call):
        callee = dotted(node.func)
        args = [a.value for a in node.args if a.keyword is None]
        if callee in ("float", "int") and len(args) == 1:
            return _end_value(args[0])
        if callee == "max" and len(args) == 2:
            for value, other in ((_number_literal(args[0]), args[1]), (_number_literal(args[1]), args[0])):
                if value is not None:
                    return True if value > 0 else (_end_value(other) is True)
        return None
    if isinstance(node, cst.BinaryOperation):
        left, right = _number_literal(node.left), _number_literal(node.right)
        op = node.operator
        if isinstance(op, cst.Multiply):
            if left is not None and left > 0:
                return _end_value(node.right)
            if right is not None and right > 0:
                return _end_value(node.left)
            return None
        if isinstance(op, cst.Add):
            constant, other = (left, node.right) if left is not None else (right, node.left)
            if constant is None:
                return True if any(FLOOR_WORD.search(n) for n in names_in(node)) else None
            if constant == 1 and isinstance(other, cst.Call) and DECAY_CALLS.search(dotted(other.func) or "") and "cos" in dotted(other.func):
                return False  # 1 + cos(pi * progress): 0 at the end
            return True if constant > 0 else None
        if isinstance(op, cst.Subtract):
            return False if left == 1 and isinstance(node.right, (cst.Name, cst.Attribute)) else None
        if isinstance(op, (cst.Divide, cst.FloorDivide)) and isinstance(node.left, cst.BinaryOperation) and isinstance(node.left.operator, cst.Subtract):
            return False if right is None else None  # (total - step) / (total - warmup)
        return None
    return None


def _is_dotted(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", text))


def _resolve_part(index: UnitIndex, node, parent: Schedule, by_node: dict[int, Schedule]) -> Schedule | None:
    if isinstance(node, cst.Call):
        return by_node.get(id(node))
    name = dotted(node)
    for assign in assignments_of(index, name, parent.function, parent.line):
        if assign.call is not None and id(assign.call.node) in by_node:
            return by_node[id(assign.call.node)]
    return None


def _combine(index: UnitIndex, sched: Schedule) -> None:
    parts = sched.parts
    if not parts:
        return
    sched.warmup = True if any(p.warmup for p in parts) else (False if all(p.warmup is False for p in parts) else None)
    sched.decay = True if any(p.decay for p in parts) else (False if all(p.decay is False for p in parts) else None)
    decays = [p for p in parts if p.decay]
    sched.floor = None
    if decays:
        floors = [p.floor for p in decays]
        sched.floor = True if any(floors) else (False if all(f is False for f in floors) else None)
    units = {p.per_step for p in parts if p.per_step is not None}
    sched.per_step = units.pop() if len(units) == 1 else None
    warm = next((p for p in parts if p.warmup), None)
    if warm is not None and sched.site is not None:
        milestones = sched.site.kwarg("milestones")
        first = milestones.elements[0].value if isinstance(milestones, cst.List) and milestones.elements else None
        sched.warmup_len = first if first is not None else warm.warmup_len
        if sched.per_step is None and first is not None:
            sched.per_step = _length_unit(index, first, sched.site)
        tail = next((p for p in decays), None)
        if tail is not None and tail.total_len is not None and sched.warmup_len is not None:
            sched.total_len = cst.BinaryOperation(sched.warmup_len, cst.Add(), tail.total_len)


def _kwargs_mention(call: CallSite, name: str) -> bool:
    return any(name in code_of(a.value) or (a.keyword is not None and a.keyword.value == name) for a in call.node.args)


def _string_value(index: UnitIndex, node, call: CallSite) -> str | None:
    value = literal(node)
    if isinstance(value, str):
        return value
    name = dotted(node)
    if not name:
        return None
    local = assignments_of(index, name, call.function, call.line)
    if local:
        values = {literal(a.value) for a in local}
        return values.pop() if len(values) == 1 and isinstance(next(iter(values), None), str) else None
    leaf = name.rsplit(".", 1)[-1]
    found = configured(index, (leaf,), lambda s: s.value if isinstance(s.value, str) else None)
    return found.value


# --- numbers: warm-up length against run length -------------------------------------
@dataclass(frozen=True)
class Quantity:
    """``coef * product(atoms)``: unknown atoms (``len(train_dataloader)``) cancel in ratios."""

    coef: float
    atoms: tuple[tuple[str, int], ...] = ()

    def times(self, other: "Quantity", sign: int = 1) -> "Quantity":
        counts = Counter(dict(self.atoms))
        for atom, power in other.atoms:
            counts[atom] += sign * power
        atoms = tuple(sorted((a, p) for a, p in counts.items() if p))
        coef = self.coef * other.coef if sign > 0 else (self.coef / other.coef if other.coef else math.inf)
        return Quantity(coef, atoms)


def _number(index: UnitIndex, node, call: CallSite | None) -> float | None:
    q = _quantity(index, node, call.function if call else None, call.line if call else None)
    return q.coef if q is not None and not q.atoms else None


def _quantity(index: UnitIndex, node, function, line, depth: int = 0) -> Quantity | None:
    if node is None or depth > 8:
        return None
    value = literal(node)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return Quantity(float(value))
    if isinstance(node, (cst.Name, cst.Attribute)):
        return _name_quantity(index, dotted(node), function, line, depth)
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        inner = _quantity(index, node.expression, function, line, depth + 1)
        return Quantity(-inner.coef, inner.atoms) if inner else None
    if isinstance(node, cst.BinaryOperation):
        left = _quantity(index, node.left, function, line, depth + 1)
        right = _quantity(index, node.right, function, line, depth + 1)
        if left is None or right is None:
            return None
        op = node.operator
        if isinstance(op, (cst.Add, cst.Subtract)):
            if left.atoms != right.atoms:
                return None
            return Quantity(left.coef + right.coef if isinstance(op, cst.Add) else left.coef - right.coef, left.atoms)
        if isinstance(op, cst.Multiply):
            return left.times(right)
        if isinstance(op, (cst.Divide, cst.FloorDivide)):
            return left.times(right, -1)
        return None
    if isinstance(node, cst.Call):
        callee = dotted(node.func)
        args = [a.value for a in node.args if a.keyword is None]
        if callee in ("int", "float", "round", "math.ceil", "math.floor", "ceil", "floor") and len(args) == 1:
            return _quantity(index, args[0], function, line, depth + 1)
        if callee in ("min", "max") and len(args) == 2:
            a, b = (_quantity(index, x, function, line, depth + 1) for x in args)
            if a is not None and b is not None and not a.atoms and not b.atoms:
                return Quantity(min(a.coef, b.coef) if callee == "min" else max(a.coef, b.coef))
            return None
        if callee == "len" and len(args) == 1:
            return Quantity(1.0, ((code_of(node), 1),))
        return None
    return None


def _name_quantity(index: UnitIndex, name: str, function, line, depth: int) -> Quantity | None:
    if not name:
        return None
    local = assignments_of(index, name, function, line)
    if local:
        values = [_quantity(index, a.value, a.function, a.line, depth + 1) for a in local]
        if values and all(v is not None and v == values[0] for v in values):
            return values[0]
        return Quantity(1.0, ((name, 1),)) if not name.startswith("self.") else None
    leaf = name.rsplit(".", 1)[-1]
    if NEUTRAL_FACTOR.search(name):
        return Quantity(1.0, ((leaf, 1),))
    value = _setting_number(index, leaf)
    if value is not None:
        return Quantity(float(value))
    return Quantity(1.0, ((name, 1),)) if "." not in name else None


def _setting_number(index: UnitIndex, leaf: str) -> float | None:
    """A run-time number the trainer configures once (dataclass/argparse/config default), unless
    the code also reassigns it to something computed (``args.max_train_steps = epochs * len(dl)``)."""
    for setting in index.setting(leaf):
        if setting.kind == "assign" and not setting.known and not _plain_alias(index, setting):
            return None
    found = configured(index, (leaf,), lambda s: repr(float(s.value)) if isinstance(s.value, (int, float)) and not isinstance(s.value, bool) else None)
    return float(found.value) if found.value is not None else None


def _plain_alias(index: UnitIndex, setting) -> bool:
    """``warmup_steps = config.warmup_steps``: the same value under the same name."""
    for assign in index.assigns:
        if assign.path == setting.path and assign.line == setting.line:
            return dotted(assign.value).rsplit(".", 1)[-1] == setting.name
    return False


def warmup_fraction(index: UnitIndex, sched: Schedule) -> tuple[float, float, float] | None:
    """(warm-up steps, total steps, fraction) when both are known statically."""
    if not sched.warmup or sched.warmup_len is None or sched.kind == "OneCycleLR":
        return None
    fn, line = sched.function, sched.line
    warm = _quantity(index, sched.warmup_len, fn, line)
    total = _quantity(index, sched.total_len, fn, line) if sched.total_len is not None else None
    if total is None:
        for name in TOTAL_SETTINGS:
            value = _setting_number(index, name)
            if value is not None and value > 0:
                total = Quantity(value)
                break
    if warm is None or total is None or warm.atoms != total.atoms or total.coef <= 0 or warm.coef <= 0:
        return None
    return warm.coef, total.coef, warm.coef / total.coef


# --- where the optimizer and the schedule are stepped ---------------------------------
def optimizer_anchor(index: UnitIndex) -> Hit | None:
    pats = tuple(p for p in ROLE_CONSTRUCTORS["optimizer"] if p != "*.configure_optimizers")
    constructors = index.calls_to(*pats)
    if constructors:
        return Hit.at(constructors[0])
    steps = optimizer_steps(index)
    if steps:
        return Hit.at(steps[0])
    fn = (index.functions_named("configure_optimizers") or index.functions_named("training_step") or [None])[0]
    return Hit(fn.path, fn.line, 1) if fn else None


def schedules_of(index: UnitIndex, facts: ScheduleFacts, receiver: str) -> list[Schedule]:
    """The schedules a scheduler variable holds (through ``accelerator.prepare`` and local factories)."""
    found: list[Schedule] = []
    seen: set[str] = set()

    def visit(name: str, depth: int) -> None:
        if depth > 5 or name in seen:
            return
        seen.add(name)
        leaf = name.rsplit(".", 1)[-1]
        for assign in index.assigns:
            if assign.target != name and not (name.startswith("self.") and assign.target.startswith("self.") and assign.target.rsplit(".", 1)[-1] == leaf):
                continue
            if assign.source:
                visit(assign.source, depth + 1)
            elif assign.call is not None:
                direct = [s for s in facts.schedules if s.site is assign.call]
                if direct:
                    found.extend(direct)
                    continue
                callee = assign.call.method or assign.call.func_text
                fns = [f for f in index.functions if f.name == callee]
                for fn in fns:
                    inside = [s for s in facts.top if s.function == fn]
                    found.extend(inside)
            elif dotted(assign.value):
                visit(dotted(assign.value), depth + 1)

    visit(receiver, 0)
    return list(dict.fromkeys(found))


def _calls_into(index: UnitIndex, caller: FunctionInfo | None, target: FunctionInfo) -> list[CallSite]:
    return [c for c in index.calls_in(caller) if c.function == caller and (c.method or c.func_text) == target.name]


def step_is_per_epoch(index: UnitIndex, sched_step: CallSite) -> CallSite | None:
    """The optimizer step that runs in a loop the schedule step sits outside of, if any."""
    outer = sched_step.loops
    for opt in optimizer_steps(index):
        if opt.function == sched_step.function:
            chains = [(opt.loops, opt)]
        else:
            chains = [(c.loops + opt.loops, c) for c in _calls_into(index, sched_step.function, opt.function)] if opt.function else []
        for chain, _ in chains:
            if len(chain) > len(outer) and chain[: len(outer)] == outer and (outer or sched_step.function is not None):
                if exclusive(sched_step, opt):
                    continue
                if not outer and sched_step.function is not None and opt.function == sched_step.function and sched_step.line < opt.line:
                    continue
                return opt
    return None


# --- rules --------------------------------------------------------------------------
class NoSchedule(Rule):
    code = "LR001"
    severity = Severity.MISSING
    title = "learning rate warms up and decays"
    message = "the learning rate is constant (no warm-up, no decay): a warm-up steadies the first updates and a decay lets training converge"
    explain = """
    A constant learning rate makes the first Adam updates of a random network large and noisy and keeps the
    last ones bouncing around the optimum. Warm up linearly over a few hundred to a few thousand optimizer
    steps (at most ~10% of the run), then decay (cosine) to about 1% of the base rate, stepping the schedule
    once per optimizer step: `get_scheduler("cosine", optimizer, num_warmup_steps=..., num_training_steps=...)`
    (diffusers/transformers) or `SequentialLR([LinearLR(...), CosineAnnealingLR(..., eta_min=0.01 * lr)])`.
    DiT and lucidrains' trainers train at a constant rate; diffusers' examples default to `constant`.
    """
    VALID = [
        "import torch\nfrom diffusers.optimization import get_scheduler\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\nsched = get_scheduler('cosine', optimizer=opt, num_warmup_steps=500, num_training_steps=50000)\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    sched.step()\n",
        # improved-diffusion: a hand-written linear anneal
        "import torch\nclass TrainLoop:\n    def __init__(self, model, lr, lr_anneal_steps=0):\n        self.lr = lr\n        self.lr_anneal_steps = lr_anneal_steps\n        self.opt = torch.optim.AdamW(model.parameters(), lr=lr)\n    def _anneal_lr(self):\n        frac_done = self.step / self.lr_anneal_steps\n        lr = self.lr * (1 - frac_done)\n        for param_group in self.opt.param_groups:\n            param_group['lr'] = lr\n    def run_step(self, batch):\n        self.model(batch).backward()\n        self._anneal_lr()\n        self.opt.step()\n",
        # Lightning
        "import torch\nimport lightning as L\nclass Lit(L.LightningModule):\n    def training_step(self, batch, i):\n        return self.model(batch)\n    def configure_optimizers(self):\n        opt = torch.optim.AdamW(self.parameters(), lr=1e-4)\n        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-4, total_steps=self.trainer.estimated_stepping_batches)\n        return {'optimizer': opt, 'lr_scheduler': {'scheduler': sched, 'interval': 'step'}}\n",
    ]
    INVALID = [
        # DiT: constant learning rate
        "import torch\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)\nfor epoch in range(epochs):\n    for x, y in loader:\n        loss = model(x, y)\n        opt.zero_grad()\n        loss.backward()\n        opt.step()\n",
        # diffusers example: the selected schedule is `constant`
        "import argparse, torch\nfrom diffusers.optimization import get_scheduler\np = argparse.ArgumentParser()\np.add_argument('--lr_scheduler', type=str, default='constant')\np.add_argument('--lr_warmup_steps', type=int, default=500)\nargs = p.parse_args()\nopt = torch.optim.AdamW(unet.parameters(), lr=1e-5)\nlr_scheduler = get_scheduler(args.lr_scheduler, optimizer=opt, num_warmup_steps=args.lr_warmup_steps, num_training_steps=1000)\nfor batch in loader:\n    loss(batch).backward()\n    opt.step()\n    lr_scheduler.step()\n",
        # lucidrains-style trainer: Adam, no scheduler
        "from torch.optim import Adam\nclass Trainer:\n    def __init__(self, diffusion_model, train_lr=1e-4):\n        self.opt = Adam(diffusion_model.parameters(), lr=train_lr, betas=(0.9, 0.99))\n    def train(self):\n        while self.step < self.train_num_steps:\n            loss = self.model(next(self.dl))\n            self.accelerator.backward(loss)\n            self.opt.step()\n            self.opt.zero_grad()\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        # A LightningModule whose configure_optimizers is inherited from elsewhere: nothing to judge here.
        pats = tuple(p for p in ROLE_CONSTRUCTORS["optimizer"] if p != "*.configure_optimizers")
        return trains(index) and bool(optimizer_steps(index) or index.functions_named("configure_optimizers") or index.calls_to(*pats))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = schedule_facts(index)
        if facts.present:
            return
        anchor = optimizer_anchor(index)
        if anchor is None:
            return
        constant = next((s for s in facts.top if s.constant), None)
        if constant is not None:
            yield Hit(constant.path, constant.line, constant.col, "the learning-rate schedule is `constant` (no warm-up, no decay): a warm-up steadies the first updates and a decay lets training converge")
        else:
            yield anchor


class _WithSchedule(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return trains(index) and schedule_facts(index).present


class NoDecay(_WithSchedule):
    code = "LR002"
    severity = Severity.MISSING
    title = "learning rate decays after the warm-up"
    message = "the learning rate warms up and then stays constant: decaying it (cosine to ~1% of the base rate) lets training converge"
    explain = """
    A warm-up alone (`constant_with_warmup`, a `LinearLR` warm-up without a following decay, a lambda that
    only ramps up) leaves the rest of the run at the peak learning rate, so the weights keep bouncing around
    the optimum. Follow the warm-up with a cosine decay to about 1% of the base rate: `get_scheduler("cosine", ...)`,
    or `SequentialLR([LinearLR(...), CosineAnnealingLR(..., eta_min=0.01 * lr)], milestones=[warmup])`.
    """
    VALID = [
        "import torch\nfrom torch.optim.lr_scheduler import LinearLR, CosineAnnealingLR, SequentialLR\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\nwarm = LinearLR(opt, start_factor=0.001, total_iters=warmup_steps)\ncos = CosineAnnealingLR(opt, T_max=total_steps - warmup_steps, eta_min=1e-6)\nsched = SequentialLR(opt, schedulers=[warm, cos], milestones=[warmup_steps])\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    sched.step()\n",
    ]
    INVALID = [
        "import torch\nfrom transformers import get_constant_schedule_with_warmup\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\nsched = get_constant_schedule_with_warmup(opt, num_warmup_steps=500)\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    sched.step()\n",
        "import torch\nfrom diffusers.optimization import get_scheduler\nopt = torch.optim.AdamW(unet.parameters(), lr=1e-5)\nlr_scheduler = get_scheduler('constant_with_warmup', optimizer=opt, num_warmup_steps=500)\nfor batch in loader:\n    accelerator.backward(loss(batch))\n    opt.step()\n    lr_scheduler.step()\n",
        "import torch\nfrom torch.optim.lr_scheduler import LambdaLR\nopt = torch.optim.Adam(model.parameters(), lr=2e-4)\nsched = LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup_steps))\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    sched.step()\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        top = [s for s in schedule_facts(index).top if not s.constant]
        if top and all(s.decay is False and not s.unbounded for s in top) and any(s.warmup for s in top):
            s = next(s for s in top if s.warmup)
            yield Hit(s.path, s.line, s.col)


class DecaysToZero(_WithSchedule):
    code = "LR003"
    severity = Severity.INFO
    title = "learning rate decays to a floor, not to zero"
    message = "the learning rate decays all the way to 0, so the final steps make almost no progress; the plan keeps a floor of ~1% of the base rate (eta_min / min_lr / a floor in the lambda)"
    explain = """
    Cosine and linear schedules that end at 0 (`get_scheduler("cosine")`, `get_cosine_schedule_with_warmup`,
    `CosineAnnealingLR` without `eta_min`, a lambda clamped with `max(0.0, ...)`) spend their last steps at a
    learning rate too small to change the weights. The plan keeps a floor of ~1% of the base rate:
    `CosineAnnealingLR(..., eta_min=0.01 * lr)`, transformers' `cosine_with_min_lr`, or
    `max(0.01, 0.5 * (1 + cos(pi * progress)))` in a LambdaLR. This is a tuning suggestion, not a defect:
    decaying to zero is a common, valid choice.
    """
    VALID = NoDecay.VALID + [
        "import math, torch\nfrom torch.optim.lr_scheduler import LambdaLR\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\ndef lr_lambda(step):\n    if step < warmup_steps:\n        return (step + 1) / warmup_steps\n    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)\n    return max(0.01, 0.5 * (1.0 + math.cos(math.pi * progress)))\nsched = LambdaLR(opt, lr_lambda)\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    sched.step()\n",
    ]
    INVALID = [
        # the reference trainer's lambda: warm-up then cosine clamped at 0
        "import math, torch\nfrom torch.optim.lr_scheduler import LambdaLR\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\ndef lr_lambda(step):\n    if step < warmup_steps:\n        return (step + 1) / warmup_steps\n    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)\n    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))\nsched = LambdaLR(opt, lr_lambda)\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    sched.step()\n",
        "import torch\nfrom diffusers.optimization import get_scheduler\nopt = torch.optim.AdamW(unet.parameters(), lr=1e-4)\nlr_scheduler = get_scheduler('cosine', optimizer=opt, num_warmup_steps=500, num_training_steps=100000)\nfor batch in loader:\n    accelerator.backward(loss(batch))\n    opt.step()\n    lr_scheduler.step()\n",
        "import torch\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\nsched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=num_steps)\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    sched.step()\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        top = [s for s in schedule_facts(index).top if not s.constant]
        decays = [s for s in top if s.decay]
        if decays and all(s.floor is False for s in decays) and not any(s.decay is None for s in top):
            s = decays[0]
            yield Hit(s.path, s.line, s.col)


class WarmupTooLong(_WithSchedule):
    code = "LR004"
    severity = Severity.BUG
    title = "warm-up at most 10% of training"
    message = "the warm-up takes more than 10% of the run, so a large part of training happens below the target learning rate"
    explain = """
    Warm-up only has to carry Adam's moment estimates past their first noisy steps; a few hundred to a few
    thousand optimizer steps suffice. When it takes more than ~10% of the run (500 of 2,000 steps, say),
    much of the budget trains at a reduced rate and the decay is squeezed into the rest. The plan caps it:
    `warmup_steps = min(warmup_steps, total_steps // 10)`. Reported only when both lengths are known
    statically (literals, config and argparse defaults); a length computed from `len(dataloader)` is not judged.
    """
    VALID = [
        "import torch\nfrom diffusers.optimization import get_scheduler\nopt = torch.optim.AdamW(unet.parameters(), lr=1e-4)\nlr_scheduler = get_scheduler('cosine', optimizer=opt, num_warmup_steps=500, num_training_steps=50000)\nfor batch in loader:\n    loss(batch).backward()\n    opt.step()\n    lr_scheduler.step()\n",
        # total computed from the dataloader: unknown statically, no claim
        "import torch\nfrom transformers import get_cosine_schedule_with_warmup\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\ntotal = num_epochs * len(train_dataloader)\nsched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=2000, num_training_steps=total)\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    sched.step()\n",
    ]
    INVALID = [
        "import argparse, torch\nfrom diffusers.optimization import get_scheduler\np = argparse.ArgumentParser()\np.add_argument('--max_train_steps', type=int, default=2000)\np.add_argument('--lr_warmup_steps', type=int, default=500)\nargs = p.parse_args()\nopt = torch.optim.AdamW(unet.parameters(), lr=1e-5)\nlr_scheduler = get_scheduler('cosine', optimizer=opt, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes, num_training_steps=args.max_train_steps * accelerator.num_processes)\nfor batch in loader:\n    accelerator.backward(loss(batch))\n    opt.step()\n    lr_scheduler.step()\n",
        {
            "train.py": "import math, torch\nfrom torch.optim.lr_scheduler import LinearLR, CosineAnnealingLR, SequentialLR\nfrom config import TrainConfig\ncfg = TrainConfig()\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\nwarm = LinearLR(opt, start_factor=0.001, total_iters=cfg.warmup_steps)\ncos = CosineAnnealingLR(opt, T_max=cfg.max_steps - cfg.warmup_steps, eta_min=1e-6)\nsched = SequentialLR(opt, [warm, cos], milestones=[cfg.warmup_steps])\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    opt.step()\n    sched.step()\n",
            "config.py": "from dataclasses import dataclass\n@dataclass\nclass TrainConfig:\n    warmup_steps: int = 2000\n    max_steps: int = 10000\n",
        },
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for sched in schedule_facts(index).top:
            measured = warmup_fraction(index, sched)
            if measured is not None and measured[2] > 0.1:
                warm, total, fraction = measured
                yield Hit(sched.path, sched.line, sched.col, f"the warm-up takes {warm:,.0f} of {total:,.0f} optimizer steps ({fraction:.0%} of the run, more than 10%): most of the budget trains below the target learning rate")


class PerStepScheduleSteppedPerEpoch(_WithSchedule):
    code = "LR005"
    severity = Severity.BUG
    title = "per-step schedule advanced once per optimizer step"
    message = "a schedule written in optimizer steps is advanced once per epoch, so its warm-up and decay take far longer than planned (the run may never leave the warm-up)"
    explain = """
    `get_scheduler`, `get_cosine_schedule_with_warmup`, `OneCycleLR`, a `LinearLR` warm-up of `warmup_steps`
    iterations or a LambdaLR over steps count optimizer steps. Calling `lr_scheduler.step()` in the epoch loop
    (outside the batch loop) advances it once per epoch: a 500-step warm-up then lasts 500 epochs. In Lightning,
    `configure_optimizers` must return `{"scheduler": s, "interval": "step"}` for such schedules (the default
    interval is "epoch"). Per-epoch schedules (`StepLR`, `CosineAnnealingLR(T_max=epochs)`) stepped per epoch are fine.
    """
    VALID = [
        "import torch\nfrom transformers import get_cosine_schedule_with_warmup\nsched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=500, num_training_steps=total_steps)\nfor epoch in range(epochs):\n    for x in loader:\n        loss(x).backward()\n        opt.step()\n        sched.step()\n",
        "import torch\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\nsched = torch.optim.lr_scheduler.StepLR(opt, step_size=30)\nfor epoch in range(epochs):\n    for x in loader:\n        loss(x).backward()\n        opt.step()\n    sched.step()\n",
    ]
    INVALID = [
        "import torch\nfrom transformers import get_cosine_schedule_with_warmup\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\nsched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=500, num_training_steps=total_steps)\nfor epoch in range(epochs):\n    for x in loader:\n        loss(x).backward()\n        opt.step()\n        opt.zero_grad()\n    sched.step()\n",
        # the step lives in train_step(), the schedule is stepped in the epoch loop of train()
        "import torch\nfrom torch.optim.lr_scheduler import LinearLR, CosineAnnealingLR, SequentialLR\nclass Trainer:\n    def __init__(self, model):\n        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)\n        warm = LinearLR(self.optimizer, start_factor=0.001, total_iters=self.warmup_steps)\n        cos = CosineAnnealingLR(self.optimizer, T_max=self.total_steps, eta_min=1e-6)\n        self.lr_scheduler = SequentialLR(self.optimizer, [warm, cos], milestones=[self.warmup_steps])\n    def train_step(self, batch):\n        self.model(batch).backward()\n        self.optimizer.step()\n    def train(self):\n        for epoch in range(self.epochs):\n            for batch in self.loader:\n                self.train_step(batch)\n            self.lr_scheduler.step()\n",
        # Lightning: the default interval is "epoch"
        "import torch\nimport pytorch_lightning as pl\nfrom transformers import get_cosine_schedule_with_warmup\nclass Lit(pl.LightningModule):\n    def training_step(self, batch, i):\n        return self.model(batch)\n    def configure_optimizers(self):\n        opt = torch.optim.AdamW(self.parameters(), lr=1e-4)\n        sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=500, num_training_steps=10000)\n        return [opt], [sched]\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = schedule_facts(index)
        for step in lr_scheduler_steps(index):
            schedules = schedules_of(index, facts, step.receiver)
            if not schedules or not all(s.per_step for s in schedules):
                continue
            opt = step_is_per_epoch(index, step)
            if opt is not None:
                yield Hit.at(step, f"`{step.func_text}()` advances a schedule written in optimizer steps once per epoch (outside the loop of `{opt.func_text}()` at line {opt.line}): its warm-up and decay stretch over epochs")
        yield from self._lightning(index, facts)

    def _lightning(self, index: UnitIndex, facts: ScheduleFacts) -> Iterable[Hit]:
        if any(a.target.endswith(LIGHTNING_MANUAL) and literal(a.value) is False for a in index.assigns):
            return
        for fn in index.functions_named("configure_optimizers"):
            inside = [s for s in facts.top if s.function == fn and s.kind not in ("manual", "helper")]
            if not inside or not all(s.per_step for s in inside):
                continue
            intervals = [s for s in index.setting("interval") if s.path == fn.path and fn.line <= s.line <= fn.end_line]
            if any(s.value != "epoch" for s in intervals):
                continue
            where = intervals[0] if intervals else inside[0]
            why = "`interval` is \"epoch\"" if intervals else "no `interval` given, and Lightning's default is \"epoch\""
            yield Hit(where.path, where.line, where.col, f"Lightning steps this schedule once per epoch ({why}) although it counts optimizer steps: return {{\"scheduler\": ..., \"interval\": \"step\"}}")


class SchedulerBeforeOptimizer(_WithSchedule):
    code = "LR006"
    severity = Severity.BUG
    title = "lr_scheduler.step() after optimizer.step()"
    message = "the learning-rate schedule is stepped before optimizer.step(), so the first value of the schedule (the start of the warm-up) is skipped; PyTorch warns about it"
    explain = """
    Since PyTorch 1.1 the order is `optimizer.step()` then `lr_scheduler.step()`. Stepping the schedule first
    moves it to its second value before any update, skipping the first learning rate (and shifting the whole
    schedule by one step, or one epoch for epoch-level schedules stepped at the start of the epoch).
    """
    VALID = [
        "import torch\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    lr_scheduler.step()\n    optimizer.zero_grad()\n",
    ]
    INVALID = [
        "import torch\nfor x in data:\n    loss(x).backward()\n    lr_scheduler.step()\n    optimizer.step()\n",
        "import torch\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\nscheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=30)\nfor epoch in range(epochs):\n    scheduler.step()\n    for x in loader:\n        loss(x).backward()\n        opt.step()\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        return bool(lr_scheduler_steps(index)) and bool(optimizer_steps(index))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        steps = optimizer_steps(index)
        for sched in lr_scheduler_steps(index):
            if sched.node.args:
                continue  # step(epoch) / step(metric): an explicit position or a plateau metric
            for opt in steps:
                if opt.path != sched.path or opt.function != sched.function or exclusive(opt, sched):
                    continue
                if opt.loops[: len(sched.loops)] != sched.loops:
                    continue
                if (sched.line, sched.col) < (opt.line, opt.col):
                    earlier = [o for o in steps if o.function == sched.function and (o.line, o.col) < (sched.line, sched.col) and o.loops == sched.loops]
                    if not earlier:
                        yield Hit.at(sched, f"`{sched.func_text}()` runs before `{opt.func_text}()` (line {opt.line}): the schedule skips its first value")
                        break


class NoWarmup(_WithSchedule):
    code = "LR007"
    severity = Severity.MISSING
    title = "learning rate warms up before it decays"
    message = "the learning rate decays but never warms up: the first Adam updates of a freshly initialised network run at the full rate, which is when training is least stable"
    explain = """
    Adam's second-moment estimate is unreliable for the first few hundred steps, so full-size updates on a
    random network can push it into a bad region (loss spikes, dead attention heads). A linear warm-up over a
    few hundred to a few thousand optimizer steps (at most ~10% of the run) avoids that at no cost:
    `get_scheduler("cosine", optimizer, num_warmup_steps=1000, ...)`, a `LinearLR` warm-up in a `SequentialLR`,
    or a `min(1, step / warmup)` factor in front of a hand-written anneal (improved-diffusion's `_anneal_lr`).
    """
    VALID = DecaysToZero.VALID
    INVALID = [
        "import torch\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\nsched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=1e-6)\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    opt.step()\n    sched.step()\n",
        # improved-diffusion's linear anneal (turned on by image_train.py's defaults), no warm-up
        "import torch\ndefaults = dict(lr=1e-4, lr_anneal_steps=300000)\nclass TrainLoop:\n    def __init__(self, model, lr, lr_anneal_steps=0):\n        self.lr = lr\n        self.lr_anneal_steps = lr_anneal_steps\n        self.opt = torch.optim.AdamW(model.parameters(), lr=lr)\n    def _anneal_lr(self):\n        if not self.lr_anneal_steps:\n            return\n        frac_done = (self.step + self.resume_step) / self.lr_anneal_steps\n        lr = self.lr * (1 - frac_done)\n        for param_group in self.opt.param_groups:\n            param_group['lr'] = lr\n    def run_step(self, batch):\n        loss = self.model(batch)\n        loss.backward()\n        self._anneal_lr()\n        self.opt.step()\n",
        "import torch\nfrom diffusers.optimization import get_scheduler\nopt = torch.optim.AdamW(unet.parameters(), lr=1e-4)\nlr_scheduler = get_scheduler('cosine', optimizer=opt, num_warmup_steps=0, num_training_steps=10000)\nfor batch in loader:\n    loss = unet(batch)\n    loss.backward()\n    opt.step()\n    lr_scheduler.step()\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        top = [s for s in schedule_facts(index).top if not s.constant]
        if top and all(s.warmup is False for s in top) and any(s.decay for s in top):
            s = next(s for s in top if s.decay)
            yield Hit(s.path, s.line, s.col)


class WarmupNeverEnds(_WithSchedule):
    code = "LR008"
    severity = Severity.BUG
    title = "warm-up factor capped"
    message = "the learning-rate factor keeps growing with the step count and nothing caps it: the warm-up never ends and the learning rate explodes"
    explain = """
    A warm-up lambda must stop growing at the base rate: `min(1.0, (step + 1) / warmup_steps)`, or an
    `if step < warmup_steps:` branch. Without the cap (`lambda step: step / warmup_steps`,
    `lambda step: 1e-3 * growth ** step`) the multiplier passes 1 at the end of the warm-up and keeps
    climbing, so the loss diverges a few hundred steps later.
    """
    VALID = NoDecay.INVALID[2:] + [
        "import torch\nfrom torch.optim.lr_scheduler import LambdaLR\nopt = torch.optim.SGD(model.parameters(), lr=0.02)\nsched = LambdaLR(opt, lambda epoch: 0.95 ** epoch)\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    opt.step()\n    sched.step()\n",
    ]
    INVALID = [
        "import torch\nfrom torch.optim.lr_scheduler import LambdaLR\nopt = torch.optim.SGD(model.parameters(), lr=0.02)\nwarmup_steps = 100\ngrowth = 1000.0 ** (1.0 / warmup_steps)\nsched = LambdaLR(opt, lr_lambda=lambda step: 1e-3 * growth ** step)\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    opt.step()\n    sched.step()\n",
        "import torch\nfrom torch.optim.lr_scheduler import LambdaLR\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4)\nsched = LambdaLR(opt, lambda step: (step + 1) / warmup_steps)\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    opt.step()\n    sched.step()\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for s in schedule_facts(index).top:
            if s.unbounded:
                yield Hit(s.path, s.line, s.col, f"the learning-rate factor `{code_of(s.unbounded_expr).strip()}` keeps growing with the step count and nothing caps it (min(1.0, ...)): the warm-up never ends and the learning rate explodes")


# --- fix -----------------------------------------------------------------------------
PLAN_WARMUP_STEPS = 2000  # the plan's warm-up; the code caps it at 10% of the run
MIN_LR_WHY = "the learning rate decays to this fraction of its base value, not to 0"
WARMUP_WHY = "linear learning-rate warm-up, capped at 10% of the optimizer steps"
MIN_LR_HELPER = "get_cosine_with_min_lr_schedule_with_warmup"
TOTAL_NAME = re.compile(r"^(total|num_training|max_train|train|max|num_train)_?(steps|iters|iterations)$|^total_steps$|^num_steps$", re.I)
EPOCH_SETTINGS = ("num_epochs", "epochs", "num_train_epochs", "max_epochs", "n_epochs")
ACCUMULATION_SETTINGS = ("gradient_accumulation_steps", "grad_accum_steps", "accumulation_steps", "gradient_accumulate_every", "accum_steps")
DATALOADER = ("torch.utils.data.DataLoader", "*.DataLoader")


class LRScheduleFix(Fix):
    """Bring the learning-rate schedule to the plan: a linear warm-up of at most 10% of the run
    (the plan's 2000 steps, capped at ``total // 10``), a cosine decay to a floor of 1% of the base
    rate, advanced once per optimizer step, after ``optimizer.step()``.

    - ``get_scheduler(args.lr_scheduler, ...)`` (diffusers/transformers): the warm-up argument is
      capped (``min(args.lr_warmup_steps, args.max_train_steps // 10) * accelerator.num_processes``);
      the floor comes from transformers' ``get_cosine_with_min_lr_schedule_with_warmup``, chosen by a
      new default ``--lr_scheduler cosine_with_min_lr`` so the flag keeps working (refused, with the
      patch, when the installed transformers lacks it);
    - a ``LambdaLR`` over a local warm-up/cosine function (the reference trainer): its decaying return
      gets the floor (``min_lr_ratio + (1 - min_lr_ratio) * cosine``), its warm-up the 10% cap against
      the total the factory computes, and the warm-up setting the plan's 2000;
    - ``CosineAnnealingLR`` gets ``eta_min=min_lr_ratio * lr``, and a ``LinearLR`` warm-up in a
      ``SequentialLR`` when it has none;
    - no schedule at all: a ``SequentialLR`` (``LinearLR`` + ``CosineAnnealingLR``) over the real total
      (epochs x optimizer steps per epoch from ``len(dataloader)`` and the accumulation), stepped after
      each optimizer step and saved/restored beside the optimizer in the checkpoint dict;
    - ``scheduler.step()`` before ``optimizer.step()`` moves after it (LR006); a per-step schedule
      stepped in the epoch loop moves after the optimizer step in the batch loop, and Lightning's
      ``"interval": "epoch"`` becomes ``"step"`` (LR005).
    """

    codes = ("LR001", "LR002", "LR003", "LR004", "LR005", "LR006", "LR007")

    def apply(self, ctx: FixContext, findings: list) -> None:
        index = ctx.index
        edits = Edits(ctx)
        facts = schedule_facts(index)
        wanted: dict[int, tuple[Schedule, set[str]]] = {}
        for finding in findings:
            where = (finding.location.path, finding.location.line, finding.location.col)
            if finding.code in ("LR005", "LR006"):
                self._reorder(index, edits, finding.code, where)
                continue
            sched = next((s for s in facts.top if (s.path, s.line, s.col) == where), None)
            if sched is None and finding.code == "LR001":
                self._add_schedule(ctx, index, edits, where)
                continue
            if sched is None:
                raise CannotFix(where[0], where[1], "cannot find the schedule this finding names", "")
            wanted.setdefault(id(sched), (sched, set()))[1].add(finding.code)
        for sched, codes in wanted.values():
            if sched.kind == "get_scheduler" or sched.kind in HF_HELPER_NAMES:
                self._library_schedule(ctx, index, edits, sched, codes)
            elif sched.kind == "LambdaLR":
                self._lambda(ctx, index, edits, sched, codes)
            elif sched.kind == "CosineAnnealingLR":
                self._cosine_annealing(ctx, index, edits, sched, codes)
            else:
                what = {"manual": 'a hand-written schedule (param_group["lr"] = ...)', "helper": "a schedule built by a helper this fix cannot see into"}.get(sched.kind, f"a `{sched.kind}` schedule")
                raise CannotFix(sched.path, sched.line, f"no automatic rewrite for {what}", _manual_schedule_patch())
        edits.apply()

    # --- diffusers / transformers helpers -------------------------------------------
    def _library_schedule(self, ctx, index: UnitIndex, edits: Edits, sched: Schedule, codes: set[str]) -> None:
        call = sched.site
        module = edits.module(call.path)
        hf_getter = sched.kind == "get_scheduler"
        optimizer = call.arg(1, "optimizer") if hf_getter else call.arg(0, "optimizer")
        total = sched.total_len
        home = settings_home(index, call.function, _lr_node(index, optimizer))
        warmup = sched.warmup_len
        new_warmup = None
        if "LR007" in codes or "LR001" in codes and not sched.warmup:
            if total is None:
                raise CannotFix(call.path, call.line, "the schedule has no num_training_steps to cap a warm-up against", _manual_schedule_patch())
            setting = _warmup_setting(edits, index, home)
            new_warmup = _capped(module, expression(module, setting), total, new=True)
        elif "LR004" in codes or (warmup is not None and total is not None and not _is_capped(warmup)):
            new_warmup = _capped(module, warmup, total) if warmup is not None and total is not None else None
            _plan_warmup_default(ctx, edits, index, home, warmup)
        floor = bool(codes & {"LR001", "LR002", "LR003"})
        if not floor:
            if new_warmup is not None:
                edits.replace(call.path, warmup, new_warmup)
            return
        if not _transformers_has(MIN_LR_HELPER):
            raise CannotFix(call.path, call.line, f"the installed transformers has no {MIN_LR_HELPER} to decay to a floor (added in transformers 4.38)",
                            "pip install 'transformers>=4.38', or decay to a floor by hand:\n" + _manual_schedule_patch())
        if total is None:
            raise CannotFix(call.path, call.line, "the schedule has no num_training_steps to decay over", _manual_schedule_patch())
        ratio = ensure_setting(edits, index, home, "min_lr_ratio", "float", "0.01", MIN_LR_WHY) if home else "0.01"
        warm = new_warmup if new_warmup is not None else (warmup if warmup is not None else cst.Integer("0"))
        stmt = edits.tree(call.path).statement(call.node)
        assigned = _assignment_target(stmt, call.node)
        if assigned is None:
            raise CannotFix(call.path, call.line, "the schedule is not assigned to a name on a line of its own", _manual_schedule_patch())
        helper = (
            f"{assigned} = {MIN_LR_HELPER}(\n"
            f"    {code_of(optimizer).strip()},\n"
            f"    num_warmup_steps={code_of(warm).strip()},\n"
            f"    num_training_steps={code_of(total).strip()},\n"
            f"    min_lr_rate={ratio},\n"
            f")\n"
        )
        edits.add_import(call.path, "transformers.optimization", MIN_LR_HELPER)
        name = call.arg(0, "name")
        if _setting_read(index, name) is None:
            # A literal schedule name: the floored cosine replaces it.
            edits.replace(call.path, stmt, lambda node: statement(module, helper).with_changes(leading_lines=node.leading_lines))
            return
        # A --lr_scheduler flag (or config field): keep it working, make the floored cosine its default.
        selector_home = settings_home(index, call.function, name)
        if selector_home is None or not set_default(edits, index, selector_home, dotted(name).rsplit(".", 1)[-1], "cosine_with_min_lr"):
            raise CannotFix(call.path, call.line, f"cannot change the default of `{code_of(name).strip()}` to select a floored cosine",
                            f'{code_of(name).strip()} default: "cosine_with_min_lr"\n' + _manual_schedule_patch())
        kept = call.node if new_warmup is None else _with_argument(call, 2, "num_warmup_steps", new_warmup)
        indented = "".join(f"    {line}\n" for line in helper.splitlines())
        branch = statement(
            module,
            f'if {code_of(name).strip()} == "cosine_with_min_lr":\n'
            f"    # cosine decay to a floor of min_lr_rate x the base rate (diffusers' get_scheduler has none)\n"
            f"{indented}"
            f"else:\n"
            f"    {assigned} = {{kept}}\n",
            kept=kept,
        )
        edits.replace(call.path, stmt, lambda node: branch.with_changes(leading_lines=node.leading_lines))
        ctx.note(f"--lr_scheduler now defaults to cosine_with_min_lr (transformers' {MIN_LR_HELPER}); the other names still select diffusers' schedules")

    # --- LambdaLR over a local function ---------------------------------------------------
    def _lambda(self, ctx, index: UnitIndex, edits: Edits, sched: Schedule, codes: set[str]) -> None:
        call = sched.site
        tree = edits.tree(call.path)
        target = _lambda_target(index, call.arg(1, "lr_lambda"), call)
        if target is None:
            raise CannotFix(call.path, call.line, "the LambdaLR's function is not defined here", _manual_schedule_patch())
        home = settings_home(index, call.function, _lr_node(index, call.arg(0, "optimizer")))
        if isinstance(target, cst.Lambda):
            bodies = [target.body]
            holder = tree.statement(call.node)
            fn_names = names_in(target.body)
        else:
            if call.function is None or not (call.function.line < target.line <= call.function.end_line):
                raise CannotFix(call.path, call.line, f"`{target.name}` is not defined inside the function that builds the schedule", _manual_schedule_patch())
            bodies = [r.value for r in index.returns if r.function == target]
            holder = tree.statement(next(n for n in tree.parent if isinstance(n, cst.FunctionDef) and n.name.value == target.name and tree.function(n) is tree.function(call.node)))
            fn_names = set().union(*[names_in(c.node) for c in index.calls_in(target)], *[names_in(a.value) | {a.target} for a in index.assigns if a.function == target], *[names_in(b) for b in bodies])
        if codes & {"LR002", "LR007", "LR001"}:
            raise CannotFix(call.path, call.line, "no automatic rewrite of a LambdaLR that lacks a warm-up or a decay", _manual_schedule_patch())
        if "LR003" in codes:
            self._floor_lambda(index, edits, call, bodies, holder, home, reword=isinstance(target, FunctionInfo))
        if not self._cap_lambda_warmup(ctx, index, edits, call, fn_names, home) and "LR004" in codes:
            raise CannotFix(call.path, call.line, "cannot find the warm-up length the LambdaLR reads, to cap it at 10% of the run", _manual_schedule_patch())

    def _floor_lambda(self, index: UnitIndex, edits: Edits, call: CallSite, bodies: list, holder, home, reword: bool) -> None:
        """The return that decays to 0 decays to ``min_lr_ratio`` instead."""
        module = edits.module(call.path)
        tree = edits.tree(call.path)
        to_zero = [b for b in bodies if _end_value(b) is False]
        if not to_zero:
            raise CannotFix(call.path, call.line, "cannot find the return that decays to 0", _manual_schedule_patch())
        function_node = tree.function(call.node)
        if function_node is not None and "min_lr_ratio" in names_in_node(function_node):
            raise CannotFix(call.path, call.line, "`min_lr_ratio` is already used in this function", _manual_schedule_patch())
        ratio_value = ensure_setting(edits, index, home, "min_lr_ratio", "float", "0.01", MIN_LR_WHY) if home else "0.01"
        for body in to_zero:
            edits.replace(call.path, body, lambda node: _floored(module, node, "min_lr_ratio"))
        why = "" if home else "  # decay to 1% of the base rate, not to 0"
        edits.insert_before(call.path, holder, [statement(module, f"min_lr_ratio = {ratio_value}{why}")])
        if reword and function_node is not None:
            _reword_docstring(edits, call.path, function_node)

    def _cap_lambda_warmup(self, ctx, index: UnitIndex, edits: Edits, call: CallSite, fn_names: set[str], home) -> bool:
        """``warmup_steps = <setting>`` read by the lambda becomes ``min(<setting>, total_steps // 10)``
        (the total the factory computes); False when there is no such pair of local lengths to prove it on."""
        local = [a for a in index.assigns if a.function == call.function and a.path == call.path and a.target in fn_names]
        warm = [a for a in local if WARMUP_WORD.search(a.target)]
        total = [a for a in local if TOTAL_NAME.search(a.target)]
        if len(warm) != 1 or len(total) != 1 or _is_capped(warm[0].value) or total[0].target in names_in(warm[0].value):
            return False
        tree = edits.tree(call.path)
        stmt = tree.statement(warm[0].value)
        module = edits.module(call.path)
        capped = _capped(module, warm[0].value, cst.Name(total[0].target))
        edits.replace(call.path, warm[0].value, capped)
        if isinstance(stmt, cst.SimpleStatementLine) and stmt.trailing_whitespace.comment is None:
            edits.replace(call.path, stmt, lambda node: node.with_changes(trailing_whitespace=cst.TrailingWhitespace(cst.SimpleWhitespace("  "), cst.Comment("# at most 10% of the run"))))
        _plan_warmup_default(ctx, edits, index, home, warm[0].value)
        return True

    # --- CosineAnnealingLR ------------------------------------------------------------------
    def _cosine_annealing(self, ctx, index: UnitIndex, edits: Edits, sched: Schedule, codes: set[str]) -> None:
        call = sched.site
        module = edits.module(call.path)
        optimizer = call.arg(0, "optimizer")
        home = settings_home(index, call.function, _lr_node(index, optimizer))
        ratio = ensure_setting(edits, index, home, "min_lr_ratio", "float", "0.01", MIN_LR_WHY) if home else "0.01"
        eta_min = expression(module, f"{ratio} * {_base_lr(index, code_of(optimizer).strip())}")
        if "LR007" not in codes:
            if call.kwarg("eta_min") is None and len(call.args) <= 2:
                edits.replace(call.path, call.node, lambda node: with_keyword(node, "eta_min", eta_min))
            return
        stmt = edits.tree(call.path).statement(call.node)
        assigned = _assignment_target(stmt, call.node)
        total = call.arg(1, "T_max")
        if assigned is None or total is None or sched.per_step is not True:
            raise CannotFix(call.path, call.line, "cannot prove the schedule counts optimizer steps to put a warm-up in front of it", _manual_schedule_patch())
        warmup = _warmup_setting(edits, index, home)
        opt = code_of(optimizer).strip()
        torch = module_name(edits, index, call.path, "torch")
        cosine = _with_argument(call, 1, "T_max", expression(module, f"max(1, {code_of(total).strip()} - warmup_steps)"))
        if call.kwarg("eta_min") is None and len(call.args) <= 2:
            cosine = with_keyword(cosine, "eta_min", eta_min)
        edits.replace(call.path, stmt, lambda node: _statements_with_lines(module, node, [
            f"warmup_steps = min({warmup}, {code_of(total).strip()} // 10)  # at most 10% of the run",
            _warmup_then(torch, assigned, opt, code_of(cosine).strip()),
        ]))

    # --- no schedule: add one -----------------------------------------------------------------
    def _add_schedule(self, ctx, index: UnitIndex, edits: Edits, where) -> None:
        path, line, _ = where
        constructions = [c for c in index.calls_to(*OPTIMIZER_CONSTRUCTORS)]
        opt_call = next((c for c in constructions if (c.path, c.line, c.col) == where), None)
        steps = optimizer_steps(index)
        if opt_call is None and steps:
            step = next((s for s in steps if (s.path, s.line, s.col) == where), steps[0])
            opt_call = optimizer_construction(index, stepped_optimizer(step))
        if opt_call is None:
            raise CannotFix(path, line, "cannot find where the optimizer is built to add a schedule after it", _manual_schedule_patch())
        tree = edits.tree(opt_call.path)
        module = edits.module(opt_call.path)
        opt_stmt = tree.statement(opt_call.node)
        optimizer = _assignment_target(opt_stmt, opt_call.node)
        if optimizer is None:
            raise CannotFix(opt_call.path, opt_call.line, "the optimizer is not assigned to a name on a line of its own", _manual_schedule_patch())
        own_steps = [s for s in steps if same_object(stepped_optimizer(s), optimizer)]
        if not own_steps:
            raise CannotFix(opt_call.path, opt_call.line, f"`{optimizer}` is never stepped", _manual_schedule_patch())
        home = settings_home(index, opt_call.function, opt_call.kwarg("lr"))
        total, anchor = _run_total(index, edits, home, opt_call, opt_stmt)
        scheduler = "self.lr_scheduler" if optimizer.startswith("self.") else "lr_scheduler"
        taken = names_in_node(tree.function(opt_call.node) or module)
        if {"total_steps", "warmup_steps"} & taken or (scheduler == "lr_scheduler" and scheduler in taken):
            raise CannotFix(opt_call.path, opt_call.line, "the names total_steps / warmup_steps / lr_scheduler are taken here", _manual_schedule_patch())
        for step in own_steps:
            if step.function != opt_call.function and not scheduler.startswith("self."):
                raise CannotFix(step.path, step.line, f"`{step.text}` runs in another function than the one that builds `{optimizer}`", _manual_schedule_patch())
            step_stmt = edits.tree(step.path).statement(step.node)
            if not is_call_statement(step_stmt, step.node):
                raise CannotFix(step.path, step.line, f"`{step.text}` is not a statement of its own", _manual_schedule_patch())
        warmup = _warmup_setting(edits, index, home)
        ratio = ensure_setting(edits, index, home, "min_lr_ratio", "float", "0.01", MIN_LR_WHY) if home else "0.01"
        torch = module_name(edits, index, opt_call.path, "torch")
        base_lr = _base_lr(index, optimizer, opt_call)
        new = [
            statement(module, f"# Linear warm-up (at most 10% of the run), then cosine decay to min_lr_ratio x the base rate,\n# stepped once per optimizer step.\ntotal_steps = {total}\n"),
            statement(module, f"warmup_steps = min({warmup}, total_steps // 10)"),
            statement(module, _warmup_then(torch, scheduler, optimizer, _cosine(torch, optimizer, "total_steps", f"{ratio} * {base_lr}"))),
        ]
        edits.insert_after(opt_call.path, anchor, new)
        for step in own_steps:
            step_stmt = edits.tree(step.path).statement(step.node)
            edits.insert_after(step.path, _after_scaler_update(index, edits, step, step_stmt), [statement(edits.module(step.path), f"{scheduler}.step()")])
        _checkpoint_schedule(index, edits, optimizer, scheduler)

    # --- where the schedule is stepped ------------------------------------------------
    def _reorder(self, index: UnitIndex, edits: Edits, code: str, where) -> None:
        path, line, col = where
        sched_step = next((s for s in lr_scheduler_steps(index) if (s.path, s.line, s.col) == where), None)
        if sched_step is None:
            if code == "LR005":
                self._lightning_interval(index, edits, where)
                return
            raise CannotFix(path, line, "cannot find the scheduler step this finding names", "")
        tree = edits.tree(path)
        moved = tree.statement(sched_step.node)
        if not is_call_statement(moved, sched_step.node):
            raise CannotFix(path, line, f"`{sched_step.text}` is not a statement of its own", f"{sched_step.text}  # right after optimizer.step()")
        if code == "LR005":
            opt = step_is_per_epoch(index, sched_step)
            if opt is None:
                raise CannotFix(path, line, "cannot find the optimizer step the schedule should follow", f"{sched_step.text}  # right after optimizer.step()")
            if opt.function != sched_step.function and not sched_step.receiver.startswith("self."):
                raise CannotFix(path, line, f"`{sched_step.receiver}` is not visible where `{opt.text}` runs (line {opt.line})", f"{sched_step.text}  # right after {opt.text}")
        else:
            opt = next((o for o in optimizer_steps(index) if o.path == path and o.function == sched_step.function and (o.line, o.col) > (line, col) and not exclusive(o, sched_step)), None)
            if opt is None:
                raise CannotFix(path, line, "cannot find the optimizer step the schedule should follow", f"{sched_step.text}  # right after optimizer.step()")
        opt_tree = edits.tree(opt.path)
        opt_stmt = opt_tree.statement(opt.node)
        anchor = _after_scaler_update(index, edits, opt, opt_stmt)
        if opt.path == path and opt.function == sched_step.function and code == "LR006":
            # An epoch-level scheduler stepped at the top of the epoch: after the loop that steps the optimizer.
            anchor = tree.enclosing_in(anchor, tree.block(moved)) or anchor
        detached = edits.detach(path, moved)
        edits.insert_after(opt.path, anchor, [detached if opt.path == path else statement(edits.module(opt.path), code_of(detached).strip())])

    def _lightning_interval(self, index: UnitIndex, edits: Edits, where) -> None:
        path, line, _ = where
        setting = next((s for s in index.setting("interval") if (s.path, s.line, s.col) == where and s.kind == "dict"), None)
        if setting is None:
            raise CannotFix(path, line, "Lightning's scheduler config has no \"interval\" key to set",
                            'return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}')
        module = edits.module(path)
        node = node_at(module, setting.line, setting.col, cst.DictElement)
        edits.replace(path, node, lambda n: n.with_changes(value=value_like("step", n.value, module)))


# --- fix helpers ---------------------------------------------------------------------
def _cosine(torch: str, optimizer: str, total: str, eta_min: str) -> str:
    return f"{torch}.optim.lr_scheduler.CosineAnnealingLR({optimizer}, T_max=max(1, {total} - warmup_steps), eta_min={eta_min})"


def _warmup_then(torch: str, target: str, optimizer: str, decay: str) -> str:
    """Source of ``target = SequentialLR(...)``: a linear warm-up over ``warmup_steps``, then ``decay``."""
    return (
        f"{target} = {torch}.optim.lr_scheduler.SequentialLR(\n"
        f"    {optimizer},\n"
        f"    [\n"
        f"        {torch}.optim.lr_scheduler.LinearLR({optimizer}, start_factor=1.0 / max(1, warmup_steps), total_iters=max(1, warmup_steps)),\n"
        f"        {decay},\n"
        f"    ],\n"
        f"    milestones=[max(1, warmup_steps)],\n"
        f")\n"
    )


def _manual_schedule_patch() -> str:
    return (
        "warmup_steps = min(warmup_steps, total_steps // 10)  # total_steps = epochs * optimizer steps per epoch\n"
        + _warmup_then("torch", "scheduler", "optimizer", _cosine("torch", "optimizer", "total_steps", "0.01 * base_lr"))
        + "# ...and scheduler.step() right after every optimizer.step()"
    )


def _transformers_has(name: str) -> bool:
    """Whether the installed transformers defines ``name`` in its optimization module (read, not imported)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.origin:
        return False
    source = Path(spec.origin).parent / "optimization.py"
    return source.is_file() and f"def {name}(" in source.read_text(encoding="utf-8")


def _lr_node(index: UnitIndex, optimizer) -> cst.BaseExpression | None:
    site = optimizer_construction(index, dotted(optimizer)) if optimizer is not None else None
    return site.kwarg("lr") if site is not None else None


def _base_lr(index: UnitIndex, optimizer: str, site: CallSite | None = None) -> str:
    """The base learning rate as code: the optimizer's ``lr=`` when it is a name or literal, else its defaults."""
    site = site or optimizer_construction(index, optimizer)
    lr = site.kwarg("lr") if site is not None else None
    if lr is not None and (dotted(lr) or isinstance(literal(lr), (int, float))):
        return code_of(lr).strip()
    return f'{optimizer}.defaults["lr"]'


def _setting_read(index: UnitIndex, node) -> str | None:
    """``args.lr_scheduler``: a value read from settings (not a literal)."""
    name = dotted(node)
    return name if name and "." in name and index.setting(name.rsplit(".", 1)[-1]) else None


def _is_capped(node) -> bool:
    return isinstance(node, cst.Call) and dotted(node.func) == "min" or any(isinstance(n, cst.Call) and dotted(n.func) == "min" for n in expression_nodes(node))


def _split_factor(node) -> tuple[cst.BaseExpression, cst.BaseExpression | None]:
    """``x * accelerator.num_processes`` -> (x, accelerator.num_processes)."""
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply):
        if NEUTRAL_FACTOR.search(dotted(node.right)):
            return node.left, node.right
        if NEUTRAL_FACTOR.search(dotted(node.left)):
            return node.right, node.left
    return node, None


def _capped(module: cst.Module, warmup, total, new: bool = False) -> cst.BaseExpression:
    """``min(warmup, total // 10)``, keeping a shared ``* num_processes`` factor outside (a ``new``
    warm-up setting takes the total's factor: diffusers counts both in scheduler steps)."""
    w, wf = _split_factor(warmup)
    t, tf = _split_factor(total)
    if new and tf is not None:
        return expression(module, "min({w}, {t} // 10) * {f}", w=warmup, t=_atom(t), f=tf)
    if wf is not None and tf is not None and code_of(wf).strip() == code_of(tf).strip():
        return expression(module, "min({w}, {t} // 10) * {f}", w=w, t=_atom(t), f=wf)
    return expression(module, "min({w}, {t} // 10)", w=warmup, t=_atom(total))


def _atom(node: cst.BaseExpression) -> cst.BaseExpression:
    """``node`` parenthesized when it would bind looser than ``//`` or ``*``."""
    if isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)) or node.lpar:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _floored(module: cst.Module, node: cst.BaseExpression, ratio: str) -> cst.BaseExpression:
    """``max(0.0, cosine)`` or ``cosine`` -> ``ratio + (1.0 - ratio) * cosine``."""
    inner = node
    if isinstance(node, cst.Call) and dotted(node.func) == "max" and len(node.args) == 2:
        values = [a.value for a in node.args]
        zero = [v for v in values if _number_literal(v) == 0]
        if zero:
            inner = next(v for v in values if v is not zero[0])
    if isinstance(inner, cst.BinaryOperation) and isinstance(inner.operator, (cst.Add, cst.Subtract)) or not isinstance(inner, (cst.BinaryOperation, cst.Call, cst.Name, cst.Attribute)):
        inner = _atom(inner)
    return expression(module, f"{ratio} + (1.0 - {ratio}) * {{inner}}", inner=inner)


def _reword_docstring(edits: Edits, path, fn_def: cst.FunctionDef) -> None:
    """A factory whose docstring promises a decay "to 0" now decays to the floor."""
    body = fn_def.body.body
    if not body or not m.matches(body[0], m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString())])):
        return
    doc = body[0].body[0].value
    reworded = re.sub(r"\b(decay(?:s|ing)?\b[^.\"']*?\bto) (?:0|zero)\b", r"\1 min_lr_ratio x the base LR", doc.value)
    if reworded != doc.value:
        edits.replace(path, doc, doc.with_changes(value=reworded))


def _assignment_target(stmt, call: cst.Call) -> str | None:
    if m.matches(stmt, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name() | m.Attribute())], value=m.MatchIfTrue(lambda n: n is call))])):
        return dotted(stmt.body[0].targets[0].target)
    return None


def _with_argument(call: CallSite, position: int, keyword: str, value: cst.BaseExpression) -> cst.Call:
    """The call with its argument ``keyword`` (or positional ``position``) replaced."""
    if call.kwarg(keyword) is not None:
        return with_keyword(call.node, keyword, value)
    args = list(call.node.args)
    positional = [i for i, a in enumerate(args) if a.keyword is None and not a.star]
    if position < len(positional):
        args[positional[position]] = args[positional[position]].with_changes(value=value)
        return call.node.with_changes(args=args)
    return with_keyword(call.node, keyword, value)


def _statements_with_lines(module: cst.Module, original: cst.BaseStatement, sources: list[str]) -> cst.FlattenSentinel:
    """Statements replacing ``original``, the first keeping its leading comments and blank lines."""
    new = [statement(module, s) for s in sources]
    new[0] = new[0].with_changes(leading_lines=original.leading_lines)
    return cst.FlattenSentinel(new)


def _warmup_setting(edits: Edits, index: UnitIndex, home) -> str:
    """The trainer's warm-up length setting, added (the plan's 2000 steps) when it has none."""
    if home is None:
        return str(PLAN_WARMUP_STEPS)
    existing = next((n for n in WARMUP_SETTINGS if home.has(n)), None)
    name = existing or ("lr_warmup_steps" if home.kind == "argparse" else "warmup_steps")
    return ensure_setting(edits, index, home, name, "int", str(PLAN_WARMUP_STEPS), WARMUP_WHY)


def _plan_warmup_default(ctx, edits: Edits, index: UnitIndex, home, warmup) -> None:
    """The plan's 2000 warm-up steps as the default of the setting a now-capped warm-up reads."""
    read = dotted(_split_factor(warmup)[0]) if warmup is not None else ""
    leaf = read.rsplit(".", 1)[-1]
    if home is None or leaf not in WARMUP_SETTINGS or not home.has(leaf) or read != home.read(leaf):
        return
    current = setting_value(index, home, leaf)
    if isinstance(current, int) and not isinstance(current, bool) and current < PLAN_WARMUP_STEPS:
        if set_default(edits, index, home, leaf, PLAN_WARMUP_STEPS):
            ctx.note(f"{leaf} default {current} -> {PLAN_WARMUP_STEPS} (the plan's warm-up; the code caps it at 10% of the run)")


def _after_scaler_update(index: UnitIndex, edits: Edits, step: CallSite, step_stmt):
    """The statement to insert after for "right after the optimizer step": ``scaler.update()`` when it
    directly follows ``scaler.step(optimizer)``, else the step itself."""
    tree = edits.tree(step.path)
    siblings = list(tree.block(step_stmt).body)
    position = siblings.index(step_stmt)
    if position + 1 < len(siblings):
        following = siblings[position + 1]
        update = next((c for c in index.calls_in(step.function) if c.method == "update" and c.receiver == step.receiver and tree.enclosing_in(c.node, tree.block(step_stmt)) is following), None)
        if update is not None and has_role(index, step.receiver, "scaler"):
            return following
    return step_stmt


def _run_total(index: UnitIndex, edits: Edits, home, opt_call: CallSite, opt_stmt) -> tuple[str, cst.BaseStatement]:
    """The run's optimizer steps as code, and the statement after which it can be computed: a
    run-length setting, else epochs x ceil(len(dataloader) / accumulation)."""
    tree = edits.tree(opt_call.path)
    for name in TOTAL_SETTINGS:
        if home is not None and home.has(name):
            return home.read(name), opt_stmt
    same_class = [a for a in index.assigns if a.target.startswith("self.") and a.target.rsplit(".", 1)[-1] in TOTAL_SETTINGS and opt_call.function is not None
                  and a.function is not None and a.function.class_name == opt_call.function.class_name and a.function.name == "__init__" and a.line < opt_call.line]
    if same_class:
        return same_class[0].target, opt_stmt
    epochs = next((home.read(n) for n in EPOCH_SETTINGS if home is not None and home.has(n)), None)
    loaders = [a for a in index.assigns if a.call is not None and a.call.matches(DATALOADER) and a.path == opt_call.path and a.function == opt_call.function]
    if epochs is None or len(loaders) != 1:
        raise CannotFix(opt_call.path, opt_call.line, "cannot compute the run's optimizer steps (no epochs setting and dataloader, no max-steps setting)", _manual_schedule_patch())
    loader = loaders[0]
    anchor = opt_stmt
    loader_stmt = tree.statement(loader.call.node)
    if loader.line > opt_call.line:
        if tree.block(loader_stmt) is not tree.block(opt_stmt):
            raise CannotFix(opt_call.path, opt_call.line, f"`{loader.target}` is built after the optimizer, in another block", _manual_schedule_patch())
        anchor = loader_stmt
    accumulation = next((home.read(n) for n in ACCUMULATION_SETTINGS if home.has(n)), None)
    per_epoch = f"math.ceil(len({loader.target}) / {accumulation})" if accumulation else f"len({loader.target})"
    if accumulation:
        edits.add_import(opt_call.path, "math")
    return f"{epochs} * {per_epoch}", anchor


def _scheduler_key(optimizer_key: str) -> str:
    """The checkpoint key of the schedule, named like the optimizer's (``optimizer_state_dict`` ->
    ``lr_scheduler_state_dict``, ``opt`` -> ``lr_scheduler``)."""
    return optimizer_key.replace("optimizer", "lr_scheduler") if "optimizer" in optimizer_key else "lr_scheduler"


def _checkpoint_schedule(index: UnitIndex, edits: Edits, optimizer: str, scheduler: str) -> None:
    """Save the new schedule beside the optimizer in checkpoint dicts, and restore it where the optimizer is restored."""
    for path in {f.path for f in index.files}:
        module = edits.module(path)
        for node in m.findall(module, m.Dict()):
            for i, element in enumerate(node.elements):
                value = element.value if isinstance(element, cst.DictElement) else None
                key = literal(element.key) if isinstance(element, cst.DictElement) else None
                if isinstance(key, str) and m.matches(value, m.Call(func=m.Attribute(attr=m.Name("state_dict")), args=[])) and same_object(dotted(value.func.value), optimizer):
                    new_key = expression(module, string_literal(_scheduler_key(key), element.key))
                    new_value = expression(module, f"{scheduler}.state_dict()")
                    edits.replace(path, node, lambda d, i=i, k=new_key, v=new_value: insert_dict_element(d, i, k, v))
                    break
    for call in index.method_calls("load_state_dict"):
        source = call.args[0].value if call.args else None
        if not same_object(call.receiver, optimizer) or not isinstance(source, cst.Subscript) or not isinstance(source.slice[0].slice, cst.Index):
            continue
        key = source.slice[0].slice.value
        stmt = edits.tree(call.path).statement(call.node)
        if isinstance(literal(key), str) and is_call_statement(stmt, call.node):
            checkpoint = code_of(source.value).strip()
            saved = string_literal(_scheduler_key(literal(key)), key)
            edits.insert_after(call.path, stmt, [statement(
                edits.module(call.path),
                f"if {saved} in {checkpoint}:  # checkpoints from before the schedule have none\n"
                f"    {scheduler}.load_state_dict({checkpoint}[{saved}])\n",
            )])
