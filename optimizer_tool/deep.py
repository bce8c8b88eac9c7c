"""Deeply nested code: check what CPython compiles, and nothing less.

A ``+`` chain of a few thousand terms or a 3,000-branch ``elif`` is valid Python that CPython
compiles, but libcst (and the rules' own tree walks) recurse once or more per level: on the
main thread's 8 MiB stack and the default recursion limit they raise ``RecursionError``
(or, in native code, overflow the stack). So the analysis runs in a thread with a large stack
and a high recursion limit (:func:`run_deep`), while a file is accepted only if Python itself
would compile it at its default limit (:func:`python_parse`): what CPython refuses is an input
error, not a reason to recurse further.
"""

from __future__ import annotations

import ast
import ctypes
import sys
import threading
from typing import Callable, TypeVar

T = TypeVar("T")

STACK_BYTES = 512 * 1024 * 1024  # reserved address space; only the pages used are backed
RECURSION_LIMIT = 30_000  # libcst takes ~3 frames per nesting level; CPython compiles ~3,000 levels
PYTHON_LIMIT = 1_000  # CPython's default limit: what ``python train.py`` itself accepts
TOO_DEEP = "too deeply nested"


def python_parse(text: str) -> ast.Module:
    """``ast.parse`` as a default ``python`` would run it: code nested deeper than CPython compiles
    raises ``RecursionError`` here too, however high this process's limit is."""
    depth = _depth()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(PYTHON_LIMIT + depth)
    try:
        return ast.parse(text)
    finally:
        sys.setrecursionlimit(limit)


def _depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def run_deep(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` in a thread with a large stack and a high recursion limit; its result
    or its exception (``SystemExit`` included) comes back here. Ctrl-C is passed on to it as a
    ``KeyboardInterrupt``. Where no such thread can be made, ``fn`` runs here with the limits as
    they are (a file too deep for them becomes an input error)."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            outcome["error"] = exc

    old_size, old_limit = threading.stack_size(), sys.getrecursionlimit()
    # Raised before the thread starts: set after, it raced the thread's first python_parse, which
    # saves and restores the limit around its own and could restore the old one for the whole run.
    sys.setrecursionlimit(max(old_limit, RECURSION_LIMIT))
    try:
        threading.stack_size(STACK_BYTES)
        thread = threading.Thread(target=target, name="t2s-opt-deep", daemon=True)
        thread.start()
    except (RuntimeError, ValueError, MemoryError):
        sys.setrecursionlimit(old_limit)
        return fn(*args, **kwargs)
    finally:
        threading.stack_size(old_size)
    try:
        _join(thread)
    finally:
        sys.setrecursionlimit(old_limit)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _join(thread: threading.Thread) -> None:
    """Wait for ``thread``; a Ctrl-C here is raised inside it, and waited for."""
    try:
        thread.join()
    except KeyboardInterrupt:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt))
        thread.join()
        raise


def deepest(tree: ast.AST) -> tuple[int, int]:
    """(nesting depth, line) of the most deeply nested node of ``tree``, walked without recursion."""
    best, stack = (0, 1), [(tree, 0, 1)]
    while stack:
        node, depth, line = stack.pop()
        line = getattr(node, "lineno", line)
        best = max(best, (depth, line))
        stack.extend((child, depth + 1, line) for child in ast.iter_child_nodes(node))
    return best
