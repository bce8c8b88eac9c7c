"""Building blocks for fixes: find the node a finding or setting points at, replace nodes by
identity in one pass, and set a configured value wherever the index found it.

Fixes locate what they change through the index (call sites keep their ``cst.Call``; settings
keep their position), so these helpers never guess from text.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Callable, Iterable

import libcst as cst
from libcst.helpers import parse_template_expression, parse_template_module
from libcst.metadata import MetadataWrapper, PositionProvider

from optimizer_tool.index import Setting, UnitIndex, code_of, literal, norm
from optimizer_tool.rules.base import CannotFix, FixContext

Edit = Callable[[cst.CSTNode], cst.CSTNode]


class _FindAt(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, line: int, col: int, types: tuple[type, ...]) -> None:
        super().__init__()
        self.line, self.col, self.types = line, col, types
        self.found: cst.CSTNode | None = None

    def on_visit(self, node: cst.CSTNode) -> bool:
        if self.found is not None:
            return False
        start = self.get_metadata(PositionProvider, node).start
        if (start.line, start.column + 1) == (self.line, self.col) and isinstance(node, self.types):
            self.found = node  # pre-order: the outermost node of these types at that position
            return False
        return start.line <= self.line


def node_at(module: cst.Module, line: int, col: int, *types: type) -> cst.CSTNode | None:
    """The outermost node of ``types`` starting at line:col (1-based column, as findings have)."""
    finder = _FindAt(line, col, types)
    MetadataWrapper(module, unsafe_skip_copy=True).visit(finder)
    return finder.found


class _Replace(cst.CSTTransformer):
    def __init__(self, edits: dict[int, Edit]) -> None:
        super().__init__()
        self.edits = edits
        self.done: set[int] = set()

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):
        edit = self.edits.get(id(original))
        if edit is None:
            return updated
        self.done.add(id(original))
        return edit(updated)


def replace(module: cst.Module, edits: dict[cst.CSTNode, Edit]) -> cst.Module:
    """Apply ``edits`` (original node -> function of its updated version) in one pass; every
    node must belong to ``module`` as the index saw it."""
    transformer = _Replace({id(node): edit for node, edit in edits.items()})
    updated = module.visit(transformer)
    missing = len(edits) - len(transformer.done)
    if missing:
        raise RuntimeError(f"{missing} node(s) to edit are not in the module: it changed after it was indexed")
    return updated


class _Ancestors(cst.CSTVisitor):
    def __init__(self, target: cst.CSTNode) -> None:
        super().__init__()
        self.target, self.stack, self.found = target, [], None

    def on_visit(self, node: cst.CSTNode) -> bool:
        if self.found is not None:
            return False
        if node is self.target:
            self.found = list(self.stack)
            return False
        self.stack.append(node)
        return True

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if self.stack and self.stack[-1] is original_node:
            self.stack.pop()


def ancestors(module: cst.Module, node: cst.CSTNode) -> list[cst.CSTNode]:
    """The nodes enclosing ``node`` in ``module``, outermost first ([] when it is not there)."""
    finder = _Ancestors(node)
    module.visit(finder)
    return finder.found or []


def enclosing(module: cst.Module, node: cst.CSTNode, kind: type) -> cst.CSTNode | None:
    return next((n for n in reversed(ancestors(module, node)) if isinstance(n, kind)), None)


def expression(code: str, module: cst.Module) -> cst.BaseExpression:
    return cst.parse_expression(code, config=module.config_for_parsing)


def statements(code: str, module: cst.Module) -> list[cst.BaseStatement]:
    """Statements parsed with the module's indentation and newline style."""
    return list(cst.parse_module(code, config=module.config_for_parsing).body)


def value_like(value: object, old: cst.BaseExpression | None, module: cst.Module) -> cst.BaseExpression:
    """``value`` as a literal, in the quote style of the literal it replaces."""
    if isinstance(value, str) and isinstance(old, cst.SimpleString) and not old.prefix.strip("rRuU"):
        quote = old.quote
        if quote not in value and "\\" not in value:
            return cst.SimpleString(f"{old.prefix}{quote}{value}{quote}")
    return expression(repr(value), module)


def keyword(name: str, value: cst.BaseExpression) -> cst.Arg:
    return cst.Arg(value=value, keyword=cst.Name(name), equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")))


def with_keyword(call: cst.Call, name: str, value: cst.BaseExpression) -> cst.Call:
    """``call`` with ``name=value``: replaced when present, else added last (before ``**kwargs``),
    following the call's one-argument-per-line layout when it has one."""
    args = list(call.args)
    for i, arg in enumerate(args):
        if arg.keyword is not None and arg.keyword.value == name:
            args[i] = arg.with_changes(value=value)
            return call.with_changes(args=args)
    new = keyword(name, value)
    position = next((i for i, a in enumerate(args) if a.star == "**"), len(args))
    if args:
        separator = _separator(call, args, position)
        if position == len(args):
            # the new last argument takes over the old one's trailing comma and closing line break
            last = args[-1]
            new = new.with_changes(comma=last.comma, whitespace_after_arg=last.whitespace_after_arg)
            args[-1] = last.with_changes(comma=separator, whitespace_after_arg=cst.SimpleWhitespace(""))
        else:
            new = new.with_changes(comma=separator)
    args.insert(position, new)
    return call.with_changes(args=args)


def without_comment(call: cst.Call, name: str) -> cst.Call:
    """``call`` without the end-of-line comment after its ``name=`` argument (it described the
    value a fix just replaced)."""
    args = list(call.args)
    for i, arg in enumerate(args):
        comma = arg.comma
        if arg.keyword is not None and arg.keyword.value == name and isinstance(comma, cst.Comma) and isinstance(comma.whitespace_after, cst.ParenthesizedWhitespace):
            after = comma.whitespace_after.with_changes(first_line=cst.TrailingWhitespace(newline=comma.whitespace_after.first_line.newline))
            args[i] = arg.with_changes(comma=comma.with_changes(whitespace_after=after))
    return call.with_changes(args=args)


def _separator(call: cst.Call, args: list[cst.Arg], position: int) -> cst.Comma:
    """The comma and whitespace between two arguments of this call (one per line stays so)."""
    if position >= 2 and isinstance(args[position - 2].comma, cst.Comma):
        return args[position - 2].comma
    if isinstance(call.whitespace_before_args, cst.ParenthesizedWhitespace):
        return cst.Comma(whitespace_after=call.whitespace_before_args)
    return cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))


def with_param(function: cst.FunctionDef, name: str, default: cst.BaseExpression, annotation: str) -> cst.FunctionDef:
    """``function`` with a new last keyword parameter ``name`` (annotated when the signature is)."""
    params = function.params
    annotated = any(p.annotation is not None for p in [*params.params, *params.kwonly_params])
    spaced = cst.AssignEqual(cst.SimpleWhitespace(" "), cst.SimpleWhitespace(" "))
    tight = cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))
    new = cst.Param(
        cst.Name(name),
        annotation=cst.Annotation(cst.parse_expression(annotation)) if annotated else None,
        default=default,
        equal=spaced if annotated else tight,
    )
    field_name = "kwonly_params" if isinstance(params.star_arg, cst.Param) or params.kwonly_params else "params"
    existing = list(getattr(params, field_name))
    if existing:
        last = existing[-1]
        if len(existing) >= 2 and isinstance(existing[-2].comma, cst.Comma):
            separator = existing[-2].comma
        else:
            separator = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        new = new.with_changes(comma=last.comma, whitespace_after_param=last.whitespace_after_param)
        existing[-1] = last.with_changes(comma=separator, whitespace_after_param=cst.SimpleWhitespace(""))
    existing.append(new)
    return function.with_changes(params=params.with_changes(**{field_name: existing}))


def string_constants(index: UnitIndex) -> set[str]:
    """Every string literal of the unit's code (not docstrings' words: whole literals only)."""
    found: set[str] = set()
    for source in index.files:
        for node in ast.walk(source.tree) if source.tree else ():
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 64:
                found.add(node.value)
    return found


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


class UnitEdits:
    """Node edits of one fix, collected per file and applied in one pass per file: the index's
    nodes belong to the modules as they were indexed, so a file must not change in between.
    Two edits of the same node compose (the later one sees the earlier one's result)."""

    def __init__(self, ctx: FixContext) -> None:
        self.ctx = ctx
        self.by_path: dict[Path, dict[cst.CSTNode, Edit]] = {}

    def add(self, path: Path, node: cst.CSTNode, edit: Edit) -> None:
        edits = self.by_path.setdefault(path, {})
        earlier = edits.get(node)
        edits[node] = edit if earlier is None else (lambda n, first=earlier, then=edit: then(first(n)))

    def settings(self, changes: Iterable[tuple[Setting, object]]) -> list[str]:
        """Set each setting to its new value where it is defined; returns a line per change for
        the summary. Values the code does not hold (YAML keys, values the code computes) raise
        CannotFix with the manual change."""
        done: list[str] = []
        for setting, value in changes:
            if setting.kind not in SETTING_NODES or setting.path not in self.ctx.modules:
                raise CannotFix(setting.path, setting.line, f"{setting.name} is set in {setting.path.name}, which this fix does not edit; set it to {value!r} there", manual_setting_patch(setting, value))
            module = self.ctx.module(setting.path)
            node = node_at(module, setting.line, setting.col, *SETTING_NODES[setting.kind])
            if node is None:
                raise CannotFix(setting.path, setting.line, f"cannot find where {setting.name} is set", manual_setting_patch(setting, value))
            self.add(setting.path, node, _setter(setting, value, module))
            done.append(f"{where(setting)}: {setting.value!r} -> {value!r}")
        return done

    def apply(self) -> None:
        for path, edits in self.by_path.items():
            self.ctx.update(path, replace(self.ctx.module(path), edits))
        self.by_path = {}


def set_settings(ctx: FixContext, changes: Iterable[tuple[Setting, object]]) -> list[str]:
    """``UnitEdits.settings`` applied at once, for a fix that changes nothing else."""
    edits = UnitEdits(ctx)
    done = edits.settings(changes)
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
            return node.with_changes(args=[*node.args[:-1], last.with_changes(value=value_like(value, last.value, module))])
        named = next((a for a in node.args if a.keyword is not None and norm(a.keyword.value) == setting.name), None)
        if named is not None:
            return with_keyword(node, named.keyword.value, value_like(value, named.value, module))
        first = node.args[0] if node.args and node.args[0].keyword is None else None
        if first is not None and literal(first.value) == setting.value:
            # a selector call: get_named_beta_schedule("linear", n)
            return node.with_changes(args=[first.with_changes(value=value_like(value, first.value, module)), *node.args[1:]])
        return with_keyword(node, setting.name, value_like(value, None, module))

    return edit


def _kwarg(call: cst.Call, name: str) -> cst.BaseExpression | None:
    return next((a.value for a in call.args if a.keyword is not None and a.keyword.value == name), None)


def argparse_choices(index: UnitIndex, setting: Setting) -> list | None:
    """The ``choices=[...]`` of an argparse setting, when it lists literals."""
    if setting.kind != "argparse":
        return None
    site = next((c for c in index.calls if c.path == setting.path and (c.line, c.col) == (setting.line, setting.col)), None)
    if site is None or site.kwarg("choices") is None:
        return None
    choices = literal(site.kwarg("choices"))
    return list(choices) if isinstance(choices, (list, tuple, set)) else None


def feeds_diffusers_scheduler(index: UnitIndex, setting: Setting) -> bool:
    """The setting is, or is passed as, a keyword of a diffusers noise scheduler: its values are
    diffusers' spellings (``squaredcos_cap_v2``, ``v_prediction``)."""
    from optimizer_tool.index import dotted
    from optimizer_tool.semantics import DIFFUSERS_SCHEDULER, diffusers_scheduler_class

    if setting.kind == "kwarg" and DIFFUSERS_SCHEDULER.match(setting.owner):
        return True
    for call in index.calls:
        if diffusers_scheduler_class(call) is None:
            continue
        if setting.kind == "library-default" and (call.path, call.line, call.col) == (setting.path, setting.line, setting.col):
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


__all__ = [
    "CannotFix", "code_of", "expression", "keyword", "manual_setting_patch", "node_at", "replace", "set_settings",
    "statements", "string_constants", "value_like", "where", "with_keyword", "argparse_choices", "UnitEdits",
]


# --- snippets with holes, literals in the file's style ----------------------------------------
def template_statements(module: cst.Module, template: str, **values: str | cst.BaseExpression) -> list[cst.BaseStatement]:
    """Statements from a template whose ``{name}`` holes take expressions (values it does not use
    are ignored), parsed with the module's own indentation and line endings."""
    used = {k: expression(v, module) if isinstance(v, str) else v for k, v in values.items() if f"{{{k}}}" in template}
    return list(parse_template_module(template, config=module.config_for_parsing, **used).body)


def template_expression(module: cst.Module, template: str, **values: str | cst.BaseExpression) -> cst.BaseExpression:
    used = {k: expression(v, module) if isinstance(v, str) else v for k, v in values.items() if f"{{{k}}}" in template}
    return parse_template_expression(template, config=module.config_for_parsing, **used)


def with_comment(statement: cst.BaseStatement, comment: str) -> cst.BaseStatement:
    """``statement`` preceded by a ``# comment`` line (why the inserted code is there)."""
    return statement.with_changes(leading_lines=[*statement.leading_lines, cst.EmptyLine(comment=cst.Comment(f"# {comment}"))])


def string_literal(text: str, like: cst.BaseExpression | None = None) -> str:
    """``text`` as a string literal in the quote style of ``like`` (double quotes by default)."""
    quote = like.quote if isinstance(like, cst.SimpleString) and like.quote in ("'", '"') else '"'
    return f"{quote}{text}{quote}"


def insert_dict_element(node: cst.Dict, after: int, key: cst.BaseExpression, value: cst.BaseExpression) -> cst.Dict:
    """``node`` with ``key: value`` inserted after element number ``after``, in the dict's own
    layout: the new element takes the comma (and line break) that followed its predecessor."""
    elements = list(node.elements)
    new = cst.DictElement(key, value)
    if not elements:
        return node.with_changes(elements=[new])
    anchor = elements[after]
    if after < len(elements) - 1:
        elements.insert(after + 1, new.with_changes(comma=anchor.comma))
        return node.with_changes(elements=elements)
    # Appending: the old last element needs a separator like the others (", " or a line break).
    separator = elements[after - 1].comma if after > 0 else cst.MaybeSentinel.DEFAULT
    if not isinstance(separator, cst.Comma):
        separator = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
    elements[after] = anchor.with_changes(comma=separator)
    elements.append(new.with_changes(comma=anchor.comma))
    return node.with_changes(elements=elements)


def _library(index: UnitIndex, qualname: str) -> bool:
    """A qualified name from an installed library, not from the project's own modules."""
    if "." not in qualname or qualname.startswith("."):
        return False
    top = qualname.split(".", 1)[0]
    base = index.entry.path.parent.parent  # the trainer's folder is a package name too
    local = {part for f in index.files if base in f.path.parents for part in f.path.relative_to(base).with_suffix("").parts}
    return top not in local
