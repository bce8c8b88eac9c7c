"""The learning-rate schedules of a unit: ``schedule_facts(index)`` finds every schedule the trainer
builds or writes by hand (library constructors, ``param_group["lr"] = ...``, helpers it cannot see
into, optimizers that schedule themselves, Lightning's ``configure_optimizers``) and says what each
does; ``schedules_of`` follows a scheduler variable back to the schedules it holds."""

from __future__ import annotations

import re

import libcst as cst

from optimizer_tool.index import CallSite, FunctionInfo, Setting, UnitIndex, dotted, literal
from optimizer_tool.knowledge.configured import expanded_names, expression_nodes, feeding_assigns
from optimizer_tool.knowledge.guards import switched_off
from optimizer_tool.knowledge.lr_schedule.constructors import defines_local_schedule, from_constructor, is_noise_helper
from optimizer_tool.knowledge.lr_schedule.lambdas import warmup_then_constant
from optimizer_tool.knowledge.lr_schedule.lengths import length_unit
from optimizer_tool.knowledge.lr_schedule.schedule import Schedule, ScheduleFacts
from optimizer_tool.knowledge.lr_schedule.vocabulary import (
    DECAY_CALLS,
    DECAY_WORD,
    LENGTH_WORD,
    OFF_KINDS_FIRST,
    SCHEDULE_HELPER,
    WARMUP_WORD,
)
from optimizer_tool.knowledge.training import (
    ROLE_CONSTRUCTORS,
    assignments_of,
    lr_scheduler_steps,
    memo,
    names_in,
    reached,
)
from optimizer_tool.project import DOTTED_NAME

# Calls on a scheduler or an optimizer that build no schedule.
NOT_A_SCHEDULE = (
    "step",
    "get_last_lr",
    "get_lr",
    "state_dict",
    "load_state_dict",
    "prepare",
    "register_for_checkpointing",
    "save_state",
    "load_state",
    "watch",
    "unwrap_model",
)


def schedule_facts(index: UnitIndex) -> ScheduleFacts:
    return memo(index, "lr_schedule.facts", lambda: _schedule_facts(index))


def _schedule_facts(index: UnitIndex) -> ScheduleFacts:
    schedules: list[Schedule] = []
    by_node: dict[int, Schedule] = {}
    for call in index.calls:
        sched = from_constructor(index, call)
        if sched is not None:
            schedules.append(sched)
            by_node[id(call.node)] = sched
    _attach_parts(index, schedules, by_node)
    manual = _manual_schedules(index)
    _warmup_before(index, manual, schedules)
    schedules.extend(manual)
    schedules.extend(_helper_calls(index, schedules))
    # A scheduler handed in from elsewhere (a parameter, a factory in another package) but stepped here.
    for step in lr_scheduler_steps(index):
        if not schedules_of(index, ScheduleFacts(schedules), step.receiver):
            # a parameter of the stepping function (flow_matching's train_one_epoch(..., lr_schedule)): handed in
            handed = step.receiver if step.function is not None and step.receiver in step.function.params else ""
            schedules.append(
                Schedule(None, step.path, step.line, step.col, "helper", function=step.function, handed=handed)
            )
    # Optimizers that schedule themselves: schedule-free AdamW/SGD, Adafactor's relative step.
    for call in index.calls:
        leaf = call.method or call.func_text
        if leaf and (
            "ScheduleFree" in leaf or (leaf == "Adafactor" and literal(call.kwarg("relative_step")) is not False)
        ):
            schedules.append(Schedule(call, call.path, call.line, call.col, "helper", function=call.function))
    _lightning_schedules(index, schedules)
    return ScheduleFacts([s for s in schedules if reached(index, s.function)])


def _attach_parts(index: UnitIndex, schedules: list[Schedule], by_node: dict[int, Schedule]) -> None:
    """SequentialLR / ChainedScheduler: attach their components."""
    for sched in schedules:
        if sched.kind in ("SequentialLR", "ChainedScheduler") and sched.site is not None:
            listed = sched.site.kwarg("schedulers")
            if listed is None and len(sched.site.args) > 1:
                listed = sched.site.args[1 if sched.kind == "SequentialLR" else 0].value
            for element in getattr(listed, "elements", []) or []:
                part = _resolve_part(index, element.value, sched, by_node)
                if part is not None:
                    part.part_of = sched
                    sched.parts.append(part)
            _combine(index, sched)


def _warmup_before(index: UnitIndex, manual: list[Schedule], built: list[Schedule]) -> None:
    """A hand-written warm-up piece (``param_group["lr"] = lr * (it + 1) / (warm_up_iter + 1)`` while
    ``it < warm_up_iter``) in front of the one scheduler that decays (momask's MultiStepLR): one schedule,
    the scheduler with the warm-up as its part."""
    decays = [s for s in built if s.part_of is None and s.decay and not s.warmup]

    def owner(sched: Schedule) -> str | None:
        return sched.function.class_name if sched.function is not None else None

    for ramp in (m for m in manual if m.warmup and m.decay is False):
        # the scheduler of the same trainer class (momask keeps two trainers in one module), else the only one
        same = [s for s in decays if owner(ramp) is not None and owner(s) == owner(ramp)]
        pick = same if len(same) == 1 else decays if len(decays) == 1 else []
        if pick:
            ramp.part_of = pick[0]
            pick[0].parts.append(ramp)
            pick[0].warmup = True


# dicts that carry values to a logger or a progress bar, not an optimizer's param group
LOG_RECORD = re.compile(
    r"^(logs?|log_dict|logging_dict|metrics?|stats|info|summary|records?|results?|scalars|postfix|to_log|meters?)$",
    re.I,
)


def _manual_schedules(index: UnitIndex) -> list[Schedule]:
    """``param_group["lr"] = <expression>``: a hand-written schedule, judged by the names it reads."""
    found = []
    for item in index.item_assigns:
        if LOG_RECORD.search(item.container.rsplit(".", 1)[-1]):
            continue  # ``logs["lr"] = lr_scheduler.get_last_lr()[0]`` reports the rate, it does not set it
        if item.key == "lr" and not isinstance(literal(item.value), (int, float)):
            names = expanded_names(index, item.value, item.function, item.line)
            feeding = feeding_assigns(index, item.value, item.function, item.line)
            callees = _local_callees(index, names) + _named_callees(index, item, names, feeding)
            handed = _handed_builders(index, item, names)
            callees += handed
            scope = _function_names(index, item.function) | set().union(*[_function_names(index, f) for f in callees])
            built_by = set().union(*[_function_names(index, f) for f in handed])
            linear = _linear_decay(item, feeding)
            decay = True if _decays(names | built_by) or linear or _inverse_decay(index, callees) else None
            switch = _decay_switch(index, item) if decay else None
            if switch is not None:
                decay = False
            warm = any(WARMUP_WORD.search(n) for n in names | scope) or _ramp_branch(index, item)
            warmup = True if warm else (False if decay else None)
            if decay is None and warm and warmup_then_constant(index, item):
                decay = False
            if decay is None and item.function is not None and WARMUP_WORD.search(item.function.name):
                decay = False  # momask's ``update_lr_warm_up``: the warm-up piece; a scheduler decays
            off = {
                _off_by_default(index, n.rsplit(".", 1)[-1])
                for n in names | scope
                if LENGTH_WORD.search(n.rsplit(".", 1)[-1])
            }
            if "run" in off:
                continue  # improved-diffusion's script: lr_anneal_steps=0 turns the anneal off, so a run has none
            if "caller" in off:
                # its TrainLoop alone: the caller decides whether the anneal runs; a warm-up it never has
                decay, warmup = None, (False if warmup is False else None)
            if decay is None and not warm and _constant_rate(index, item, names, callees):
                decay, warmup = False, False
            found.append(
                Schedule(
                    None,
                    item.path,
                    item.line,
                    item.col,
                    "manual",
                    warmup=warmup,
                    decay=decay,
                    function=item.function,
                    decay_switch=switch,
                )
            )
    return found


BASE_RATE = re.compile(r"^(learning_rate|lr|base_lr|init_lr|initial_lr|max_lr)$")


def _constant_rate(index: UnitIndex, item, names: set[str], callees: list) -> bool:
    """``param_group["lr"] = training_config.learning_rate`` (resetting the rate after a resume): a
    configured base rate, no progress counter, no call: the rate stays constant."""
    if callees or any(isinstance(n, cst.Call) for n in expression_nodes(item.value)):
        return False
    # the names read, without the prefixes of longer ones (``cfg``, ``cfg.train`` of ``cfg.train.lr``)
    parts = {p for n in names if "." in n for p in n.split(".")}
    read = [n for n in names if not any(o.startswith(f"{n}.") for o in names) and ("." in n or n not in parts)]
    return any("." in n for n in read) and all(BASE_RATE.match(n.rsplit(".", 1)[-1]) for n in read)


def _handed_builders(index: UnitIndex, item, names: set[str]) -> list[FunctionInfo]:
    """The project functions that build a schedule the assigning function receives as a parameter
    (DINO: ``train_one_epoch(..., lr_schedule, ...)`` sets ``param_group["lr"] = lr_schedule[it]``,
    its caller built ``lr_schedule = utils.cosine_scheduler(...)``: a warm-up linspace then a
    cosine, read from ``cosine_scheduler``'s body)."""
    fn = item.function
    if fn is None:
        return []
    found: list[FunctionInfo] = []
    for name in sorted(names):
        for caller, arg in index.passed_to(fn, name):
            for assign in feeding_assigns(index, arg, caller.function, caller.line):
                leaves = {n.rsplit(".", 1)[-1] for n in names_in(assign.value)}
                found += [f for f in index.functions if f.name in leaves and f.class_name is None and f not in found]
    return found


def _linear_decay(item, feeding: list) -> bool:
    """``lr * (1 - epoch / n_epoch)`` (Conditional_Diffusion_MNIST), also through the variables the
    assignment reads (``feeding``: ``frac_done = step / total``; ``lr = base * (1 - frac_done)``): one
    minus a progress ratio."""
    values = [item.value, *(a.value for a in feeding)]
    ratios = {a.target for a in feeding if _has_divide(a.value)}
    for value in values:
        for node in expression_nodes(value):
            if (
                isinstance(node, cst.BinaryOperation)
                and isinstance(node.operator, cst.Subtract)
                and literal(node.left) in (1, 1.0)
                and (_has_divide(node.right) or dotted(node.right) in ratios)
            ):
                return True
    return False


def _ramp_branch(index: UnitIndex, item) -> bool:
    """A warm-up written as a branch: ``if cur_it < wp_it: cur_lr = wp0 + (1 - wp0) * cur_it / wp_it``
    (VAR's ``lr_wd_annealing``): under ``step < limit`` the rate grows with the step over the limit."""
    assigns = [a for n in names_in(item.value) for a in assignments_of(index, n, item.function, item.line)]
    for assign in assigns:  # every branch's assignment, not only the last few
        for guard in assign.guards:
            match = RAMP_GUARD.match(guard)
            if match is None:
                continue
            step, limit = match.group(1), match.group(2)
            ratios = [
                n
                for n in expression_nodes(assign.value)
                if isinstance(n, cst.BinaryOperation) and isinstance(n.operator, cst.Divide)
            ]
            if any(step in names_in(r.left) and limit in names_in(r.right) for r in ratios):
                return True
    return False


RAMP_GUARD = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*<=?\s*([A-Za-z_][\w.]*)\s*$")


def _named_callees(index: UnitIndex, item, names: set[str], feeding: list) -> list[FunctionInfo]:
    """Functions of the unit that the assignment calls by a name written as a string (EDM2's
    ``lr_kwargs = dict(func_name="training.training_loop.learning_rate_schedule")`` handed to
    ``call_func_by_name(**lr_kwargs)``); ``names`` and ``feeding`` are what the assignment reads."""
    values = [a.value for a in feeding]
    values += [c.node for c in index.calls if c.default_of and c.default_of in names and c.function == item.function]
    leaves = {
        text.rsplit(".", 1)[-1]
        for value in values
        for node in expression_nodes(value)
        if isinstance(text := literal(node), str) and DOTTED_NAME.match(text)
    }
    return [f for f in index.functions if f.name in leaves and f.class_name is None]


# ``lr /= np.sqrt(max(cur_nimg / ref, 1))``, ``lr = base / math.sqrt(step)``, ``lr *= step ** -0.5``
INVERSE_DECAY = re.compile(r"/=\s*[^\n]*\b(sqrt|pow)\(|=\s*[^\n]*/\s*(\w+\.)*sqrt\(|\*\*\s*\(?\s*-\s*0?\.5")


def _inverse_decay(index: UnitIndex, functions: list[FunctionInfo]) -> bool:
    """A schedule helper that divides the rate by the square root of the progress (EDM2's
    inverse-square-root decay, the Transformer's rsqrt)."""
    for fn in functions:
        source = index.source(fn.path)
        if source is not None and INVERSE_DECAY.search("\n".join(source.lines[fn.line - 1 : fn.end_line])):
            return True
    return False


def _has_divide(node) -> bool:
    return any(
        isinstance(n, cst.BinaryOperation) and isinstance(n.operator, (cst.Divide, cst.FloorDivide))
        for n in expression_nodes(node)
    )


def _decays(names: set[str]) -> bool:
    return any(DECAY_WORD.search(n) or DECAY_CALLS.search(n) for n in names)


def _decay_switch(index: UnitIndex, item) -> Setting | None:
    """The setting whose default keeps a hand-written learning rate from decaying: every assignment
    that brings a decay into ``param_group["lr"] = ...`` sits in a branch the defaults never take
    (MAR's ``adjust_learning_rate``: the cosine formula under ``elif args.lr_schedule == "cosine":``,
    ``--lr_schedule`` defaulting to ``constant``)."""
    if _decays(names_in(item.value)):
        return None
    carriers = [a for a in feeding_assigns(index, item.value, item.function, item.line) if _decays(names_in(a.value))]
    switches = [switched_off(index, a.guards) for a in carriers]
    return switches[0].setting if switches and all(switches) else None


def _helper_calls(index: UnitIndex, schedules: list[Schedule]) -> list[Schedule]:
    """Calls that look like they build or set a schedule (``adjust_learning_rate(optimizer, ...)``,
    ``build_scheduler(cfg, optimizer)``): a schedule this model cannot see into."""
    found = []
    known = {id(s.site.node) for s in schedules if s.site is not None}
    optimizer_names = _optimizer_names(index)
    assigned_to = {id(a.call.node): a.target for a in index.assigns if a.call is not None}
    for call in index.calls:
        if id(call.node) in known or call.method in NOT_A_SCHEDULE:
            continue
        leaf = call.method or call.func_text
        target = assigned_to.get(id(call.node), "")
        helper = bool(leaf) and SCHEDULE_HELPER.search(leaf) and not re.search(r"noise|beta|diffusion", leaf, re.I)
        passes_optimizer = any(dotted(a.value) in optimizer_names for a in call.node.args)
        mentions_schedule = (
            re.search(r"sched|(^|_)lr$|LR$", leaf or "", re.I)
            or any(
                re.search(r"sched", n, re.I) and not is_noise_helper(n)
                for a in call.node.args
                for n in names_in(a.value)
            )
            or (re.search(r"sched", target.rsplit(".", 1)[-1], re.I) and not is_noise_helper(target))
        )
        takes_optimizer = passes_optimizer and mentions_schedule and not is_noise_helper(leaf)
        if (helper or takes_optimizer) and not (leaf and defines_local_schedule(index, leaf)):
            handed = call.func_text if (call.func_text or "").startswith(HANDED_IN) else ""
            found.append(
                Schedule(call, call.path, call.line, call.col, "helper", function=call.function, handed=handed)
            )
    return found


def _lightning_schedules(index: UnitIndex, schedules: list[Schedule]) -> None:
    """Lightning: configure_optimizers returns a scheduler we could not recognise (built by eval, a registry...)."""
    for fn in index.functions_named("configure_optimizers"):
        if any(s.function == fn for s in schedules):
            continue
        keyed = [
            s
            for s in index.setting("lr_scheduler", "scheduler")
            if s.kind == "dict" and s.path == fn.path and fn.line <= s.line <= fn.end_line
        ]
        keyed += [i for i in index.item_assigns if i.key in ("lr_scheduler", "scheduler") and i.function == fn]
        pairs = [
            r
            for r in index.returns
            if r.function == fn
            and isinstance(r.value, (cst.Tuple, cst.List))
            and len(r.value.elements) == 2
            and not _empty(r.value.elements[1].value)  # ``return [opt_ae, opt_disc], []``: no scheduler
        ]
        if keyed or pairs:
            where = (keyed or pairs)[0]
            handed = next(
                (
                    c.func_text
                    for c in index.calls_in(fn)
                    if c.func_text and c.func_text.startswith(HANDED_IN) and "sched" in c.func_text.lower()
                ),
                "",
            )
            schedules.append(Schedule(None, where.path, where.line, where.col, "helper", function=fn, handed=handed))


# A Lightning module's scheduler built from what its constructor received (``self.hparams.scheduler``,
# a ``functools.partial`` that a Hydra config fills in): the module's builder decides it.
HANDED_IN = ("self.hparams.", "self.hparams[", "self.scheduler_factory", "self.lr_scheduler_factory")


def _empty(node) -> bool:
    return isinstance(node, (cst.List, cst.Tuple)) and not node.elements


def _off_by_default(index: UnitIndex, leaf: str) -> str | None:
    """A schedule length whose default is 0 / None (the hand-written schedule is off unless a run
    sets it): 'run' when a run's own default says so (a flag, a config, a defaults dict), 'caller'
    when only a parameter default does (whoever constructs the trainer decides), else None."""
    found = [s for s in index.setting(leaf) if s.known]
    explicit = [s for s in found if s.kind in OFF_KINDS_FIRST]
    chosen = explicit or [s for s in found if s.kind in ("param-default", "getattr-default")]
    if not chosen or not all(s.value in (0, None, False) and not isinstance(s.value, str) for s in chosen):
        return None
    return "run" if explicit else "caller"


def _function_names(index: UnitIndex, fn: FunctionInfo | None) -> set[str]:
    """Every name the code of one function reads or assigns (its calls, assignments, returns, if-conditions)."""
    if fn is None:
        return set()

    def compute() -> set[str]:
        names: set[str] = set()
        for c in index.calls_in(fn):
            names |= names_in(c.node)
            for guard in c.guards:
                try:
                    names |= names_in(cst.parse_expression(guard))
                except cst.ParserSyntaxError:
                    pass
        for a in index.assigns:
            if a.function == fn:
                names |= names_in(a.value) | {a.target}
        for r in index.returns:
            if r.function == fn:
                names |= names_in(r.value)
        return names

    return memo(index, ("lr_schedule.function_names", fn), compute)


def _local_callees(index: UnitIndex, names: set[str]) -> list[FunctionInfo]:
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    return [f for f in index.functions if f.name in leaves]


def _optimizer_names(index: UnitIndex) -> set[str]:
    pats = ROLE_CONSTRUCTORS["optimizer"]
    names = {a.target for a in index.assigns if a.call is not None and a.call.matches(pats)}
    names |= {n.rsplit(".", 1)[-1] for n in names}
    names |= {"optimizer", "opt", "optim", "self.optimizer", "self.opt", "self.optim"}
    return names


def _resolve_part(index: UnitIndex, node, parent: Schedule, by_node: dict[int, Schedule]) -> Schedule | None:
    if isinstance(node, cst.Call):
        return by_node.get(id(node))
    name = dotted(node)
    for assign in assignments_of(index, name, parent.function, parent.line):
        if assign.call is not None and id(assign.call.node) in by_node:
            return by_node[id(assign.call.node)]
    return None


def _combine(index: UnitIndex, sched: Schedule) -> None:
    parts = sched.parts
    if not parts:
        return
    sched.warmup = True if any(p.warmup for p in parts) else (False if all(p.warmup is False for p in parts) else None)
    sched.decay = True if any(p.decay for p in parts) else (False if all(p.decay is False for p in parts) else None)
    decays = [p for p in parts if p.decay]
    sched.floor = None
    if decays:
        floors = [p.floor for p in decays]
        sched.floor = True if any(floors) else (False if all(f is False for f in floors) else None)
    units = {p.per_step for p in parts if p.per_step is not None}
    sched.per_step = units.pop() if len(units) == 1 else None
    warm = next((p for p in parts if p.warmup), None)
    if warm is not None and sched.site is not None:
        milestones = sched.site.kwarg("milestones")
        first = milestones.elements[0].value if isinstance(milestones, cst.List) and milestones.elements else None
        sched.warmup_len = first if first is not None else warm.warmup_len
        if sched.per_step is None and first is not None:
            sched.per_step = length_unit(index, first, sched.site)
        tail = next((p for p in decays), None)
        if tail is not None and tail.total_len is not None and sched.warmup_len is not None:
            sched.total_len = cst.BinaryOperation(sched.warmup_len, cst.Add(), tail.total_len)


def schedules_of(index: UnitIndex, facts: ScheduleFacts, receiver: str) -> list[Schedule]:
    """The schedules a scheduler variable holds (through ``accelerator.prepare`` and local factories)."""
    found: list[Schedule] = []
    seen: set[str] = set()

    def visit(name: str, depth: int) -> None:
        if depth > 5 or name in seen:
            return
        seen.add(name)
        leaf = name.rsplit(".", 1)[-1]
        for assign in index.assigns:
            if assign.target != name and not (
                name.startswith("self.")
                and assign.target.startswith("self.")
                and assign.target.rsplit(".", 1)[-1] == leaf
            ):
                continue
            if assign.source:
                visit(assign.source, depth + 1)
            elif assign.call is not None:
                direct = [s for s in facts.schedules if s.site is assign.call]
                if direct:
                    found.extend(direct)
                    continue
                callee = assign.call.method or assign.call.func_text
                fns = [f for f in index.functions if f.name == callee]
                for fn in fns:
                    inside = [s for s in facts.top if s.function == fn]
                    found.extend(inside)
            elif dotted(assign.value):
                visit(dotted(assign.value), depth + 1)

    visit(receiver, 0)
    return list(dict.fromkeys(found))


def runs_of(index: UnitIndex, top: list[Schedule]) -> list[list[Schedule]]:
    """The schedule sets a run may get, to judge warm-up and decay on. Usually every schedule the
    trainer builds runs together (a warm-up scheduler beside a decay one); but schedules built in
    opposite branches of one ``if``/``elif`` (a ``get_lr_scheduler(name)`` dispatcher: a warm-up-only
    ``LambdaLR`` or a decay-only cosine) are alternatives, and when none of them both warms up and
    decays, each is judged alone: the run gets one, never both."""
    built = [s for s in top if not _carries(index, s)]
    if len(built) < 2 or any(s.warmup is None or s.decay is None for s in built):
        return [top]
    if any(s.warmup and s.decay for s in built):
        return [top]
    top = built
    sites = [_built_at(index, s) for s in top]
    exclusive = all(_exclusive(sites[i], sites[j]) for i in range(len(top)) for j in range(i))
    return [[s] for s in top] if exclusive else [top]


def _carries(index: UnitIndex, sched: Schedule) -> bool:
    """A helper call that is handed a scheduler the trainer built (``TrainState(lr_scheduler=...)``):
    it keeps that schedule, it is not one of its own."""
    if sched.kind != "helper" or sched.site is None:
        return False
    facts = schedule_facts(index)
    return any(dotted(a.value) and schedules_of(index, facts, dotted(a.value)) for a in sched.site.node.args)


def _built_at(index: UnitIndex, sched: Schedule) -> list[CallSite]:
    """Where a schedule is built: its own call, and the calls of the function that builds it."""
    own = [sched.site] if sched.site is not None else []
    if sched.function is None:
        return own
    name = sched.function.name
    return own + [c for c in index.calls if name in (c.func_text, c.method) and c.function is not sched.function]


def _exclusive(a_sites: list[CallSite], b_sites: list[CallSite]) -> bool:
    """Two schedules never built in one run: some function builds (or calls the builder of) both,
    and wherever one function does, they sit in opposite branches of one ``if``."""
    shared = False
    for a in a_sites:
        for b in b_sites:
            if a.path == b.path and a.function == b.function:
                if not _opposite(a, b):
                    return False
                shared = True
    return shared


def _opposite(a: CallSite, b: CallSite) -> bool:
    """``a`` and ``b`` (in one function) sit in opposite branches of one ``if``."""
    where_b = dict(b.branches)
    return any(line in where_b and where_b[line] != in_else for line, in_else in a.branches)
