"""Turning findings into code changes: select fixes, transform in memory, re-check, then write.

Nothing is written until every selected fix has run and the re-check in memory shows that each
fixed finding is gone and no new bug appeared; then all files are written or none, in each
file's own encoding, as one transaction (``optimizer_tool.transaction``: a journal, fsynced
temporary files, a hash check right before each rename, roll-back on a failure or Ctrl-C, and
recovery of an interrupted run by the next ``apply`` or ``check``; docs/reliability.md).

Which fixes run (``select``):
- ``--only KEYS`` runs exactly those, safe or not (naming an unsafe fix is asking for it);
- ``--all`` runs every fix, including those that change the training objective (vpred, lpips,
  the schedules), except the ``ON_REQUEST`` ones (resolution: about 2x the memory and +50%
  training time, so only ``--only resolution`` applies it);
- otherwise the fixes declared ``SAFE`` (ema, lr-schedule, clipping, monitoring), plus the
  ``UNSAFE`` ones with ``--unsafe``; ``--skip KEYS`` removes fixes from any of these.
Each fix declares its own applicability (``optimizer_tool.contract.Applicability``), as ruff's.

How one fix leads to another (``plan``):
- A fix runs on fresh findings of its own rules for the unit as the previous fixes left it, and
  again while its own rules report something new: setting ``prediction_type`` to v makes the
  vpred rules judge the loss target and the sampler, which the same fix then patches.
- A fix must not leave a new bug. When the re-check shows a new ``bug`` finding that another
  fix resolves, that fix runs too and the summary says which fix required it: switching the
  reference trainer to its cosine schedule turns "the unused cosine option lacks s" (OFF001,
  missing) into "the cosine schedule in use lacks s" (OFF003, bug), so ``--only cosine`` also
  adds the offset s. ``--skip offset`` refuses that, and the apply aborts on the new bug.
- New findings of severity ``missing``/``info`` are advice, not failures: ``--only vpred`` makes
  zero-terminal-SNR rescaling (ZSNR001) recommended; the summary reports it, and it is applied
  when zero-snr is selected too (``--all``). A new ``bug`` nobody can fix aborts the apply.

Refusals (nothing is written): a file that does not parse (the ``E999`` input errors of check),
a fix that cannot anchor its change (``CannotFix``, printed with the manual patch), a re-check
that still reports a fixed finding or a new bug.

Findings are identified by code and file: fixes move lines, so a finding's line cannot say
whether it is the same one after the change.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import libcst as cst

from optimizer_tool.contract import Applicability, CannotFix, FixContext
from optimizer_tool.engine import (
    CheckResult,
    apply_suppressions,
    build_units,
    check_loaded,
    check_units,
    run_check,
)
from optimizer_tool.errors import UsageError
from optimizer_tool.findings import Finding, Severity
from optimizer_tool.index import UnitIndex, reparsed
from optimizer_tool.project import (
    CONFIG_SUFFIXES,
    SKIP_DIRS,
    LoadResult,
    SourceFile,
    Unit,
    decode_source,
    keep_final_newline,
    package_files,
    parse_source,
    project_root,
)
from optimizer_tool.registry import Optimization, optimizations
from optimizer_tool.settings import Settings
from optimizer_tool.transaction import TransactionError, commit
from optimizer_tool.verify import Printed, refuse_side_effects, refuse_unbound

# A fix that keeps finding new work after this many passes is looping, not converging.
MAX_PASSES = 4


@dataclass
class FixPlan:
    originals: dict[Path, str] = field(default_factory=dict)
    changed: dict[Path, str] = field(default_factory=dict)  # path -> new source
    encodings: dict[Path, str] = field(default_factory=dict)  # path -> the file's own (PEP 263), kept on write
    fixed: list[Finding] = field(default_factory=list)  # targeted, and gone in the re-check
    refused: list[CannotFix] = field(default_factory=list)
    input_errors: list[Finding] = field(default_factory=list)  # files that do not parse
    unfixed: list[Finding] = field(default_factory=list)  # targeted, still reported
    blocking: list[Finding] = field(default_factory=list)  # new bugs (or parse errors) after the fixes
    advice: list[Finding] = field(default_factory=list)  # new missing/info findings: reported only
    remaining: list[Finding] = field(default_factory=list)  # findings of the applied optimizations left
    required_by: dict[str, set[str]] = field(default_factory=dict)  # pulled-in key -> keys that needed it
    notes: list[tuple[str, str]] = field(default_factory=list)  # (key, what the fix wants the user to know)
    held_back: list[HeldBack] = field(default_factory=list)  # optimizations left out, each with its reason

    @property
    def ok(self) -> bool:
        """What is left to write holds: every file parses, every targeted finding is gone, no new bug.
        Optimizations whose fix could not be placed or verified are in ``held_back``, not written."""
        return not self.input_errors and not self.unfixed and not self.blocking

    def encoded(self) -> tuple[dict[Path, bytes], dict[Path, bytes]]:
        """The changed files' new and original bytes, each in the file's own encoding (a coding
        cookie's, with its byte-order mark where it had one): what ``write_all`` writes and checks."""
        new: dict[Path, bytes] = {}
        for path, text in self.changed.items():
            encoding = self.encodings.get(path, "utf-8")
            try:
                new[path] = text.encode(encoding)
            except UnicodeEncodeError as exc:
                raise ApplyError(
                    f"{path}: the fix adds {text[exc.start : exc.end]!r}, which the file's encoding ({encoding}) "
                    "cannot hold; nothing was written: re-save the file as UTF-8 or apply the fix by hand"
                ) from exc
        return new, {p: self.originals[p].encode(self.encodings.get(p, "utf-8")) for p in self.changed}


@dataclass
class HeldBack:
    """An optimization whose fix is not written, and why: it cannot place its change (``refusal``,
    with the manual patch), or the re-check still reports what it targeted, or it would leave a new
    bug (``findings``)."""

    key: str
    why: str
    refusal: CannotFix | None = None
    findings: list[Finding] = field(default_factory=list)


def select(
    keys: list[str] | None,
    skip: list[str] | None,
    unsafe: bool,
    everything: bool = False,
    codes: list[str] | None = None,
) -> list[Optimization]:
    """``--only`` names optimizations explicitly (safe or not), ``--select`` names codes (or their
    prefixes) the same way; ``--all`` takes every fix but the on-request-only ones; otherwise only
    safe fixes run, plus the unsafe ones with ``--unsafe``, as ruff does."""
    chosen = []
    prefixes = tuple(codes or ())
    for opt in optimizations():
        if not opt.fixes or (skip and opt.key in skip):
            continue
        if prefixes:
            fixes = tuple(
                f
                for f in opt.fixes
                if f.applicability is not Applicability.DISPLAY_ONLY and any(c.startswith(prefixes) for c in f.codes)
            )
        elif keys:
            named = opt.key in keys
            fixes = tuple(f for f in opt.fixes if named and f.applicability is not Applicability.DISPLAY_ONLY)
        else:
            fixes = tuple(f for f in opt.fixes if _runs_unasked(f.applicability, unsafe, everything))
        if fixes:
            chosen.append(opt.restricted(fixes))
    return chosen


def _runs_unasked(applicability: Applicability, unsafe: bool, everything: bool) -> bool:
    """Whether a fix runs when its key is not named: safe ones always, unsafe ones with
    ``--unsafe``/``--all``, on-request and display-only ones never."""
    if applicability is Applicability.SAFE:
        return True
    return applicability is Applicability.UNSAFE and (unsafe or everything)


def _identity(finding: Finding) -> tuple[str, Path]:
    return finding.code, finding.location.path


class _Workspace:
    """The project as the fixes so far left it: one SourceFile per module version (an unchanged
    file keeps its cached index facts), and its units recomputed from the current imports (a fix
    that imports the EMA helper brings utils/ema.py into the unit for the fixes after it)."""

    def __init__(self, loaded: LoadResult, targets: list[Path]) -> None:
        self.base, self.sources = loaded, dict(loaded.files)
        self.root, self.targets = loaded.root, targets

    def loaded(self) -> LoadResult:
        # the check's load with the files as the fixes left them: its launcher delegations and
        # config-named classes stay, so the fixes see the units `check` reported
        return replace(self.base, files=dict(self.sources))

    def units(self) -> list[Unit]:
        return build_units(self.loaded(), self.targets)

    def unit(self, entry: Path) -> Unit | None:
        return next((u for u in self.units() if u.entry.path == entry), None)

    def update(self, modules: dict[Path, cst.Module], code: Printed) -> bool:
        changed = False
        for path, module in modules.items():
            if module is not self.sources[path].module:
                was = self.sources[path]
                self.sources[path] = SourceFile(
                    path, keep_final_newline(was.text, code(module)), module, encoding=was.encoding
                )
                changed = True
        return changed

    def changed(self, originals: dict[Path, str]) -> dict[Path, str]:
        return {p: s.text for p, s in self.sources.items() if s.text != originals[p]}


class _ProjectFiles(Mapping[Path, str]):
    """``FixContext.project_files`` of one unit: the Python files in the folders of its files and
    their direct subfolders (none under SKIP_DIRS), as the workspace has them, else as on disk.
    Listed and read only when a fix asks (the EMA fix looking for the project's own helper); a
    file that cannot be decoded as Python decodes it has no text (``get`` gives None)."""

    def __init__(self, work: _Workspace, unit_paths: Iterable[Path]) -> None:
        self._work = work
        self._folders = sorted({p.parent for p in unit_paths})
        self._paths: dict[Path, None] | None = None
        self._texts: dict[Path, str | None] = {}

    def _listed(self) -> dict[Path, None]:
        if self._paths is None:
            found = [
                path
                for folder in self._folders
                for path in (*folder.glob("*.py"), *folder.glob("*/*.py"))
                if path.parent == folder or path.parent.name not in SKIP_DIRS
            ]
            self._paths = dict.fromkeys(sorted(p for p in set(found) if p.is_file()))
        return self._paths

    def __iter__(self) -> Iterator[Path]:
        return iter(self._listed())

    def __len__(self) -> int:
        return len(self._listed())

    def __getitem__(self, path: Path) -> str:
        if path not in self._texts:
            self._texts[path] = self._read(path) if path in self._listed() else None
        text = self._texts[path]
        if text is None:
            raise KeyError(path)
        return text

    def _read(self, path: Path) -> str | None:
        source = self._work.sources.get(path)
        if source is not None:
            return source.text
        try:
            decoded = decode_source(path, path.read_bytes())
        except OSError:
            return None
        return None if isinstance(decoded, Finding) else decoded[0]


def _fresh_findings(unit: Unit, opt: Optimization, settings: Settings, root: Path) -> list[Finding]:
    """What ``opt``'s rules report on the unit now, with the user's suppressions and settings:
    positions match the code the fix is about to change."""
    result = check_units([unit], settings, root, (opt,))
    apply_suppressions(result, {f.path: f for f in unit.files}, settings)
    return [f for f in result.findings if settings.wants(f, root)]


def plan(
    paths: list[Path],
    chosen: list[Optimization],
    settings: Settings,
    skip: list[str] | None = None,
    request: Request | None = None,
) -> FixPlan:
    """Every fix that can be placed and verified, ruff-style: an optimization whose fix cannot place
    its change, does not remove what it targets, or leaves a new bug is held back with its reason,
    and the others are planned again without it (at most once per optimization)."""
    request = request or Request(keys=tuple(opt.key for opt in chosen))  # the API's caller named them
    held: list[HeldBack] = []
    refused: list[CannotFix] = []
    current = list(chosen)
    start = run_check(paths, settings)  # the files as on disk: every round starts from them
    while True:
        result = _plan_once(paths, current, settings, skip, request, start)
        refused += [*result.refused, *(h.refusal for h in result.held_back)]
        held += result.held_back  # refused on the way: already left out of this plan
        current = [opt for opt in current if opt.key not in {h.key for h in result.held_back}]
        if result.input_errors or (result.ok and not result.refused) or not current:
            break
        blamed = _blame(result, current) or _blame_alone(result, paths, current, settings, skip, request, start)
        held += blamed
        current = [opt for opt in current if opt.key not in {h.key for h in blamed}]
    result.refused, result.held_back = refused, held
    return result


@dataclass(frozen=True)
class Request:
    """What the user named: ``--select`` codes (prefixes), ``--only`` keys, ``--all``. Fixes of
    ``info`` findings run only when named so (a floor of an LR decay is advice, not a defect), never
    with the default safe set or ``--unsafe``."""

    codes: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    everything: bool = False
    unsafe: bool = False

    def accepts_side_effects(self, opt: Optimization) -> bool:
        """A fix may change more than its own knob (a CLI default, a new dependency) only when the
        user asked for it by name, or for unsafe fixes; the default safe set never does."""
        named = opt.key in self.keys or any(code.startswith(self.codes) for code in opt.fixable_codes if self.codes)
        return named or self.everything or self.unsafe

    def wants(self, finding: Finding) -> bool:
        if self.codes and not finding.code.startswith(self.codes):
            return False
        if finding.severity is Severity.INFO:
            return bool(self.codes) or finding.key in self.keys or self.everything
        return True


def _blame(result: FixPlan, current: list[Optimization]) -> list[HeldBack]:
    """The optimizations the failed plan names: a refusal's, an unfixed finding's fixer (a fix that
    another one pulled in is charged to the ones that needed it)."""
    keys = {opt.key for opt in current}
    fixer_of = {code: opt.key for opt in optimizations() for code in opt.fixable_codes}
    held: dict[str, HeldBack] = {}

    def owners(key: str) -> list[str]:
        # A fix pulled in by several others is charged to one of them only when that one alone needed
        # it: otherwise ``_blame_alone`` plans each on its own (clipping must not be held back because
        # the lr schedule made an EMA finding appear that the EMA fix cannot resolve).
        needers = sorted(result.required_by.get(key, set()) & keys)
        return [key] if key in keys else needers if len(needers) == 1 else []

    for exc in result.refused:
        if getattr(exc, "late", False):
            continue
        for owner in owners(exc.key):
            held.setdefault(owner, HeldBack(owner, "cannot place its change", refusal=exc))
    for finding in result.unfixed:
        for owner in owners(fixer_of.get(finding.code, finding.key)):
            held.setdefault(owner, HeldBack(owner, "the re-check still reports what it fixed")).findings.append(finding)
    return list(held.values())


def _blame_alone(together: FixPlan, paths, current, settings, skip, request, start) -> list[HeldBack]:
    """A new bug no fix owns in the plan of ``current`` together: plan each optimization on its own
    and hold back those that leave one; when each holds alone (they clash), hold back the last."""
    held = []
    for opt in current:
        alone = _plan_once(paths, [opt], settings, skip, request, start)
        if not alone.ok or alone.refused or alone.held_back:
            mine = alone.held_back or _blame(alone, [opt])
            held += mine or [HeldBack(opt.key, "would introduce a new bug", findings=alone.blocking)]
    if held:
        return held
    last = current[-1]
    return [HeldBack(last.key, "clashes with the other fixes", findings=together.blocking or together.unfixed)]


def _plan_once(
    paths: list[Path],
    chosen: list[Optimization],
    settings: Settings,
    skip: list[str] | None,
    request: Request,
    start: tuple[CheckResult, LoadResult],
) -> FixPlan:
    before, loaded = start
    result = FixPlan(
        originals={p: s.text for p, s in loaded.files.items()},
        encodings={p: s.encoding for p, s in loaded.files.items()},
    )
    result.input_errors = [f for f in before.findings if f.is_error]
    if result.input_errors:
        return result
    work = _Workspace(loaded, [Path(p).resolve() for p in paths])
    seen_before = {_identity(f) for f in before.findings}
    fixer_of = {code: opt for opt in optimizations() for code in opt.fixable_codes}
    active = list(chosen)
    attempted: set[tuple[str, Path]] = set()
    targets: list[Finding] = []
    changed_by: set[str] = set()  # optimizations whose fixes ran in this plan
    after, checked = before, {}
    for _ in range(MAX_PASSES):
        # The last full check says which fixes have work in which unit; each then re-checks its
        # own rules on the unit as the fixes before it left it.
        pending = {(f.code, f.location.path) for f in after.findings} - attempted
        ran = []
        for unit in work.units():
            for opt in list(active):
                if not _has_work(opt, unit, pending):
                    continue
                fresh = opt in chosen and opt.key not in changed_by
                if _run_or_hold(opt, unit.entry.path, work, settings, attempted, targets, result, request, fresh):
                    ran.append(opt.key)
                    changed_by.add(opt.key)
                elif any(h.key == opt.key for h in result.held_back):
                    active.remove(opt)
        changed = work.changed(result.originals)
        if changed != checked:
            # between passes, the parsed workspace (unchanged files keep their index facts)
            after = check_loaded(work.loaded(), paths, settings)
            checked = changed
        if result.refused or any(f.is_error for f in after.findings):
            break
        # A fix must not leave a new bug: when another fix resolves it, that one runs too.
        needed = [
            fixer_of[f.code]
            for f in after.findings
            if f.severity is Severity.BUG
            and _identity(f) not in seen_before
            and f.code in fixer_of
            and fixer_of[f.code].key not in {opt.key for opt in active}
            and not (skip and fixer_of[f.code].key in skip)
        ]
        for opt in dict.fromkeys(needed):
            active.append(opt)
            result.required_by[opt.key] = set(ran)
        if not ran and not needed:
            break
    result.changed = work.changed(result.originals)
    if result.changed and not result.refused:
        after = _verify(paths, settings, loaded, result.changed, {p: work.sources[p].module for p in result.changed})
    remaining = {_identity(f) for f in after.findings}
    result.fixed = [f for f in targets if _identity(f) not in remaining]
    result.unfixed = [f for f in targets if _identity(f) in remaining]
    new = [f for f in after.findings if _identity(f) not in seen_before]
    result.blocking = [f for f in new if f.is_error or f.severity is Severity.BUG]
    result.advice = [f for f in new if f not in result.blocking]
    applied = {opt.key for opt in active}
    result.remaining = [f for f in after.findings if f.key in applied and settings.fails(f) and f not in result.unfixed]
    return result


def _run_or_hold(
    opt: Optimization, entry: Path, work: _Workspace, settings, attempted, targets, result, request, fresh
):
    """``_run_fix``; when it refuses an optimization that has run nothing in this plan yet
    (``fresh``), whatever that optimization changed is undone here and it is held back, so the
    round goes on without it: the same outcome as planning again without it, for a fraction of
    the time on a large file. Other refusals stay in ``result.refused`` for ``plan`` to blame."""
    sources, marks, refused = dict(work.sources), (len(targets), len(result.notes)), len(result.refused)
    ran = _run_fix(opt, entry, work, settings, attempted, targets, result, request)
    if len(result.refused) == refused:
        return ran
    for exc in result.refused[refused:]:  # the refusing fix changed nothing: its lines are the workspace's
        exc.line = _line_on_disk(result.originals, work, exc.path, exc.line)
    if not fresh:
        # A fix that already ran refuses a finding that appeared after other fixes: which of them
        # made it appear is for ``_blame_alone`` to find, not this optimization's to carry.
        for exc in result.refused[refused:]:
            exc.late = True
        return ran
    exc = result.refused.pop(refused)
    work.sources = sources
    del targets[marks[0] :], result.notes[marks[1] :]
    result.held_back.append(HeldBack(opt.key, "cannot place its change", refusal=exc))
    return False


def _line_on_disk(originals: dict[Path, str], work: _Workspace, path: Path, line: int) -> int:
    """The line of the file on disk that a line of the workspace's version of ``path`` comes from (the
    fixes before have moved lines: a refusal or a fixed finding names the line the user has). A line
    a fix added maps to the original line it was inserted before."""
    source = work.sources.get(path)
    original = originals.get(path)
    if source is None or original is None or source.text == original:
        return line
    now, was = source.text.splitlines(), original.splitlines()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, now, was).get_opcodes():
        if i1 <= line - 1 < i2:
            return j1 + (line - 1 - i1) + 1 if tag == "equal" else min(j1 + 1, max(len(was), 1))
    return line


def _on_disk(originals: dict[Path, str], work: _Workspace, finding: Finding) -> Finding:
    where = finding.location
    line = _line_on_disk(originals, work, where.path, where.line)
    return finding if line == where.line else replace(finding, location=replace(where, line=line))


def _verify(
    paths: list[Path],
    settings: Settings,
    loaded: LoadResult,
    changed: dict[Path, str],
    fixed: dict[Path, cst.Module],
):
    """The verdict: the changed texts parsed again, as the next ``check`` will read them (a tree
    built by transformations can print as code that parses differently); unchanged files keep
    their parsed state, and so do the statements of a changed file that no fix touched (``fixed``:
    the trees the fixes left). A change that imports a file the first check never read gets a
    full load."""
    files = dict(loaded.files)
    errors = list(loaded.errors)
    for path, text in changed.items():
        parsed = parse_source(path, text, loaded.files[path].encoding)
        if isinstance(parsed, Finding):
            errors.append(parsed)
            files.pop(path, None)
        else:
            module = reparsed(fixed[path], loaded.files[path].module)
            files[path] = parsed if module is None else SourceFile(path, parsed.text, module, encoding=parsed.encoding)
    if any(imported not in files for path in changed if path in files for imported in loaded.imports(files[path])):
        return run_check(paths, settings, overrides=changed)[0]
    # every other part of the load (its launchers' delegates, the classes configs name) stays
    return check_loaded(replace(loaded, files=files, errors=errors), paths, settings)


def _has_work(opt: Optimization, unit: Unit, pending: set[tuple[str, Path]]) -> bool:
    paths = {f.path for f in unit.files} | {c.path for c in unit.configs}
    return any(code in opt.fixable_codes and path in paths for code, path in pending)


def _run_fix(
    opt: Optimization,
    entry: Path,
    work: _Workspace,
    settings: Settings,
    attempted: set,
    targets: list[Finding],
    result: FixPlan,
    request: Request,
) -> bool:
    """Run each of ``opt``'s fixes, in turn, on the unit of ``entry``, while ``opt``'s rules report
    findings of its codes it has not tried yet: every fix sees the modules as the fixes before it
    left them, with a fresh index and fresh findings (their nodes and positions belong to those
    modules). A refusal stops the optimization."""
    ran = False
    for fix in opt.fixes:
        for _ in range(MAX_PASSES):
            current = work.unit(entry)
            if current is None:
                break
            unit_paths = {f.path for f in current.files}
            # a finding may point into the unit's YAML/TOML config: the fix then says what to edit there
            located = unit_paths | {c.path for c in current.configs}
            findings = [
                f
                for f in _fresh_findings(current, opt, settings, work.root)
                if f.code in fix.codes
                and f.location.path in located
                and _identity(f) not in attempted
                and request.wants(f)
            ]
            if not findings:
                break
            attempted.update(_identity(f) for f in findings)
            ctx = FixContext(
                UnitIndex.build(current),
                {p: work.sources[p].module for p in unit_paths},
                _ProjectFiles(work, unit_paths),
            )
            before = dict(ctx.modules)
            code = Printed()
            for path in unit_paths:
                code.seed(work.sources[path].module, work.sources[path].text)
            try:
                fix().apply(ctx, findings)
                refuse_unbound(before, ctx.modules, work.root, code)
                if fix.applicability is Applicability.SAFE and not request.accepts_side_effects(opt):
                    refuse_side_effects(before, ctx.modules, work.root, code)
            except CannotFix as exc:
                exc.key = opt.key
                result.refused.append(exc)
                return ran
            targets.extend(_on_disk(result.originals, work, f) for f in findings if f.code not in ctx.left)
            result.notes.extend((opt.key, note) for note in ctx.notes if (opt.key, note) not in result.notes)
            ran = True
            if not work.update(ctx.modules, code):
                break  # verified, nothing to change (or a fix that found its work already done)
    return ran


# --- writing --------------------------------------------------------------------------------
class ApplyError(Exception):
    """Writing was refused or failed; nothing (or everything restored) was written."""


def write_all(changes: dict[Path, bytes], originals: dict[Path, bytes]) -> None:
    """Every file or none, also across Ctrl-C and crashes: ``optimizer_tool.transaction.commit`` on
    the new bytes and on the bytes the fixes were computed from (``FixPlan.encoded``). A file
    changed on disk since then (edited, deleted, re-encoded) is refused, naming it."""
    try:
        commit(changes, originals)
    except TransactionError as exc:
        raise ApplyError(str(exc)) from exc


def project_folders(targets: list[Path], files: Iterable[Path] = ()) -> list[Path]:
    """What apply may change: the folders given, and for a file given its folder widened to the
    files of its unit (``source_of``)."""
    return [source_of(t, files) for t in targets]


def source_of(target: Path, files: Iterable[Path] = ()) -> Path:
    """The project folder of one apply target: the folder itself; for a file, its folder widened to
    the common folder of ``files`` (the unit's files: ``scripts/image_train.py`` trains with the
    package's ``train_util.py`` beside ``scripts/``), counting only files under the file's project
    root (pyproject/.git/setup), so an installed library never widens it."""
    target = target.resolve()
    if target.is_dir():
        return target
    root = project_root([target])
    inside = [Path(f).resolve().parent for f in files if root in Path(f).resolve().parents]
    return Path(os.path.commonpath([str(target.parent), *map(str, inside)]))


def check_inside(changes: dict[Path, str], targets: list[Path]) -> None:
    """A fix may reach a file the trainer imports from elsewhere (an installed-in-place library):
    apply changes only the project it was pointed at."""
    folders = project_folders(targets, changes)
    outside = [p for p in changes if not any(f == p.parent or f in p.parents for f in folders)]
    if outside:
        raise UsageError(
            f"the fixes would change {outside[0]}, outside {', '.join(map(str, folders))}; "
            "pass the folder that contains every file to change"
        )


def check_out(source: Path, destination: Path) -> None:
    """``--out``: a new or empty folder outside the project it copies (checked before any analysis)."""
    source, destination = source.resolve(), destination.resolve()
    if destination == source or source in destination.parents:
        raise UsageError(f"--out {destination}: must not be inside the project it copies ({source})")
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise UsageError(f"--out {destination}: exists and is not an empty folder; name a new folder")


def copy_project(
    source: Path, destination: Path, changes: dict[Path, str], files: Iterable[Path] | None = None
) -> dict[Path, Path]:
    """Copy ``source`` (a folder) to ``destination``, or only ``files`` of it and its config files
    (apply on one file copies the trainer, the modules it imports and the YAML/TOML/JSON beside it,
    not the folder's datasets); returns where each changed
    file is in the copy. The original is never touched."""
    check_inside(changes, [source])
    check_out(source, destination)
    source, destination = source.resolve(), destination.resolve()
    if files is None:
        shutil.copytree(source, destination, ignore=shutil.ignore_patterns(*SKIP_DIRS), dirs_exist_ok=True)
    else:
        configs = [p for p in source.iterdir() if p.suffix in CONFIG_SUFFIXES and p.stat().st_size < 1_000_000]
        files = [*files, *package_files([*files, *changes], source)]
        for path in sorted({*files, *changes, *configs}):
            if source in path.parents:
                (destination / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination / path.relative_to(source))
    return {p: destination / p.relative_to(source) for p in changes}


def uncommitted(paths: list[Path]) -> list[str]:
    """``git status --porcelain`` lines of the files that are modified, staged or untracked in
    their git checkout: in-place fixes there could not be reviewed or reverted with git.
    Files outside a checkout (or without git installed) have nothing to protect."""
    by_repo: dict[Path, list[Path]] = {}
    for path in paths:
        top = _git(path.parent, "rev-parse", "--show-toplevel")
        if top:
            by_repo.setdefault(Path(top.strip()), []).append(path)
    lines: list[str] = []
    for top, files in by_repo.items():
        status = _git(top, "status", "--porcelain", "--", *[str(f) for f in files])
        lines += [line for line in (status or "").splitlines() if line.strip()]
    return lines


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
