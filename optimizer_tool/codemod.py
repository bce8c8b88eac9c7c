"""Statement-level building blocks for fixes that insert, move or remove code (clipping, the
learning-rate schedule, LPIPS): where a node's statement sits, edits collected against the
original nodes and applied in one libcst pass per file, and the trainer's settings (reading a
value, adding a config field or an argparse flag, changing a default).

Expression-level helpers (``with_keyword``, ``value_like``, ``node_at``) live in ``cstedit``.
Edits are keyed by node identity: ``CallSite.node`` is a node of the module the fix receives,
so an anchor found through the index is proven, not guessed from text. Nothing changes until
``Edits.apply``, which transforms each file once and then adds the imports the new code needs
(``AddImportsVisitor``, idempotent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Union

import libcst as cst
import libcst.matchers as m
from libcst.codemod import CodemodContext
from libcst.codemod.visitors import AddImportsVisitor
from libcst.helpers import parse_template_expression, parse_template_statement

from optimizer_tool.cstedit import SETTING_NODES, node_at, value_like, with_keyword
from optimizer_tool.index import CallSite, FunctionInfo, UnitIndex, code_of, dotted, import_aliases, literal, norm
from optimizer_tool.rules.base import CannotFix, FixContext
from optimizer_tool.semantics import ROLE_CONSTRUCTORS, hyperparameter_source, names_in, same_object

Replacement = Union[cst.CSTNode, Callable[[cst.CSTNode], cst.CSTNode]]
Body = Union[cst.IndentedBlock, cst.Module]


# --- where a node sits -------------------------------------------------------------
class _ParentRecorder(cst.CSTVisitor):
    def __init__(self) -> None:
        self.parent: dict[cst.CSTNode, cst.CSTNode] = {}

    def on_visit(self, node: cst.CSTNode) -> bool:
        for child in node.children:
            self.parent[child] = node
        return True


class Tree:
    """One module with its parent links: which statement holds a node, which block holds a statement."""

    def __init__(self, module: cst.Module) -> None:
        self.module = module
        recorder = _ParentRecorder()
        module.visit(recorder)
        self.parent = recorder.parent

    def statement(self, node: cst.CSTNode) -> cst.BaseStatement:
        """The statement (simple line or compound) that directly holds ``node`` in a block."""
        current = node
        while current in self.parent:
            owner = self.parent[current]
            if isinstance(owner, (cst.IndentedBlock, cst.Module)) and isinstance(current, cst.BaseStatement):
                return current
            current = owner
        raise KeyError(node)

    def block(self, statement: cst.BaseStatement) -> Body:
        return self.parent[statement]

    def owner_statement(self, statement: cst.BaseStatement) -> cst.BaseStatement | None:
        """The compound statement (``for``, ``if``, ``with``, ``def``) whose block holds ``statement``."""
        current = self.block(statement)
        while current in self.parent:
            current = self.parent[current]
            if isinstance(current, cst.BaseCompoundStatement):
                return current
        return None

    def enclosing_in(self, node: cst.CSTNode, block: Body) -> cst.BaseStatement | None:
        """The statement of ``block`` that contains ``node`` (None when ``block`` does not hold it)."""
        current = node
        while current in self.parent:
            if self.parent[current] is block and isinstance(current, cst.BaseStatement):
                return current
            current = self.parent[current]
        return None

    def function(self, node: cst.CSTNode) -> cst.FunctionDef | None:
        current = node
        while current in self.parent:
            current = self.parent[current]
            if isinstance(current, cst.FunctionDef):
                return current
        return None

    def ancestors(self, node: cst.CSTNode) -> Iterable[cst.CSTNode]:
        current = node
        while current in self.parent:
            current = self.parent[current]
            yield current

    def top_statement(self, node: cst.CSTNode) -> cst.BaseStatement:
        """The statement holding ``node`` directly in the body of its function (or module): code
        inserted after it runs whichever branch or block ``node`` sits in."""
        scope = self.function(node)
        body = scope.body if scope is not None else self.module
        found = self.enclosing_in(node, body)
        if found is None:
            raise KeyError(node)
        return found

    def following(self, statement: cst.BaseStatement) -> list[cst.BaseStatement]:
        """The statements after ``statement`` in its block."""
        siblings = list(self.block(statement).body)
        return siblings[siblings.index(statement) + 1:]


def is_call_statement(statement: cst.CSTNode, call: cst.Call) -> bool:
    """``statement`` is exactly ``<call>`` or ``<name> = <call>`` on a line of its own: safe to move."""
    return m.matches(
        statement,
        m.SimpleStatementLine(body=[m.OneOf(
            m.Expr(value=m.MatchIfTrue(lambda n: n is call)),
            m.Assign(targets=[m.AssignTarget(target=m.Name() | m.Attribute())], value=m.MatchIfTrue(lambda n: n is call)),
        )]),
    )


def names_in_node(node: cst.CSTNode) -> set[str]:
    """Every variable name used under ``node`` (to keep new variables from clashing with existing
    ones); attribute names (``F.mse_loss``) and keyword names are not variables."""
    found: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, cst.Name):
            found.add(current.value)
        elif isinstance(current, cst.Attribute):
            stack.append(current.value)
        elif isinstance(current, cst.Arg):
            stack.append(current.value)
        else:
            stack.extend(c for c in current.children if isinstance(c, cst.CSTNode))
    return found


# --- snippets ------------------------------------------------------------------------
def snippet(module: cst.Module, source: str) -> list[cst.BaseStatement]:
    """Statements from plain source, parsed with the target's config; the comment lines above the
    first statement stay with it (``parse_module`` would file them as the module header)."""
    parsed = cst.parse_module(source, config=module.config_for_parsing)
    body = list(parsed.body)
    body[0] = body[0].with_changes(leading_lines=[*parsed.header, *body[0].leading_lines])
    return body


def statement(module: cst.Module, template: str, **values: cst.CSTNode) -> cst.BaseStatement:
    """One statement from a template (``{name}`` placeholders take nodes), parsed with the target's config."""
    return parse_template_statement(template, config=module.config_for_parsing, **values)


def expression(module: cst.Module, template: str, **values: cst.CSTNode) -> cst.BaseExpression:
    return parse_template_expression(template, config=module.config_for_parsing, **values)


def code(node: cst.CSTNode) -> str:
    return code_of(node).strip()


DOCSTRING = m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString() | m.ConcatenatedString())])


def split_docstring(body: Iterable[cst.BaseStatement]) -> tuple[list[cst.BaseStatement], list[cst.BaseStatement]]:
    body = list(body)
    if body and m.matches(body[0], DOCSTRING):
        return body[:1], body[1:]
    return [], body


def guarded(before: list[cst.BaseStatement], body: Iterable[cst.BaseStatement], after: list[cst.BaseStatement]) -> list[cst.BaseStatement]:
    """``before`` then ``try: body`` ``finally: after``: ``after`` runs even when ``body`` raises.
    Blank lines and comments leading ``body`` move in front of ``before``."""
    first, *rest = list(body)
    leading = list(first.leading_lines)
    attempt = cst.Try(
        body=cst.IndentedBlock(body=[first.with_changes(leading_lines=[]), *rest]),
        finalbody=cst.Finally(body=cst.IndentedBlock(body=after)),
    )
    if before:
        return [before[0].with_changes(leading_lines=[*leading, *before[0].leading_lines]), *before[1:], attempt]
    return [attempt.with_changes(leading_lines=leading)]


# --- edits -------------------------------------------------------------------------------
class _FileEdits:
    def __init__(self, module: cst.Module) -> None:
        self.tree = Tree(module)
        self.before: dict[cst.CSTNode, list[cst.BaseStatement]] = {}
        self.after: dict[cst.CSTNode, list[cst.BaseStatement]] = {}
        self.removed: set[cst.CSTNode] = set()
        self.replaced: dict[cst.CSTNode, Replacement] = {}
        self.imports: list[tuple[str, str | None, int]] = []

    @property
    def empty(self) -> bool:
        return not (self.before or self.after or self.removed or self.replaced or self.imports)


class _Apply(cst.CSTTransformer):
    def __init__(self, edits: _FileEdits) -> None:
        super().__init__()
        self.edits = edits

    def on_leave(self, original_node, updated_node):
        e = self.edits
        if original_node in e.replaced:
            replacement = e.replaced[original_node]
            updated_node = replacement(updated_node) if callable(replacement) else replacement
        before, after = e.before.get(original_node, []), e.after.get(original_node, [])
        if original_node in e.removed:
            return cst.FlattenSentinel([*before, *after]) if before or after else cst.RemoveFromParent()
        if before or after:
            return cst.FlattenSentinel([*before, updated_node, *after])
        return updated_node


class Edits:
    """All changes one fix makes to a unit, applied at the end in one pass per file."""

    def __init__(self, ctx: FixContext) -> None:
        self.ctx = ctx
        self._files: dict[Path, _FileEdits] = {}

    def file(self, path: Path) -> _FileEdits:
        if path not in self._files:
            self._files[path] = _FileEdits(self.ctx.module(path))
        return self._files[path]

    def tree(self, path: Path) -> Tree:
        return self.file(path).tree

    def module(self, path: Path) -> cst.Module:
        return self.file(path).tree.module

    def statement_of(self, call: CallSite) -> cst.BaseStatement:
        return self.tree(call.path).statement(call.node)

    def insert_before(self, path: Path, anchor: cst.BaseStatement, new: Iterable[cst.BaseStatement]) -> None:
        self.file(path).before.setdefault(anchor, []).extend(new)

    def insert_after(self, path: Path, anchor: cst.BaseStatement, new: Iterable[cst.BaseStatement]) -> None:
        self.file(path).after.setdefault(anchor, []).extend(new)

    def remove(self, path: Path, node: cst.BaseStatement) -> None:
        self.file(path).removed.add(node)

    def move_after(self, path: Path, moved: cst.BaseStatement, anchor: cst.BaseStatement) -> None:
        self.insert_after(path, anchor, [self.detach(path, moved)])

    def move_before(self, path: Path, moved: cst.BaseStatement, anchor: cst.BaseStatement) -> None:
        self.insert_before(path, anchor, [self.detach(path, moved)])

    def detach(self, path: Path, moved: cst.BaseStatement) -> cst.BaseStatement:
        """Remove ``moved`` from its place and return it for insertion elsewhere: the comment lines
        right above it travel with it, blank lines stay where they were (on the next statement)."""
        self.remove(path, moved)
        lines = list(moved.leading_lines)
        cut = len(lines)
        while cut and lines[cut - 1].comment is not None:
            cut -= 1
        stay, keep = lines[:cut], lines[cut:]
        siblings = list(self.tree(path).block(moved).body)
        following = siblings[siblings.index(moved) + 1:]
        if stay and following:
            self.replace(path, following[0], lambda node: node.with_changes(leading_lines=[*stay, *node.leading_lines]))
        return moved.with_changes(leading_lines=keep)

    def replace(self, path: Path, node: cst.CSTNode, replacement: Replacement) -> None:
        """Replace ``node`` (an original node) by a node, or by ``fn(updated_node)``; replacements
        of one node compose in the order they were asked for."""
        edits = self.file(path)
        earlier = edits.replaced.get(node)
        if earlier is None:
            edits.replaced[node] = replacement
            return
        first = earlier if callable(earlier) else (lambda _n, e=earlier: e)
        second = replacement if callable(replacement) else (lambda _n, r=replacement: r)
        edits.replaced[node] = lambda updated: second(first(updated))

    def first_time(self, key) -> bool:
        """True only the first time a fix asks for ``key`` (a helper inserted once per file)."""
        seen = self.__dict__.setdefault("_once", set())
        if key in seen:
            return False
        seen.add(key)
        return True

    def add_import(self, path: Path, module: str, obj: str | None = None, relative: int = 0) -> None:
        """``import module`` / ``from module import obj``; ``relative`` dots for a package-relative import."""
        self.file(path).imports.append((module, obj, relative))

    def apply(self) -> None:
        for path, edits in self._files.items():
            if edits.empty:
                continue
            module = edits.tree.module.visit(_Apply(edits))
            if edits.imports:
                context = CodemodContext()
                for name, obj, relative in edits.imports:
                    AddImportsVisitor.add_needed_import(context, name, obj, relative=relative)
                module = AddImportsVisitor(context).transform_module(module)
            self.ctx.update(path, module)


# --- the trainer's settings: where a new value goes and how the code reads it -------------
TRAINING_FIELDS = frozenset({
    "learning_rate", "lr", "max_grad_norm", "num_epochs", "epochs", "num_train_epochs", "batch_size", "train_batch_size",
    "gradient_accumulation_steps", "warmup_steps", "lr_warmup_steps", "max_train_steps", "weight_decay",
})


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
    roots = {a.target.split(".", 1)[0] for a in index.assigns if a.path == function.path and (a.function is None or a.function in outer)}
    roots |= {p for f in outer for p in f.params}
    return roots


def settings_home(index: UnitIndex, function: FunctionInfo | None, anchor: cst.BaseExpression | None = None) -> SettingsHome | None:
    """Where the code around ``function`` reads its settings. ``anchor`` (a value known to be a
    setting, such as the optimizer's ``lr=``) decides when given; otherwise the dataclass or parser
    whose fields the code reads most (``self.train_config.max_grad_norm`` -> TrainConfig)."""
    classes = _dataclass_fields(index)
    parsers = _argparse_flags(index)
    source = hyperparameter_source(index, anchor) if anchor is not None else None
    if source is not None:
        owner = source.setting.owner if source.kind == "dataclass" else next(
            (c.receiver for c in index.method_calls("add_argument") if (c.path, c.line, c.col) == (source.setting.path, source.setting.line, source.setting.col)), "")
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
        for kind, table in (("dataclass", {o: f for o, (_, f) in classes.items()}), ("argparse", {o: f for o, (_, f, _) in parsers.items()})):
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


def _class_node(module: cst.Module, name: str) -> cst.ClassDef | None:
    found = m.findall(module, m.ClassDef(name=m.Name(name)))
    return found[0] if len(found) == 1 else None


def _argument_call(index: UnitIndex, home: SettingsHome, name: str) -> CallSite | None:
    return next((c for c in index.method_calls("add_argument") if c.receiver == home.owner and any(norm(f) == norm(name) for f in _flags(c))), None)


def ensure_setting(edits: Edits, index: UnitIndex, home: SettingsHome, name: str, kind: str, default: str, why: str) -> str:
    """The code that reads setting ``name``, first adding it with ``default`` when the trainer lacks
    it: a dataclass field after the class's last field, or an argparse flag after the last flag."""
    if home.has(name):
        return home.read(name)
    module = edits.module(home.path)
    if home.kind == "dataclass":
        cls = _class_node(module, home.owner)
        fields = [s for s in cls.body.body if m.matches(s, m.SimpleStatementLine(body=[m.AnnAssign()]))] if cls is not None else []
        if not fields:
            raise CannotFix(home.path, 1, f"cannot find the fields of the config class {home.owner} to add {name}", f"{name}: {kind} = {default}  # {why}")
        edits.insert_after(home.path, fields[-1], [statement(module, f"{name}: {kind} = {default}  # {why}")])
    else:
        adds = [c for c in index.method_calls("add_argument") if c.receiver == home.owner and c.path == home.path]
        flag = "--" + (name.replace("_", "-") if home.dashed else name)
        help_text = why.replace('"', "'").replace("%", "%%")  # argparse formats help with %
        new = statement(module, f'{home.owner}.add_argument("{flag}", type={kind}, default={default}, help="{help_text}")')
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
        new = statement(edits.module(home.path), f'{home.owner}.add_argument("{flag}", action="store_true", help="{help_text}")')
        edits.insert_after(home.path, edits.tree(home.path).statement(adds[-1].node), [new])
        home.fields = home.fields | {norm(name)}
    return home.read(name)


def set_default(edits: Edits, index: UnitIndex, home: SettingsHome, name: str, value: object) -> bool:
    """Change the default of an existing field or flag of ``home`` to ``value``; False when absent."""
    setting = next((s for s in index.setting(name) if s.path == home.path and (
        (home.kind == "dataclass" and s.kind == "class-default" and s.owner == home.owner) or home.kind == "argparse" and s.kind == "argparse")), None)
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


DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
SMALL_PRESET = re.compile(r"smoke|tiny|debug|test|offline", re.I)


def set_in_presets(edits: Edits, index: UnitIndex, home: SettingsHome, name: str, value: str) -> int:
    """Pass ``name=value`` where small offline presets build the config class (``smoke_config()``);
    returns how many presets were changed."""
    if home.kind != "dataclass":
        return 0
    done = 0
    for call in index.calls:
        if call.func_text.rsplit(".", 1)[-1] == home.owner and call.function is not None and SMALL_PRESET.search(call.function.name) and call.kwarg(name) is None:
            module = edits.module(call.path)
            edits.replace(call.path, call.node, lambda node, m_=module: with_keyword(node, name, expression(m_, value)))
            done += 1
    return done


def setting_value(index: UnitIndex, home: SettingsHome | None, name: str) -> object:
    """The literal default of setting ``name`` of ``home`` (None when unknown or absent)."""
    if home is None:
        return None
    for s in index.setting(name):
        if s.path == home.path and s.known and ((home.kind == "argparse" and s.kind == "argparse") or (s.kind == "class-default" and s.owner == home.owner)):
            return s.value
    return None


# --- training objects -------------------------------------------------------------------
OPTIMIZER_CONSTRUCTORS = tuple(p for p in ROLE_CONSTRUCTORS["optimizer"] if p != "*.configure_optimizers")


def optimizer_construction(index: UnitIndex, name: str, depth: int = 0) -> CallSite | None:
    """The call that built optimizer ``name`` (through ``accelerator.prepare`` unpacking and aliases)."""
    if depth > 5 or not name:
        return None
    for assign in index.assigns:
        if not same_object(assign.target, name):
            continue
        found = None
        if assign.source:
            found = optimizer_construction(index, assign.source, depth + 1)
        elif assign.call is not None and assign.call.matches(OPTIMIZER_CONSTRUCTORS):
            return assign.call
        elif assign.call is not None and assign.call.method in ("prepare", "to") and assign.call.args:
            found = optimizer_construction(index, dotted(assign.call.args[0].value), depth + 1)
        elif dotted(assign.value) and dotted(assign.value) != name:
            found = optimizer_construction(index, dotted(assign.value), depth + 1)
        if found is not None:
            return found
    return None


def optimizer_parameters(index: UnitIndex, optimizer: str, where: FunctionInfo | None) -> str:
    """Code for the parameters ``optimizer`` updates, readable in ``where``: the expression it was
    built from when that is a plain name or ``model.parameters()`` visible there, else its param groups."""
    site = optimizer_construction(index, optimizer)
    params = site.arg(0, "params") if site is not None else None
    simple = dotted(params) or (
        dotted(params.func.value) if isinstance(params, cst.Call) and isinstance(params.func, cst.Attribute) and params.func.attr.value == "parameters" and not params.args else ""
    )
    if simple and site is not None and (site.function == where or simple.startswith("self.")):
        return code(params)
    return f'[p for group in {optimizer}.param_groups for p in group["params"]]'


def accelerator_of(index: UnitIndex, call: CallSite) -> str:
    """The ``Accelerator`` the function of ``call`` back-propagates with (``accelerator.backward``), or ''."""
    for other in index.calls_in(call.function):
        if other.method == "backward" and other.receiver and any(o.startswith("accelerate.") for o in index.origins(other.receiver)):
            return other.receiver
    return ""


def module_name(edits: Edits, index: UnitIndex, path: Path, module: str) -> str:
    """How ``path`` spells an imported module (``th`` for ``import torch as th``), importing it when absent."""
    source = next((f for f in index.files if f.path == path), None)
    aliases = import_aliases(source.tree) if source is not None else {}
    spelled = sorted(local for local, origins in aliases.items() if module in origins)
    if spelled:
        return module if module in spelled else spelled[0]
    edits.add_import(path, module)
    return module
