"""A training step that runs in a helper function the trainer calls: ``train_one_epoch(model, loader,
optimizer, args)`` defined in the trainer or in another module of the project, called once per epoch
from the function that builds the model and the optimizer. ``helper_call`` finds the helper's call
sites and maps its parameters to the caller's names, so that a fix can hand state it creates in the
caller (an EMA, a learning-rate schedule) to the helper as a new keyword parameter. Whatever makes
that hand-over uncertain (other callers, the helper passed around as a value, ``*args``, a method,
a decorator, a name already in use) is a ``NotHandedOver`` whose message says why."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import libcst as cst

from optimizer_tool.index import CallSite, FunctionInfo, UnitIndex, dotted


class NotHandedOver(Exception):
    """Why state built in the caller cannot be handed to the helper for certain."""


@dataclass
class HelperCall:
    """``helper``, in which ``inside`` (the optimizer step) runs, called at ``sites`` and nowhere else."""

    helper: FunctionInfo
    inside: CallSite
    sites: list[CallSite]
    positional: tuple[str, ...]  # the parameters an argument can be passed to by position, in order
    definition: ast.FunctionDef

    def bound(self, site: CallSite, param: str) -> cst.BaseExpression | None:
        """The argument ``site`` passes to ``param`` (None: the parameter keeps its default)."""
        if (value := site.kwarg(param)) is not None:
            return value
        positional = site.args
        if param in self.positional and self.positional.index(param) < len(positional):
            return positional[self.positional.index(param)].value
        return None

    def default(self, param: str) -> str | None:
        """The source of ``param``'s default value, None when it has none."""
        args = self.definition.args
        positional = [*args.posonlyargs, *args.args]
        defaults = dict(zip([a.arg for a in positional[len(positional) - len(args.defaults) :]], args.defaults))
        defaults.update((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None)
        return ast.unparse(defaults[param]) if param in defaults else None

    def parameter_for(self, name: str) -> str | None:
        """The parameter every call site binds to the caller's ``name`` (``model`` -> ``model``,
        ``train_loader`` -> ``dataloader``), None when some site passes something else."""
        for param in self.helper.params:
            if all(dotted(self.bound(site, param)) == name for site in self.sites):
                return param
        return None

    def free(self, name: str) -> bool:
        """``name`` is used nowhere in the helper (no parameter, local, global or nested use) and no
        call site passes a keyword of that name."""
        used = any(
            (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.arg) and node.arg == name)
            for node in ast.walk(self.definition)
        )
        return not used and all(site.kwarg(name) is None for site in self.sites)

    def assigns(self, index: UnitIndex, name: str) -> bool:
        """The helper rebinds ``name`` (``model = model.module``)."""
        return any(a.function == self.helper and a.path == self.helper.path and a.target == name for a in index.assigns)

    @property
    def where(self) -> str:
        """``train_one_epoch`` (utils/tools.py) as a message names it."""
        return f"`{self.helper.name}` ({self.helper.path.name}:{self.helper.line})"


def helper_call(
    index: UnitIndex, inside: CallSite, is_caller: Callable[[FunctionInfo | None, Path], bool]
) -> HelperCall:
    """The helper function ``inside`` runs in, when every call of it is one that ``is_caller``
    accepts (the function that holds the state to hand over) and nothing else can call it."""
    helper = inside.function
    if helper is None:
        raise NotHandedOver("it runs at module level")
    if helper.class_name is not None:
        raise NotHandedOver(f"`{helper.qualname}` is a method, called through its instance")
    if len([f for f in index.functions if f.name == helper.name]) > 1:
        raise NotHandedOver(f"the unit defines more than one function called `{helper.name}`")
    definition = _definition(index, helper)
    if definition is None:
        raise NotHandedOver(f"the definition of `{helper.name}` cannot be read")
    if definition.args.vararg is not None or definition.args.kwarg is not None:
        raise NotHandedOver(f"`{helper.name}` takes *args/**kwargs, so what it receives cannot be traced")
    if definition.decorator_list:
        raise NotHandedOver(f"`{helper.name}` is decorated, and a decorator may change how it is called")
    sites = [c for c in index.calls if _calls(c, helper)]
    if not sites:
        raise NotHandedOver(f"`{helper.name}` is never called by its name")
    for site in sites:
        if not is_caller(site.function, site.path):
            caller = f"`{site.function.qualname}`" if site.function is not None else "module level"
            raise NotHandedOver(
                f"`{helper.name}` is called from {caller} ({site.path.name}:{site.line}), "
                "which does not hold what the fix would pass it"
            )
        if any(a.star for a in site.node.args):
            raise NotHandedOver(f"the call of `{helper.name}` at {site.path.name}:{site.line} unpacks *args/**kwargs")
        if not isinstance(site.node.func, cst.Name) and not site.qualnames:
            raise NotHandedOver(f"`{site.func_text}` at {site.path.name}:{site.line} may be another `{helper.name}`")
    used = _used_as_value(index, helper.name)
    if used is not None:
        raise NotHandedOver(f"`{helper.name}` is {used}, so it may be called from elsewhere")
    positional = tuple(a.arg for a in [*definition.args.posonlyargs, *definition.args.args])
    return HelperCall(helper, inside, sites, positional, definition)


def takes_any_keyword(index: UnitIndex, call: CallSite) -> bool:
    """``call`` goes to one function of the unit that takes ``**kwargs`` (a checkpoint callback's
    ``step(self, metrics, **kwargs)`` that saves whatever it is given)."""
    if call.receiver:
        classes = {o.rsplit(".", 1)[-1] for o in index.origins(call.receiver)}
        candidates = [f for f in index.functions if f.name == call.method and f.class_name in classes]
    else:
        candidates = [f for f in index.functions if f.name == call.func_text and f.class_name is None]
    definition = _definition(index, candidates[0]) if len(candidates) == 1 else None
    return definition is not None and definition.args.kwarg is not None


def _calls(call: CallSite, helper: FunctionInfo) -> bool:
    """``call`` may call ``helper``: by its name, through a module (``tools.train_one_epoch``) or an
    import alias."""
    return (call.method or call.func_text) == helper.name or any(
        q.rsplit(".", 1)[-1] == helper.name for q in call.qualnames
    )


def _definition(index: UnitIndex, helper: FunctionInfo) -> ast.FunctionDef | None:
    source = index.source(helper.path)
    if source is None or source.tree is None:
        return None
    for node in ast.walk(source.tree):
        if (
            isinstance(node, ast.FunctionDef)
            and node.name == helper.name
            and helper.line <= node.lineno <= helper.end_line
        ):
            return node
    return None


def _used_as_value(index: UnitIndex, name: str) -> str | None:
    """How ``name`` is used other than called or imported under its own name (handed to ``partial``
    or a thread, kept in a dict, imported under another name), as a message says it; None when not."""
    for source in index.files:
        tree = source.tree
        if tree is None:
            continue
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            where = f"{source.path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.alias) and node.name.rsplit(".", 1)[-1] == name and node.asname not in (None, name):
                return f"imported as `{node.asname}` ({where})"
            named = (isinstance(node, ast.Name) and node.id == name) or (
                isinstance(node, ast.Attribute) and node.attr == name
            )
            if named and id(node) not in called:
                return f"used as a value ({where})"
    return None
