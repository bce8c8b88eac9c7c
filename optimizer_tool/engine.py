"""Running the rules: paths -> units -> index -> findings, with suppressions and settings."""

from __future__ import annotations

import multiprocessing
import os
import re
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from optimizer_tool.config_choice import ConfigChoice, chosen_configs, config_choice
from optimizer_tool.deep import TOO_DEEP, deepest, run_deep
from optimizer_tool.findings import Finding, Location, Severity, State, Verdict
from optimizer_tool.index import UnitIndex
from optimizer_tool.project import (
    ConfigFile,
    LoadResult,
    SourceFile,
    Unit,
    importers,
    input_error,
    load,
    load_configs,
    parse_source,
)
from optimizer_tool.registry import Optimization, optimizations
from optimizer_tool.settings import Settings
from optimizer_tool.verdicts import RuleOutcome, UnitFacts, delegated, unit_facts, verdict

SUPPRESSION = re.compile(r"#\s*t2s-opt:\s*(ignore|fixme)(?:\[([A-Za-z0-9_,\s]+)\])?")
UNUSED_SUPPRESSION = "T2S001"


@dataclass
class RuleStatus:
    """One checklist row: a rule's verdict on one unit."""

    code: str
    key: str
    title: str
    unit: Path
    state: str  # "pass" | "fail" | "n/a"


@dataclass
class CheckResult:
    findings: list[Finding]
    statuses: list[RuleStatus]
    units: list[Path]
    root: Path
    suppressed: int = 0
    errors: list[Finding] = field(default_factory=list)
    facts: list[UnitFacts] = field(default_factory=list)  # per unit: trains? diffusion? verdicts per key

    def failing(self, settings: Settings) -> list[Finding]:
        return [f for f in self.findings if settings.fails(f)]

    def unknown(self, settings: Settings) -> list[tuple[Path, Verdict]]:
        """Unknown verdicts that fail the run: every one with ``--fail-on unknown``, those of the
        required keys when ``[tool.t2s-opt] require`` names them."""
        return [
            (facts.entry, v)
            for facts in self.facts
            for v in facts.verdicts.values()
            if v.state is State.UNKNOWN and settings.fails_unknown(v.key)
        ]


def build_units(loaded: LoadResult, targets: list[Path]) -> list[Unit]:
    # Memoized: a folder of library modules has closures of hundreds of files each, and
    # re-walking every file's AST per closure made this quadratic (minutes on diffusers).
    imports_cache: dict[Path, list[Path]] = {}
    closure_cache: dict[Path, list[Path]] = {}
    closure_sets: dict[Path, set[Path]] = {}

    def closure(path: Path) -> list[Path]:
        if path in closure_cache:
            return closure_cache[path]
        order, seen, queue = [], set(), deque([path])
        while queue:
            current = queue.popleft()
            if current in seen or current not in loaded.files:
                continue
            order.append(current)
            seen.add(current)
            if current not in imports_cache:
                imports_cache[current] = loaded.imports(loaded.files[current])
            queue.extend(imports_cache[current])
        closure_cache[path], closure_sets[path] = order, seen
        return order

    def reaches(start: Path, other: Path) -> bool:
        closure(start)
        return other in closure_sets[start]

    def near_trainer(start: Path) -> bool:
        closure(start)  # fills imports_cache for the files it reaches
        frontier, seen = [start], {start}
        for _ in range(MAX_TRAINER_DEPTH + 1):
            if trainers.intersection(frontier):
                return True
            frontier = [n for f in frontier for n in imports_cache.get(f, []) if n not in seen and n in loaded.files]
            seen.update(frontier)
        return False

    target_set = {p.resolve() for p in targets}
    in_targets = [p for p in loaded.files if not target_set.isdisjoint((p, *p.parents))]
    trainers = {p for p, source in loaded.files.items() if source.trains}
    # The entry point of a trainer is the outermost file whose imports reach training code
    # (scripts/image_train.py -> train_util.py; main.py -> trainer.py): its unit sees the
    # config defaults and helpers the script wires in.
    candidates = [p for p in in_targets if trainers.intersection(closure(p))]
    # An entry point runs: a script, a file that trains or launches, module-level code, or a file
    # named on the command line. A library module that merely imports training code (diffusers'
    # ``src/diffusers/__init__.py`` reaches 1000 files) is no entry; kept only when nothing else is.
    # Training code reached only through more than MAX_TRAINER_DEPTH imports is library code the
    # entry may never call (diffusers' CLI reaches an inference pipeline that calls backward()).
    runnable = [
        p for p in candidates if p in target_set or (_entry_like(loaded.files[p], loaded.root) and near_trainer(p))
    ]
    candidates = runnable or candidates
    keep = [c for c in candidates if not any(o != c and reaches(o, c) and not reaches(c, o) for o in candidates)]
    units = [_budgeted(loaded, closure(e), imports_cache[e]) for e in keep]
    # Files that train nothing and belong to no trainer are checked alone, without pulling in
    # their imports, only when named on the command line or when nothing trains: library code has
    # nothing for the training rules to judge, and indexing a repository's every module (timm's
    # 300) for no verdict was most of the time of `check .`.
    covered = {p for e in keep for p in closure(e)}
    # A launcher (``trainer.fit(model)``, the model named by a config chosen at run time) trains
    # through the models its configs name: a unit of its own whose verdicts are theirs.
    launchers = [p for p in in_targets if p not in keep and p in loaded.delegates]
    for p in launchers:
        # a model trains through its own code or a base class it imports (ControlLDM(LatentDiffusion))
        models = [m for m in loaded.delegates[p] if m in loaded.files and trainers.intersection(closure(m))]
        # each model with the launcher's own code: its Trainer (clipping, callbacks) is part of the run
        reached = [loaded.files[f] for f in closure(p)]  # fills imports_cache[p]
        configs, choice = _configs(loaded, p, imports_cache[p])
        delegates = [
            Unit(
                loaded.files[m],
                [loaded.files[f] for f in dict.fromkeys([*closure(m), *closure(p)])],
                load_configs(m.parent),
            )
            for m in models
        ]
        units.append(Unit(loaded.files[p], reached, configs, delegates, config_choice=choice))
    alone = [p for p in in_targets if p not in covered and p not in launchers and (not keep or p in target_set)]
    units += [Unit(loaded.files[p], [loaded.files[p]], []) for p in alone]
    for unit in units:
        if _library_module(unit.entry, target_set):
            unit.callers = _caller_units(unit.entry.path, loaded.root)
            _config_of_callers(unit)
    return units


def _config_of_callers(unit: Unit) -> None:
    """A library module that names no config of its own reads the one its script picks: where every
    script importing it names its config at run time (ncsnv2's ``runners/ncsn_runner.py``, run by
    ``main.py --config``), so does the module, with the configs those scripts read."""
    choices = [c.config_choice for c in unit.callers]
    if unit.config_choice is not None or not choices or not all(c is not None and c.at_run_time for c in choices):
        return
    unit.config_choice = choices[0]
    known = {c.path for c in unit.configs}
    unit.configs = unit.configs + [c for caller in unit.callers for c in caller.configs if c.path not in known]


def _library_module(source: SourceFile, named: set[Path]) -> bool:
    """A file named on the command line that runs nothing itself (a trainer class, a training-loop
    function): its objective may be built by the script that imports it."""
    return source.path in named and not source.is_script and not source.runs_code


def _caller_units(module: Path, root: Path) -> list[Unit]:
    """The units of the project's scripts that import ``module``, each with what it reaches."""
    found = []
    for script in importers(module, root):
        loaded = load([script])
        found += [u for u in build_units(loaded, [script]) if u.entry.path == script]
    return found


MAX_TRAINER_DEPTH = 3
# Files one unit reads at most, nearest imports first: the largest trainer of the three labelled
# sets reaches 51; a library module that imports its whole package (a diffusers pipeline: 838)
# is read as far as the budget goes (twice the largest trainer), and its verdicts say so.
MAX_UNIT_FILES = 100
BUDGET_REASON = (
    "the entry reaches {reached} project files, more than the {budget} a unit reads (nearest imports first):"
    " what is not seen may be in the rest"
)


def _budgeted(loaded: LoadResult, reached: list[Path], imports: list[Path]) -> Unit:
    """The unit of the entry ``reached[0]``, its files cut to the budget (breadth-first order), with
    the configs it reads: the one its config flag names by default, else those beside it.
    ``imports``: the entry's own local imports (already resolved for its closure)."""
    files = [loaded.files[p] for p in reached[:MAX_UNIT_FILES]]
    configs, choice = _configs(loaded, reached[0], imports)
    cut = len(reached) if len(reached) > MAX_UNIT_FILES else 0
    return Unit(files[0], files, configs, reached=cut, config_choice=choice)


def _configs(loaded: LoadResult, entry: Path, imports: list[Path]) -> tuple[list[ConfigFile], ConfigChoice | None]:
    """The configs a unit of ``entry`` reads and how the entry picks them: the one its config flag
    names by default, else those beside it (all of them the run may pick, when it names one).
    ``imports``: the entry's own local imports (where its argument parser may live)."""
    configs = load_configs(entry.parent)
    imported = [loaded.files[p] for p in imports if p in loaded.files]
    choice = config_choice(loaded.files[entry], loaded.root, imported)
    return (chosen_configs(choice, configs, loaded.root) if choice is not None else configs), choice


def _within_budget(unit: Unit, findings: list[Finding], facts: UnitFacts) -> list[Finding]:
    """A unit cut to the budget: what was seen stays (present, bugs), an absence is no longer
    evidence (missing and off-by-default become unknown, their findings go)."""
    if not unit.reached:
        return findings
    reason = BUDGET_REASON.format(reached=unit.reached, budget=MAX_UNIT_FILES)
    for key, v in facts.verdicts.items():
        if v.state in (State.MISSING, State.OFF, State.NOT_APPLICABLE):
            facts.verdicts[key] = Verdict(key, State.UNKNOWN, reason)
    return [f for f in findings if f.severity is not Severity.MISSING]


TEST_FILE = re.compile(r"^(test_.*|.*_test|conftest)\.py$")


def _entry_like(source, root: Path) -> bool:
    """A file a user runs to train: not a test module (``tests/``, ``test_*.py``: pytest runs it)."""
    parts = source.path.relative_to(root).parts if root in source.path.parents else source.path.parts
    if TEST_FILE.match(source.path.name) or any(p in ("tests", "test") for p in parts[:-1]):
        return False
    return source.is_script or source.trains or source.launches or source.runs_code


def _suppressions(source: SourceFile) -> dict[int, tuple[set[str] | None, str]]:
    """line -> (codes or None for all, kind). A comment on its own line covers the next line."""
    found: dict[int, tuple[set[str] | None, str]] = {}
    lines = source.lines
    for number, text in enumerate(lines, 1):
        match = SUPPRESSION.search(text)
        if not match or not _is_comment(text, match.start()):
            continue
        codes = {c.strip().upper() for c in match.group(2).split(",") if c.strip()} if match.group(2) else None
        target = number + 1 if text.strip().startswith("#") else number
        found[target] = (codes, match.group(1))
    return found


def _is_comment(line: str, index: int) -> bool:
    """The match is in a real comment, not inside a string literal on that line."""
    quotes = line[:index].count('"') + line[:index].count("'")
    return quotes % 2 == 0


def check_units(
    units: list[Unit],
    settings: Settings,
    root: Path,
    selected: tuple[Optimization, ...] | None = None,
    pool: Executor | None = None,
) -> CheckResult:
    """Index each unit and run the rules on it, in this process or, given ``pool``, in its workers
    (each unit is sent as paths and texts: libcst trees are costly to pickle)."""
    selected = selected or optimizations()
    for unit in units:
        if unit.callers:
            unit.callers_other_objective = _callers_other_objective(unit.callers)
    if pool is None:
        per_unit = [_check_unit(unit, selected) for unit in units]
    else:
        keys = tuple(opt.key for opt in selected)
        specs = [
            (
                u.entry.path,
                [(s.path, s.text) for s in u.files],
                u.configs,
                keys,
                u.reached,
                u.config_choice,
                u.callers_other_objective,
            )
            for u in units
        ]
        biggest_first = sorted(range(len(specs)), key=lambda i: -sum(len(text) for _, text in specs[i][1]))
        done = dict(zip(biggest_first, pool.map(_check_unit_in_worker, [specs[i] for i in biggest_first])))
        per_unit = [done[i] for i in range(len(specs))]
    for unit, (_, _, facts) in zip(units, per_unit):
        if unit.delegates and not facts.trains:
            delegated(facts, [_check_unit(d, selected)[2] for d in unit.delegates])
    findings = [f for unit_findings, _, _ in per_unit for f in unit_findings]
    statuses = [s for _, unit_statuses, _ in per_unit for s in unit_statuses]
    facts = _reported([unit_facts for _, _, unit_facts in per_unit])
    return CheckResult(_once(findings), statuses, [u.entry.path for u in units], root, facts=facts)


def _reported(facts: list[UnitFacts]) -> list[UnitFacts]:
    """The units a reader gets verdicts for: those that train. Library files checked on their own
    (an ``__init__.py``, a helper module) are not entry points; only when no unit trains does the
    first one stand for the lot ("no optimizer step found")."""
    training = [f for f in facts if f.trains]
    return training or facts[:1]


def _once(findings: list[Finding]) -> list[Finding]:
    """Each code at each place once (two units reaching one file, two paths to one call)."""
    seen: dict[tuple, Finding] = {}
    for f in sorted(findings, key=Finding.sort_key):
        seen.setdefault((f.code, str(f.location.path), f.location.line, f.location.col), f)
    return list(seen.values())


def _check_unit(unit: Unit, selected: tuple[Optimization, ...]) -> tuple[list[Finding], list[RuleStatus], UnitFacts]:
    """The unit's findings, rule states and facts; code nested deeper than even the analysis
    thread's stack allows becomes one input error at its deepest file, the other units are checked."""
    try:
        return _check_readable_unit(unit, selected)
    except RecursionError:
        depth, line, path = max((*deepest(s.tree), s.path) for s in unit.files if s.tree)
        message = f"{TOO_DEEP} for the analysis (nesting depth {depth}); nothing in this unit was checked: split it"
        return [input_error(path, line, 1, message, "E999")], [], UnitFacts(unit.entry.path, False, None)


def _check_readable_unit(
    unit: Unit, selected: tuple[Optimization, ...]
) -> tuple[list[Finding], list[RuleStatus], UnitFacts]:
    findings: list[Finding] = []
    statuses: list[RuleStatus] = []
    unreadable = [e for e in (source.libcst_error() for source in unit.files) if e is not None]
    if unreadable:  # the rare file Python parses and libcst cannot: an input error, the rest is checked
        bad = {e.location.path for e in unreadable}
        if unit.entry.path in bad:
            return unreadable, [], UnitFacts(unit.entry.path, False, None)
        unit = replace(unit, files=[s for s in unit.files if s.path not in bad])
        findings += unreadable
    index = UnitIndex.build(unit)
    facts = unit_facts(index, unit.entry.path, unit.callers_other_objective)
    for opt in selected:
        outcomes = []
        for rule_cls in opt.rules:
            if not opt.judges(rule_cls, facts.diffusion, facts.trains):
                statuses.append(RuleStatus(rule_cls.code, opt.key, rule_cls.title, unit.entry.path, "n/a"))
                continue
            outcome = _run_rule(rule_cls, index, facts, unit.entry.path, findings)
            if outcome is None:
                continue
            outcomes.append(outcome)
            state = "n/a" if not outcome.applies else "fail" if outcome.hits else "pass"
            statuses.append(RuleStatus(rule_cls.code, opt.key, rule_cls.title, unit.entry.path, state))
            findings += [
                Finding(rule_cls.code, opt.key, rule_cls.severity, message, location, opt.fixable(rule_cls.code))
                for message, location, _ in outcome.hits
            ]
        facts.verdicts[opt.key] = verdict(opt, index, facts, outcomes)
    return _within_budget(unit, findings, facts), statuses, facts


def _callers_other_objective(callers: list[Unit]) -> str | None:
    """What shows that every script running a library module (and training) trains something other
    than diffusion: the first one's evidence; None where one trains diffusion, is undecided, or none trains."""
    found = []
    for caller in callers:
        try:
            facts = unit_facts(UnitIndex.build(caller), caller.entry.path)
        except RecursionError:
            return None
        if facts.trains:
            if facts.diffusion is not False:
                return None
            found.append(f"{caller.entry.path.name} runs it and {facts.evidence}")
    return found[0] if found else None


def _run_rule(rule_cls, index: UnitIndex, facts: UnitFacts, entry: Path, errors: list) -> RuleOutcome | None:
    """One rule on the unit; a crash becomes an internal-error finding (the others still run)."""
    rule = rule_cls()
    try:
        applies = rule.applies(index)
        hits = list(rule.check(index)) if applies else []
    except RecursionError:
        raise  # deeply nested code, not a rule's bug: the unit reports it
    except Exception as exc:  # noqa: BLE001 - one rule's crash must not hide the others' findings
        errors.append(internal_error(rule.code, entry, exc))
        return None
    default = rule.generic_message if facts.diffusion is False and rule.generic_message else rule.message
    located = [(hit.message or default, Location(hit.path, hit.line, hit.col), hit.setting) for hit in hits]
    missing = rule.severity is Severity.MISSING
    blind = rule.when_blind(index) if missing and not applies else None
    passed = rule.when_passed(index) if missing and applies and not hits else None
    return RuleOutcome(rule.code, rule.severity, rule.title, applies, located, blind, passed, rule.switch_values)


# --- worker processes (check --jobs): top-level functions, so any start method can run them ---
_WORKER_SOURCES: dict[Path, SourceFile] = {}  # per worker: parsed files, reused across its units


def _parse_in_worker(path: Path, text: str | None) -> SourceFile | Finding:
    """Parse one file; the parent gets the text (or the error) back, not the libcst tree. Like the
    parent's analysis, in a thread with a large stack and recursion limit (deeply nested code)."""
    return run_deep(_parse_here, path, text)


def _parse_here(path: Path, text: str | None) -> SourceFile | Finding:
    parsed = parse_source(path, text)
    if isinstance(parsed, Finding):
        return parsed
    _WORKER_SOURCES[path] = parsed
    return SourceFile(parsed.path, parsed.text, encoding=parsed.encoding)


def _worker_source(path: Path, text: str) -> SourceFile:
    cached = _WORKER_SOURCES.get(path)
    if cached is None or cached.text != text:
        parsed = parse_source(path, text)
        assert isinstance(parsed, SourceFile), f"{path} parsed in the parent but not in a worker"
        cached = _WORKER_SOURCES[path] = parsed
    return cached


def _check_unit_in_worker(
    spec: tuple[Path, list[tuple[Path, str]], list[ConfigFile], tuple[str, ...], int, object, object],
) -> tuple[list[Finding], list[RuleStatus], UnitFacts]:
    return run_deep(_check_unit_here, spec)


def _check_unit_here(
    spec: tuple[Path, list[tuple[Path, str]], list[ConfigFile], tuple[str, ...], int, object, object],
) -> tuple[list[Finding], list[RuleStatus], UnitFacts]:
    entry, files, configs, keys, reached, choice, objective = spec
    sources = [_worker_source(path, text) for path, text in files]
    by_key = {opt.key: opt for opt in optimizations()}
    unit = Unit(next(s for s in sources if s.path == entry), sources, configs, reached=reached, config_choice=choice)
    unit.callers_other_objective = objective
    return _check_unit(unit, tuple(by_key[k] for k in keys))


def internal_error(code: str, path: Path, exc: Exception) -> Finding:
    return Finding(
        "T2S900",
        "meta",
        Severity.BUG,
        f"internal error in rule {code} ({type(exc).__name__}: {exc}); the other rules ran. "
        "Please report it with this file",
        Location(path, 1, 1),
        is_error=True,
    )


def apply_suppressions(result: CheckResult, files: dict[Path, SourceFile], settings: Settings) -> None:
    kept: list[Finding] = []
    used: set[tuple[Path, int]] = set()
    table = {path: _suppressions(source) for path, source in files.items()}
    for finding in result.findings:
        marks = table.get(finding.location.path, {})
        mark = marks.get(finding.location.line)
        if mark is not None and (mark[0] is None or finding.code.upper() in mark[0]):
            used.add((finding.location.path, finding.location.line))
            result.suppressed += 1
            continue
        kept.append(finding)
    for path, marks in table.items():
        for line, (codes, _) in marks.items():
            if (path, line) not in used:
                where = (
                    line - 1
                    if line - 1 in range(1, len(files[path].lines) + 1)
                    and files[path].lines[line - 2].strip().startswith("#")
                    else line
                )
                what = ", ".join(sorted(codes)) if codes else "all codes"
                kept.append(
                    Finding(
                        UNUSED_SUPPRESSION,
                        "meta",
                        Severity.INFO,
                        f"suppression of {what} suppresses nothing here; remove it so it cannot hide a future finding",
                        Location(path, where, 1),
                    )
                )
    result.findings = sorted(kept, key=Finding.sort_key)


def run_check(
    paths: list[Path], settings: Settings, overrides: dict[Path, str] | None = None, jobs: int = 1
) -> tuple[CheckResult, LoadResult]:
    """``jobs`` > 1 (0: one per CPU) parses the files and checks the units in that many worker
    processes. The result is the same; the returned files then hold no libcst tree
    (``module`` is None) except the imported ones parsed here, so callers that transform
    code (apply) use the default ``jobs=1``."""
    workers = jobs if jobs > 0 else os.cpu_count() or 1
    if workers == 1:
        loaded = load(paths, overrides)
        return check_loaded(loaded, paths, settings), loaded
    # forkserver: the analysis runs in a thread (deep.run_deep), and forking a process whose other
    # threads hold locks can leave the workers waiting on them forever (a test hung so in CI)
    context = multiprocessing.get_context(
        "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    )
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:

        def parse_many(targets: list[Path], texts: list[str | None]) -> list[SourceFile | Finding]:
            return list(pool.map(_parse_in_worker, targets, texts, chunksize=max(1, len(targets) // (4 * workers))))

        loaded = load(paths, overrides, parse_many)
        return check_loaded(loaded, paths, settings, pool), loaded


def check_loaded(
    loaded: LoadResult, paths: list[Path], settings: Settings, pool: Executor | None = None
) -> CheckResult:
    """Check files already parsed (apply re-checks its changed modules without re-reading the rest)."""
    units = build_units(loaded, [Path(p).resolve() for p in paths])
    selected = optimizations()
    result = check_units(units, settings, loaded.root, selected, pool)
    apply_suppressions(result, loaded.files, settings)
    result.findings = [settings.adjust(f) for f in result.findings if settings.wants(f, loaded.root)]
    result.statuses = [s for s in result.statuses if settings.selects_key(s.key)]
    judged = {o.key for o in selected if any(settings.selects_code(r.code) for r in o.rules)}
    for facts in result.facts:
        facts.verdicts = {k: v for k, v in facts.verdicts.items() if settings.selects_key(k) and k in judged}
    result.errors = loaded.errors
    result.findings = sorted([*loaded.errors, *result.findings], key=Finding.sort_key)
    return result
