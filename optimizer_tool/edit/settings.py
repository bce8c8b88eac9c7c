"""Writing the trainer's settings: set a value wherever the index found it (a dataclass default,
an argparse default, a keyword, a dict entry), add a config field or an argparse flag, change a
default, pass a value in small presets, import a module under the file's own spelling. Where a
setting lives is analysis (``optimizer_tool.knowledge.settings``); this module only writes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import libcst as cst
import libcst.matchers as m

from optimizer_tool.contract import CannotFix, FixContext
from optimizer_tool.edit.edits import Edit, Edits
from optimizer_tool.edit.templates import expression, statement, value_like, with_keyword
from optimizer_tool.edit.tree import node_at
from optimizer_tool.index import (
    CallSite,
    Setting,
    UnitIndex,
    import_aliases,
    literal,
    norm,
)
from optimizer_tool.knowledge.settings import SMALL_PRESET, SettingsHome, _flags

# --- settings ---------------------------------------------------------------------------------
# Where the indexer records each kind of setting (see index._Indexer).
SETTING_NODES: dict[str, tuple[type, ...]] = {
    "class-default": (cst.AnnAssign, cst.Assign),
    "assign": (cst.AnnAssign, cst.Assign),
    "argparse": (cst.Call, cst.Arg),
    "kwarg": (cst.Arg, cst.Call),
    "dict": (cst.DictElement,),
    "param-default": (cst.Param,),
    "getattr-default": (cst.Call,),
    "library-default": (cst.Call,),
}


def where(setting: Setting, root: Path | None = None) -> str:
    path = setting.path
    if root is not None and root in path.parents:
        path = path.relative_to(root)
    owner = f"{setting.owner}." if setting.owner and setting.kind in ("class-default", "param-default") else ""
    return f"{path.name if root is None else path}:{setting.line} {owner}{setting.name}"


def manual_setting_patch(setting: Setting, value: object) -> str:
    if setting.kind == "config-file":
        leaf = setting.owner.rsplit(".", 1)[-1]
        return f"# {setting.path} (key {setting.owner})\n{leaf}: {value}\n"
    return f"# {setting.path}:{setting.line}\n{setting.name} = {value!r}\n"


def change_settings(edits: Edits, changes: Iterable[tuple[Setting, object]]) -> list[str]:
    """Set each setting to its new value where it is defined; returns a line per change for the
    summary. Values the code does not hold (YAML keys, values the code computes) raise CannotFix
    with the manual change."""
    done: list[str] = []
    for setting, value in changes:
        if setting.kind not in SETTING_NODES or setting.path not in edits.ctx.modules:
            raise CannotFix(
                setting.path,
                setting.line,
                f"{setting.name} is set in {setting.path.name}, which this fix does not edit; "
                f"set it to {value!r} there",
                manual_setting_patch(setting, value),
            )
        module = edits.module(setting.path)
        node = node_at(module, setting.line, setting.col, *SETTING_NODES[setting.kind])
        if node is None:
            raise CannotFix(
                setting.path,
                setting.line,
                f"cannot find where {setting.name} is set",
                manual_setting_patch(setting, value),
            )
        edits.replace(setting.path, node, _setter(setting, value, module))
        done.append(f"{where(setting)}: {setting.value!r} -> {value!r}")
    return done


def set_settings(ctx: FixContext, changes: Iterable[tuple[Setting, object]]) -> list[str]:
    """``change_settings`` applied at once, for a fix that changes nothing else."""
    edits = Edits(ctx)
    done = change_settings(edits, changes)
    edits.apply()
    return done


def _setter(setting: Setting, value: object, module: cst.Module) -> Edit:
    def edit(node: cst.CSTNode) -> cst.CSTNode:
        if isinstance(node, (cst.AnnAssign, cst.Assign, cst.Arg, cst.DictElement)):
            return node.with_changes(value=value_like(value, node.value, module))
        if isinstance(node, cst.Param):
            return node.with_changes(default=value_like(value, node.default, module))
        assert isinstance(node, cst.Call)
        if setting.kind == "argparse":
            return with_keyword(node, "default", value_like(value, _kwarg(node, "default"), module))
        if setting.kind == "getattr-default":
            last = node.args[-1]
            return node.with_changes(
                args=[*node.args[:-1], last.with_changes(value=value_like(value, last.value, module))]
            )
        named = next((a for a in node.args if a.keyword is not None and norm(a.keyword.value) == setting.name), None)
        if named is not None:
            return with_keyword(node, named.keyword.value, value_like(value, named.value, module))
        first = node.args[0] if node.args and node.args[0].keyword is None else None
        if first is not None and literal(first.value) == setting.value:
            # a selector call: get_named_beta_schedule("linear", n)
            return node.with_changes(
                args=[first.with_changes(value=value_like(value, first.value, module)), *node.args[1:]]
            )
        return with_keyword(node, setting.name, value_like(value, None, module))

    return edit


def _kwarg(call: cst.Call, name: str) -> cst.BaseExpression | None:
    return next((a.value for a in call.args if a.keyword is not None and a.keyword.value == name), None)


def _class_node(module: cst.Module, name: str) -> cst.ClassDef | None:
    found = m.findall(module, m.ClassDef(name=m.Name(name)))
    return found[0] if len(found) == 1 else None


def _argument_call(index: UnitIndex, home: SettingsHome, name: str) -> CallSite | None:
    return next(
        (
            c
            for c in index.method_calls("add_argument")
            if c.receiver == home.owner and any(norm(f) == norm(name) for f in _flags(c))
        ),
        None,
    )


def ensure_setting(
    edits: Edits, index: UnitIndex, home: SettingsHome, name: str, kind: str, default: str, why: str
) -> str:
    """The code that reads setting ``name``, first adding it with ``default`` when the trainer lacks
    it: a dataclass field after the class's last field, or an argparse flag after the last flag."""
    if home.has(name):
        return home.read(name)
    module = edits.module(home.path)
    if home.kind == "dataclass":
        cls = _class_node(module, home.owner)
        fields = (
            [s for s in cls.body.body if m.matches(s, m.SimpleStatementLine(body=[m.AnnAssign()]))]
            if cls is not None
            else []
        )
        if not fields:
            raise CannotFix(
                home.path,
                1,
                f"cannot find the fields of the config class {home.owner} to add {name}",
                f"{name}: {kind} = {default}  # {why}",
            )
        edits.insert_after(home.path, fields[-1], [statement(module, f"{name}: {kind} = {default}  # {why}")])
    else:
        adds = [c for c in index.method_calls("add_argument") if c.receiver == home.owner and c.path == home.path]
        flag = "--" + (name.replace("_", "-") if home.dashed else name)
        help_text = why.replace('"', "'").replace("%", "%%")  # argparse formats help with %
        new = statement(
            module, f'{home.owner}.add_argument("{flag}", type={kind}, default={default}, help="{help_text}")'
        )
        edits.insert_after(home.path, edits.tree(home.path).statement(adds[-1].node), [new])
    home.fields = home.fields | {norm(name)}
    return home.read(name)


def ensure_flag(edits: Edits, index: UnitIndex, home: SettingsHome, name: str, why: str) -> str:
    """An off-by-default switch: an argparse ``store_true`` flag, or a ``bool = False`` config field."""
    if home.kind == "dataclass":
        return ensure_setting(edits, index, home, name, "bool", "False", why)
    if not home.has(name):
        adds = [c for c in index.method_calls("add_argument") if c.receiver == home.owner and c.path == home.path]
        flag = "--" + (name.replace("_", "-") if home.dashed else name)
        help_text = why.replace('"', "'").replace("%", "%%")  # argparse formats help with %
        new = statement(
            edits.module(home.path), f'{home.owner}.add_argument("{flag}", action="store_true", help="{help_text}")'
        )
        edits.insert_after(home.path, edits.tree(home.path).statement(adds[-1].node), [new])
        home.fields = home.fields | {norm(name)}
    return home.read(name)


def set_default(edits: Edits, index: UnitIndex, home: SettingsHome, name: str, value: object) -> bool:
    """Change the default of an existing field or flag of ``home`` to ``value``; False when absent."""
    setting = next(
        (
            s
            for s in index.setting(name)
            if s.path == home.path
            and (
                (home.kind == "dataclass" and s.kind == "class-default" and s.owner == home.owner)
                or home.kind == "argparse"
                and s.kind == "argparse"
            )
        ),
        None,
    )
    if setting is None:
        return False
    module = edits.module(home.path)
    node = node_at(module, setting.line, setting.col, *SETTING_NODES[setting.kind])
    if isinstance(node, (cst.AnnAssign, cst.Assign)):
        edits.replace(home.path, node.value, value_like(value, node.value, module))
        return True
    if isinstance(node, cst.Call):
        old = next((a.value for a in node.args if a.keyword is not None and a.keyword.value == "default"), None)
        edits.replace(home.path, node, lambda call: with_keyword(call, "default", value_like(value, old, module)))
        return True
    return False


def set_in_presets(edits: Edits, index: UnitIndex, home: SettingsHome, name: str, value: str) -> int:
    """Pass ``name=value`` where small offline presets build the config class (``smoke_config()``);
    returns how many presets were changed."""
    if home.kind != "dataclass":
        return 0
    done = 0
    for call in index.calls:
        if (
            call.func_text.rsplit(".", 1)[-1] == home.owner
            and call.function is not None
            and SMALL_PRESET.search(call.function.name)
            and call.kwarg(name) is None
        ):
            module = edits.module(call.path)
            edits.replace(call.path, call.node, lambda node, m_=module: with_keyword(node, name, expression(m_, value)))
            done += 1
    return done


def module_name(edits: Edits, index: UnitIndex, path: Path, module: str) -> str:
    """How ``path`` spells an imported module (``th`` for ``import torch as th``), importing it when absent."""
    source = index.source(path)
    aliases = import_aliases(source) if source is not None else {}
    spelled = sorted(local for local, origins in aliases.items() if module in origins)
    if spelled:
        return module if module in spelled else spelled[0]
    edits.add_import(path, module)
    return module
