"""Where a node sits in a module: parent links, the statement and block that hold a node, the
node at a finding's position. Pure syntax: no index, no analysis."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Callable, Iterable, Iterator, Mapping, Union

import libcst as cst
import libcst.matchers as m
from libcst.metadata import MetadataWrapper, PositionProvider

from optimizer_tool.index import dotted
from optimizer_tool.syntax import module_code

Body = Union[cst.IndentedBlock, cst.Module]


# The parent links inside recently seen top-level statements, by statement (identity).
_LINKS: OrderedDict[cst.CSTNode, dict[cst.CSTNode, cst.CSTNode]] = OrderedDict()
_LINKED = 20_000


def _links(statement: cst.CSTNode) -> dict[cst.CSTNode, cst.CSTNode]:
    links = _LINKS.get(statement)
    if links is None:
        recorder = _ParentRecorder()
        statement.visit(recorder)
        links = _LINKS[statement] = recorder.parent
        while len(_LINKS) > _LINKED:
            _LINKS.popitem(last=False)
    else:
        _LINKS.move_to_end(statement)
    return links


class _Parents:
    """``node -> parent`` over a module, filled one top-level statement at a time as nodes are
    asked for: the statement ``owners`` names for a node first (the index knows which statement
    holds each call and assigned value), else each statement in turn until the node turns up."""

    def __init__(self, module: cst.Module, owners: Callable[[], Mapping] | None) -> None:
        self.module = module
        self._known: dict[cst.CSTNode, cst.CSTNode] = {}
        self._unwalked: dict[int, cst.CSTNode] = {}
        for node in (*module.header, *module.body, *module.footer):
            self._known[node] = module
            self._unwalked[id(node)] = node
        self._owners_of = owners
        self._owners: Mapping | None = None

    def _find(self, node: cst.CSTNode) -> None:
        if node in self._known or node is self.module or not self._unwalked:
            return
        if self._owners is None:
            self._owners = self._owners_of() if self._owners_of is not None else {}
        owner = self._owners.get(node)
        if owner is not None and id(owner) in self._unwalked:
            self._walk(owner)
            if node in self._known:
                return
        for statement in list(self._unwalked.values()):
            self._walk(statement)
            if node in self._known:
                return

    def _walk(self, statement: cst.CSTNode) -> None:
        del self._unwalked[id(statement)]
        self._known.update(_links(statement))

    def __contains__(self, node: cst.CSTNode) -> bool:
        self._find(node)
        return node in self._known

    def __getitem__(self, node: cst.CSTNode) -> cst.CSTNode:
        self._find(node)
        return self._known[node]

    def get(self, node: cst.CSTNode, default: cst.CSTNode | None = None) -> cst.CSTNode | None:
        self._find(node)
        return self._known.get(node, default)

    def __iter__(self) -> Iterator[cst.CSTNode]:
        """Every node but the module, in document order (the whole module is walked)."""
        for statement in (*self.module.header, *self.module.body, *self.module.footer):
            yield statement
            yield from _links(statement)


class _ParentRecorder(cst.CSTVisitor):
    """Parent links from the walk's own stack (``node.children`` re-visits every node: on a
    50,000-line file that made the map 4x slower than the walk)."""

    def __init__(self) -> None:
        self.parent: dict[cst.CSTNode, cst.CSTNode] = {}
        self._stack: list[cst.CSTNode] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        if self._stack:
            self.parent[node] = self._stack[-1]
        self._stack.append(node)
        return True

    def on_leave(self, original_node: cst.CSTNode) -> None:
        self._stack.pop()


class Tree:
    """One module with its parent links: which statement holds a node, which block holds a statement.

    The links inside a top-level statement are kept (``_LINKS``) for the next version of the module:
    a fix changes a few statements of a file and libcst keeps the others, so each fix after the
    first walks only what the fixes before it changed."""

    def __init__(self, module: cst.Module, owners: Callable[[], Mapping] | None = None) -> None:
        self.module = module
        self.parent = _Parents(module, owners)

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

    def statement_beside(self, node: cst.CSTNode, other: cst.CSTNode) -> cst.BaseStatement:
        """The statement holding ``node`` in the innermost block that also holds ``other``: code
        inserted after it runs before ``other`` whichever branch ``node`` sits in (a model built in
        ``if CIFAR: ... else: ...`` under ``if __name__ == "__main__":``, trained in a loop below)."""
        blocks = {id(a) for a in self.ancestors(other) if isinstance(a, (cst.IndentedBlock, cst.Module))}
        current = node
        while current in self.parent:
            parent = self.parent[current]
            if id(parent) in blocks and isinstance(current, cst.BaseStatement):
                return current
            current = parent
        raise KeyError(node)

    def with_aliases(self, node: cst.CSTNode) -> dict[str, cst.BaseExpression]:
        """The names the ``with`` statements around ``node`` bind: ``with trange(total) as pbar: for
        step in pbar:`` gives ``{"pbar": trange(total)}``."""
        return {
            name: item.item
            for ancestor in self.ancestors(node)
            if isinstance(ancestor, cst.With)
            for item in ancestor.items
            if item.asname is not None and isinstance(item.asname.name, (cst.Name, cst.Attribute))
            for name in [dotted(item.asname.name)]
            if name
        }

    def following(self, statement: cst.BaseStatement) -> list[cst.BaseStatement]:
        """The statements after ``statement`` in its block."""
        siblings = list(self.block(statement).body)
        return siblings[siblings.index(statement) + 1 :]


def is_call_statement(statement: cst.CSTNode, call: cst.Call) -> bool:
    """``statement`` is exactly ``<call>`` or ``<name> = <call>`` on a line of its own: safe to move."""
    return m.matches(
        statement,
        m.SimpleStatementLine(
            body=[
                m.OneOf(
                    m.Expr(value=m.MatchIfTrue(lambda n: n is call)),
                    m.Assign(
                        targets=[m.AssignTarget(target=m.Name() | m.Attribute())],
                        value=m.MatchIfTrue(lambda n: n is call),
                    ),
                )
            ]
        ),
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


def names_taken(module: cst.Module, node: cst.CSTNode, *names: str) -> set[str]:
    """Which of ``names`` are variables used under ``node`` of ``module`` (``names_in_node``, walked
    only when the code of ``node`` mentions one of them: on a large module, rarely)."""
    code = module_code(module) if node is module else module.code_for_node(node)
    if not any(re.search(rf"\b{re.escape(name)}\b", code) for name in names):
        return set()
    return names_in_node(node) & set(names)


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


def ancestors(module: cst.Module, node: cst.CSTNode) -> list[cst.CSTNode]:
    """The nodes enclosing ``node`` in ``module``, outermost first ([] when it is not there)."""
    return list(reversed(list(Tree(module).ancestors(node))))


def enclosing(module: cst.Module, node: cst.CSTNode, kind: type) -> cst.CSTNode | None:
    """The innermost node of type ``kind`` around ``node``."""
    return next((n for n in Tree(module).ancestors(node) if isinstance(n, kind)), None)


DOCSTRING = m.SimpleStatementLine(body=[m.Expr(value=m.SimpleString() | m.ConcatenatedString())])


def split_docstring(body: Iterable[cst.BaseStatement]) -> tuple[list[cst.BaseStatement], list[cst.BaseStatement]]:
    body = list(body)
    if body and m.matches(body[0], DOCSTRING):
        return body[:1], body[1:]
    return [], body
