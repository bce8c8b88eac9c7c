"""Where a trainer keeps its settings (a config dataclass read as ``self.config``, an argparse
parser read as ``args``), what they hold, and how a value is spelled for the code that reads it
(diffusers' names, argparse ``choices``, the spellings the project's code already uses)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import libcst as cst

from optimizer_tool.index import (
    CallSite,
    FunctionInfo,
    Setting,
    UnitIndex,
    dotted,
    literal,
    norm,
)
from optimizer_tool.knowledge.configured import memo
from optimizer_tool.knowledge.diffusion import DIFFUSERS_SCHEDULER, diffusers_scheduler_class
from optimizer_tool.knowledge.training import hyperparameter_source, names_in

# --- the trainer's settings: where a new value goes and how the code reads it -------------
TRAINING_FIELDS = frozenset(
    {
        "learning_rate",
        "lr",
        "max_grad_norm",
        "num_epochs",
        "epochs",
        "num_train_epochs",
        "batch_size",
        "train_batch_size",
        "gradient_accumulation_steps",
        "warmup_steps",
        "lr_warmup_steps",
        "max_train_steps",
        "weight_decay",
    }
)


@dataclass
class SettingsHome:
    """Where a trainer keeps its settings: a config dataclass (``TrainConfig`` read as
    ``self.train_config``) or an argparse parser (``parser`` read as ``args``)."""

    kind: str  # "dataclass" | "argparse"
    path: Path
    owner: str  # the dataclass name, or the parser variable
    accessor: str  # the expression the training code reads the values from
    fields: frozenset[str]
    dashed: bool = False  # argparse flags written --max-grad-norm

    def has(self, name: str) -> bool:
        return norm(name) in self.fields

    def read(self, name: str) -> str:
        return f"{self.accessor}.{name}"


def _dataclass_fields(index: UnitIndex) -> dict[str, tuple[Path, set[str]]]:
    found: dict[str, tuple[Path, set[str]]] = {}
    for s in index.settings:
        if s.kind == "class-default" and s.owner:
            found.setdefault(s.owner, (s.path, set()))[1].add(s.name)
    return found


def _flags(call: CallSite) -> list[str]:
    return [v for a in call.args if isinstance(v := literal(a.value), str) and v.startswith("--")]


def _argparse_flags(index: UnitIndex) -> dict[str, tuple[Path, set[str], list[str]]]:
    found: dict[str, tuple[Path, set[str], list[str]]] = {}
    for call in index.method_calls("add_argument"):
        flags = _flags(call)
        if flags:
            entry = found.setdefault(call.receiver, (call.path, set(), []))
            entry[1].add(norm(max(flags, key=len)))
            entry[2].extend(flags)
    return found


def _names_read(index: UnitIndex, functions: list[FunctionInfo | None]) -> set[str]:
    wanted = set(functions)
    found: set[str] = set()
    for call in index.calls:
        if call.function in wanted:
            found |= names_in(call.node)
    for assign in [*index.assigns, *index.returns]:
        if assign.function in wanted:
            found |= names_in(assign.value)
    return found


def _scope(index: UnitIndex, function: FunctionInfo | None) -> list[FunctionInfo | None]:
    """The methods of the class ``function`` belongs to, or the function and the ones nested in it."""
    if function is None:
        return [None]
    if function.class_name is not None:
        return [f for f in index.functions if f.path == function.path and f.class_name == function.class_name]
    return [f for f in index.functions if f.path == function.path and function.line <= f.line <= function.end_line]


def _visible_roots(index: UnitIndex, function: FunctionInfo | None) -> set[str]:
    """Names the code of ``function`` can read: ``self`` in a method, its parameters and locals and
    those of the functions around it, and the module's globals."""
    if function is None:
        return {a.target for a in index.assigns if a.function is None and "." not in a.target}
    outer = [f for f in index.functions if f.path == function.path and f.line <= function.line <= f.end_line]
    roots = {
        a.target.split(".", 1)[0]
        for a in index.assigns
        if a.path == function.path and (a.function is None or a.function in outer)
    }
    roots |= {p for f in outer for p in f.params}
    return roots


def settings_home(
    index: UnitIndex, function: FunctionInfo | None, anchor: cst.BaseExpression | None = None
) -> SettingsHome | None:
    """Where the code around ``function`` reads its settings. ``anchor`` (a value known to be a
    setting, such as the optimizer's ``lr=``) decides when given; otherwise the dataclass or parser
    whose fields the code reads most (``self.train_config.max_grad_norm`` -> TrainConfig)."""
    classes = _dataclass_fields(index)
    parsers = _argparse_flags(index)
    source = hyperparameter_source(index, anchor) if anchor is not None else None
    if source is not None:
        owner = (
            source.setting.owner
            if source.kind == "dataclass"
            else next(
                (
                    c.receiver
                    for c in index.method_calls("add_argument")
                    if (c.path, c.line, c.col) == (source.setting.path, source.setting.line, source.setting.col)
                ),
                "",
            )
        )
        if source.kind == "dataclass" and owner in classes:
            return SettingsHome("dataclass", classes[owner][0], owner, source.prefix, frozenset(classes[owner][1]))
        if source.kind == "argparse" and owner in parsers:
            path, flags, written = parsers[owner]
            return SettingsHome("argparse", path, owner, source.prefix, frozenset(flags), _dashed(written))
    scores: dict[tuple[str, str, str], tuple[bool, int]] = {}
    visible = _visible_roots(index, function)
    for name in _names_read(index, _scope(index, function)):
        prefix, _, leaf = name.rpartition(".")
        if not DOTTED.fullmatch(prefix) or prefix.split(".", 1)[0] not in visible:
            continue
        for kind, table in (
            ("dataclass", {o: f for o, (_, f) in classes.items()}),
            ("argparse", {o: f for o, (_, f, _) in parsers.items()}),
        ):
            for owner, fields in table.items():
                if leaf in fields:
                    trains, count = scores.get((kind, owner, prefix), (bool(fields & TRAINING_FIELDS), 0))
                    scores[(kind, owner, prefix)] = (trains, count + 1)
    if not scores:
        return None
    kind, owner, prefix = max(scores, key=lambda k: scores[k])
    if kind == "dataclass":
        path, fields = classes[owner]
        return SettingsHome(kind, path, owner, prefix, frozenset(fields))
    path, flags, written = parsers[owner]
    return SettingsHome(kind, path, owner, prefix, frozenset(flags), _dashed(written))


def _dashed(written: list[str]) -> bool:
    return sum("-" in f[2:] for f in written) > sum("_" in f[2:] for f in written)


DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
SMALL_PRESET = re.compile(r"smoke|tiny|debug|test|offline", re.I)


def setting_value(index: UnitIndex, home: SettingsHome | None, name: str) -> object:
    """The literal default of setting ``name`` of ``home`` (None when unknown or absent)."""
    if home is None:
        return None
    for s in index.setting(name):
        if (
            s.path == home.path
            and s.known
            and (
                (home.kind == "argparse" and s.kind == "argparse")
                or (s.kind == "class-default" and s.owner == home.owner)
            )
        ):
            return s.value
    return None


def string_constants(index: UnitIndex) -> set[str]:
    """Every string literal of the unit's code (not docstrings' words: whole literals only)."""
    found: set[str] = set()
    for source in index.files:
        for node in ast.walk(source.tree) if source.tree else ():
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 64:
                found.add(node.value)
    return found


def argparse_choices(index: UnitIndex, setting: Setting) -> list | None:
    """The ``choices=[...]`` of an argparse setting, when it lists literals."""
    if setting.kind != "argparse":
        return None
    site = next(
        (c for c in index.calls if c.path == setting.path and (c.line, c.col) == (setting.line, setting.col)), None
    )
    if site is None or site.kwarg("choices") is None:
        return None
    choices = literal(site.kwarg("choices"))
    return list(choices) if isinstance(choices, (list, tuple, set)) else None


def dispatched_literals(index: UnitIndex) -> frozenset[str]:
    """String literals the unit's code branches on: compared with ``==``/``in``, keys of a dict
    literal, ``case`` patterns (``if schedule_name == "cosine":``, ``{"cosine": cosine_betas}``).
    A setting can be switched to a value only where the code has a branch for it."""

    def compute() -> frozenset[str]:
        found: set[str] = set()
        for source in index.files:
            for node in ast.walk(source.tree) if source.tree else ():
                if isinstance(node, ast.Compare):
                    operands = [node.left, *node.comparators]
                    for operand in operands:
                        parts = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                        found.update(p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str))
                elif isinstance(node, ast.Dict):
                    found.update(k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
                elif isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant):
                    found.add(str(node.value.value))
        return frozenset(found)

    return memo(index, "dispatched_literals", compute)


def feeds_diffusers_scheduler(index: UnitIndex, setting: Setting) -> bool:
    """The setting is, or is passed as, a keyword of a diffusers noise scheduler: its values are
    diffusers' spellings (``squaredcos_cap_v2``, ``v_prediction``)."""
    if setting.kind == "kwarg" and DIFFUSERS_SCHEDULER.match(setting.owner):
        return True
    for call in index.calls:
        if diffusers_scheduler_class(call) is None:
            continue
        if setting.kind == "library-default" and (call.path, call.line, call.col) == (
            setting.path,
            setting.line,
            setting.col,
        ):
            return True
        if any(a.keyword is not None and dotted(a.value).rsplit(".", 1)[-1] == setting.name for a in call.node.args):
            return True  # DDPMScheduler(beta_schedule=args.ddpm_beta_schedule)
    return False


def spelling(index: UnitIndex, setting: Setting, candidates: tuple[str, ...], diffusers: str) -> str | None:
    """How to write a value for this setting: diffusers' name when a diffusers scheduler reads it,
    one of argparse's ``choices``, for the project's own code a spelling its code already uses
    (it validates against it: ``BETA_SCHEDULES = ("linear", "cosine")``), else the canonical one
    for a library keyword. None when the project's code knows none of ``candidates``."""
    choices = argparse_choices(index, setting)
    if feeds_diffusers_scheduler(index, setting):
        wanted: tuple[str, ...] = (diffusers,)
    else:
        wanted = candidates
    if choices is not None:
        return next((c for c in wanted if c in choices), None)
    if wanted == (diffusers,) or setting.kind in ("kwarg", "library-default") and _library(index, setting.owner):
        return wanted[0]
    known = string_constants(index)
    return next((c for c in wanted if c in known), None)


def _library(index: UnitIndex, qualname: str) -> bool:
    """A qualified name from an installed library, not from the project's own modules."""
    if "." not in qualname or qualname.startswith("."):
        return False
    top = qualname.split(".", 1)[0]
    base = index.entry.path.parent.parent  # the trainer's folder is a package name too
    local = {
        part for f in index.files if base in f.path.parents for part in f.path.relative_to(base).with_suffix("").parts
    }
    return top not in local
