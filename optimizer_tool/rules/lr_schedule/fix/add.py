"""Fix step for a trainer with no schedule at all (LR001 at its optimizer): a ``SequentialLR``
(``LinearLR`` warm-up, then ``CosineAnnealingLR`` to a floor) over the real total (epochs x optimizer
steps per epoch from ``len(dataloader)`` and the accumulation), stepped after each optimizer step
and saved/restored beside the optimizer in the checkpoint dict."""

from __future__ import annotations

import re

import libcst as cst

from optimizer_tool.contract import CannotFix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.settings import module_name
from optimizer_tool.edit.templates import (
    all_of,
    expression,
    insert_dict_element,
    statement,
    string_literal,
    with_keyword,
)
from optimizer_tool.edit.tree import is_call_statement, names_taken
from optimizer_tool.index import UNKNOWN, CallSite, UnitIndex, code_of, dotted, literal
from optimizer_tool.knowledge.configured import names_in
from optimizer_tool.knowledge.helpers import HelperCall, takes_any_keyword
from optimizer_tool.knowledge.lr_schedule.vocabulary import TOTAL_SETTINGS
from optimizer_tool.knowledge.optimizers import OPTIMIZER_CONSTRUCTORS, optimizer_construction
from optimizer_tool.knowledge.settings import settings_home
from optimizer_tool.knowledge.training import call_of, optimizer_steps, same_object, stepped_optimizer
from optimizer_tool.rules.lr_schedule.fix.common import (
    after_scaler_update,
    assignment_target,
    base_lr,
    cosine_decay,
    manual_schedule_patch,
    min_lr_ratio,
    warmup_setting,
    warmup_then,
)
from optimizer_tool.rules.lr_schedule.fix.helper import (
    existing_parameter,
    helper_patch,
    pass_schedule,
    stepped_in_helper,
    steps_in_helper,
)

EPOCH_SETTINGS = ("num_epochs", "epochs", "num_train_epochs", "max_epochs", "n_epochs", "n_epoch", "total_epochs")
ACCUMULATION_SETTINGS = (
    "gradient_accumulation_steps",
    "grad_accum_steps",
    "accumulation_steps",
    "gradient_accumulate_every",
    "accum_steps",
)
DATALOADER = ("torch.utils.data.DataLoader", "*.DataLoader")


def add_schedule(ctx: FixContext, edits: Edits, where) -> None:
    index = ctx.index
    steps = optimizer_steps(index)
    opt_call = _optimizer_call(index, where, steps)
    tree = edits.tree(opt_call.path)
    module = edits.module(opt_call.path)
    opt_stmt = tree.statement(opt_call.node)
    optimizer = assignment_target(opt_stmt, opt_call.node)
    if optimizer is None:
        raise CannotFix(
            opt_call.path,
            opt_call.line,
            "the optimizer is not assigned to a name on a line of its own",
            manual_schedule_patch(),
        )
    scheduler = "self.lr_scheduler" if optimizer.startswith("self.") else "lr_scheduler"

    def reach(step: CallSite) -> bool:
        """The new schedule is in scope at ``step``: the same function, or anywhere for a ``self.`` one
        (as before helpers were handed schedules; the unbound-name check refuses a step outside the class)."""
        return scheduler.startswith("self.") or (step.function == opt_call.function and step.path == opt_call.path)

    own_steps = [s for s in steps if reach(s) and same_object(stepped_optimizer(s), optimizer)]
    helper_steps, handed = steps_in_helper(index, opt_call, optimizer, steps, reach)
    if not own_steps and not helper_steps:
        raise CannotFix(opt_call.path, opt_call.line, f"`{optimizer}` is never stepped", manual_schedule_patch())
    if own_steps and helper_steps:
        raise CannotFix(
            helper_steps[0].path,
            helper_steps[0].line,
            f"`{optimizer}` is stepped both in `{handed.helper.name}` and where it is built",
            manual_schedule_patch(),
        )
    if len(helper_steps) > 1:
        raise CannotFix(
            helper_steps[1].path,
            helper_steps[1].line,
            f"`{optimizer}` is stepped more than once in `{handed.helper.name}`",
            helper_patch(handed, scheduler),
        )
    home = settings_home(index, opt_call.function, opt_call.kwarg("lr"))
    _check_steps(edits, [*own_steps, *helper_steps])
    total, anchor, built_at = run_total(index, edits, home, opt_call, opt_stmt, handed)
    _check_room(edits, opt_call, scheduler)
    if handed is not None:
        if any(site.line <= built_at.line for site in handed.sites):
            raise CannotFix(
                handed.sites[0].path,
                handed.sites[0].line,
                f"`{handed.helper.name}` is called before the run length is known where the schedule is built",
                helper_patch(handed, scheduler),
            )
        pass_schedule(index, edits, handed, scheduler)
    warmup = warmup_setting(edits, index, home)
    ratio = min_lr_ratio(edits, index, home)
    torch = module_name(edits, index, opt_call.path, "torch")
    decay = cosine_decay(torch, optimizer, "total_steps", f"{ratio} * {base_lr(index, optimizer, opt_call)}")
    new = [
        statement(
            module,
            "# Linear warm-up (at most 10% of the run), then cosine decay to min_lr_ratio x the base rate,\n"
            f"# stepped once per optimizer step.\ntotal_steps = {total}\n",
        ),
        statement(module, f"warmup_steps = min({warmup}, total_steps // 10)"),
        statement(module, warmup_then(torch, scheduler, optimizer, decay)),
    ]
    edits.insert_after(opt_call.path, anchor, new)
    for step in own_steps:
        step_stmt = edits.tree(step.path).statement(step.node)
        edits.insert_after(
            step.path,
            after_scaler_update(index, edits, step, step_stmt),
            [statement(edits.module(step.path), f"{scheduler}.step()")],
        )
    if handed is not None and existing_parameter(index, handed) is None:
        step = handed.inside
        step_stmt = edits.tree(step.path).statement(step.node)
        edits.insert_after(
            step.path,
            after_scaler_update(index, edits, step, step_stmt),
            [stepped_in_helper(edits.module(step.path), scheduler)],
        )
    _checkpoint_schedule(index, edits, optimizer, scheduler, (anchor, built_at))


def _optimizer_call(index: UnitIndex, where, steps: list[CallSite]) -> CallSite:
    """The optimizer construction the finding names, or the one its optimizer step steps."""
    path, line, _ = where
    constructions = [c for c in index.calls_to(*OPTIMIZER_CONSTRUCTORS)]
    opt_call = next((c for c in constructions if (c.path, c.line, c.col) == where), None)
    if opt_call is None and steps:
        step = next((s for s in steps if (s.path, s.line, s.col) == where), steps[0])
        opt_call = optimizer_construction(index, stepped_optimizer(step))
    if opt_call is None:
        raise CannotFix(
            path,
            line,
            "cannot find where the optimizer is built to add a schedule after it",
            manual_schedule_patch(),
        )
    return opt_call


def _check_room(edits: Edits, opt_call: CallSite, scheduler: str) -> None:
    """The new names are free."""
    tree = edits.tree(opt_call.path)
    taken = names_taken(
        tree.module, tree.function(opt_call.node) or tree.module, "total_steps", "warmup_steps", scheduler
    )
    if {"total_steps", "warmup_steps"} & taken or (scheduler == "lr_scheduler" and scheduler in taken):
        raise CannotFix(
            opt_call.path,
            opt_call.line,
            "the names total_steps / warmup_steps / lr_scheduler are taken here",
            manual_schedule_patch(),
        )


def _check_steps(edits: Edits, steps: list[CallSite]) -> None:
    """Each optimizer step is a statement the schedule step can follow."""
    for step in steps:
        step_stmt = edits.tree(step.path).statement(step.node)
        if not is_call_statement(step_stmt, step.node):
            raise CannotFix(
                step.path, step.line, f"`{step.text}` is not a statement of its own", manual_schedule_patch()
            )


def run_total(
    index: UnitIndex, edits: Edits, home, opt_call: CallSite, opt_stmt, handed: HelperCall | None = None
) -> tuple[str, cst.BaseStatement, object]:
    """The run's optimizer steps as code, the statement after which it can be computed, and that
    statement's call or assignment (where the schedule is built: its line and conditions): a run-length
    setting, else epochs x ceil(len(dataloader) / accumulation), else the loops around the step. With
    the step in a helper (``handed``), a run-length setting, else the loops around the helper's call
    times the loops around the step inside it."""
    tree = edits.tree(opt_call.path)
    for name in TOTAL_SETTINGS:
        if home is not None and home.has(name):
            _refuse_endless(index, opt_call, name)
            return home.read(name), opt_stmt, opt_call
    same_class = [
        a
        for a in index.assigns
        if a.target.startswith("self.")
        and a.target.rsplit(".", 1)[-1] in TOTAL_SETTINGS
        and opt_call.function is not None
        and a.function is not None
        and a.function.class_name == opt_call.function.class_name
        and a.function.name == "__init__"
        and a.line < opt_call.line
    ]
    if same_class:
        _refuse_endless(index, opt_call, same_class[0].target.rsplit(".", 1)[-1])
        return same_class[0].target, opt_stmt, opt_call
    here = [a for a in index.assigns if a.path == opt_call.path and a.function == opt_call.function]
    if handed is not None:  # the loops say it: the epochs x loader guess below assumes the loader is walked here
        counted = _loop_total(index, edits, opt_call, opt_stmt, here, handed)
        if counted is None:
            raise CannotFix(
                opt_call.path, opt_call.line, _no_run_length(index, home), helper_patch(handed, "lr_scheduler")
            )
        return counted
    epochs = next((home.read(n) for n in EPOCH_SETTINGS if home is not None and home.has(n)), None)
    loaders = [a for a in here if a.call is not None and a.call.matches(DATALOADER)]
    if not loaders:  # ``dataloader = get_data(args)``: a loader built by a helper, iterated in this function
        loaders = [a for a in here if LOADER_NAME.search(a.target) and a.call is not None and _iterated(index, a)]
    if epochs is None or len(loaders) != 1:
        counted = _loop_total(index, edits, opt_call, opt_stmt, here)
        if counted is None:
            raise CannotFix(opt_call.path, opt_call.line, _no_run_length(index, home), manual_schedule_patch())
        return counted
    loader = loaders[0]
    anchor, anchor_at = opt_stmt, opt_call
    loader_stmt = tree.statement(loader.call.node)
    if loader.line > opt_call.line:
        if tree.block(loader_stmt) is not tree.block(opt_stmt):
            raise CannotFix(
                opt_call.path,
                opt_call.line,
                f"`{loader.target}` is built after the optimizer, in another block",
                manual_schedule_patch(),
            )
        anchor, anchor_at = loader_stmt, loader
    accumulation = next((home.read(n) for n in ACCUMULATION_SETTINGS if home.has(n)), None)
    per_epoch = f"math.ceil(len({loader.target}) / {accumulation})" if accumulation else f"len({loader.target})"
    if accumulation:
        edits.add_import(opt_call.path, "math")
    return f"{epochs} * {per_epoch}", anchor, anchor_at


def _no_run_length(index: UnitIndex, home) -> str:
    """Why the run's length is unknown, naming the length settings the trainer has where this fix
    cannot read them (``config["max_train_steps"]`` of a dict or a YAML file, not a flag or field of
    ``home``): "no max-steps setting" would be wrong there."""
    elsewhere = [
        s
        for names in (TOTAL_SETTINGS, EPOCH_SETTINGS)
        for s in index.setting(*names)
        if s.kind in ("dict", "config-file") and not (home is not None and home.has(s.name))
    ]
    loops = "the loops around the optimizer step do not say how often they run"
    if not elsewhere:
        return (
            "cannot compute the run's optimizer steps (no epochs setting and dataloader, no max-steps setting, "
            f"and {loops})"
        )
    found = elsewhere[0]
    where = "a config file" if found.kind == "config-file" else "a dict"
    return (
        f"cannot compute the run's optimizer steps: `{found.name}` is set in {where} ({found.path.name}:{found.line}), "
        f"not as a command-line flag or config field this fix reads, and {loops}; "
        "build the schedule from it by hand"
    )


def _refuse_endless(index: UnitIndex, opt_call: CallSite, name: str) -> None:
    """A length setting whose every known default is 0 means "train until stopped" (improved-diffusion's
    ``lr_anneal_steps=0``): a schedule over it would be over in one step. None is not: diffusers'
    ``--max_train_steps`` None is derived from the epochs before the schedule is built."""
    values = [s.value for s in index.setting(name) if s.known]
    if values and all(v == 0 and not isinstance(v, bool) for v in values):
        raise CannotFix(
            opt_call.path,
            opt_call.line,
            f"the run length `{name}` defaults to {values[0]!r} (train until stopped): a schedule needs the "
            "run's end; set it and run the fix again",
            manual_schedule_patch(),
        )


LOADER_NAME = re.compile(r"(^|_)(data_?loader|train_?loader|loader|train_dl|dl)$")
WRAPPERS = ("tqdm", "tqdm.tqdm", "tqdm.auto.tqdm", "tqdm.notebook.tqdm", "enumerate", "iter")
RANGES = ("range", "trange", "tqdm.trange", "tqdm.auto.trange")


def _loop_total(
    index: UnitIndex, edits: Edits, opt_call: CallSite, opt_stmt, here: list, handed: HelperCall | None = None
) -> tuple[str, cst.BaseStatement, object] | None:
    """The run's optimizer steps read off the loops around the optimizer step, when no setting names
    them: ``for epoch in range(n_epoch):`` around ``for x in dataloader:`` is ``n_epoch * len(dataloader)``,
    a step loop ``for it in range(1, args.iterations + 1):`` is ``len(range(1, args.iterations + 1))``.
    With the step in a helper, the loops around its one call, then those around the step inside it,
    read with the arguments of that call (``len(dataloader)`` in the helper is ``len(train_loader)``).
    None when a loop is a ``while``, walks something else, or the step is conditional inside the loops
    (gradient accumulation: fewer optimizer steps than batches)."""
    if handed is None:
        own = [s for s in optimizer_steps(index) if s.function == opt_call.function and s.path == opt_call.path]
        if not own or len({tuple((lp.line, lp.col) for lp in s.loops) for s in own}) != 1:
            return None
        site, inner = own[0], []
    else:
        if len(handed.sites) != 1 or handed.inside.branches:
            return None
        site = handed.sites[0]
        inner = _helper_counts(index, edits, handed)
        if inner is None:
            return None
    loops = site.loops
    if not loops and not inner:
        return None
    start = loops[0].line if loops else opt_call.line
    if (loops and loops[0].line <= opt_call.line) or any(line > start for line, _ in site.branches):
        return None
    tree = edits.tree(opt_call.path)
    anchor, anchor_at, counts = opt_stmt, opt_call, []
    aliases = tree.with_aliases(site.node)
    for loop in loops:
        if not loop.target:
            return None
        count = _loop_count(opt_call.function, opt_call.line, here, loop, aliases)
        if count is None:
            return None
        text, built = count
        if built is not None and built.line > anchor_at.line:  # a loader built after the optimizer, same block
            built_stmt = tree.statement(built.call.node) if built.call is not None else None
            if built_stmt is None or tree.block(built_stmt) is not tree.block(opt_stmt):
                return None
            anchor, anchor_at = built_stmt, built
        counts.append(text)
    total = " * ".join([*counts, *inner])
    for name in {n.split(".")[0] for n in names_in(cst.parse_expression(total))}:
        bound = [a for a in here if a.target.split(".")[0] == name]
        if bound and all(a.line > anchor_at.line for a in bound):
            # ``num_epochs = 10`` set after the optimizer: the schedule follows it, in the same block
            last = max(bound, key=lambda a: a.line)
            last_stmt = tree.statement(last.value)
            if last.line >= (loops[0].line if loops else site.line) or tree.block(last_stmt) is not tree.block(
                opt_stmt
            ):
                return None
            anchor, anchor_at = last_stmt, last
    return total, anchor, anchor_at


BUILTINS = frozenset({"len", "range", "min", "max", "int"})


def _helper_counts(index: UnitIndex, edits: Edits, handed: HelperCall) -> list[str] | None:
    """How often each loop around the optimizer step inside the helper runs, as code of the caller:
    the helper's parameters replaced by the names its one call passes (``len(dataloader)`` ->
    ``len(train_loader)``). None when a count reads anything else (a local of the helper, a global)
    or an argument that is not a plain name or literal (evaluated twice it could differ)."""
    step, helper, site = handed.inside, handed.helper, handed.sites[0]
    here = [a for a in index.assigns if a.path == helper.path and a.function == helper]
    aliases = edits.tree(step.path).with_aliases(step.node)
    counts = []
    for loop in step.loops:
        count = _loop_count(helper, helper.line, here, loop, aliases) if loop.target else None
        if count is None or count[1] is not None:  # a loader built inside the helper is not the caller's
            return None
        text = _in_caller(handed, site, cst.parse_expression(count[0]))
        if text is None:
            return None
        counts.append(text)
    return counts


def _in_caller(handed: HelperCall, site: CallSite, count: cst.BaseExpression) -> str | None:
    """``count`` (code of the helper) with each parameter replaced by the argument ``site`` passes it."""
    arguments = {}
    for name in {n.split(".")[0] for n in names_in(count)} - BUILTINS:
        value = handed.bound(site, name) if name in handed.helper.params else None
        if value is None or not (dotted(value) or literal(value) is not UNKNOWN):
            return None
        arguments[name] = value

    class _Arguments(cst.CSTTransformer):
        def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
            return arguments.get(original.value, updated)

        def visit_Attribute_attr(self, node: cst.Attribute) -> bool:
            return False  # ``args.epochs``: ``epochs`` is no variable

        def visit_Arg_keyword(self, node: cst.Arg) -> bool:
            return False

    return code_of(count.visit(_Arguments())).strip()


def _loop_count(function, after: int, here: list, loop, aliases: dict) -> tuple[str, object] | None:
    """How many times ``loop`` of ``function`` runs, as code readable before it: ``E`` for ``range(E)``,
    ``len(range(a, b))``, ``len(loader)`` for a loader (through ``tqdm``/``enumerate`` and a
    ``pbar = tqdm(loader)`` made inside the loops after line ``after``); with the assignment that
    built the loader."""
    try:
        node = cst.parse_expression(loop.iter)
    except cst.ParserSyntaxError:
        return None
    for _ in range(4):
        if isinstance(node, cst.Call) and dotted(node.func) in WRAPPERS and node.args:
            node = node.args[0].value
            continue
        name = dotted(node)
        if name in aliases:
            node = aliases.pop(name)
            continue
        made = [a for a in here if a.target == name and a.line > after and a.call is not None]
        if name and made and dotted(made[-1].call.node.func) in WRAPPERS and made[-1].call.node.args:
            node = made[-1].call.node.args[0].value  # ``pbar = tqdm(dataloader)`` inside the epoch loop
            continue
        break
    if isinstance(node, cst.Call) and dotted(node.func) in RANGES:
        positional = [a for a in node.args if a.keyword is None and not a.star]
        if len(positional) == 1:  # ``trange(n, dynamic_ncols=True)``: keywords are the bar's
            value = positional[0].value
            text = code_of(value).strip()
            return (
                text if isinstance(value, (cst.Name, cst.Attribute, cst.Integer, cst.Subscript)) else f"({text})"
            ), None
        return f"len(range({', '.join(code_of(a.value).strip() for a in positional)}))", None
    name = dotted(node)
    if not name:
        return None
    built = [a for a in here if a.target == name]
    is_param = function is not None and name in function.params
    if LOADER_NAME.search(name.rsplit(".", 1)[-1]) or any(
        b.call is not None and b.call.matches(DATALOADER) for b in built
    ):
        if not built and not is_param and not name.startswith("self."):
            return None
        return f"len({name})", (built[-1] if built else None)
    return None


def _iterated(index: UnitIndex, loader) -> bool:
    """``loader`` is what the function's training loop walks (``for batch in loader``, ``enumerate(loader)``,
    or a wrapper of it: ``pbar = tqdm(dataloader)`` then ``for i, batch in enumerate(pbar)``)."""
    walked = {loader.target} | {
        a.target
        for a in index.assigns
        if a.function == loader.function and loader.target in names_in(a.value) and a.call is not None
    }
    pattern = re.compile("|".join(rf"(?<![\w.]){re.escape(n)}(?![\w.])" for n in walked))
    return any(
        loop.iter and pattern.search(loop.iter)
        for call in index.calls
        if call.function == loader.function
        for loop in call.loops
    )


def _indexed(node) -> bool:
    """``checkpoint["optimizer"]``: a subscript with one plain index."""
    return isinstance(node, cst.Subscript) and len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index)


def _scheduler_key(optimizer_key: str) -> str:
    """The checkpoint key of the schedule, named like the optimizer's (``optimizer_state_dict`` ->
    ``lr_scheduler_state_dict``, ``opt`` -> ``lr_scheduler``)."""
    return optimizer_key.replace("optimizer", "lr_scheduler") if "optimizer" in optimizer_key else "lr_scheduler"


def _pass_to_checkpoint(index: UnitIndex, edits: Edits, state: CallSite, argument: cst.Arg, scheduler: str) -> None:
    """``checkpoint.step(loss, optimizer=optimizer.state_dict())`` to a function that saves its
    ``**kwargs``: the schedule's state goes beside the optimizer's, as ``lr_scheduler=...``."""
    tree = edits.tree(state.path)
    saver = call_of(index, tree.parent.get(argument))
    key = _scheduler_key(argument.keyword.value)
    if saver is None or saver.kwarg(key) is not None or not takes_any_keyword(index, saver):
        return
    module = edits.module(state.path)
    value = expression(module, f"{scheduler}.state_dict()")
    edits.replace(state.path, saver.node, lambda node: with_keyword(node, key, value))


def _checkpoint_schedule(index: UnitIndex, edits: Edits, optimizer: str, scheduler: str, built) -> None:
    """Save the new schedule beside the optimizer in checkpoint dicts, and restore it where the optimizer
    is restored; where that happens before the schedule is built (``built``: the statement it follows
    and the call there), right after it is built, under the conditions the restore ran under."""
    done: set[int] = set()  # the first optimizer entry of each dict
    for call in index.method_calls("state_dict"):
        if call.node.args or not same_object(call.receiver, optimizer):
            continue
        tree = edits.tree(call.path)
        element = tree.parent.get(call.node)
        if isinstance(element, cst.Arg) and element.keyword is not None:
            _pass_to_checkpoint(index, edits, call, element, scheduler)
            continue
        node = tree.parent.get(element) if isinstance(element, cst.DictElement) else None
        key = literal(element.key) if node is not None else None
        if not isinstance(node, cst.Dict) or not isinstance(key, str) or id(node) in done:
            continue
        done.add(id(node))
        module = edits.module(call.path)
        i = list(node.elements).index(element)
        new_key = expression(module, string_literal(_scheduler_key(key), element.key))
        new_value = expression(module, f"{scheduler}.state_dict()")
        edits.replace(call.path, node, lambda d, i=i, k=new_key, v=new_value: insert_dict_element(d, i, k, v))
    for call in index.method_calls("load_state_dict"):
        source = call.args[0].value if call.args else None
        if not same_object(call.receiver, optimizer):
            continue
        key = source.slice[0].slice.value if _indexed(source) else None
        stmt = edits.tree(call.path).statement(call.node)
        if not isinstance(literal(key), str) or not is_call_statement(stmt, call.node):
            # ``optimizer.load_state_dict(torch.load(args.optim_checkpoint))``: no checkpoint dict to read
            # the schedule's state from; a resumed run would restart the warm-up with a restored optimizer
            raise CannotFix(
                call.path,
                call.line,
                f"`{optimizer}` is restored from `{code_of(source).strip() if source is not None else ''}`, which the "
                f"fix cannot pair with the schedule's state: a resumed run would start the schedule over; save "
                f"`{scheduler}.state_dict()` beside the optimizer's and restore it there by hand",
                manual_schedule_patch(),
            )
        checkpoint = code_of(source.value).strip()
        saved = string_literal(_scheduler_key(literal(key)), key)
        restore = (
            f"if {saved} in {checkpoint}:  # checkpoints from before the schedule have none\n"
            f"    {scheduler}.load_state_dict({checkpoint}[{saved}])\n"
        )
        anchor, at = built
        if call.path == at.path and call.function == at.function and call.line < at.line:
            # Building the schedule after the optimizer's state came back reset its rate: the
            # restored schedule's last rate goes back into the optimizer.
            restore += (
                f"    for group, lr in zip({optimizer}.param_groups, {scheduler}.get_last_lr()):\n"
                '        group["lr"] = lr\n'
            )
            missing = [g for g in call.guards if g not in at.guards]
            if missing:  # ``if args.ckpt is not None:`` resumed before the schedule existed
                restore = f"if {all_of(missing)}:\n" + "".join(f"    {line}\n" for line in restore.splitlines())
            edits.insert_after(call.path, anchor, [statement(edits.module(call.path), restore)])
            continue
        edits.insert_after(call.path, stmt, [statement(edits.module(call.path), restore)])
