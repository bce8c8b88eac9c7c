"""Checks of a fix's change before anything is written, beyond re-running the rules: the patched
code reads no name where it may be unbound, and a safe fix changes nothing but its own knob (no
command-line default of every run, no new dependency). A change that fails raises ``CannotFix``
with its diff as the manual patch; apply then holds that optimization back."""

from __future__ import annotations

import ast
import difflib
import functools
import sys
from pathlib import Path

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.syntax import module_code, source_lines, statement_code

# Statements whose nested body runs at most sometimes: a name bound only there may be unbound after.
_MAYBE = (ast.For, ast.AsyncFor, ast.While)


class Printed:
    """Each module's source, printed once: ``Module.code`` prints the whole tree on every read (on a
    50,000-line trainer, seconds each). Seed it with the texts the modules were parsed from. Also
    each text's stdlib tree and lines, parsed once for the checks below."""

    def __init__(self) -> None:
        self._codes: dict[int, tuple[cst.Module, str]] = {}  # id -> (module kept alive, code)

    def seed(self, module: cst.Module, text: str) -> None:
        self._codes[id(module)] = (module, text)

    def __call__(self, module: cst.Module) -> str:
        if id(module) not in self._codes:
            self._codes[id(module)] = (module, module_code(module))
        return self._codes[id(module)][1]

    @staticmethod
    def tree(text: str) -> tuple[ast.Module, list[str]]:
        return _parsed(text)


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> tuple[ast.Module, list[str]]:
    """A text's stdlib tree and lines, kept for the next fix (its "before" is this fix's "after")."""
    return ast.parse(text), source_lines(text)


def refuse_unbound(
    before: dict[Path, cst.Module], after: dict[Path, cst.Module], root: Path, code: Printed | None = None
) -> None:
    """Raise ``CannotFix`` when a name the fix introduced into a function is read on a path where
    it may not be bound (an LPIPS module created inside an ``if`` and used after it: a run-time
    ``UnboundLocalError`` that ``py_compile`` and the rules cannot see). Only the top-level
    statements the fix changed are read (libcst keeps the others' nodes)."""
    code = code or Printed()
    for path, module in after.items():
        was = before.get(path)
        if module is was:
            continue
        old_body = list(was.body) if was is not None else []
        kept, new_ids = {id(s) for s in old_body}, {id(s) for s in module.body}
        old_functions = {
            name: (fn, lines) for s in old_body if id(s) not in new_ids for name, fn, lines, _ in _functions_in(was, s)
        }
        start = 1 + len(module.header)
        for statement in module.body:
            if id(statement) in kept:
                start += statement_code(module, statement).count("\n")
                continue
            for name, fn, lines, offset in _functions_in(module, statement, start):
                old, old_lines = old_functions.get(name, (None, []))
                if old is not None and _text(old, old_lines) == _text(fn, lines):
                    continue  # a function the fix did not change
                new_names = _bound(fn) - (_bound(old) if old is not None else set())
                for read in _loads(fn, new_names):
                    if not _bound_before(fn, read):
                        line = read.lineno + offset
                        raise CannotFix(
                            path,
                            line,
                            f"the patched `{name}` reads `{read.id}` at line {line}, where it may be unbound "
                            "(it is set only on some paths before); place the change by hand",
                            unified_diff({path: code(was) if was is not None else ""}, {path: code(module)}, root),
                        )
            start += statement_code(module, statement).count("\n")


def _functions_in(module: cst.Module, statement: cst.CSTNode, start: int = 1):
    """(qualified name, function, its snippet's lines, line offset) of every function a top-level
    statement defines, parsed from that statement's code alone (starting at line ``start``)."""
    text = statement_code(module, statement)
    tree, lines = Printed.tree(text)
    return [(name, fn, lines, start - 1) for name, fn in _functions(tree)]


def _functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function of the module by qualified name (a ``def`` is a statement: only statement
    blocks are walked, not the expressions of a 50,000-line file)."""
    found = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for child in body:
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((prefix + child.name, child))
                visit(child.body, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child.body, f"{prefix}{child.name}.")
            else:
                for block in _blocks(child):
                    visit(block, prefix)

    visit(tree.body, "")
    return found


def _blocks(statement: ast.stmt) -> list[list[ast.stmt]]:
    """The statement blocks inside a compound statement (if/for/while/with/try/match)."""
    blocks = [getattr(statement, name) for name in ("body", "orelse", "finalbody") if hasattr(statement, name)]
    blocks += [handler.body for handler in getattr(statement, "handlers", ())]
    blocks += [case.body for case in getattr(statement, "cases", ())]
    return blocks


def _text(node: ast.stmt, lines: list[str]) -> list[str]:
    """The source lines of a statement, decorators included."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
    return lines[first - 1 : node.end_lineno]


def _own_nodes(fn: ast.AST):
    """The nodes of a function's own scope (not of functions, lambdas or classes nested in it)."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def _bound(fn) -> set[str]:
    names = {a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]}
    names |= {a.arg for a in (fn.args.vararg, fn.args.kwarg) if a is not None}
    for node in _own_nodes(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _loads(fn, names: set[str]) -> list[ast.Name]:
    return sorted(
        (n for n in _own_nodes(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in names),
        key=lambda n: (n.lineno, n.col_offset),
    )


def _bound_before(fn, read: ast.Name) -> bool:
    """Some statement before the read, in the read's block or a block around it, binds the name
    on every path that reaches the read: the target of an enclosing ``for``/``with``/``except``,
    or an earlier statement (an ``if`` whose test is one the read also sits under counts as taken:
    ``if accelerator.sync_gradients:`` bind, later ``if accelerator.sync_gradients:`` read)."""
    parents = {child: node for node in ast.walk(fn) for child in ast.iter_child_nodes(node)}
    chain, node = [], read
    while node is not fn:
        chain.append((parents[node], node))
        node = parents[node]
    taken = {ast.dump(parent.test) for parent, child in chain if isinstance(parent, ast.If) and child in parent.body}
    for parent, node in chain:
        if _binds_around(parent, node, read.id):
            return True
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(parent, field, None)
            if isinstance(block, list) and node in block:
                if any(_binds(stmt, read.id, taken) for stmt in block[: block.index(node)]):
                    return True
    return read.id in {a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]}


def _binds_around(parent: ast.AST, node: ast.AST, name: str) -> bool:
    """``parent`` binds ``name`` for the code of ``node`` inside it: a loop target for its body, a
    ``with ... as`` for its body, a comprehension's targets, ``except ... as``."""
    if isinstance(parent, (ast.For, ast.AsyncFor)) and node in parent.body:
        return _stores(parent.target, name)
    if isinstance(parent, (ast.With, ast.AsyncWith)) and node in parent.body:
        return any(i.optional_vars is not None and _stores(i.optional_vars, name) for i in parent.items)
    if isinstance(parent, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
        return any(_stores(g.target, name) for g in parent.generators)
    return isinstance(parent, ast.ExceptHandler) and parent.name == name


def _stores(target: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target))


def _binds(stmt: ast.stmt, name: str, taken: frozenset[str] | set[str] = frozenset()) -> bool:
    """``stmt`` binds ``name`` whichever way it runs (an ``if`` only when both branches do, or when
    its test is one the read is also under)."""
    if isinstance(stmt, _MAYBE):
        return False
    if isinstance(stmt, ast.If):
        body = any(_binds(s, name, taken) for s in stmt.body)
        return body and (ast.dump(stmt.test) in taken or any(_binds(s, name, taken) for s in stmt.orelse))
    if isinstance(stmt, (ast.With, ast.AsyncWith, ast.Try)):
        own = any(i.optional_vars is not None and _stores(i.optional_vars, name) for i in getattr(stmt, "items", []))
        return own or any(_binds(s, name, taken) for s in stmt.body)
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return stmt.name == name
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return any((a.asname or a.name).split(".")[0] == name for a in stmt.names)
    return any(isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id == name for n in ast.walk(stmt))


def refuse_side_effects(
    before: dict[Path, cst.Module], after: dict[Path, cst.Module], root: Path, code: Printed | None = None
) -> None:
    """A safe fix changes its own optimization's knob and nothing else: raise ``CannotFix`` (the
    change becomes the manual patch) when it changes a command-line default every run relies on,
    or imports a package the unit did not import (a dependency the project may not have)."""
    code = code or Printed()
    old_imports = {name for module in before.values() for name in _top_imports(module)}
    for path, module in after.items():
        if module is before.get(path):
            continue
        was = before.get(path)
        added = sorted(_top_imports(module) - old_imports - set(sys.stdlib_module_names))
        if added:
            raise CannotFix(
                path,
                1,
                f"the fix imports {', '.join(added)}, which this trainer does not import yet: a new dependency is "
                "not a safe change; review it and apply with --only (or --unsafe)",
                unified_diff({path: code(was) if was is not None else ""}, {path: code(module)}, root),
            )
        old_defaults = _cli_defaults(was) if was is not None else {}
        changed = [
            (line, f"{flag} from {old_defaults[flag][1]!r} to {value!r}")
            for flag, (line, value) in _cli_defaults(module).items()
            if flag in old_defaults and old_defaults[flag][1] != value
        ]
        if changed:
            raise CannotFix(
                path,
                changed[0][0],
                f"the fix changes the default of {', '.join(text for _, text in changed)}: every run and script "
                "that relies on it changes too; review it and apply with --only (or --unsafe)",
                unified_diff({path: code(was) if was is not None else ""}, {path: code(module)}, root),
            )


def _walk_mentioning(module: cst.Module, word: str):
    """(node, line offset) over the top-level statements whose code mentions ``word``, each parsed on
    its own (on a large file, the few that can hold what is looked for)."""
    start = 1 + len(module.header)
    for statement in module.body:
        text = statement_code(module, statement)
        if word in text:
            for node in ast.walk(Printed.tree(text)[0]):
                yield node, start - 1
        start += text.count("\n")


def _top_imports(module: cst.Module) -> set[str]:
    names = set()
    for node, _ in _walk_mentioning(module, "import"):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def _cli_defaults(module: cst.Module) -> dict[str, tuple[int, object]]:
    """``--flag`` -> (line, literal default) of the argparse options a module declares."""
    found: dict[str, tuple[int, object]] = {}
    for node, offset in _walk_mentioning(module, "add_argument"):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "add_argument" or not node.args or not isinstance(node.args[0], ast.Constant):
            continue
        default = next((k.value for k in node.keywords if k.arg == "default"), None)
        try:
            value = ast.literal_eval(default) if default is not None else None
        except ValueError:
            continue
        found[str(node.args[0].value)] = (node.lineno + offset, value)
    return found


# --- showing changes ---------------------------------------------------------------------------
def unified_diff(originals: dict[Path, str], changes: dict[Path, str], root: Path) -> str:
    parts = []
    for path in sorted(changes):
        name = display(path, root)
        lines = list(difflib.unified_diff(_lines(originals[path]), _lines(changes[path]), f"a/{name}", f"b/{name}"))
        parts.append("".join(lines))
    return "".join(parts)


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def display(path: Path, root: Path) -> str:
    """A path as the user reads it: relative to the current folder when below it, else to the project."""
    for base in (Path.cwd(), root):
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return str(path)
