"""Lengths in a schedule: whether a length counts optimizer steps or epochs, and static arithmetic
on lengths (``warmup_steps`` against ``max_train_steps``, with unknown factors such as
``len(train_dataloader)`` cancelling in ratios)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import libcst as cst

from optimizer_tool.index import CallSite, UnitIndex, code_of, dotted, literal
from optimizer_tool.knowledge.configured import configured, expanded_names
from optimizer_tool.knowledge.lr_schedule.schedule import Schedule
from optimizer_tool.knowledge.lr_schedule.vocabulary import EPOCH_WORD, NEUTRAL_FACTOR, STEP_WORD, TOTAL_SETTINGS
from optimizer_tool.knowledge.training import assignments_of


# --- in which unit a length counts ----------------------------------------------------
def lengths_unit(index: UnitIndex, call: CallSite, *nodes) -> bool:
    """Library schedules that count optimizer steps (get_scheduler...): per step unless every length
    given is written in epochs (``num_training_steps=args.epochs``)."""
    units = [length_unit(index, n, call) for n in nodes if n is not None and number_literal(n) is None]
    return False if units and all(u is False for u in units) else True


def length_unit(index: UnitIndex, node, call: CallSite) -> bool | None:
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


def number_literal(node) -> float | None:
    value = literal(node)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def positive_length(index: UnitIndex, node, call: CallSite) -> bool | None:
    """Whether a length argument is > 0 (absent: 0); unknown factors such as ``num_processes`` keep their sign."""
    if node is None:
        return False
    q = quantity(index, node, call.function, call.line)
    return None if q is None else q.coef > 0


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


def number_value(index: UnitIndex, node, call: CallSite | None) -> float | None:
    q = quantity(index, node, call.function if call else None, call.line if call else None)
    return q.coef if q is not None and not q.atoms else None


def quantity(index: UnitIndex, node, function, line, depth: int = 0) -> Quantity | None:
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
        inner = quantity(index, node.expression, function, line, depth + 1)
        return Quantity(-inner.coef, inner.atoms) if inner else None
    if isinstance(node, cst.BinaryOperation):
        left = quantity(index, node.left, function, line, depth + 1)
        right = quantity(index, node.right, function, line, depth + 1)
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
            return quantity(index, args[0], function, line, depth + 1)
        if callee in ("min", "max") and len(args) == 2:
            a, b = (quantity(index, x, function, line, depth + 1) for x in args)
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
        values = [quantity(index, a.value, a.function, a.line, depth + 1) for a in local]
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
    found = configured(
        index,
        (leaf,),
        lambda s: repr(float(s.value)) if isinstance(s.value, (int, float)) and not isinstance(s.value, bool) else None,
    )
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
    warm = quantity(index, sched.warmup_len, fn, line)
    total = quantity(index, sched.total_len, fn, line) if sched.total_len is not None else None
    if total is None:
        for name in TOTAL_SETTINGS:
            value = _setting_number(index, name)
            if value is not None and value > 0:
                total = Quantity(value)
                break
    if warm is None or total is None or warm.atoms != total.atoms or total.coef <= 0 or warm.coef <= 0:
        return None
    return warm.coef, total.coef, warm.coef / total.coef
