"""Schedules that a library builds: diffusers/transformers ``get_scheduler`` and
``get_*_schedule_with_warmup``, ``torch.optim.lr_scheduler`` classes and timm schedulers, each
read from its constructor call (the schedule name, warm-up and run lengths, ``eta_min``...)."""

from __future__ import annotations

import re

from optimizer_tool.index import CallSite, UnitIndex, code_of, dotted, literal
from optimizer_tool.knowledge.configured import configured
from optimizer_tool.knowledge.lr_schedule.lambdas import lambda_schedule
from optimizer_tool.knowledge.lr_schedule.lengths import length_unit, lengths_unit, number_value, positive_length
from optimizer_tool.knowledge.lr_schedule.schedule import Schedule
from optimizer_tool.knowledge.lr_schedule.vocabulary import (
    CONSTANT_NAMES,
    FLOOR_NAMES,
    FLOOR_WORD,
    HF_GETTERS,
    HF_HELPER,
    HF_HELPER_NAMES,
    PER_EPOCH_CLASSES,
    TO_ZERO_NAMES,
    TORCH,
    WARMUP_ONLY_NAMES,
)
from optimizer_tool.knowledge.training import assignments_of, names_in


def is_noise_helper(name: str) -> bool:
    return bool(re.search(r"noise|beta|diffusion|ddim|ddpm|timestep", name, re.I))


def defines_local_schedule(index: UnitIndex, name: str) -> bool:
    """A local factory (``_create_lr_scheduler``): the schedules built inside it are judged instead."""
    return any(f.name == name for f in index.functions)


def from_constructor(index: UnitIndex, call: CallSite) -> Schedule | None:
    base = dict(site=call, path=call.path, line=call.line, col=call.col, function=call.function)
    if _is_hf_getter(index, call):
        if any("diffusers.schedulers" in n for n in call.qualnames):
            return None
        return _hf_getter(index, call, base)
    leaf = call.method or call.func_text
    helper = bool(HF_HELPER.match(leaf or "")) and not defines_local_schedule(index, leaf)
    if helper and (any(n.startswith(("transformers", "diffusers")) for n in call.qualnames) or leaf in HF_HELPER_NAMES):
        return _hf_helper(index, call, leaf, base)
    cls = _torch_class(call)
    if cls is not None:
        return _torch_schedule(index, call, cls, base)
    if any(n.startswith("timm.scheduler") for n in call.qualnames) and leaf and leaf[0].isupper():
        return _timm_schedule(index, call, leaf, base)
    return None


def _is_hf_getter(index: UnitIndex, call: CallSite) -> bool:
    """diffusers' or transformers' ``get_scheduler(name, optimizer, ...)`` (not a noise scheduler's)."""
    return (
        call.method == "get_scheduler"
        and (
            any(n.startswith(("diffusers.optimization", "transformers")) for n in call.qualnames)
            or (
                call.matches(HF_GETTERS)
                and not defines_local_schedule(index, "get_scheduler")
                and call.arg(0, "name") is not None
            )
        )
        and not is_noise_helper(call.func_text)
    )


def _hf_getter(index: UnitIndex, call: CallSite, base: dict) -> Schedule:
    name = _string_value(index, call.arg(0, "name"), call)
    sched = Schedule(
        kind="get_scheduler",
        warmup_len=call.arg(2, "num_warmup_steps"),
        total_len=call.arg(3, "num_training_steps"),
        **base,
    )
    sched.per_step = lengths_unit(index, call, sched.warmup_len, sched.total_len)
    sched.warmup = positive_length(index, sched.warmup_len, call)
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


def _hf_helper(index: UnitIndex, call: CallSite, leaf: str, base: dict) -> Schedule:
    """``get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps)`` and its siblings."""
    warmup_len = call.arg(1, "num_warmup_steps")
    sched = Schedule(kind=leaf, warmup_len=warmup_len, total_len=call.arg(2, "num_training_steps"), **base)
    sched.per_step = lengths_unit(index, call, sched.warmup_len, sched.total_len)
    sched.warmup = positive_length(index, warmup_len, call)
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


def _timm_schedule(index: UnitIndex, call: CallSite, leaf: str, base: dict) -> Schedule:
    warm = call.kwarg("warmup_t")
    warm_n = number_value(index, warm, call) if warm is not None else 0
    lr_min = call.kwarg("lr_min")
    floor_v = number_value(index, lr_min, call) if lr_min is not None else 0
    return Schedule(
        kind=leaf,
        warmup=None if warm_n is None else warm_n > 0,
        decay=True,
        floor=None if floor_v is None else floor_v > 0,
        warmup_len=warm,
        total_len=call.arg(1, "t_initial"),
        **base,
    )


def _torch_class(call: CallSite) -> str | None:
    for name in call.qualnames:
        if name.startswith(TORCH):
            rest = name[len(TORCH) :]
            if "." not in rest:
                return rest
    return None


def _torch_schedule(index: UnitIndex, call: CallSite, cls: str, base: dict) -> Schedule | None:
    if cls in ("LRScheduler", "_LRScheduler"):
        return None
    sched = Schedule(kind=cls, **base)
    if cls == "LinearLR":
        start = (
            number_value(index, call.arg(1, "start_factor"), call) if call.arg(1, "start_factor") is not None else 1 / 3
        )
        end = number_value(index, call.arg(2, "end_factor"), call) if call.arg(2, "end_factor") is not None else 1.0
        length = call.arg(3, "total_iters")
        sched.per_step = length_unit(index, length, call)
        if start is not None and end is not None:
            if start < end:
                sched.warmup, sched.decay, sched.warmup_len = True, False, length
            elif start > end:
                sched.warmup, sched.decay, sched.floor, sched.total_len = False, True, end >= 1e-3, length
            else:
                sched.warmup, sched.decay = False, False
    elif cls == "ConstantLR":
        factor = number_value(index, call.arg(1, "factor"), call) if call.arg(1, "factor") is not None else 1 / 3
        sched.warmup = None if factor is None else factor < 1
        sched.decay, sched.warmup_len = False, call.arg(2, "total_iters")
        sched.per_step = length_unit(index, sched.warmup_len, call)
    elif cls == "CosineAnnealingLR":
        length = call.arg(1, "T_max")
        eta = call.arg(2, "eta_min")
        value = literal(eta) if eta is not None else 0
        sched.warmup, sched.decay, sched.total_len = False, True, length
        sched.floor = (value > 0) if isinstance(value, (int, float)) else _floor_expression(index, eta, call)
        sched.per_step = length_unit(index, length, call)
    elif cls == "PolynomialLR":
        length = call.arg(1, "total_iters")
        sched.warmup, sched.decay, sched.floor, sched.total_len = False, True, False, length
        sched.per_step = length_unit(index, length, call)
    elif cls == "OneCycleLR":
        sched.warmup, sched.decay = True, True
        sched.floor = False if call.kwarg("final_div_factor") is None else None
        total = call.kwarg("total_steps")
        sched.per_step = (
            True
            if call.kwarg("steps_per_epoch") is not None
            else (lengths_unit(index, call, total) if total is not None else None)
        )
    elif cls == "LambdaLR":
        lambda_schedule(index, call, sched)
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
    value = number_value(index, node, call)
    if value is not None:
        return value > 0
    return (
        True
        if any(FLOOR_WORD.search(n) or re.search(r"(^|\.)(lr|learning_rate|base_lr)$", n) for n in names_in(node))
        else None
    )


def _kwargs_mention(call: CallSite, name: str) -> bool:
    return any(name in code_of(a.value) or (a.keyword is not None and a.keyword.value == name) for a in call.node.args)


def _string_value(index: UnitIndex, node, call: CallSite) -> str | None:
    value = literal(node)
    if isinstance(value, str):
        return value
    name = dotted(node)
    if not name:
        return None
    # before the call's own line: ``lr_scheduler = get_scheduler(lr_scheduler, ...)`` reads the earlier value
    local = assignments_of(index, name, call.function, call.line - 1)
    if local:
        values = {literal(a.value) for a in local}
        return values.pop() if len(values) == 1 and isinstance(next(iter(values), None), str) else None
    leaf = name.rsplit(".", 1)[-1]
    found = configured(index, (leaf,), lambda s: s.value if isinstance(s.value, str) else None)
    return found.value
