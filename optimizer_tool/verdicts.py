"""One verdict per optimization per unit, derived from what the rules saw: ``present``, ``missing``,
``off-by-default``, ``decided-elsewhere``, ``unknown`` or ``n/a``. Never a pass by silence: a rule
that found nothing to judge makes the verdict ``unknown`` with what was not found, and a unit with
no optimizer step is ``unknown`` for every key.

The derivation is generic (the registry's declarations, never an optimization's name):
- no training step in the unit: ``unknown``;
- a diffusion-only optimization on a unit that is not a diffusion trainer: ``n/a``;
- a ``missing`` rule fired: ``missing`` (with its message and location);
- a ``missing`` rule had nothing to judge: ``unknown``;
- the module names the calls that carry the optimization (``implementations``) and every one of
  them sits under a condition that is false with the trainer's defaults: ``off-by-default``,
  naming the flag and its default;
- otherwise ``present``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from optimizer_tool.findings import Location, Severity, State, Verdict
from optimizer_tool.index import CallSite, UnitIndex
from optimizer_tool.knowledge.configured import default_applies, memo, param_default_calls
from optimizer_tool.knowledge.diffusion import diffusion_evidence, noise_levels_drawn, other_objective
from optimizer_tool.knowledge.guards import DEFAULTS_DICT, chosen_at_run_time, switched_off
from optimizer_tool.knowledge.objective import (
    flow_path,
    handed_in,
    loss_handed_in,
    losses_on_noise,
    noiseless_objective,
)
from optimizer_tool.knowledge.settings import argparse_choices, dispatched_literals, feeds_diffusers_scheduler
from optimizer_tool.knowledge.training import optimizer_steps, trains
from optimizer_tool.project import project_root, unresolved_imports
from optimizer_tool.registry import Optimization

# Settings a user switches per run (a command-line flag, a config-file key): a default there that
# leaves an optimization out means the trainer has it, off by default.
SWITCH_KINDS = ("argparse", "config-file", "dict")
UNDECIDED = "no noising/denoising objective recognised: diffusion-specific checks skipped (unknown)"
NOT_DIFFUSION = "not a diffusion trainer: diffusion-specific checks skipped"


@dataclass
class UnitFacts:
    """What ``check`` knows about a unit as a whole."""

    entry: Path
    trains: bool
    diffusion: bool | None  # None: undecided (no training step, or no objective recognised)
    evidence: str = ""  # what shows it is (or is not) a diffusion trainer
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    handed_in: str | None = None  # the objective arrives from the caller (a parameter): where
    delegated: str = ""  # a launcher: the files of the models its configs name, which decide its verdicts

    @property
    def note(self) -> str:
        """The one line a reader needs before the table, or ''."""
        if self.delegated:
            return (
                f"{self.entry.name} trains the model a config names ({self.delegated}): "
                "the verdicts are those models', decided-elsewhere where they differ"
            )
        if not self.trains:
            return (
                f"no optimizer step found in {self.entry.name}: nothing was checked; "
                "point check at the entry script or the repository root"
            )
        if self.diffusion is False:
            return NOT_DIFFUSION
        if self.diffusion is None:
            return f"the objective is decided elsewhere: {self.handed_in}" if self.handed_in else UNDECIDED
        return ""


def unit_facts(index: UnitIndex, entry: Path, callers_other: str | None = None) -> UnitFacts:
    """A unit is a diffusion trainer when a noising/denoising objective is visible, not one when
    another objective is (and no diffusion one), and undecided otherwise (None: the diffusion
    checks do not run and their verdicts are unknown: no diffusion advice without evidence).
    ``callers_other``: what shows the scripts importing a library module all train something else;
    a module whose own code decides nothing is then no diffusion trainer (DETR's ``engine.py``, run by
    ``main.py``)."""
    facts = _own_facts(index, entry)
    if facts.trains and facts.diffusion is None and callers_other is not None:
        return UnitFacts(entry, True, False, callers_other)
    return facts


def _own_facts(index: UnitIndex, entry: Path) -> UnitFacts:
    if not trains(index):
        return UnitFacts(entry, False, None)
    evidence = diffusion_evidence(index)
    flow = flow_path(index) if evidence is None else None
    if flow is not None:
        evidence = f"trains a flow-matching path {flow}"
    on_noise = losses_on_noise(index) if evidence is None else []
    if on_noise:
        where = f"{on_noise[0].path.name}:{on_noise[0].line}"
        evidence = f"a loss compares the model output with the sampled noise ({where})"
    if evidence is None:
        other = other_objective(index)
        if other:
            return UnitFacts(entry, True, False, other)
        evidence = noise_levels_drawn(index)
    # the object that computes the loss may come from the caller, who then decides the objective
    handed = handed_in(index) or loss_handed_in(index)
    if evidence is None and handed is None:
        plain = noiseless_objective(index)
        if plain:
            return UnitFacts(entry, True, False, plain)
    return UnitFacts(entry, True, evidence is not None or None, evidence or "", handed_in=handed)


@dataclass
class RuleOutcome:
    """What one rule did on the unit: nothing to judge (``applies`` False), or its hits."""

    code: str
    severity: Severity
    title: str
    applies: bool
    hits: list = field(default_factory=list)  # (message, Location, the Setting it is about or None)
    blind: tuple[State, str] | None = None  # what not applying means (Rule.when_blind)
    passed: tuple[State, str] | None = None  # what passing means when not simply present (Rule.when_passed)
    switch_values: tuple[str, ...] = ()  # Rule.switch_values


def verdict(opt: Optimization, index: UnitIndex, facts: UnitFacts, outcomes: list[RuleOutcome]) -> Verdict:
    found = _verdict(opt, index, facts, outcomes)
    judged = facts.trains and not (opt.diffusion_only and facts.diffusion is False)
    return _run_time_config(opt, index, found, outcomes) if judged else found


def _run_time_config(opt: Optimization, index: UnitIndex, found: Verdict, outcomes: list[RuleOutcome]) -> Verdict:
    """Where the run names its config file (``--config`` without a default, ``--base``, a default
    file that is not in the repository), a verdict resting on what configs set (the schedule, the
    objective, the image size: the optimization's CONFIG_KEYS) is the run's: decided-elsewhere,
    naming the choice and what the shipped configs say. What the code fixes stays: a finding on
    code, or a value no config and no branch of the code can turn on (ddim's schedules: no cosine)."""
    choice = index.unit.config_choice
    if choice is None or not choice.at_run_time or found.state is State.ELSEWHERE:
        return found
    if found.state is State.NOT_APPLICABLE and not opt.applies_keys:
        return found
    if found.state in (State.MISSING, State.OFF):
        fired = next((o for o in outcomes if o.severity is Severity.MISSING and o.hits), None)
        setting = fired.hits[0][2] if fired is not None else None
        if setting is None or not _set_by_config(index, setting):
            return found
        settings = [s for s in index.setting(setting.name) if s.kind == "config-file" and s.known]
        if not settings and index.unit.configs:
            return found  # a constructor default no shipped config overrides: it holds for all of them
        offered = dispatched_literals(index) | {str(s.value) for s in settings}
        if (
            fired.switch_values
            and not offered & set(fired.switch_values)
            and not feeds_diffusers_scheduler(index, setting)
            and not _config_builds_diffusers(index, setting)
            and not _unseen_imports(index)
        ):
            return found
    else:
        keys = opt.applies_keys if found.state is State.NOT_APPLICABLE else opt.config_keys
        if not keys:
            return found
        decided = [s for s in index.setting(*keys) if s.known and s.value is not None and _set_by_config(index, s)]
        settings = [s for s in decided if s.kind == "config-file"]
        if not decided or (not settings and index.unit.configs):
            return found
        if found.state is State.NOT_APPLICABLE and not _could_apply(opt, index, decided) and not _unseen_imports(index):
            return found
    said = sorted({f"{s.owner or s.name}: {s.value!r}" for s in settings})
    shown = ", ".join(said[:4]) + (", ..." if len(said) > 4 else "")
    files = len({s.path for s in settings})
    shipped = f"the {files} shipped config file(s) that set it say {shown}" if settings else "no shipped config sets it"
    return Verdict(opt.key, State.ELSEWHERE, f"{choice.describe()}; the config you train with decides ({shipped})")


def _unseen_imports(index: UnitIndex) -> list[str]:
    """The entry's imports of its own project that name no module (the code that would read the
    config's values is not seen: "no branch takes that value" cannot be said)."""
    entry = index.entry
    return memo(index, "verdicts.unseen_imports", lambda: unresolved_imports(entry, project_root([entry.path])))


def _could_apply(opt: Optimization, index: UnitIndex, decided: list) -> bool:
    """Whether some config could make ``opt`` apply: one of ``decided`` (the APPLIES_KEYS values the
    configs give) or a value the code branches on is one it applies with, or a config builds a
    diffusers class (which takes every value). ResShift's ``predict_type`` is xstart or epsilon in
    every config and branch: zero terminal SNR stays n/a whichever config the run names."""
    if opt.applies_with is None:
        return True
    literals = dispatched_literals(index)
    return any(opt.applies_with(s.name, value) for s in decided for value in (s.value, *literals)) or any(
        _config_builds_diffusers(index, s) for s in decided
    )


def _config_builds_diffusers(index: UnitIndex, setting) -> bool:
    """The config section holding ``setting`` builds a diffusers class by name (MLD's
    ``scheduler: {target: diffusers.DDPMScheduler, params: {beta_schedule: scaled_linear}}``),
    which takes every value diffusers knows."""
    if setting.kind != "config-file" or "." not in setting.owner:
        return False
    section = setting.owner.split(".")[0]
    return any(
        s.kind == "config-file"
        and s.path == setting.path
        and s.owner.split(".")[0] == section
        and str(s.value).startswith("diffusers.")
        for s in index.setting("target", "_target_")
    )


def _set_by_config(index: UnitIndex, setting) -> bool:
    """A value the run's config gives: a config file's, or the constructor default of a class
    that nothing in the unit builds (the config names it: LDM's ``DDPM(beta_schedule="linear")``)."""
    if setting.kind == "config-file":
        return True
    return setting.kind == "param-default" and param_default_calls(index, setting) == "uncalled"


def _verdict(opt: Optimization, index: UnitIndex, facts: UnitFacts, outcomes: list[RuleOutcome]) -> Verdict:
    if not facts.trains:
        return Verdict(opt.key, State.UNKNOWN, facts.note)
    if opt.diffusion_only and facts.diffusion is False:
        return Verdict(opt.key, State.NOT_APPLICABLE, NOT_DIFFUSION)
    if opt.diffusion_only and facts.diffusion is None:
        if facts.handed_in:
            return Verdict(opt.key, State.ELSEWHERE, facts.handed_in)
        return Verdict(opt.key, State.UNKNOWN, UNDECIDED)
    missing = [o for o in outcomes if o.severity is Severity.MISSING]
    fired = next((o for o in missing if o.hits), None)
    if fired is not None:
        message, location, setting = fired.hits[0]
        if _switchable(index, setting, fired.switch_values):
            where = f"{setting.path.name}:{setting.line}"
            reason = (
                f"{setting.name} defaults to {setting.value!r} ({where}), which leaves it off; the code takes "
                f"other values: set {setting.name} to turn it on ({message})"
            )
            return Verdict(opt.key, State.OFF, reason, location)
        return Verdict(opt.key, State.MISSING, message, location)
    blind = next((o for o in missing if not o.applies), None)
    if blind is not None:
        state, reason = blind.blind or (State.UNKNOWN, f"nothing to judge for {blind.code} ({blind.title})")
        if state is State.UNKNOWN and opt.diffusion_only and facts.handed_in:
            return Verdict(opt.key, State.ELSEWHERE, facts.handed_in)
        return Verdict(opt.key, state, reason)
    if not missing:
        return Verdict(opt.key, State.UNKNOWN, "no rule of this optimization judges whether it is there")
    doubt = next((o.passed for o in missing if o.passed is not None), None)
    if doubt is not None:
        return Verdict(opt.key, doubt[0], doubt[1])
    return _present_or_off(opt, index)


def delegated(facts: UnitFacts, models: list[UnitFacts]) -> None:
    """Give a launcher (``trainer.fit(model)``, the model named by the config chosen at run time)
    the verdicts of the models its configs name: where every one that trains agrees, theirs; where
    they differ, ``decided-elsewhere`` naming who says what; a model the rules could not judge
    leaves the key ``unknown`` unless the others already differ."""
    models = [m for m in models if m.trains]
    if not models:
        return
    names = ", ".join(m.entry.name for m in models)
    kinds = {m.diffusion for m in models}
    facts.trains, facts.delegated = True, names
    facts.diffusion = kinds.pop() if len(kinds) == 1 else None
    facts.evidence = f"trains the models its configs name ({names})"
    for key in dict.fromkeys(k for m in models for k in m.verdicts):
        said = [(m.entry.name, m.verdicts[key]) for m in models if key in m.verdicts]
        states = {v.state for _, v in said}
        known = states - {State.UNKNOWN}
        if len(states) == 1:
            first = said[0][1]
            reason = first.reason if len(said) == 1 else f"in every model its configs name ({names}): {first.reason}"
            facts.verdicts[key] = Verdict(key, first.state, reason, first.location)
        elif len(known) >= 2:
            who = "; ".join(f"{name}: {v.state.value}" for name, v in said)
            reason = f"the config chosen at run time picks the model, and the models its configs name differ ({who})"
            facts.verdicts[key] = Verdict(key, State.ELSEWHERE, reason)
        else:
            name, blind = next((name, v) for name, v in said if v.state is State.UNKNOWN)
            facts.verdicts[key] = Verdict(key, State.UNKNOWN, f"{blind.reason} (in {name}, a model its configs name)")


def _switchable(index: UnitIndex, setting, switch_values: tuple[str, ...]) -> bool:
    """A categorical flag or config key (a schedule name, a prediction type) whose default leaves
    the optimization off, and which accepts a value that turns it on: one of argparse's
    ``choices``, else a value the code branches on (``elif schedule_name == "cosine":``). A number
    (a resolution) is a size to change, not a switch; a function's own keyword default is code to
    edit, not a setting (the defaults dict openai-style scripts turn into flags is one), except the
    constructor default of a class nothing in the unit builds (its config does: LDM's ``DDPM``)."""
    if setting is None or not isinstance(setting.value, (str, bool)):
        return False
    if (
        setting.kind not in SWITCH_KINDS
        and not (setting.kind == "kwarg" and setting.owner in DEFAULTS_DICT)
        and not (setting.kind == "param-default" and param_default_calls(index, setting) == "uncalled")
    ):
        return False
    choices = argparse_choices(index, setting)
    if not switch_values or isinstance(setting.value, bool):
        # a flag of the optimization's own (--use_ema); not some other bool (predict_xstart, MLD's
        # ``predict_epsilon: True`` in a config: no value of theirs is v)
        return not switch_values and setting.kind in ("argparse", "config-file")
    if choices is not None:
        return bool(set(map(str, choices)) & set(switch_values))
    # a library takes the value (diffusers' schedulers know "squaredcos_cap_v2"), or the code branches on it
    return feeds_diffusers_scheduler(index, setting) or bool(dispatched_literals(index) & set(switch_values))


def _present_or_off(opt: Optimization, index: UnitIndex) -> Verdict:
    calls: list[CallSite] = opt.implementations(index) if opt.implementations is not None else []
    if not calls:
        return Verdict(opt.key, State.PRESENT)
    either = _either_way(calls)
    switches = [_through_callers(index, call, switched_off, either) for call in calls]
    # the switch that keeps training itself from running (PNDM's ``if args.runner == 'train':``, the
    # script samples by default) is the run's mode, not this optimization's switch
    training = memo(index, "verdicts.training_switch", lambda: _training_switch(index))
    if training is not None:
        switches = [None if s is not None and s.condition == training.condition else s for s in switches]
    first = calls[0]
    where = Location(first.path, first.line, first.col)
    chosen = [_through_callers(index, call, chosen_at_run_time, either) for call in calls]
    # a flag whose default is off beside the config's key (``args.use_ema and config.model.ema``,
    # Diff-Pruning): off whatever config the run names
    flagged_off = all(switches) and all(s.setting.kind != "config-file" for s in switches)
    if all(chosen) and not flagged_off:
        condition, setting, files = chosen[0]
        values = sorted({repr(s.value) for s in index.setting(setting.name) if s.kind == "config-file"})
        if not files:
            named = index.unit.config_choice.describe()
            reason = (
                f"`{condition}` reads {setting.name} from the config the run names ({named});"
                " no shipped config sets it: check the one you train with"
            )
            return Verdict(opt.key, State.ELSEWHERE, reason, where)
        reason = (
            f"`{condition}` reads {setting.name}, which {len(files)} config files set ({', '.join(values)}: "
            f"{', '.join(f.name for f in files[:4])}{', ...' if len(files) > 4 else ''}): the config chosen at run "
            "time decides; check the one you train with"
        )
        return Verdict(opt.key, State.ELSEWHERE, reason, where)
    if all(switches):
        switch = switches[0]
        if switch.setting.kind == "param-default" and param_default_calls(index, switch.setting) == "used":
            # a function's own keyword default that its callers leave out: code to edit, no setting
            reason = f"{switch.describe()}: {default_applies(index, switch.setting)}, and no setting turns it on"
            return Verdict(opt.key, State.MISSING, reason, where)
        how = f"set {switch.setting.name} to turn it on"
        return Verdict(opt.key, State.OFF, f"{switch.describe()}: {how}", where)
    return Verdict(opt.key, State.PRESENT, f"{first.func_text or 'found'} at {first.path.name}:{first.line}", where)


def _training_switch(index: UnitIndex):
    """The switch, if any, that keeps the unit's first optimizer step from running by default."""
    steps = optimizer_steps(index)
    return _through_callers(index, steps[0], switched_off) if steps else None


def _either_way(calls: list[CallSite]) -> set[str]:
    """Conditions the implementation runs under either way: one call under ``cond``, another under
    ``not (cond)`` (LatentSync clips in both the AMP and the fp32 branch of
    ``if config.run.mixed_precision_training:``)."""
    # the innermost condition of each call: an ``elif`` branch runs under ``not (g)`` *and* its own test
    # (Sign-D2C's ``if "clip_grad_val" in config: ... elif "clip_grad_norm" in config: ...``), no either way
    guards = {call.guards[-1] for call in calls if call.guards}
    return {g for g in guards if f"not ({g})" in guards} | {f"not ({g})" for g in guards if f"not ({g})" in guards}


def _through_callers(index: UnitIndex, call: CallSite, judge, either: set[str] = frozenset(), depth: int = 0):
    """``judge(index, guards)`` (``switched_off``: the condition that keeps ``call`` from running by
    default; ``chosen_at_run_time``: the run's config decides) of ``call``'s own conditions, less those
    it runs under ``either`` way; where it has none, of every call of its function, two levels up, the
    first answer when all agree (timm: ``if args.model_ema: task.setup_ema(...)``, the EMA built inside
    ``setup_ema``; VQ-Diffusion builds ``EMA(**ema_args)`` only ``if 'ema' in config['solver']``)."""
    own = tuple(g for g in call.guards if g not in either)
    found = judge(index, own)
    if found is not None or own or depth >= 2:
        return found
    above = [_through_callers(index, c, judge, depth=depth + 1) for c in _callers(index, call.function)]
    return above[0] if above and all(above) else None


def _callers(index: UnitIndex, fn) -> list[CallSite]:
    """The calls of ``fn``: of its class for an ``__init__``, none for other dunder methods."""
    if fn is None:
        return []
    name = fn.class_name if fn.name == "__init__" else None if fn.name.startswith("__") else fn.name
    # every call named so, plain or a method: ``method_calls`` indexes attribute calls only
    return [c for c in index.calls if name and c.method == name and c.function is not fn]


def counts(units: list[UnitFacts]) -> dict[State, int]:
    """Verdicts by state over ``units``, in the order of ``State``."""
    found = {state: 0 for state in State}
    for unit in units:
        for v in unit.verdicts.values():
            found[v.state] += 1
    return {state: n for state, n in found.items() if n}
