"""A semantic index of one training unit, built in a single libcst pass per file.

Rules never walk syntax trees themselves: they ask the index for call sites
(by qualified name through imports and aliases, or by method on a receiver),
for assignments and for *settings* — the values a trainer configures, wherever
they come from (dataclass defaults, argparse defaults, constructor keywords,
``getattr`` defaults, dict literals, YAML/TOML files). Comments and strings are
never code here: only real calls, names and literal values count.
"""

from __future__ import annotations

import ast
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator

import libcst as cst
from libcst.metadata import PositionProvider
from libcst.metadata.position_provider import PositionProvidingCodegenState

from optimizer_tool.project import ConfigFile, SourceFile, Unit
from optimizer_tool.syntax import module_code, remember_code, statement_code

_EMPTY = cst.Module([])
NO_GRAD_CONTEXTS = {"torch.no_grad", "torch.inference_mode", "torch.autograd.grad_mode.no_grad"}


def code_of(node: cst.CSTNode) -> str:
    return _EMPTY.code_for_node(node)


def dotted(node: cst.BaseExpression | None) -> str:
    """``self.ema.update`` for an attribute chain; '' for anything else (calls, subscripts)."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr.value}" if base else ""
    return ""


def literal(node: cst.BaseExpression | None) -> object:
    """The Python value of a literal expression, else ``Unknown``."""
    if node is None:
        return UNKNOWN
    try:
        return ast.literal_eval(code_of(node).strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return UNKNOWN


class _Unknown:
    def __repr__(self) -> str:
        return "<unknown>"

    def __bool__(self) -> bool:
        return False


UNKNOWN = _Unknown()


ENUM_MEMBER = re.compile(r"^(?:\w+\.)*[A-Z]\w*\.([A-Z][A-Z0-9_]*)$")


def _enum_member(node: cst.BaseExpression | None) -> object:
    """An enum member passed as a keyword, by its name in lower case (guided-diffusion's
    ``model_mean_type=ModelMeanType.START_X`` is ``"start_x"``), else ``Unknown``."""
    match = ENUM_MEMBER.match(code_of(node).strip()) if isinstance(node, cst.Attribute) else None
    return match.group(1).lower() if match else UNKNOWN


def norm(name: str) -> str:
    return name.strip().lstrip("-").replace("-", "_").lower()


@dataclass(frozen=True)
class FunctionInfo:
    name: str
    class_name: str | None
    path: Path
    line: int
    end_line: int
    no_grad: bool  # decorated with @torch.no_grad() / inference_mode
    params: tuple[str, ...]
    positional: int = 0  # how many of ``params`` a call can pass by position (``self`` included)

    @property
    def qualname(self) -> str:
        return f"{self.class_name}.{self.name}" if self.class_name else self.name

    @property
    def passed_params(self) -> tuple[str, ...]:
        """The parameters a call passes: all but a bound ``self``/``cls``."""
        return self.params[1:] if self.params and self.params[0] in ("self", "cls") else self.params

    @property
    def callee(self) -> str:
        """The name a call of this function is written with: the class's for an ``__init__``."""
        return self.class_name if self.name == "__init__" and self.class_name else self.name

    def call_position(self, param: str) -> int | None:
        """Where a call passes ``param`` positionally (``self``/``cls`` are bound, not passed);
        None for ``self``/``cls`` or a name that is no parameter."""
        passed = self.passed_params
        return passed.index(param) if param in passed else None


@dataclass(frozen=True)
class Loop:
    """One enclosing ``for``/``while`` statement: identity (path, line, col) and its source."""

    path: Path
    line: int
    col: int
    target: str  # the loop variable(s) of a for loop, '' for while
    iter: str  # the iterable of a for loop, the condition of a while loop


@dataclass(eq=False)
class CallSite:
    path: Path
    node: cst.Call
    line: int
    col: int
    func_text: str  # dotted callee as written, '' when not a plain chain
    qualnames: frozenset[str]
    function: FunctionInfo | None
    guards: tuple[str, ...]  # every enclosing if condition, outermost first; in an else/elif part "not (test)"
    no_grad: bool
    loop_depth: int
    with_items: tuple[str, ...]  # source of every enclosing with-item, outermost first
    in_finally: bool = False
    loops: tuple[Loop, ...] = ()  # every enclosing loop, outermost first (loop_depth == len(loops))
    # every enclosing if statement, outermost first: (line of the `if`, True when in its else/elif part)
    branches: tuple[tuple[int, bool], ...] = ()
    default_of: str = ""  # the parameter whose default this call is (``criterion=nn.MSELoss()``)

    @property
    def method(self) -> str:
        return self.func_text.rsplit(".", 1)[-1] if self.func_text else ""

    @property
    def receiver(self) -> str:
        return self.func_text.rsplit(".", 1)[0] if "." in self.func_text else ""

    @property
    def args(self) -> list[cst.Arg]:
        return [a for a in self.node.args if a.keyword is None and not a.star]

    def kwarg(self, name: str) -> cst.BaseExpression | None:
        for arg in self.node.args:
            if arg.keyword is not None and arg.keyword.value == name:
                return arg.value
        return None

    def arg(self, index: int, name: str | None = None) -> cst.BaseExpression | None:
        if name is not None and (value := self.kwarg(name)) is not None:
            return value
        positional = self.args
        return positional[index].value if index < len(positional) else None

    def matches(self, patterns: Iterable[str]) -> bool:
        return any(_match(q, p) for q in self.names for p in patterns)

    @cached_property
    def names(self) -> frozenset[str]:
        """Qualified names plus the written text: local helpers have no qualified import name."""
        return self.qualnames | ({self.func_text} if self.func_text else frozenset())

    @property
    def text(self) -> str:
        return code_of(self.node)

    def same_scope(self, other: "CallSite") -> bool:
        return self.path == other.path and self.function == other.function


@dataclass(eq=False)
class Assign:
    path: Path
    line: int
    col: int
    target: str  # dotted text of the target, e.g. 'self.ema'
    value: cst.BaseExpression
    function: FunctionInfo | None
    call: CallSite | None  # when the value is a call
    source: str = ""  # for `a, b = prepare(x, y)`: the argument text at the same position
    guards: tuple[str, ...] = ()  # every enclosing if condition, as for CallSite.guards
    position: int | None = None  # for `a, b = f(x)`: the target's index in the tuple


@dataclass(eq=False)
class ItemAssign:
    """An assignment to a subscript: ``param_group["lr"] = lr`` (container 'param_group', key 'lr')."""

    path: Path
    line: int
    col: int
    container: str  # dotted text of the subscripted object, '' when not a plain chain
    key: object  # the literal key, or UNKNOWN
    value: cst.BaseExpression
    function: FunctionInfo | None


@dataclass(frozen=True)
class Setting:
    name: str  # normalized leaf name, e.g. 'beta_schedule'
    value: object  # a Python literal or UNKNOWN
    kind: str  # class-default | argparse | kwarg | getattr-default | assign | dict | param-default | config-file
    path: Path
    line: int
    col: int
    owner: str = ""  # the callee or class it belongs to

    @property
    def known(self) -> bool:
        return self.value is not UNKNOWN


def import_aliases(source: SourceFile) -> dict[str, set[str]]:
    """Local name -> the qualified names it may stand for, from every import in the file
    (function-level ones included: the plan imports lpips inside ``__init__``); computed once per
    file version.

    This replaces libcst's scope-based QualifiedNameProvider, which costs ~3x the rest of the
    index; shadowing an imported name by a local assignment is rare in trainers."""
    if "_aliases" not in source.__dict__:
        source.__dict__["_aliases"] = _aliases(source.imports)
    return source.__dict__["_aliases"]


def _aliases(imports: list[ast.Import | ast.ImportFrom]) -> dict[str, set[str]]:
    aliases: dict[str, set[str]] = {}
    for node in imports:
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                aliases.setdefault(local, set()).add(alias.name if alias.asname else local)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                if alias.name != "*":
                    full = f"{module}.{alias.name}" if node.module else f"{module}{alias.name}"
                    aliases.setdefault(alias.asname or alias.name, set()).add(full)
    return aliases


def _match(name: str, pattern: str) -> bool:
    """``pattern`` matches a qualified name exactly, by its last components (``*.step``),
    or as a prefix glob (``torch.optim.*``)."""
    if pattern.startswith("*."):
        return name == pattern[2:] or name.endswith(pattern[1:])
    if pattern.endswith(".*"):
        return name.startswith(pattern[:-1])
    return name == pattern


class _Context(cst.CSTVisitor):
    """Where the visit is: the enclosing class and function, if conditions and branches, loops,
    with-items and finally blocks; and the file's import aliases, to qualify dotted names."""

    def __init__(self, source: SourceFile, aliases: dict[str, set[str]] | None = None) -> None:
        super().__init__()
        self.source = source
        self.aliases = import_aliases(source) if aliases is None else aliases
        self.heads: dict[str, frozenset[str]] = {}  # every name looked up in the aliases -> what it stood for
        self.positions: dict[cst.CSTNode, object] = {}  # node -> its CodeRange (``FileFacts.of`` fills it)
        self.functions: list[FunctionInfo] = []
        self.classes: list[str] = []
        self.guards: list[str] = []
        self.param_defaults: dict[int, str] = {}  # id of a parameter's default call -> the parameter
        self.withs: list[tuple[str, bool]] = []
        self.loop_depth = 0
        self.finally_depth = 0
        self.loops: list[Loop] = []
        self.branches: list[tuple[int, bool]] = []

    # --- helpers -------------------------------------------------------
    def pos(self, node: cst.CSTNode) -> tuple[int, int]:
        start = self.positions[node].start
        return start.line, start.column + 1

    def qnames(self, node: cst.CSTNode) -> frozenset[str]:
        """Qualified names of a dotted name through the file's imports and aliases
        (``nn.utils.clip_grad_norm_`` -> ``torch.nn.utils.clip_grad_norm_``)."""
        text = dotted(node)
        head, _, rest = text.partition(".")
        origins = self.heads.get(head)
        if origins is None:
            origins = self.heads[head] = frozenset(self.aliases.get(head, ()))
        return frozenset(f"{origin}.{rest}" if rest else origin for origin in origins)

    @property
    def function(self) -> FunctionInfo | None:
        return self.functions[-1] if self.functions else None

    def call_site(self, node: cst.Call) -> CallSite:
        """A call with everything around it."""
        line, col = self.pos(node)
        func = self.function
        return CallSite(
            path=self.source.path,
            node=node,
            line=line,
            col=col,
            func_text=dotted(node.func),
            qualnames=self.qnames(node.func),
            function=func,
            guards=tuple(self.guards),
            no_grad=any(flag for _, flag in self.withs) or bool(func and func.no_grad),
            loop_depth=self.loop_depth,
            loops=tuple(self.loops),
            branches=tuple(self.branches),
            with_items=tuple(text for text, _ in self.withs),
            in_finally=self.finally_depth > 0,
            default_of=self.param_defaults.get(id(node), ""),
        )

    # --- scopes --------------------------------------------------------
    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.append(node.name.value)

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self.classes.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        line, _ = self.pos(node)
        end = self.positions[node].end.line
        no_grad = any(
            (self.qnames(d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator) & NO_GRAD_CONTEXTS)
            for d in node.decorators
        )
        params = tuple(
            p.name.value for p in [*node.params.posonly_params, *node.params.params, *node.params.kwonly_params]
        )
        cls = self.classes[-1] if self.classes and not self.functions else None
        positional = len(node.params.posonly_params) + len(node.params.params)
        self.functions.append(
            FunctionInfo(node.name.value, cls, self.source.path, line, end, no_grad, params, positional)
        )

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.functions.pop()

    def visit_If(self, node: cst.If) -> None:
        self.guards.append(code_of(node.test))

    def leave_If(self, node: cst.If) -> None:
        self.guards.pop()

    def visit_If_body(self, node: cst.If) -> None:
        self.branches.append((self.pos(node)[0], False))

    def leave_If_body(self, node: cst.If) -> None:
        self.branches.pop()

    def visit_If_orelse(self, node: cst.If) -> None:
        # The else/elif part runs when the test is false: its guard is the negated test.
        self.guards[-1] = f"not ({code_of(node.test)})"
        self.branches.append((self.pos(node)[0], True))

    def leave_If_orelse(self, node: cst.If) -> None:
        self.branches.pop()

    def visit_While(self, node: cst.While) -> None:
        self.loop_depth += 1
        line, col = self.pos(node)
        self.loops.append(Loop(self.source.path, line, col, "", code_of(node.test)))

    def leave_While(self, node: cst.While) -> None:
        self.loop_depth -= 1
        self.loops.pop()

    def visit_For(self, node: cst.For) -> None:
        self.loop_depth += 1
        line, col = self.pos(node)
        self.loops.append(Loop(self.source.path, line, col, code_of(node.target), code_of(node.iter)))

    def leave_For(self, node: cst.For) -> None:
        self.loop_depth -= 1
        self.loops.pop()

    def visit_Finally(self, node: cst.Finally) -> None:
        self.finally_depth += 1

    def leave_Finally(self, node: cst.Finally) -> None:
        self.finally_depth -= 1

    def visit_With(self, node: cst.With) -> None:
        for item in node.items:
            expr = item.item
            callee = expr.func if isinstance(expr, cst.Call) else expr
            is_no_grad = bool(self.qnames(callee) & NO_GRAD_CONTEXTS)
            if isinstance(expr, cst.Call) and self.qnames(callee) & {"torch.set_grad_enabled"}:
                is_no_grad = literal(expr.args[0].value) is False if expr.args else False
            self.withs.append((code_of(expr), is_no_grad))

    def leave_With(self, node: cst.With) -> None:
        del self.withs[len(self.withs) - len(node.items) :]


class _Indexer(_Context):
    """Records the file's functions, calls, assignments and settings into its :class:`FileFacts`."""

    def __init__(self, source: SourceFile, index: "FileFacts", aliases: dict[str, set[str]] | None = None) -> None:
        super().__init__(source, aliases)
        self.index = index
        self.pending: list[tuple[Assign, cst.BaseExpression]] = []  # assignments whose call is resolved after the walk

    def setting(
        self,
        name: str,
        value_node: cst.BaseExpression | None,
        kind: str,
        at: cst.CSTNode,
        owner: str = "",
        value: object = None,
    ) -> None:
        line, col = self.pos(at)
        if value is None:
            value = literal(value_node)
            if value is UNKNOWN and kind == "kwarg":
                value = _enum_member(value_node)
        self.index.settings.append(Setting(norm(name), value, kind, self.source.path, line, col, owner))

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        super().visit_FunctionDef(node)
        info = self.functions[-1]
        self.index.functions.append(info)
        for param in [*node.params.params, *node.params.kwonly_params]:
            if param.default is not None and param.name.value not in ("self", "cls"):
                self.setting(param.name.value, param.default, "param-default", param, owner=info.qualname)
                if isinstance(param.default, cst.Call):
                    self.param_defaults[id(param.default)] = param.name.value

    def visit_Call(self, node: cst.Call) -> None:
        site = self.call_site(node)
        self.index.calls.append(site)
        self.index.call_by_node[node] = site
        self._call_defaults(site, node)
        owner = next(iter(sorted(site.qualnames)), site.func_text)
        for arg in node.args:
            if arg.keyword is not None:
                self.setting(arg.keyword.value, arg.value, "kwarg", arg, owner=owner)

    def _call_defaults(self, site: CallSite, node: cst.Call) -> None:
        """Defaults a call declares: argparse's add_argument / set_defaults, getattr(obj, key, default)
        and mapping.get(key, default)."""
        if site.method == "add_argument" and node.args:
            flags = [literal(a.value) for a in node.args if a.keyword is None]
            longest = max((f for f in flags if isinstance(f, str)), key=len, default=None)
            if isinstance(longest, str):
                default = site.kwarg("default")
                action = literal(site.kwarg("action"))
                if default is None and action in ("store_true", "store_false"):
                    self.setting(longest, None, "argparse", node, value=action == "store_false")
                else:
                    self.setting(longest, default, "argparse", node)
        elif site.method == "set_defaults":
            for arg in node.args:
                if arg.keyword is not None:
                    self.setting(arg.keyword.value, arg.value, "argparse", arg)
        elif site.func_text == "getattr" and len(node.args) == 3:
            key = literal(node.args[1].value)
            if isinstance(key, str):
                self.setting(key, node.args[2].value, "getattr-default", node)
        elif site.method == "get" and len(node.args) == 2 and node.args[0].keyword is None:
            key = literal(node.args[0].value)
            if isinstance(key, str):
                self.setting(key, node.args[1].value, "getattr-default", node)

    def visit_Dict(self, node: cst.Dict) -> None:
        for element in node.elements:
            if isinstance(element, cst.DictElement):
                key = literal(element.key)
                if isinstance(key, str) and key.isidentifier():
                    self.setting(key, element.value, "dict", element)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        name = dotted(node.target)
        if name and node.value is not None:
            kind = "class-default" if self.classes and not self.functions else "assign"
            self.setting(
                name.rsplit(".", 1)[-1], node.value, kind, node, owner=self.classes[-1] if self.classes else ""
            )
            self._record_assign(node, name, node.value)

    def visit_Return(self, node: cst.Return) -> None:
        if node.value is not None:
            line, col = self.pos(node)
            self.index.returns.append(Assign(self.source.path, line, col, "return", node.value, self.function, None))
            self.pending.append((self.index.returns[-1], node.value))

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            expr = target.target
            if isinstance(expr, cst.Subscript) and len(expr.slice) == 1 and isinstance(expr.slice[0].slice, cst.Index):
                line, col = self.pos(node)
                key = literal(expr.slice[0].slice.value)
                self.index.item_assigns.append(
                    ItemAssign(self.source.path, line, col, dotted(expr.value), key, node.value, self.function)
                )
                continue
            if isinstance(expr, (cst.Tuple, cst.List)):
                sources = node.value.args if isinstance(node.value, cst.Call) else []
                for i, element in enumerate(expr.elements):
                    name = dotted(element.value)
                    if name:
                        src = dotted(sources[i].value) if i < len(sources) else ""
                        self._record_assign(node, name, node.value, source=src, position=i)
                continue
            name = dotted(expr)
            if not name:
                continue
            self._record_assign(node, name, node.value)
            kind = "class-default" if self.classes and not self.functions else "assign"
            self.setting(
                name.rsplit(".", 1)[-1], node.value, kind, node, owner=self.classes[-1] if self.classes else ""
            )

    def _record_assign(
        self, node: cst.CSTNode, name: str, value: cst.BaseExpression, source: str = "", position: int | None = None
    ) -> None:
        line, col = self.pos(node)
        self.index.assigns.append(
            Assign(self.source.path, line, col, name, value, self.function, None, source, tuple(self.guards), position)
        )
        self.pending.append((self.index.assigns[-1], value))


@dataclass
class FileFacts:
    """What one file contributes; computed once per parsed file and shared by every unit
    that contains it (a config module imported by several trainers is indexed once).

    Built statement by statement (``_Piece``): a module a fix changed shares every top-level
    statement it did not touch with the module before (libcst keeps those nodes), and their facts
    are reused, moved to their new lines, instead of walking a 50,000-line file again for a fix of
    three statements (issue 14, item 10)."""

    calls: list[CallSite] = field(default_factory=list)
    assigns: list[Assign] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    functions: list[FunctionInfo] = field(default_factory=list)
    call_by_node: dict[cst.Call, CallSite] = field(default_factory=dict)
    item_assigns: list[ItemAssign] = field(default_factory=list)
    returns: list[Assign] = field(default_factory=list)  # ``return <value>`` statements (target 'return')
    pieces: dict[cst.BaseStatement, _Piece] = field(default_factory=dict)  # top-level statement -> its facts

    @classmethod
    def of(cls, source: SourceFile) -> "FileFacts":
        if source.facts is None:
            module = source.module
            aliases = import_aliases(source)
            earlier = _RECENT.pop(source.path, {})  # kept across versions: a fix may start from any of them
            facts = cls()
            line = 1 + len(module.header)
            for statement in module.body:
                piece = earlier.get(statement)
                if piece is None or not piece.holds(aliases):
                    piece = _Piece.build(source, module, statement, line, aliases)
                elif piece.start != line:
                    piece = piece.moved(line - piece.start)
                facts.pieces[statement] = piece
                facts._add(piece.facts)
                line += piece.lines
            earlier.update(facts.pieces)
            _RECENT[source.path] = earlier
            while len(_RECENT) > _RECENT_FILES:
                _RECENT.popitem(last=False)
            source.facts = facts
        return source.facts

    def _add(self, other: "FileFacts") -> None:
        self.calls += other.calls
        self.assigns += other.assigns
        self.settings += other.settings
        self.functions += other.functions
        self.call_by_node.update(other.call_by_node)
        self.item_assigns += other.item_assigns
        self.returns += other.returns


@dataclass
class _Piece:
    """The facts of one top-level statement, built with its text starting at line ``start``
    (leading comments and blank lines included) and spanning ``lines`` lines; ``heads`` are the
    import aliases its names were qualified through, as they were then."""

    facts: FileFacts
    start: int
    lines: int
    heads: dict[str, frozenset[str]]

    @classmethod
    def build(
        cls, source: SourceFile, module: cst.Module, statement: cst.BaseStatement, start: int, aliases
    ) -> "_Piece":
        provider = PositionProvider()
        state = PositionProvidingCodegenState(
            default_indent=module.default_indent, default_newline=module.default_newline, provider=provider, line=start
        )
        statement._codegen(state)  # the positions libcst's provider computes, for this statement only
        remember_code(module, statement, "".join(state.tokens))
        facts = FileFacts()
        indexer = _Indexer(source, facts, aliases)
        indexer.positions = provider._computed
        statement.visit(indexer)
        for assign, value in indexer.pending:
            if isinstance(value, cst.Call):
                assign.call = facts.call_by_node.get(value)
        return cls(facts, start, state.line - start, indexer.heads)

    def holds(self, aliases: dict[str, set[str]]) -> bool:
        """The file's imports still qualify this statement's names as they did (a fix that imports
        a name the statement uses changes its facts)."""
        return all(frozenset(aliases.get(head, ())) == origins for head, origins in self.heads.items())

    def moved(self, delta: int) -> "_Piece":
        """The same facts ``delta`` lines further down (a fix inserted lines above the statement)."""
        memo: dict[int, object] = {}

        def function(info: FunctionInfo | None) -> FunctionInfo | None:
            if info is None:
                return None
            if id(info) not in memo:
                memo[id(info)] = replace(info, line=info.line + delta, end_line=info.end_line + delta)
            return memo[id(info)]

        def call(site: CallSite | None) -> CallSite | None:
            if site is None:
                return None
            if id(site) not in memo:
                memo[id(site)] = replace(
                    site,
                    line=site.line + delta,
                    function=function(site.function),
                    loops=tuple(replace(loop, line=loop.line + delta) for loop in site.loops),
                    branches=tuple((line + delta, orelse) for line, orelse in site.branches),
                )
            return memo[id(site)]

        def assign(a: Assign) -> Assign:
            return replace(a, line=a.line + delta, function=function(a.function), call=call(a.call))

        old = self.facts
        facts = FileFacts(
            calls=[call(c) for c in old.calls],
            assigns=[assign(a) for a in old.assigns],
            settings=[replace(s, line=s.line + delta) for s in old.settings],
            functions=[function(f) for f in old.functions],
            item_assigns=[replace(i, line=i.line + delta, function=function(i.function)) for i in old.item_assigns],
            returns=[assign(r) for r in old.returns],
        )
        facts.call_by_node = {node: call(site) for node, site in old.call_by_node.items()}
        return _Piece(facts, self.start + delta, self.lines, self.heads)


def reparsed(fixed: cst.Module, original: cst.Module) -> cst.Module | None:
    """``fixed`` as the next ``check`` will read it, without parsing the whole file again: each
    top-level statement a fix built or changed is printed and parsed on its own (a tree built by
    transformations can print as code that parses differently), the statements it kept from
    ``original`` stay (a parse made them, and their facts are reused). None when a statement does
    not parse on its own or the result does not print as ``fixed`` does: then parse the file."""
    kept = {id(statement) for statement in original.body}
    body: list[cst.BaseStatement] = []
    for statement in fixed.body:
        if id(statement) in kept:
            body.append(statement)
            continue
        try:
            snippet = cst.parse_module(statement_code(fixed, statement))
        except (cst.ParserSyntaxError, RecursionError):
            return None
        if snippet.footer or not snippet.body:
            return None
        first, *rest = snippet.body
        if snippet.header:  # leading comments and blank lines of a statement parse as a module header
            first = first.with_changes(leading_lines=[*snippet.header, *first.leading_lines])
        body += [first, *rest]
    module = fixed.with_changes(body=body)
    return module if module_code(module) == module_code(fixed) else None


# The pieces built for the last few files (the ones being fixed), by statement node, over every
# version of each file: a changed module's untouched statements are found here by identity.
_RECENT: OrderedDict[Path, dict[cst.BaseStatement, _Piece]] = OrderedDict()
_RECENT_FILES = 16


def _grouped(items: Iterable, key) -> dict:
    """``items`` by ``key(item)``, each group in the order of ``items``."""
    table: dict = {}
    for item in items:
        table.setdefault(key(item), []).append(item)
    return table


@dataclass
class UnitIndex:
    unit: Unit
    calls: list[CallSite] = field(default_factory=list)
    assigns: list[Assign] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    functions: list[FunctionInfo] = field(default_factory=list)
    item_assigns: list[ItemAssign] = field(default_factory=list)
    returns: list[Assign] = field(default_factory=list)

    @classmethod
    def build(cls, unit: Unit) -> "UnitIndex":
        index = cls(unit)
        for source in unit.files:
            facts = FileFacts.of(source)
            index.calls += facts.calls
            index.assigns += facts.assigns
            index.settings += facts.settings
            index.functions += facts.functions
            index.item_assigns += facts.item_assigns
            index.returns += facts.returns
        for config in unit.configs:
            index.settings.extend(_config_settings(config))
        index.settings.extend(_positional_settings(index))
        return index

    # --- queries --------------------------------------------------------
    def owners(self, path: Path) -> dict[cst.CSTNode, cst.BaseStatement]:
        """The top-level statement of ``path`` that holds each call and assigned value the index
        has there (where to look for a node in a large module)."""
        found: dict[cst.CSTNode, cst.BaseStatement] = {}
        for source in self.unit.files:
            if source.path == path and isinstance(source.facts, FileFacts):
                for statement, piece in source.facts.pieces.items():
                    facts = piece.facts
                    found.update(dict.fromkeys(facts.call_by_node, statement))
                    for held in (*facts.assigns, *facts.item_assigns, *facts.returns):
                        found[held.value] = statement
        return found

    @property
    def files(self) -> list[SourceFile]:
        return self.unit.files

    def source(self, path: Path) -> SourceFile | None:
        """The unit's file at ``path``, or None."""
        return next((f for f in self.unit.files if f.path == path), None)

    @property
    def entry(self) -> SourceFile:
        return self.unit.entry

    def calls_to(self, *patterns: str) -> list[CallSite]:
        """Calls whose qualified name (or written dotted name) matches one of the patterns."""
        cache = self.__dict__.setdefault("_calls_to", {})
        if patterns not in cache:
            cache[patterns] = [c for c in self.calls if c.matches(patterns)]
        return cache[patterns]

    @cached_property
    def _calls_by_method(self) -> dict[str, list[CallSite]]:
        table: dict[str, list[CallSite]] = {}
        for call in self.calls:
            if call.receiver:
                table.setdefault(call.method, []).append(call)
        return table

    @cached_property
    def _calls_by_leaf(self) -> dict[str, list[CallSite]]:
        return _grouped([c for c in self.calls if c.func_text], lambda c: c.method)

    def calls_named(self, *leaves: str) -> list[CallSite]:
        """Calls whose written name ends in one of ``leaves`` (``train`` finds ``train(...)`` and
        ``self.train(...)``), in source order for one name."""
        return [c for leaf in leaves for c in self._calls_by_leaf.get(leaf, ())]

    def passed_to(self, function: FunctionInfo, param: str) -> Iterator[tuple[CallSite, cst.BaseExpression]]:
        """Each call of ``function`` elsewhere in the unit (by its name; an ``__init__`` by its class's
        name) with the argument it passes for ``param``, by position or keyword; calls that do not pass
        it are left out."""
        position = function.call_position(param)
        for caller in self.calls_named(function.callee):
            if caller.function == function:
                continue
            arg = caller.arg(position, param) if position is not None else caller.kwarg(param)
            if arg is not None:
                yield caller, arg

    def method_calls(self, *methods: str) -> list[CallSite]:
        found = [c for m in methods for c in self._calls_by_method.get(m, [])]
        return sorted(found, key=lambda c: (str(c.path), c.line, c.col)) if len(methods) > 1 else found

    def assigns_to(self, target: str) -> list[Assign]:
        return list(self._assigns_by_target.get(target, ()))

    @cached_property
    def _assigns_by_target(self) -> dict[str, list[Assign]]:
        table: dict[str, list[Assign]] = {}
        for assign in self.assigns:
            table.setdefault(assign.target, []).append(assign)
            if assign.target.startswith("self."):
                # ``self.ema`` set in __init__ is the same object as ``self.x.ema`` would not be,
                # but the attribute leaf is how trainers are written: index ``self.<leaf>`` too.
                table.setdefault("self.<leaf>." + assign.target.rsplit(".", 1)[-1], []).append(assign)
        return table

    def origins(self, name: str, _depth: int = 0) -> frozenset[str]:
        """Qualified names of the calls that produced ``name`` (through plain aliases and
        ``a, b = accelerator.prepare(a, b)`` unpacking)."""
        if _depth > 6 or not name:
            return frozenset()
        cache = self.__dict__.setdefault("_origins", {})
        if name in cache:
            return cache[name]
        cache[name] = frozenset()  # cycles (a = b; b = a) end here
        found: set[str] = set()
        candidates = list(self._assigns_by_target.get(name, []))
        if name.startswith("self."):
            candidates += [
                a
                for a in self._assigns_by_target.get("self.<leaf>." + name.rsplit(".", 1)[-1], [])
                if a not in candidates
            ]
        for assign in candidates:
            if assign.source:
                found |= self.origins(assign.source, _depth + 1)
            elif assign.call is not None:
                found |= set(assign.call.names)
                if assign.call.method in {"prepare", "to", "cuda", "compile"} and assign.call.args:
                    found |= self.origins(dotted(assign.call.args[0].value), _depth + 1)
            elif (alias := dotted(assign.value)) and alias != name:
                found |= self.origins(alias, _depth + 1)
        cache[name] = frozenset(found)
        return cache[name]

    def setting(self, *names: str) -> list[Setting]:
        wanted = {norm(n) for n in names}
        if len(wanted) == 1:
            return list(self._settings_by_name.get(next(iter(wanted)), ()))
        return [s for s in self.settings if s.name in wanted]

    def functions_named(self, *names: str) -> list[FunctionInfo]:
        if len(names) == 1:
            return list(self._functions_by_name.get(names[0], ()))
        return [f for f in self.functions if f.name in names]

    def calls_in(self, function: FunctionInfo | None) -> list[CallSite]:
        return list(self.calls_by_function.get(function, ()))

    # lookup tables, built on first use (the index does not change once built)
    @cached_property
    def _settings_by_name(self) -> dict[str, list[Setting]]:
        return _grouped(self.settings, lambda s: s.name)

    @cached_property
    def _functions_by_name(self) -> dict[str, list[FunctionInfo]]:
        return _grouped(self.functions, lambda f: f.name)

    @cached_property
    def returns_by_function(self) -> dict[FunctionInfo | None, list[Assign]]:
        """The ``return`` statements of each function; read it, do not change it."""
        return _grouped(self.returns, lambda r: r.function)

    @cached_property
    def calls_by_function(self) -> dict[FunctionInfo | None, list[CallSite]]:
        """The calls of each function (None: module-level code); read it, do not change it."""
        return _grouped(self.calls, lambda c: c.function)

    def line_text(self, path: Path, line: int) -> str:
        for source in self.files:
            if source.path == path:
                lines = source.lines
                return lines[line - 1] if 0 < line <= len(lines) else ""
        return ""

    def names_used(self) -> Iterator[str]:
        for call in self.calls:
            yield from call.names


def _positional_settings(index: "UnitIndex") -> list[Setting]:
    """A literal passed by position to a function or class of the unit sets that parameter as a
    keyword would (Lumina's ``create_transport("Linear", "velocity", None)`` is ``path_type="Linear",
    prediction="velocity"``). Only where the name means one signature in the unit, and from another
    file: a library's own dispatch (``get_beta_schedule("linear", ...)`` in guided-diffusion's
    ``get_named_beta_schedule``) is the implementation of an option, not the run's choice."""
    signatures: dict[str, set[tuple[tuple[str, ...], int, bool, Path]]] = {}
    for fn in index.functions:
        if fn.class_name is None or fn.name == "__init__":
            bound = bool(fn.params) and fn.params[0] in ("self", "cls")
            signatures.setdefault(fn.class_name or fn.name, set()).add((fn.params, fn.positional, bound, fn.path))
    found = []
    for call in index.calls:
        if not call.args or call.method not in signatures or len(signatures[call.method]) != 1:
            continue
        if call.receiver and call.receiver != call.receiver.split(".", 1)[0]:
            continue  # ``a.b.f(...)``: a method of something else, most likely
        ((params, positional, bound, defined),) = signatures[call.method]
        if defined == call.path:
            continue
        for position, arg in enumerate(call.node.args[: positional - bound]):
            if arg.keyword is not None or arg.star:
                break
            value = literal(arg.value)
            if value is not UNKNOWN and value is not None:
                found.append(
                    Setting(norm(params[position + bound]), value, "kwarg", call.path, call.line, call.col, call.method)
                )
    return found


def _config_settings(config: ConfigFile) -> Iterator[Setting]:
    for key, value in config.values.items():
        leaf = key.rsplit(".", 1)[-1]
        yield Setting(norm(leaf), value, "config-file", config.path, config.lines.get(key, 1), 1, owner=key)
