"""The rule contract, Fixit style: a rule declares what it reports, documents
itself (``t2s-opt explain``) and carries its own VALID/INVALID examples, which
the test suite runs; a fix declares the codes it resolves and how safe it is.

A rule module (or package) under ``optimizer_tool/rules/`` is one optimization: it sets ``KEY``,
``TITLE`` and ``ORDER`` and defines its ``Rule`` and ``Fix`` subclasses. The registry discovers
them; the engine knows no optimization by name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Iterable, Mapping, Union

import libcst as cst

from optimizer_tool.findings import Severity, State
from optimizer_tool.index import CallSite, Setting, UnitIndex

Example = Union[str, dict]  # source of one file, or {relative path: source} for a small project


@dataclass(frozen=True)
class Hit:
    """Where a rule fired; ``message`` overrides the rule's default sentence when the
    measured value matters (e.g. the horizon in steps)."""

    path: Path
    line: int
    col: int = 1
    message: str | None = None
    # The user-facing setting (a flag, a config key) whose default is what the finding is about:
    # the verdict is then "off by default" rather than "missing".
    setting: Setting | None = None

    @classmethod
    def at(cls, thing: CallSite | Setting, message: str | None = None) -> "Hit":
        return cls(thing.path, thing.line, thing.col, message, thing if isinstance(thing, Setting) else None)


class Rule:
    code: ClassVar[str]
    severity: ClassVar[Severity]
    title: ClassVar[str]  # the checklist line, e.g. "EMA updated once per optimizer step"
    message: ClassVar[str]  # one sentence: what is wrong and why it matters
    explain: ClassVar[str]  # long form for `t2s-opt explain`
    VALID: ClassVar[list[Example]] = []
    INVALID: ClassVar[list[Example]] = []
    # Whether the rule judges diffusion trainers only; None: as its module's DIFFUSION_ONLY says.
    # (LPIPS's implementation checks run on autoencoder/GAN trainers too; its "add LPIPS" does not.)
    diffusion_only: ClassVar[bool | None] = None
    # The message on trainers that are not diffusion trainers, when ``message`` speaks of diffusion.
    generic_message: ClassVar[str | None] = None
    # Values of a flag or config key that turn the optimization on: a finding about such a setting's
    # default is "off by default" only when the flag accepts one of them (argparse ``choices``).
    switch_values: ClassVar[tuple[str, ...]] = ()

    def applies(self, index: UnitIndex) -> bool:
        """False when the rule has nothing to judge (a bug rule where the feature is absent)."""
        return True

    def when_blind(self, index: UnitIndex) -> tuple[State, str] | None:
        """For a ``missing`` rule that does not apply: what that means for the optimization's
        verdict, and why (not applicable, decided elsewhere...). None: ``unknown``."""
        return None

    def when_passed(self, index: UnitIndex) -> tuple[State, str] | None:
        """For a ``missing`` rule that found nothing missing: a verdict other than ``present`` when
        the rule passed without seeing enough (a hand-written schedule it cannot read: ``unknown``)."""
        return None

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        raise NotImplementedError


class CannotFix(Exception):
    """A fix found no anchor it can prove (no ``optimizer.step()``, no checkpoint dict...).
    ``patch`` is the manual change to suggest instead of guessing."""

    def __init__(self, path: Path, line: int, message: str, patch: str = "") -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message, self.patch = path, line, message, patch
        self.key = ""  # the optimization whose fix refused; set by apply


class FixContext:
    """The files of one unit as the fixes see them: libcst modules that a fix reads, transforms
    and replaces. Nothing touches the disk here; the apply engine re-checks and writes.

    ``project_files`` (read-only) holds the text of the project's Python files around the unit (the
    folders of its files and their direct subfolders), for a fix that adopts a module the unit does
    not import yet (the project's own EMA helper); empty unless the caller provides it."""

    def __init__(
        self,
        index: UnitIndex,
        modules: dict[Path, cst.Module],
        project_files: Mapping[Path, str] | None = None,
    ) -> None:
        self.index = index
        self.modules = modules
        self.project_files: Mapping[Path, str] = MappingProxyType({}) if project_files is None else project_files
        self.notes: list[str] = []
        self.left: set[str] = set()  # codes the fix was handed but could not fix (the rest it fixed)

    def leave(self, code: str, why: CannotFix) -> None:
        """Fix the other findings and leave ``code`` as it is, saying why (a fix of several parts
        whose one part cannot be placed: the gradient norm is logged, the EMA drift is not)."""
        self.left.add(code)
        where = f"{why.path.name}:{why.line}" if hasattr(why.path, "name") else str(why.line)
        self.note(f"{code} left as it is: {why.message} ({where})")

    def note(self, message: str) -> None:
        """Tell the user something the diff does not show (what was verified, what was also
        changed and why); ``apply`` prints it in its summary."""
        self.notes.append(message)

    def module(self, path: Path) -> cst.Module:
        return self.modules[path]

    def update(self, path: Path, module: cst.Module) -> None:
        self.modules[path] = module


class Applicability(enum.Enum):
    """How freely a fix may run, as ruff's fix applicability.

    ``SAFE``: only adds the optimization or corrects its own knob; runs by default.
    ``UNSAFE``: changes what the model learns (objective, schedule); runs with ``--unsafe``,
    ``--all`` or when its key is named.
    ``ON_REQUEST``: costly enough (memory, time) that only naming its key applies it.
    ``DISPLAY_ONLY``: never written; the manual patch is shown instead.
    """

    SAFE = "safe"
    UNSAFE = "unsafe"
    ON_REQUEST = "on-request"
    DISPLAY_ONLY = "display-only"


class Fix:
    """The codemod of one optimization. ``codes`` are the findings it resolves; ``apply``
    transforms the unit's modules through ``ctx`` or raises ``CannotFix``. Applying it to its
    own output must change nothing (idempotence is tested for every fix)."""

    codes: ClassVar[tuple[str, ...]] = ()
    applicability: ClassVar[Applicability] = Applicability.UNSAFE

    def apply(self, ctx: FixContext, findings: list) -> None:
        raise NotImplementedError
