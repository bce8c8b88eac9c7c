"""Configured values: what a unit sets for one concept (a schedule, a prediction type, a
resolution), from explicit settings first and fallbacks (parameter, getattr and library defaults,
what the code visibly does) only when no explicit setting is known."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterable, Iterator

from optimizer_tool.index import CallSite, Setting, UnitIndex, dotted, literal, norm

# --- configured values: what a unit sets for one concept ----------------------
# Explicit settings (a config default, an argparse default, a keyword, a YAML key, an
# assignment) decide. Only when none of them is known do the fallbacks count: a parameter
# default that some call relies on, a getattr default, a library's documented default, or
# what the code visibly does. Settings whose value is None mean "defer" and are ignored.
EXPLICIT_KINDS = ("config-file", "argparse", "class-default", "dict", "kwarg", "assign")
FALLBACK_KINDS = ("getattr-default", "param-default", "library-default", "code")
_KIND_RANK = {k: i for i, k in enumerate(EXPLICIT_KINDS + FALLBACK_KINDS)}


@dataclass
class Configured:
    """The classified values a unit configures for one concept, each with its settings,
    best first (files beside the trainer, then config files, argparse, class defaults...)."""

    by_value: dict[str, list[Setting]]
    explicit: bool

    @property
    def value(self) -> str | None:
        """The single value when every deciding setting agrees, else None."""
        return next(iter(self.by_value)) if len(self.by_value) == 1 else None

    def where(self, value: str) -> Setting | None:
        found = self.by_value.get(value)
        return found[0] if found else None


def configured(index: UnitIndex, names: tuple[str, ...], classify, extra: Iterable[Setting] = ()) -> Configured:
    """Classify the known settings called ``names`` (plus ``extra`` synthetic ones) with
    ``classify(setting) -> str | None``; None drops a setting as irrelevant."""
    candidates = [s for s in index.setting(*names) if s.known and s.value is not None] + list(extra)
    pairs = [(v, s) for s in candidates if (v := classify(s)) is not None]
    explicit = [(v, s) for v, s in pairs if s.kind in EXPLICIT_KINDS]
    chosen = explicit or [(v, s) for v, s in pairs if default_runs(index, s)]
    here = index.entry.path.parent
    by_value: dict[str, list[Setting]] = {}
    for v, s in sorted(
        chosen,
        key=lambda p: (
            here not in p[1].path.parents,
            _KIND_RANK.get(p[1].kind, 99),
            str(p[1].path),
            p[1].line,
            p[1].col,
        ),
    ):
        by_value.setdefault(v, []).append(s)
    return Configured(by_value, bool(explicit))


def class_bases(index: UnitIndex) -> dict[str, set[str]]:
    """Class name -> the leaf names of its bases, over the unit's files."""

    def compute() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for source in index.files:
            for node in ast.walk(source.tree) if source.tree else ():
                if isinstance(node, ast.ClassDef):
                    leaves = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}
                    found.setdefault(node.name, set()).update(leaves - {""})
        return found

    return memo(index, "configured.class_bases", compute)


def _entry_classes(index: UnitIndex) -> set[str]:
    """The classes of the entry file and all their bases (a config-built ControlLDM runs the
    constructor of LatentDiffusion and DDPM too)."""
    bases = class_bases(index)
    found = {f.class_name for f in index.functions if f.class_name and f.path == index.entry.path}
    todo = list(found)
    while todo:
        for base in bases.get(todo.pop(), ()):
            if base not in found:
                found.add(base)
                todo.append(base)
    return found


def default_runs(index: UnitIndex, setting: Setting) -> bool:
    """A parameter default is the run's default where some call leaves the parameter out (calls
    with ``*args``/``**kwargs`` may pass it), or where its class or function is checked on its own
    (its file is the entry and nothing in the unit calls it: LDM's ``DDPM(parameterization="eps")``,
    built from a YAML config that names no ``parameterization``). A class that an entry script
    builds by name from a config (Palette's ``init_obj``) gets its value from that config, not
    from the default. Any other setting runs as written."""
    if setting.kind != "param-default":
        return True
    calls = param_default_calls(index, setting)
    if calls == "used":
        return True
    built = _constructed_class(setting.owner)
    return calls == "uncalled" and (
        setting.path == index.entry.path or (built is not None and built in _entry_classes(index))
    )


def _constructed_class(owner: str) -> str | None:
    """``DDPM`` for a default of ``DDPM.__init__``; None for any other function."""
    return owner[: -len(".__init__")] if owner.endswith(".__init__") else None


def param_default_calls(index: UnitIndex, setting: Setting) -> str:
    """How the unit calls the function owning a parameter default: 'used' (some call leaves the
    parameter out), 'passed' (every call passes it, or may), 'uncalled' (no call in the unit), or
    'unknown' (the function or parameter is not found)."""
    fn = next((f for f in index.functions if f.qualname == setting.owner and f.path == setting.path), None)
    if fn is None:
        return "unknown"
    real = next((p for p in fn.passed_params if norm(p) == setting.name), None)
    if real is None:
        return "unknown"
    position = fn.call_position(real)
    callees = {fn.callee}
    if fn.name == "__call__" and fn.class_name:  # ``loss_scaler = NativeScaler()`` ... ``loss_scaler(loss, opt)``
        callees = {
            a.target.rsplit(".", 1)[-1]
            for a in index.assigns
            if a.call is not None
            and (a.call.method == fn.class_name or any(q.rsplit(".", 1)[-1] == fn.class_name for q in a.call.qualnames))
        }
    if fn.name == "__call__" and fn.class_name and not callees:
        callees = _handed_instances(index, list(fn.passed_params))
    required = required_params(index, fn)
    called = False
    for call in index.calls_named(*sorted(callees)):
        if not can_call(call, required):
            continue  # ``diffusion.train()``: a module's own method, not tab-ddpm's ``train(parent_dir, ...)``
        called = True
        if any(a.star for a in call.node.args) or call.kwarg(real) is not None or len(call.args) > position:
            continue
        return "used"
    return "passed" if called else "uncalled"


def required_params(index: UnitIndex, fn) -> list[str]:
    """``fn``'s parameters a call must pass (no default; ``self``/``cls`` bound)."""
    return [
        p
        for p in fn.passed_params
        if not any(s.kind == "param-default" and s.owner == fn.qualname for s in index.setting(p))
    ]


def can_call(call: CallSite, required: list[str]) -> bool:
    """``call`` may be a call of a function whose ``required`` parameters it must pass: it passes
    them all, by position or keyword (or may, through ``*args``/``**kwargs``); ``model.train()`` is no
    call of a ``train(model, config, loader)``."""
    if any(a.star for a in call.node.args):
        return True
    keywords = {a.keyword.value for a in call.node.args if a.keyword is not None}
    return all(p in keywords for p in required[len(call.args) :])


def _handed_instances(index: UnitIndex, params: list[str]) -> set[str]:
    """Names of callables handed to a function of the unit as a parameter and called with keywords
    that are all ``__call__``'s parameters (``train_one_epoch(..., loss_scaler, args)`` calling
    ``loss_scaler(loss, optimizer, parameters=..., update_grad=...)``, the scaler built by the caller)."""
    wanted = {norm(p) for p in params}
    found = set()
    for call in index.calls:
        fn = call.function
        keywords = {norm(a.keyword.value) for a in call.node.args if a.keyword is not None}
        if fn is not None and call.func_text in fn.params and keywords and keywords <= wanted:
            found.add(call.func_text)
    return found


def default_applies(index: UnitIndex, setting: Setting) -> str:
    """Why a parameter default is what runs, in words: a call leaves it out, or nothing in the unit
    builds the class (its config does, and the default holds unless that config sets it)."""
    owner = setting.owner or "the function"
    if param_default_calls(index, setting) == "uncalled":
        built = _constructed_class(owner) or owner
        return (
            f"nothing in this unit builds {built} (a config or another script does): its default "
            f"{setting.name}={setting.value!r} applies unless that config sets {setting.name}"
        )
    return f"{owner}() is called without {setting.name}, so its default {setting.value!r} applies"


def synthetic_setting(name: str, value: object, kind: str, at: CallSite, owner: str = "") -> Setting:
    """A setting the code implies without writing it (a library default, a literal argument)."""
    return Setting(norm(name), value, kind, at.path, at.line, at.col, owner or at.func_text)


def find_call(index: UnitIndex, node) -> CallSite | None:
    """The indexed call site of a ``cst.Call`` node (identity)."""
    return next((c for c in index.calls if c.node is node), None)


def expression_nodes(node) -> Iterator:
    """Every node of one expression (a small subtree of an indexed fact, never a module)."""
    import libcst as cst

    if node is None:
        return
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(c for c in current.children if isinstance(c, cst.CSTNode))


# Library knowledge: diffusers noise schedulers built directly (not from a pretrained config)


def names_in(node) -> set[str]:
    """The names an expression reads: dotted chains (``self.ema.shadow``) and their leaves,
    called functions, and string subscripts as ``["lr"]`` (``param_groups[0]["lr"]``)."""
    import libcst as cst

    found: set[str] = set()
    # ``EasyDict(cur_nimg=0, total_elapsed_time=0)`` reads no ``total_elapsed_time``: keyword names are labels
    keywords = {id(n.keyword) for n in expression_nodes(node) if isinstance(n, cst.Arg) and n.keyword is not None}
    for current in expression_nodes(node):
        if id(current) in keywords:
            continue
        if isinstance(current, (cst.Name, cst.Attribute)):
            text = dotted(current)
            if text:
                found.add(text)
            if isinstance(current, cst.Attribute):
                found.add(current.attr.value)
        elif isinstance(current, cst.Subscript):
            for element in current.slice:
                if isinstance(element.slice, cst.Index):
                    key = literal(element.slice.value)
                    if isinstance(key, str):
                        found.add(f'["{key}"]')
    return found


def memo(index: UnitIndex, key, compute):
    """A value computed once per unit index (rules ask for the same facts many times)."""
    store = index.__dict__.setdefault("_memo", {})
    if key not in store:
        store[key] = compute()
    return store[key]


def assignments_of(index: UnitIndex, name: str, function=None, before: int | None = None) -> list:
    """Assignments to ``name`` in ``function`` (before line ``before``); ``self.x`` is looked up in the whole unit."""
    found = index.assigns_to(name)
    if name.startswith("self."):
        return found
    return [a for a in found if a.function == function and (before is None or a.line <= before)]


def feeding_assigns(index: UnitIndex, node, function=None, line: int | None = None, depth: int = 3) -> list:
    """The assignments (in the same function; ``self.x`` anywhere in the unit) that compute the
    variables ``node`` reads, and theirs, ``depth`` levels deep (the last three of each name)."""
    names = names_in(node)
    frontier = set(names)
    found = []
    for _ in range(depth):
        more: set[str] = set()
        for name in frontier:
            for assign in assignments_of(index, name, function, line)[-3:]:
                found.append(assign)
                more |= names_in(assign.value)
        frontier = more - names
        names |= more
        if not frontier:
            break
    return found


def expanded_names(index: UnitIndex, node, function=None, line: int | None = None, depth: int = 3) -> set[str]:
    """``names_in(node)`` plus the names the variables it reads were computed from
    (``feeding_assigns``): ``lr`` in ``lr = opt.param_groups[0]["lr"]``."""
    names = names_in(node)
    for assign in feeding_assigns(index, node, function, line, depth):
        names |= names_in(assign.value)
    return names
