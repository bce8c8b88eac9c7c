"""The monitoring fix: log the missing curves where the trainer logs its loss."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst
import libcst.matchers as m

from optimizer_tool.contract import Applicability, CannotFix, Fix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.ema import ema_target
from optimizer_tool.edit.settings import module_name
from optimizer_tool.edit.templates import (
    insert_dict_element,
    keyword,
    string_literal,
    template_expression,
    template_statements,
    under,
)
from optimizer_tool.edit.tree import is_call_statement
from optimizer_tool.index import CallSite, UnitIndex, code_of, dotted
from optimizer_tool.knowledge.ema import ema_facts
from optimizer_tool.knowledge.training import (
    assignments_of,
    clip_calls,
    has_role,
    is_lightning,
    lr_scheduler_steps,
    optimizer_steps,
    stepped_optimizer,
    trained_model,
)
from optimizer_tool.rules.monitoring.facts import (
    ema_drift_logged,
    grad_norm_logged,
    is_text_sink,
    logged_values,
    lr_logged,
)

# --- the fix ------------------------------------------------------------------------------------
# ``t2s-opt apply --only monitoring``: the missing curves go to the sink the trainer already uses for
# its loss (a SummaryWriter's add_scalar, a dict handed to accelerator.log / wandb.log / a JSON-lines
# file), in the same block, so they follow its existing log cadence. The gradient norm is the value
# ``clip_grad_norm_`` returns (or, without clipping, the norm computed before the optimizer step);
# the EMA drift is the mean absolute difference between averaged and live weights.
GRAD_NORM_TEMPLATE = (
    "grad_norm = torch.linalg.vector_norm(torch.stack([\n"
    "    torch.linalg.vector_norm(p.grad.detach()) for p in {model}.parameters() if p.grad is not None\n"
    "]))"
)
SCALAR_SINKS = ("add_scalar",)
DICT_SINK_KEYWORDS = ("metrics", "data", "values", "row", "stats", "dictionary")


@dataclass
class Curve:
    """One value to log: its name, the expression, the statements that compute it, a tag prefix of
    its own (``ema/``) instead of the loss's."""

    name: str
    value: cst.BaseExpression
    setup: list = field(default_factory=list)
    prefix: str | None = None
    conditional: object = None  # an EmaTarget whose conditions must hold to log this curve

    def tag(self, sink: "Sink", like: cst.BaseExpression | None) -> str:
        return string_literal(f"{sink.prefix if self.prefix is None else self.prefix}{self.name}", like)


@dataclass
class Sink:
    """Where the trainer logs its loss: a call to extend (``add_scalar``) or a dict literal to fill."""

    call: CallSite
    key: str | None  # the loss key, e.g. "train/loss" (its prefix names the new curves)
    entries: cst.Dict | None = None  # the dict the call logs, when it logs a dict
    step: CallSite | None = None  # a progress line's optimizer step: the curves get a line of their own
    bar: str | None = None  # a progress bar the training loop iterates, showing nothing yet (``call`` is the step)

    @property
    def text(self) -> bool:
        """A progress line (print, logger.info, a progress bar), not a metrics sink."""
        return self.step is not None

    @property
    def logged_at(self) -> CallSite:
        """Where the new curves are logged: at the sink, or right after the optimizer step for a
        progress line shown before it."""
        return self.step if self.step is not None and self.call.line < self.step.line else self.call

    @property
    def prefix(self) -> str:
        return self.key.rsplit("/", 1)[0] + "/" if self.key and "/" in self.key else ""


@dataclass
class Guarded:
    """A curve whose value exists only under conditions the sink is not under (the gradient norm a
    clip under ``if accelerator.sync_gradients:`` returns): it is logged under them."""

    conditions: tuple[str, ...]

    def when_present(self, module: cst.Module, statements: list, at: CallSite, what: str) -> list:
        return under(module, self.conditions, statements)


class LogTrainingSignals(Fix):
    """Logs the gradient norm, the learning rate and the EMA drift next to the loss."""

    applicability = Applicability.SAFE  # only adds code

    codes = ("MON001", "MON002", "MON003")

    def apply(self, ctx: FixContext, findings: list) -> None:
        index = ctx.index
        trained = trained_model(index)
        where = findings[0].location
        if trained is None and is_lightning(index):
            raise CannotFix(
                where.path,
                where.line,
                "a LightningModule: Lightning steps the optimizer itself, so the curves are logged from its hooks",
                LIGHTNING_PATCH,
            )
        if trained is None:
            raise CannotFix(
                where.path,
                where.line,
                (
                    "no optimizer step whose network can be traced; log the gradient norm, the learning rate and the EMA drift by "  # noqa: E501
                    "hand"
                ),
                MONITORING_PATCH,
            )
        edits = Edits(ctx)
        sink = loss_sink(index, trained.step) or text_sink(index, trained.step) or bar_sink(edits, index, trained.step)
        if sink is None:
            raise CannotFix(
                where.path,
                where.line,
                f"no metrics sink (SummaryWriter.add_scalar, accelerator.log, wandb.log, a JSON-lines file) and no progress line (print, logger.info, a progress bar) shows the loss in `{trained.step.function.name if trained.step.function else 'the training loop'}`; add one, then run the fix again",  # noqa: E501
                MONITORING_PATCH,
            )
        codes = {f.code for f in findings}
        curves: list[Curve] = []
        if "MON001" in codes and not grad_norm_logged(index):
            value, made_at = self.grad_norm(index, trained, sink, edits)
            missing = tuple(g for g in made_at.guards if g not in sink.logged_at.guards)
            curves.append(Curve("grad_norm", value, conditional=Guarded(missing) if missing else None))
        if "MON002" in codes and not lr_logged(index):
            curves.append(Curve("lr", template_expression(edits.module(sink.call.path), lr_expression(index, trained))))
        if "MON003" in codes and not ema_drift_logged(index) and ema_facts(index).objects:
            try:
                curves.append(self.ema_drift(index, trained, sink, edits))
            except CannotFix as why:
                if not curves:
                    raise
                ctx.leave("MON003", why)  # the gradient norm and lr are logged; the EMA drift by hand
        if not curves:
            return
        emit(edits, sink, curves)
        edits.apply()

    def grad_norm(self, index: UnitIndex, trained, sink: Sink, edits: Edits) -> tuple[cst.BaseExpression, CallSite]:
        """``grad_norm``: what the clipping call returns (captured where it is discarded), or the
        norm computed right before the optimizer step; with the call it is made next to (a clip under
        ``if accelerator.sync_gradients:`` makes a norm that exists only under that condition)."""
        step = trained.step
        clips = [
            c for c in clip_calls(index) if c.function == step.function and c.path == step.path and c.line <= step.line
        ]
        if sink.call.path != step.path or sink.call.function != step.function:
            raise CannotFix(
                sink.call.path,
                sink.call.line,
                "the loss is logged outside the function that steps the optimizer; log the gradient norm there by hand",
                MONITORING_PATCH,
            )
        for clip in clips:
            captured = next(
                (
                    a.target
                    for a in index.assigns
                    if a.path == clip.path and a.line == clip.line and a.call is not None and a.call.node is clip.node
                ),
                None,
            )
            if captured:
                return cst.parse_expression(captured), clip
            statement = edits.statement_of(clip)
            if is_call_statement(statement, clip.node):
                edits.replace(
                    clip.path,
                    statement,
                    lambda node: node.with_changes(
                        body=[cst.Assign(targets=[cst.AssignTarget(cst.Name("grad_norm"))], value=node.body[0].value)]
                    ),
                )
                return cst.Name("grad_norm"), clip
        if index.method_calls("unscale_") or any(has_role(index, c.receiver, "scaler") for c in optimizer_steps(index)):
            unscale = next((c for c in index.method_calls("unscale_") if c.function == step.function), None)
            if unscale is None:
                raise CannotFix(
                    step.path,
                    step.line,
                    (
                        "gradients are scaled by a GradScaler and never unscaled before the step, so their norm is meaningless; call "  # noqa: E501
                        "scaler.unscale_(optimizer) first"
                    ),
                    MONITORING_PATCH,
                )
            edits.insert_after(
                step.path,
                edits.statement_of(unscale),
                _with_torch(edits, index, step.path, GRAD_NORM_TEMPLATE, model=trained.name),
            )
            return cst.Name("grad_norm"), unscale
        edits.insert_before(
            step.path,
            edits.statement_of(step),
            _with_torch(edits, index, step.path, GRAD_NORM_TEMPLATE, model=trained.name),
        )
        return cst.Name("grad_norm"), step

    def ema_drift(self, index: UnitIndex, trained, sink: Sink, edits: Edits) -> Curve:
        """``ema_drift``: the mean absolute difference between averaged and live weights, computed
        where the loss is logged (under the EMA's own ``if``, when it is created under one)."""
        objects = ema_facts(index).objects
        if not objects:
            raise CannotFix(sink.call.path, sink.call.line, "the trainer keeps no EMA to measure", MONITORING_PATCH)
        target = ema_target(index, trained.name, edits.ctx.project_files)
        obj = objects[0]
        if target is None or target.api.drift is None:
            raise CannotFix(
                obj.path,
                obj.line,
                f"cannot tell how to read the averaged weights of `{obj.target}`; log the mean absolute difference to the live weights by hand",  # noqa: E501
                MONITORING_PATCH,
            )
        function = sink.call.function
        if target.name.startswith("self.") != trained.name.startswith("self.") or (
            not target.name.startswith("self.") and target.function not in (function, None)
        ):
            raise CannotFix(
                sink.call.path,
                sink.call.line,
                f"the loss is logged where `{target.name}` is not in reach; log the EMA drift by hand",
                MONITORING_PATCH,
            )
        setup = _with_torch(
            edits, index, sink.call.path, f"ema_drift = {target.api.drift}", ema=target.name, model=trained.name
        )
        name, prefix = ("param_difference", "ema/") if sink.prefix else ("ema_drift", None)
        curve = Curve(name, cst.Name("ema_drift"), setup, prefix)
        if target.missing_conditions(sink.call):
            # The EMA may not exist here (``if args.use_ema:``): its curve gets a sink call of its own.
            inline = sink.entries is None or any(a.value is sink.entries for a in sink.call.node.args)
            if inline and sink.entries is not None and sink.call.matches(("json.dumps", "json.dump")):
                raise CannotFix(
                    sink.call.path,
                    sink.call.line,
                    f"`{target.name}` only exists when `{target.conditions[0]}`, and the metrics are logged as one dict",  # noqa: E501
                    MONITORING_PATCH,
                )
            curve.conditional = target
        return curve


MONITORING_PATCH = """\
grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
...
writer.add_scalar("train/grad_norm", grad_norm, step)
writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
ema_drift = torch.stack([(e.float() - p.detach().float()).abs().mean() for e, p in zip(ema.parameters(), model.parameters())]).mean()
writer.add_scalar("ema/param_difference", ema_drift, step)
"""  # noqa: E501


LIGHTNING_PATCH = """\
from lightning.pytorch.callbacks import LearningRateMonitor  # Trainer(callbacks=[LearningRateMonitor("step")])
from lightning.pytorch.utilities import grad_norm

def on_before_optimizer_step(self, optimizer):
    self.log_dict(grad_norm(self, norm_type=2))

# in training_step, with the EMA:
self.log("ema/param_difference", torch.stack([(e - p).abs().mean() for e, p in zip(ema.parameters(), self.model.parameters())]).mean())
"""  # noqa: E501


def loss_sink(index: UnitIndex, step: CallSite) -> Sink | None:
    """The sink that logs the loss in the function that steps the optimizer: ``add_scalar`` first,
    then a logged dict literal (``accelerator.log({...})``, ``wandb.log({...})``, ``json.dumps({...})``)."""
    here = [
        item for item in logged_values(index) if item.site.function == step.function and item.site.path == step.path
    ]
    losses = [item for item in here if item.key and "loss" in item.key.lower()] or here
    ranked = sorted(
        losses, key=lambda item: (item.site.method not in SCALAR_SINKS, item.site.line < step.line, -item.site.line)
    )
    for item in ranked:
        if item.site.method in SCALAR_SINKS:
            return Sink(item.site, item.key)
        entries = _logged_dict(index, item.site)
        if entries is not None:
            return Sink(item.site, item.key, entries)
    return None


def _logged_dict(index: UnitIndex, call: CallSite) -> cst.Dict | None:
    """The dict literal a sink call logs: its argument, or the literal a local name was built from."""
    for arg in call.node.args:
        if arg.keyword is not None and arg.keyword.value not in DICT_SINK_KEYWORDS:
            continue
        if isinstance(arg.value, cst.Dict):
            return arg.value
        name = dotted(arg.value)
        built = (
            [a for a in assignments_of(index, name, call.function, call.line) if a.path == call.path] if name else []
        )
        if built and isinstance(built[-1].value, cst.Dict):
            return built[-1].value
    return None


def _dict_variable(sink: Sink) -> str | None:
    """The name the logged dict is held in, when the sink call takes it by name."""
    if sink.entries is None or any(a.value is sink.entries for a in sink.call.node.args):
        return None
    for arg in sink.call.node.args:
        name = dotted(arg.value)
        if name and (arg.keyword is None or arg.keyword.value in DICT_SINK_KEYWORDS):
            return name
    return None


def lr_expression(index: UnitIndex, trained) -> str:
    """The learning rate the optimizer uses: the schedule's last value, else the first param group's
    (also where the schedule may be None: a helper's ``if lr_scheduler is not None: lr_scheduler.step()``)."""
    steps = [
        s
        for s in lr_scheduler_steps(index)
        if s.path == trained.step.path and not any(f"{s.receiver} is not None" in g for g in s.guards)
    ]
    if steps:
        return f"{steps[0].receiver}.get_last_lr()[0]"
    return f'{stepped_optimizer(trained.step)}.param_groups[0]["lr"]'


def _with_torch(edits: Edits, index: UnitIndex, path, template: str, **values: str) -> list[cst.BaseStatement]:
    """``template`` (written with ``torch.``) as statements of ``path``, spelled with the file's own
    name for torch (imported when missing)."""
    torch = module_name(edits, index, path, "torch")
    return template_statements(edits.module(path), template.replace("torch.", f"{torch}."), **values)


def text_sink(index: UnitIndex, step: CallSite) -> Sink | None:
    """The progress line that shows the loss in the function that steps the optimizer (``print``,
    ``logger.info``, ``pbar.set_description``), when there is no metrics sink: the curves are shown
    on a line of their own at its cadence. Latest after the step first."""
    lines = [
        c
        for c in index.calls
        if c.function == step.function
        and c.path == step.path
        and c.loop_depth > 0
        and is_text_sink(c)
        and any("loss" in code_of(a.value).lower() for a in c.node.args) | _shows_loss_dict(index, c)
    ]
    ranked = sorted(lines, key=lambda c: (c.line < step.line, -c.line))
    return Sink(ranked[0], None, step=step) if ranked else None


PROGRESS_BARS = ("tqdm", "trange")


def bar_sink(edits: Edits, index: UnitIndex, step: CallSite) -> Sink | None:
    """The progress bar the loop around the optimizer step iterates (``with trange(total) as pbar:
    for step in pbar:``, ``pbar = tqdm(loader)``) when nothing shows the loss: the curves become its
    postfix, shown at each step (the innermost such loop)."""
    aliases = edits.tree(step.path).with_aliases(step.node)
    for loop in reversed(step.loops):
        name = loop.iter
        made = aliases.get(name)
        if made is None and name.isidentifier():
            built = [a for a in assignments_of(index, name, step.function, step.line) if a.path == step.path]
            made = built[-1].value if built else None
        if isinstance(made, cst.Call) and dotted(made.func).rsplit(".", 1)[-1] in PROGRESS_BARS:
            return Sink(step, None, step=step, bar=name)
    return None


def _shows_loss_dict(index: UnitIndex, call: CallSite) -> bool:
    """``progress_bar.set_postfix(**logs)`` where ``logs = {"loss": ...}``."""
    shown = _logged_dict(index, call)
    return shown is not None and "loss" in code_of(shown).lower()


def emit(edits: Edits, sink: Sink, curves: list[Curve]) -> None:
    """Log ``curves`` through ``sink``: one ``add_scalar`` per curve after the last one of the block,
    or new entries in the logged dict (as Python floats: tensors are not JSON), or a progress line of
    their own. A conditional curve gets its own sink call under its condition."""
    if sink.bar:
        _emit_postfix(edits, sink, curves)
    elif sink.text:
        _emit_text(edits, sink, curves)
    elif sink.entries is None:
        _emit_scalars(edits, sink, curves)
    else:
        _emit_entries(edits, sink, curves)


def _emit_scalars(edits: Edits, sink: Sink, curves: list[Curve]) -> None:
    """One ``add_scalar`` per curve, after the last ``add_scalar`` that follows the loss's."""
    path = sink.call.path
    module = edits.module(path)
    statement = edits.statement_of(sink.call)
    add_scalar = m.SimpleStatementLine(body=[m.Expr(value=m.Call(func=m.Attribute(attr=m.Name("add_scalar"))))])
    siblings = [s for s in edits.tree(path).following(statement) if m.matches(s, add_scalar)]
    step = sink.call.arg(2, "global_step")
    new: list[cst.BaseStatement] = []
    for curve in curves:
        call = (
            f"{sink.call.receiver}.add_scalar({curve.tag(sink, sink.call.arg(0, 'tag'))}, {{value}}"
            f"{', {step}' if step is not None else ''})"
        )
        lines = [*curve.setup, *template_statements(module, call, value=curve.value, step=step)]
        new += (
            curve.conditional.when_present(module, lines, sink.call, "the loss is logged")
            if curve.conditional is not None
            else lines
        )
    edits.insert_after(path, siblings[-1] if siblings else statement, new)


def _emit_entries(edits: Edits, sink: Sink, curves: list[Curve]) -> None:
    """New entries in the dict the loss is logged with; a conditional curve gets its own call."""
    path = sink.call.path
    module = edits.module(path)
    statement = edits.statement_of(sink.call)
    plain = [c for c in curves if c.conditional is None]
    sample = next((e.key for e in sink.entries.elements if isinstance(e, cst.DictElement)), None)
    # before the dict is built: ``logs = {...}`` may come lines before ``accelerator.log(logs)``
    built = edits.tree(path).statement(sink.entries)
    edits.insert_before(path, built, [s for curve in plain for s in curve.setup])

    def extend(node: cst.Dict, curves: list[Curve]) -> cst.Dict:
        return _with_entries(node, curves, lambda curve: curve.tag(sink, sample))

    if plain:
        edits.replace(path, sink.entries, lambda node: extend(node, plain))
    held = _dict_variable(sink)
    for curve in curves:
        if curve.conditional is None:
            continue
        if held is not None:  # ``logs = {...}`` then ``accelerator.log(logs)``: the entry is added before
            entry = f"{held}[{curve.tag(sink, sample)}] = {{value}}"
            lines = [*curve.setup, *template_statements(module, entry, value=_as_float(curve.value))]
            edits.insert_before(
                path, statement, curve.conditional.when_present(module, lines, sink.call, "the loss is logged")
            )
            continue
        if not any(a.value is sink.entries for a in sink.call.node.args):
            raise CannotFix(
                sink.call.path,
                sink.call.line,
                f"a curve exists only when `{curve.conditional.conditions[0]}`, and the metrics are logged as one dict",
                MONITORING_PATCH,
            )
        own = sink.call.node.with_changes(
            args=[
                a.with_changes(value=extend(cst.Dict([]), [curve])) if a.value is sink.entries else a
                for a in sink.call.node.args
            ]
        )
        lines = [*curve.setup, cst.SimpleStatementLine(body=[cst.Expr(own)])]
        edits.insert_after(
            path, statement, curve.conditional.when_present(module, lines, sink.call, "the loss is logged")
        )


def _as_float(value: cst.BaseExpression) -> cst.Call:
    """``float(value)``: a logged tensor as a plain number (tensors are not JSON)."""
    return cst.Call(cst.Name("float"), [cst.Arg(value)])


def _with_entries(node: cst.Dict, curves: list[Curve], tag) -> cst.Dict:
    """``node`` with a ``tag(curve): float(value)`` entry per curve after its last one."""
    for curve in curves:
        node = insert_dict_element(node, len(node.elements) - 1, cst.SimpleString(tag(curve)), _as_float(curve.value))
    return node


TEXT_FORMATS = {"grad_norm": "{float(%s):.4g}", "lr": "{%s:.3g}"}


def _emit_text(edits: Edits, sink: Sink, curves: list[Curve]) -> None:
    """A line of its own beside the loss's: after it when the loss is shown after the optimizer step,
    else right after the step (the gradient norm exists only from there). A progress bar's
    description gets the curves as its postfix (``set_postfix_str``), not a new description."""
    path, call = sink.call.path, sink.call
    module = edits.module(path)
    anchor = _step_after(edits, sink) or edits.statement_of(call)
    if call.method == "set_postfix":
        _extend_postfix(edits, sink, curves, anchor)
        return
    if call.method in ("set_description", "set_postfix_str"):
        postfixes = [c for c in edits.ctx.index.method_calls("set_postfix") if c.receiver == call.receiver]
        if postfixes:
            raise CannotFix(
                call.path,
                call.line,
                f"`{call.receiver}` shows a postfix of its own that a new one would replace; "
                "show the curves there by hand",
                MONITORING_PATCH,
            )
        func = f"{call.receiver}.set_postfix_str"
    else:
        func = call.func_text
    new: list[cst.BaseStatement] = []
    plain = [c for c in curves if c.conditional is None]
    if plain:
        new += [s for c in plain for s in c.setup] + [_text_line(module, func, plain)]
    for curve in curves:
        if curve.conditional is not None:
            lines = [*curve.setup, _text_line(module, func, [curve])]
            new += curve.conditional.when_present(module, lines, call, "the loss is shown")
    edits.insert_after(path, anchor, new)


def _extend_postfix(edits: Edits, sink: Sink, curves: list[Curve], anchor) -> None:
    """``pbar.set_postfix(loss=...)`` after the optimizer step gets the curves as keywords (or entries of
    the dict it shows): a second postfix would replace the loss's."""
    call = sink.call
    dict_arg = next((a for a in call.node.args if isinstance(a.value, cst.Dict)), None)
    held = dict_arg.value if dict_arg is not None else _logged_dict(edits.ctx.index, call)  # ``**logs``
    name = next((dotted(a.value) for a in call.node.args if a.star == "**" and dotted(a.value)), None)
    plain = [c for c in curves if c.conditional is None]
    guarded = [c for c in curves if c.conditional is not None]
    if anchor is not edits.statement_of(call) or (guarded and (dict_arg is not None or held is None or not name)):
        raise CannotFix(
            call.path,
            call.line,
            "the loss is shown with `set_postfix` before the optimizer step (or a curve exists only under a "
            "condition and the postfix is not a dict held in a variable); show the curves there by hand",
            MONITORING_PATCH,
        )
    edits.insert_before(call.path, anchor, [s for c in plain for s in c.setup])
    if held is not None:
        if plain:
            edits.replace(call.path, held, lambda node: _with_entries(node, plain, lambda curve: f'"{curve.name}"'))
        module = edits.module(call.path)
        for curve in guarded:  # ``if args.use_clip_grad: logs["grad_norm"] = float(grad_norm)`` before the postfix
            entry = template_statements(module, f'{name}["{curve.name}"] = {{value}}', value=_as_float(curve.value))
            lines = curve.conditional.when_present(module, [*curve.setup, *entry], call, "the loss is shown")
            edits.insert_before(call.path, anchor, lines)
        return
    keywords = [keyword(c.name, _as_float(c.value)) for c in curves]
    edits.replace(call.path, call.node, lambda node: node.with_changes(args=[*node.args, *keywords]))


def _emit_postfix(edits: Edits, sink: Sink, curves: list[Curve]) -> None:
    """``pbar.set_postfix(grad_norm=..., lr=...)`` right after the optimizer step, on the bar the loop
    iterates. A curve that exists only under a condition would need a second postfix, which replaces
    the first: refused."""
    step = sink.call
    guarded = next((c for c in curves if c.conditional is not None), None)
    if guarded is not None:
        raise CannotFix(
            step.path,
            step.line,
            f"`{guarded.name}` exists only under a condition and the progress bar shows one postfix; "
            "show the curves by hand",
            MONITORING_PATCH,
        )
    keywords = ", ".join(f"{c.name}={{{c.name}}}" for c in curves)
    shown = template_statements(
        edits.module(step.path), f"{sink.bar}.set_postfix({keywords})", **{c.name: _as_float(c.value) for c in curves}
    )
    edits.insert_after(step.path, edits.statement_of(step), [*(s for c in curves for s in c.setup), *shown])


def _text_line(module: cst.Module, func: str, curves: list[Curve]) -> cst.BaseStatement:
    parts = []
    for curve in curves:
        value = code_of(curve.value).strip()
        shown = TEXT_FORMATS.get(curve.name, "{float(%s):.3g}") % value
        parts.append(f"{curve.name} {shown}")
    body = ", ".join(parts)
    quote = "'" if '"' in body else '"'
    return template_statements(module, f"{func}(f{quote}{body}{quote})")[0]


def _step_after(edits: Edits, sink: Sink):
    """The optimizer-step statement to log after, when the loss line comes before the step (in the
    same block, or in a loop nested in it: never under an ``if`` the step is not under). None when
    the line comes after the step."""
    step = sink.logged_at
    if step is sink.call:
        return None
    tree = edits.tree(step.path)
    step_stmt = edits.statement_of(step)
    block = tree.block(step_stmt)
    line_stmt = edits.statement_of(sink.call)
    outer = tree.enclosing_in(line_stmt, block)
    if outer is None or (
        outer is not line_stmt and any(isinstance(a, cst.If) for a in _between(tree, line_stmt, outer))
    ):
        raise CannotFix(
            sink.call.path,
            sink.call.line,
            "the loss is shown before the optimizer step under a condition the step is not under; "
            "show the gradient norm after the step by hand",
            MONITORING_PATCH,
        )
    return step_stmt


def _between(tree, node, outer) -> list:
    found = []
    for ancestor in tree.ancestors(node):
        found.append(ancestor)
        if ancestor is outer:
            break
    return found
