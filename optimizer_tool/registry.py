"""Rule discovery: every module or package under ``optimizer_tool/rules/`` that sets ``KEY`` is
one optimization. Everything is derived from what the module declares (``KEY``, ``TITLE``,
``ORDER``, its ``Rule`` and ``Fix`` subclasses); nothing is written onto the classes, and the
registry knows no optimization by name.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, replace
from functools import lru_cache
from types import ModuleType
from typing import Callable

from optimizer_tool import rules as rules_package
from optimizer_tool.contract import Fix, Rule
from optimizer_tool.index import CallSite, UnitIndex


class RegistryError(Exception):
    """A rule module breaks the contract (two fixes claiming the same code, a fix without codes)."""


@dataclass(frozen=True)
class Optimization:
    key: str
    title: str
    order: int
    module: ModuleType
    rules: tuple[type[Rule], ...]
    fixes: tuple[type[Fix], ...] = ()
    # Only diffusion trainers are judged (the module's DIFFUSION_ONLY); others get "n/a".
    diffusion_only: bool = False
    # The module's ``implementations(index)``: the call sites that carry the optimization (used to
    # tell "off by default" from "present"); None when the module does not say.
    implementations: Callable[[UnitIndex], list[CallSite]] | None = None
    # The module's CONFIG_KEYS: the config keys that choose it (a schedule name, a prediction type,
    # an image size); where the run names its config file, a verdict resting on them is decided there.
    config_keys: tuple[str, ...] = ()
    # The module's APPLIES_KEYS: config keys that decide whether it applies at all (zero terminal
    # SNR needs v-prediction): where the run names its config, its "n/a" is decided there too.
    applies_keys: tuple[str, ...] = ()
    # The module's ``applies_with(name, value)``: whether that value of an APPLIES_KEYS key makes it
    # apply; a config that offers no such value (and no code branch that takes one) leaves it n/a.
    applies_with: Callable[[str, object], bool] | None = None

    def judges(self, rule: type[Rule], diffusion: bool | None, trains: bool = True) -> bool:
        """Whether ``rule`` runs on a unit (``diffusion``: is it a diffusion trainer, None: undecided;
        diffusion-only rules need the evidence; a unit that does not train, a config or helper module
        checked on its own, gets every rule)."""
        only = self.diffusion_only if rule.diffusion_only is None else rule.diffusion_only
        return not only or diffusion is True or not trains

    def fix_for(self, code: str) -> type[Fix] | None:
        return next((fix for fix in self.fixes if code in fix.codes), None)

    def fixable(self, code: str) -> bool:
        return self.fix_for(code) is not None

    @property
    def fixable_codes(self) -> frozenset[str]:
        return frozenset(code for fix in self.fixes for code in fix.codes)

    def restricted(self, fixes: tuple[type[Fix], ...]) -> "Optimization":
        """The same optimization with only ``fixes`` (what one ``apply`` selected)."""
        return replace(self, fixes=fixes)


def _members(module: ModuleType) -> list[type]:
    """Classes defined in ``module`` or, for a package, in any of its submodules."""
    modules = [module]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, f"{module.__name__}."):
            modules.append(importlib.import_module(info.name))
    seen: dict[int, type] = {}
    for mod in modules:
        for obj in vars(mod).values():
            if isinstance(obj, type) and (
                obj.__module__ == module.__name__ or obj.__module__.startswith(f"{module.__name__}.")
            ):
                seen.setdefault(id(obj), obj)
    return list(seen.values())


def _fixes(module: ModuleType, members: list[type]) -> tuple[type[Fix], ...]:
    fixes = tuple(obj for obj in members if issubclass(obj, Fix) and obj is not Fix and "codes" in vars(obj))
    claimed: dict[str, str] = {}
    for fix in fixes:
        if not fix.codes:
            raise RegistryError(f"{module.__name__}: fix {fix.__name__} declares no codes")
        for code in fix.codes:
            if code in claimed:
                raise RegistryError(f"{module.__name__}: {code} is fixed by both {claimed[code]} and {fix.__name__}")
            claimed[code] = fix.__name__
    return tuple(sorted(fixes, key=lambda f: min(f.codes)))


def _optimization(module: ModuleType) -> Optimization:
    members = _members(module)
    rules = tuple(sorted((o for o in members if issubclass(o, Rule) and "code" in vars(o)), key=lambda r: r.code))
    order = getattr(module, "ORDER", None)
    if not isinstance(order, int):
        raise RegistryError(f"{module.__name__}: ORDER must be an int (the place in the checklist)")
    return Optimization(
        module.KEY,
        module.TITLE,
        order,
        module,
        rules,
        _fixes(module, members),
        bool(getattr(module, "DIFFUSION_ONLY", False)),
        getattr(module, "implementations", None),
        tuple(getattr(module, "CONFIG_KEYS", ())),
        tuple(getattr(module, "APPLIES_KEYS", ())),
        getattr(module, "applies_with", None),
    )


@lru_cache(maxsize=1)
def optimizations() -> tuple[Optimization, ...]:
    found = []
    for info in sorted(pkgutil.iter_modules(rules_package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{rules_package.__name__}.{info.name}")
        if getattr(module, "KEY", None) is not None:
            found.append(_optimization(module))
    return tuple(sorted(found, key=lambda o: (o.order, o.key)))


def all_rules() -> list[type[Rule]]:
    return [rule for opt in optimizations() for rule in opt.rules]


def optimization_of(rule: type[Rule]) -> Optimization:
    return next(opt for opt in optimizations() if rule in opt.rules)


def rule_by_code(code: str) -> type[Rule] | None:
    return next((r for r in all_rules() if r.code.upper() == code.upper()), None)


def keys() -> list[str]:
    return [o.key for o in optimizations()]
