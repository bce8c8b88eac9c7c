"""Training monitoring (the plan's "Monitor TensorBoard" notes).

Three cheap curves tell whether the optimizations work: the gradient norm (is
clipping active, is training stable), the learning rate (is the warm-up and decay
what you planned) and, with an EMA, the distance between the EMA and the live
weights (is the EMA following the model or stuck at its initialisation).

A value counts as logged when it reaches a metrics sink: TensorBoard
``add_scalar(s)``, ``wandb.log``, ``accelerator.log`` / tracker ``.log``, Lightning
``self.log`` / ``self.log_dict``, improved-diffusion ``logger.logkv(_mean)``,
MLflow ``log_metric(s)``, a JSON-lines metrics file; ``print`` and text loggers do
not count. Also recognised: ``wandb.watch`` and Lightning's ``grad_norm`` /
``track_grad_norm`` (gradients), ``LearningRateMonitor`` (learning rate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import libcst as cst
import libcst.matchers as m

from optimizer_tool.codemod import Edits, is_call_statement, module_name
from optimizer_tool.contract import Applicability, CannotFix, Fix, FixContext, Hit, Rule
from optimizer_tool.cstedit import insert_dict_element, string_literal, template_expression, template_statements
from optimizer_tool.edit.ema import ema_target
from optimizer_tool.findings import Severity
from optimizer_tool.index import UNKNOWN, CallSite, FunctionInfo, UnitIndex, dotted, literal
from optimizer_tool.knowledge.ema import EMA_NAME, ema_facts
from optimizer_tool.knowledge.lr_schedule import schedule_facts
from optimizer_tool.semantics import (
    assignments_of,
    clip_calls,
    expanded_names,
    expression_nodes,
    has_role,
    is_lightning,
    lightning_configured_elsewhere,
    lr_scheduler_steps,
    memo,
    optimizer_steps,
    stepped_optimizer,
    trained_model,
    trains,
)

KEY = "monitoring"
TITLE = "Gradient-norm, learning-rate and EMA monitoring"
ORDER = 100  # place in the checklist: the plan's order

SINK_METHODS = {
    "add_scalar",
    "add_scalars",
    "log",
    "log_dict",
    "log_metrics",
    "log_metric",
    "logkv",
    "logkv_mean",
    "record",
    "record_metric",
    "record_metrics",
    "log_scalar",
    "log_scalars",
    "track",
    "log_stats",
}
NOT_SINKS = re.compile(r"^(torch|numpy|np|math|jax|scipy)\.|\.log_softmax$|\.log1p$|\.log2$|\.log10$")
GRAD_NORM = re.compile(r"grad(ient)?s?_?norm|total_norm|gnorm|norm_?grad|grad_l2|grad_?stats", re.I)
GRAD_NORM_CALLS = re.compile(
    r"(^|\.)(get_total_norm|grad_norm|_compute_norms|compute_grad_norm|get_grad_norm|global_norm)$"
)
LR_NAME = re.compile(r"(^|[._])(lr|lrs|learning_rate|current_lr|cur_lr|lr_now|last_lr)$", re.I)
LR_KEY = re.compile(r"(^|[/_\s.:-])(lr|learning[_ ]?rate)($|[/_\s.:\-\d])", re.I)
EMA_DIFF_KEY = re.compile(
    r"ema.*(diff|drift|dist|delta|gap|deviation|norm)|(diff|drift|dist|delta|gap|deviation).*ema", re.I
)
DISTANCE_CALLS = re.compile(
    r"(^|\.)(norm|dist|sub|sub_|mse_loss|l1_loss|pairwise_distance|cosine_similarity|vector_norm|abs)$"
)


@dataclass
class Logged:
    """One value that reaches a metrics sink."""

    key: str | None
    node: cst.BaseExpression
    function: FunctionInfo | None
    line: int
    site: CallSite


def is_sink(call: CallSite) -> bool:
    if call.method not in SINK_METHODS or not call.node.args:
        return False
    if any(NOT_SINKS.search(n) for n in call.names):
        return False
    return bool(call.receiver) or call.method != "log"


def _json_sinks(index: UnitIndex) -> list[CallSite]:
    """``f.write(json.dumps({...}) + "\\n")`` and ``json.dump({...}, f)``: a metrics file."""
    return [c for c in index.calls if c.matches(("json.dumps", "json.dump")) and c.args]


def logged_values(index: UnitIndex) -> list[Logged]:
    return memo(index, "monitoring.logged", lambda: _logged_values(index))


def _logged_values(index: UnitIndex) -> list[Logged]:
    found: list[Logged] = []
    for call in index.calls:
        if is_sink(call):
            found.extend(_items_of_call(index, call))
    for call in _json_sinks(index):
        found.extend(_items(index, call.args[0].value, None, call))
    return found


def _items_of_call(index: UnitIndex, call: CallSite) -> Iterator[Logged]:
    args = [a for a in call.node.args if not a.star]
    positional = [a.value for a in args if a.keyword is None]
    if call.method in (
        "add_scalar",
        "log_metric",
        "logkv",
        "logkv_mean",
        "log_scalar",
        "record_metric",
        "record",
        "track",
    ) or (call.method == "log" and positional and isinstance(literal(positional[0]), str) and len(positional) > 1):
        key = literal(positional[0]) if positional else None
        value = call.arg(1, "scalar_value") if call.method == "add_scalar" else call.arg(1, "value")
        if value is None and len(positional) > 1:
            value = positional[1]
        if value is not None:
            yield Logged(key if isinstance(key, str) else None, value, call.function, call.line, call)
        return
    for arg in call.node.args:
        if arg.star == "**":
            yield from _items(index, arg.value, None, call)
        elif arg.keyword is None or arg.keyword.value in (
            "metrics",
            "values",
            "tag_scalar_dict",
            "data",
            "row",
            "stats",
            "dictionary",
        ):
            if isinstance(arg.value, (cst.SimpleString, cst.ConcatenatedString)):
                continue
            yield from _items(index, arg.value, None, call)
        elif arg.keyword is not None and arg.keyword.value not in (
            "step",
            "global_step",
            "commit",
            "prog_bar",
            "on_step",
            "on_epoch",
            "sync_dist",
            "logger",
            "batch_size",
            "walltime",
            "rank_zero_only",
        ):
            yield Logged(arg.keyword.value, arg.value, call.function, call.line, call)


def _items(index: UnitIndex, node, key: str | None, call: CallSite, depth: int = 0) -> Iterator[Logged]:
    """The (key, value) pairs a logged expression carries: dict literals, dict variables filled by
    ``logs["k"] = v`` / ``logs.update(...)``, a dict handed in as a parameter of the sink's function."""
    if node is None or depth > 3:
        return
    function = call.function
    if isinstance(node, cst.Dict):
        for element in node.elements:
            if isinstance(element, cst.DictElement):
                k = literal(element.key)
                yield Logged(k if isinstance(k, str) else None, element.value, function, call.line, call)
            elif isinstance(element, cst.StarredDictElement):
                yield from _items(index, element.value, None, call, depth + 1)
        return
    if isinstance(node, cst.Call) and dotted(node.func) == "dict":
        for arg in node.args:
            if arg.keyword is not None:
                yield Logged(arg.keyword.value, arg.value, function, call.line, call)
            else:
                yield from _items(index, arg.value, None, call, depth + 1)
        return
    name = dotted(node)
    if name:
        assigned = assignments_of(index, name, function, None)
        filled = [
            i
            for i in index.item_assigns
            if i.container == name and (i.function == function or name.startswith("self."))
        ]
        updates = [
            c
            for c in index.calls
            if c.method == "update" and c.receiver == name and (c.function == function or name.startswith("self."))
        ]
        for assign in assigned:
            yield from _items(index, assign.value, None, _at(call, assign.function), depth + 1)
        for item in filled:
            yield Logged(item.key if isinstance(item.key, str) else None, item.value, item.function, item.line, call)
        for update in updates:
            for arg in update.node.args:
                if arg.keyword is not None:
                    yield Logged(arg.keyword.value, arg.value, update.function, update.line, call)
                else:
                    yield from _items(index, arg.value, None, _at(call, update.function), depth + 1)
        if function is not None and name in function.params and not (assigned or filled or updates):
            yield from _from_callers(index, function, name, call, depth)
            return
        if assigned or filled or updates:
            return
    yield Logged(key, node, function, call.line, call)


def _at(call: CallSite, function) -> CallSite:
    """The sink, seen from the function where a logged dict was built (for local name resolution)."""
    if function == call.function:
        return call
    clone = CallSite(
        call.path,
        call.node,
        call.line,
        call.col,
        call.func_text,
        call.qualnames,
        function,
        call.guards,
        call.no_grad,
        call.loop_depth,
        call.with_items,
    )
    return clone


def _from_callers(index: UnitIndex, function: FunctionInfo, param: str, call: CallSite, depth: int) -> Iterator[Logged]:
    params = list(function.params)
    position = params.index(param) - (1 if params and params[0] in ("self", "cls") else 0)
    for caller in index.calls:
        if (caller.method or caller.func_text) != function.name or caller.function == function:
            continue
        value = caller.kwarg(param)
        if value is None and 0 <= position < len(caller.args):
            value = caller.args[position].value
        if value is not None:
            yield from _items(index, value, None, _at(call, caller.function), depth + 1)


def _facts(index: UnitIndex, item: Logged) -> tuple[set[str], bool]:
    """Names the logged value is computed from, and whether that computation takes a difference."""
    names = expanded_names(index, item.node, item.function, None)
    nodes = [item.node] + [a.value for n in names for a in assignments_of(index, n, item.function, None)[-3:]]
    has_difference = any(
        isinstance(n, cst.BinaryOperation)
        and isinstance(n.operator, cst.Subtract)
        or isinstance(n, cst.Call)
        and DISTANCE_CALLS.search(dotted(n.func) or "")
        for node in nodes
        for n in expression_nodes(node)
    )
    return names, has_difference


def _constant(item: Logged) -> bool:
    return literal(item.node) is not UNKNOWN


def grad_norm_logged(index: UnitIndex) -> bool:
    clips = clip_calls(index)
    clip_lines = {(c.path, c.line) for c in clips}
    returned = {a.target for a in index.assigns if (a.path, a.line) in clip_lines}
    for watch in index.calls_to("wandb.watch", "*.watch"):
        if watch.kwarg("log") is None or literal(watch.kwarg("log")) in ("gradients", "all"):
            return True
    if any(c.kwarg("track_grad_norm") is not None for c in index.calls):
        return True
    for item in logged_values(index):
        names, _ = _facts(index, item)
        if names & returned or any(
            GRAD_NORM.search(n) or GRAD_NORM_CALLS.search(n) or n.endswith(".grad") for n in names
        ):
            return True
        if item.key and GRAD_NORM.search(item.key) and not _constant(item):
            return True
    return False


def lr_logged(index: UnitIndex) -> bool:
    if any(c.method == "LearningRateMonitor" or c.func_text.endswith("LearningRateMonitor") for c in index.calls):
        return True
    for item in logged_values(index):
        names, _ = _facts(index, item)
        if any(
            n.rsplit(".", 1)[-1] in ("get_last_lr", "get_lr", "param_groups") or n == '["lr"]' or LR_NAME.search(n)
            for n in names
        ):
            return True
        if item.key and LR_KEY.search(item.key) and not _constant(item):
            return True
    return False


def ema_drift_logged(index: UnitIndex) -> bool:
    ema_names = set(ema_facts(index).names)
    ema_leaves = {n.rsplit(".", 1)[-1] for n in ema_names}
    for item in logged_values(index):
        names, has_difference = _facts(index, item)
        refers = any(
            n in ema_names
            or n.rsplit(".", 1)[-1] in ema_leaves
            or EMA_NAME.search(n.rsplit(".", 1)[-1])
            or n.endswith("shadow")
            for n in names
        )
        if refers and has_difference:
            return True
        if item.key and EMA_DIFF_KEY.search(item.key) and not _constant(item):
            return True
    return False


class _Monitoring(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return trains(index) and not lightning_configured_elsewhere(index)


class GradNormNotLogged(_Monitoring):
    code = "MON001"
    severity = Severity.MISSING
    title = "gradient norm logged"
    message = "the gradient norm is never logged, so instabilities and the effect of clipping stay invisible"
    explain = """
    The global gradient norm is the first curve to look at when a diffusion run diverges or stalls, and the
    only way to see whether clipping is active. `clip_grad_norm_` (torch and accelerate) already returns it:
    `grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)` then `writer.add_scalar("train/grad_norm",
    grad_norm, step)` / `accelerator.log({"grad_norm": grad_norm.item()}, step=step)`. In Lightning log
    `lightning.pytorch.utilities.grad_norm(self, norm_type=2)` in `on_before_optimizer_step`.
    """
    VALID = [
        "import torch\nfrom torch.utils.tensorboard import SummaryWriter\nwriter = SummaryWriter()\nfor step, x in enumerate(data):\n    loss = model(x)\n    loss.backward()\n    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.step()\n    writer.add_scalar('train/grad_norm', grad_norm, step)\n",
        # improved-diffusion: computed by hand, logged with logkv_mean
        "import numpy as np\nfrom . import logger\nclass TrainLoop:\n    def _log_grad_norm(self):\n        sqsum = 0.0\n        for p in self.master_params:\n            sqsum += (p.grad ** 2).sum().item()\n        logger.logkv_mean('grad_norm', np.sqrt(sqsum))\n    def optimize_normal(self):\n        self._log_grad_norm()\n        self.opt.step()\n    def forward_backward(self, batch):\n        loss = self.model(batch)\n        loss.backward()\n",
        "import wandb\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    norm = accelerator.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.step()\n    logs = {'loss': loss.item()}\n    logs['gn'] = norm.item()\n    wandb.log(logs)\n",
    ]
    INVALID = [
        # the reference pattern: the norm clip_grad_norm_ returns is thrown away
        "import torch\nfrom torch.utils.tensorboard import SummaryWriter\nwriter = SummaryWriter()\nfor step, x in enumerate(data):\n    loss = model(x)\n    loss.backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    lr = optimizer.param_groups[0]['lr']\n    optimizer.step()\n    writer.add_scalar('train/loss', loss.item(), step)\n    writer.add_scalar('train/lr', lr, step)\n",
        # printed only
        "for step, x in enumerate(data):\n    loss = model(x)\n    loss.backward()\n    grad_norm = accelerator.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.step()\n    print(f'step {step} grad norm {grad_norm}')\n    accelerator.log({'train_loss': loss.item()}, step=step)\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if grad_norm_logged(index):
            return
        returned_lines = {(a.path, a.line) for a in index.assigns}
        discarded = [c for c in clip_calls(index) if (c.path, c.line) not in returned_lines]
        if discarded:
            c = discarded[0]
            yield Hit.at(
                c,
                f"the gradient norm is never logged: `{c.func_text}()` returns it, but the value is discarded; log it to see instabilities and whether clipping is active",
            )
            return
        anchor = (optimizer_steps(index) or [None])[0]
        if anchor is not None:
            yield Hit.at(anchor)
        else:
            fn = index.functions_named("training_step", "configure_optimizers")[0]
            yield Hit(fn.path, fn.line, 1)


class LrNotLogged(_Monitoring):
    code = "MON002"
    severity = Severity.MISSING
    title = "learning rate logged"
    message = "the learning rate is never logged, so you cannot check that the warm-up and decay do what you planned"
    explain = """
    A schedule is easy to get wrong (stepped per epoch instead of per step, a warm-up longer than the run,
    a resumed run restarting the schedule). Logging `lr_scheduler.get_last_lr()[0]` or
    `optimizer.param_groups[0]["lr"]` next to the loss makes such mistakes visible at a glance; in Lightning
    add the `LearningRateMonitor` callback. Only judged when the learning rate changes during training.
    """
    VALID = [
        "import torch\nfrom torch.utils.tensorboard import SummaryWriter\nwriter = SummaryWriter()\nsched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)\nfor step, x in enumerate(data):\n    loss = model(x)\n    loss.backward()\n    optimizer.step()\n    sched.step()\n    writer.add_scalar('train/lr', sched.get_last_lr()[0], step)\n",
        "from diffusers.optimization import get_scheduler\nlr_scheduler = get_scheduler('cosine', optimizer=optimizer, num_warmup_steps=500, num_training_steps=10000)\nfor step, batch in enumerate(loader):\n    loss = model(batch)\n    accelerator.backward(loss)\n    optimizer.step()\n    lr_scheduler.step()\n    logs = {'loss': loss.detach().item(), 'lr': lr_scheduler.get_last_lr()[0]}\n    progress_bar.set_postfix(**logs)\n    accelerator.log(logs, step=step)\n",
    ]
    INVALID = [
        # diffusers train_text_to_image: the lr only reaches the progress bar
        "from diffusers.optimization import get_scheduler\nlr_scheduler = get_scheduler('cosine', optimizer=optimizer, num_warmup_steps=500, num_training_steps=10000)\nfor step, batch in enumerate(loader):\n    loss = model(batch)\n    accelerator.backward(loss)\n    optimizer.step()\n    lr_scheduler.step()\n    accelerator.log({'train_loss': loss.item()}, step=step)\n    logs = {'step_loss': loss.detach().item(), 'lr': lr_scheduler.get_last_lr()[0]}\n    progress_bar.set_postfix(**logs)\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and schedule_facts(index).present

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if lr_logged(index):
            return
        steps = lr_scheduler_steps(index)
        if steps:
            yield Hit.at(steps[0])
            return
        sched = next((s for s in schedule_facts(index).top if not s.constant), None)
        if sched is not None:
            yield Hit(sched.path, sched.line, sched.col)


class EmaDriftNotLogged(_Monitoring):
    code = "MON003"
    severity = Severity.MISSING
    title = "EMA drift logged"
    message = "the distance between the EMA and the live weights is never logged, so an EMA stuck at its initial weights (or updated too rarely) goes unnoticed"
    explain = """
    An EMA that is never updated, updated too rarely or with a horizon longer than the run stays close to the
    random initial weights, and samples drawn from it look like noise long after the model has learned. Log the
    mean absolute difference between EMA and model parameters every few hundred steps (the plan's
    `ema/param_difference`): it should grow early and then settle. Only judged when the trainer keeps an EMA.
    """
    VALID = [
        "import copy, torch\nfrom torch.utils.tensorboard import SummaryWriter\nwriter = SummaryWriter()\nema = copy.deepcopy(model)\nfor step, x in enumerate(data):\n    loss = model(x)\n    loss.backward()\n    optimizer.step()\n    update_ema(ema, model)\n    diff = sum((e - m).abs().mean() for e, m in zip(ema.parameters(), model.parameters()))\n    writer.add_scalar('ema/param_difference', diff, step)\n",
    ]
    INVALID = [
        "import copy, torch\nfrom torch.utils.tensorboard import SummaryWriter\nwriter = SummaryWriter()\nema = copy.deepcopy(model)\nfor step, x in enumerate(data):\n    loss = model(x)\n    loss.backward()\n    optimizer.step()\n    update_ema(ema, model)\n    writer.add_scalar('train/loss', loss.item(), step)\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        return trains(index) and bool(ema_facts(index).objects)

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if ema_drift_logged(index):
            return
        facts = ema_facts(index)
        if facts.updates:
            in_loop = [u for u in facts.updates if u.loop_depth > 0]
            yield Hit.at((in_loop or facts.updates)[0])
        else:
            obj = facts.objects[0]
            yield Hit(obj.path, obj.line, obj.col)


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

    @property
    def prefix(self) -> str:
        return self.key.rsplit("/", 1)[0] + "/" if self.key and "/" in self.key else ""


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
                "no optimizer step whose network can be traced; log the gradient norm, the learning rate and the EMA drift by hand",
                MONITORING_PATCH,
            )
        sink = loss_sink(index, trained.step)
        if sink is None:
            raise CannotFix(
                where.path,
                where.line,
                f"no metrics sink (SummaryWriter.add_scalar, accelerator.log, wandb.log, a JSON-lines file) logs the loss in `{trained.step.function.name if trained.step.function else 'the training loop'}`; add one, then run the fix again",
                MONITORING_PATCH,
            )
        edits = Edits(ctx)
        codes = {f.code for f in findings}
        curves: list[Curve] = []
        if "MON001" in codes and not grad_norm_logged(index):
            curves.append(Curve("grad_norm", self.grad_norm(index, trained, sink, edits)))
        if "MON002" in codes and not lr_logged(index):
            curves.append(Curve("lr", template_expression(edits.module(sink.call.path), lr_expression(index, trained))))
        if "MON003" in codes and not ema_drift_logged(index):
            curves.append(self.ema_drift(index, trained, sink, edits))
        if not curves:
            return
        emit(edits, sink, curves)
        edits.apply()

    def grad_norm(self, index: UnitIndex, trained, sink: Sink, edits: Edits) -> cst.BaseExpression:
        """``grad_norm``: what the clipping call returns (captured where it is discarded), or the
        norm computed right before the optimizer step."""
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
                return cst.parse_expression(captured)
            statement = edits.statement_of(clip)
            if is_call_statement(statement, clip.node):
                edits.replace(
                    clip.path,
                    statement,
                    lambda node: node.with_changes(
                        body=[cst.Assign(targets=[cst.AssignTarget(cst.Name("grad_norm"))], value=node.body[0].value)]
                    ),
                )
                return cst.Name("grad_norm")
        if index.method_calls("unscale_") or any(has_role(index, c.receiver, "scaler") for c in optimizer_steps(index)):
            unscale = next((c for c in index.method_calls("unscale_") if c.function == step.function), None)
            if unscale is None:
                raise CannotFix(
                    step.path,
                    step.line,
                    "gradients are scaled by a GradScaler and never unscaled before the step, so their norm is meaningless; call scaler.unscale_(optimizer) first",
                    MONITORING_PATCH,
                )
            edits.insert_after(
                step.path,
                edits.statement_of(unscale),
                _with_torch(edits, index, step.path, GRAD_NORM_TEMPLATE, model=trained.name),
            )
        else:
            edits.insert_before(
                step.path,
                edits.statement_of(step),
                _with_torch(edits, index, step.path, GRAD_NORM_TEMPLATE, model=trained.name),
            )
        return cst.Name("grad_norm")

    def ema_drift(self, index: UnitIndex, trained, sink: Sink, edits: Edits) -> Curve:
        """``ema_drift``: the mean absolute difference between averaged and live weights, computed
        where the loss is logged (under the EMA's own ``if``, when it is created under one)."""
        target = ema_target(index, trained.name)
        obj = ema_facts(index).objects[0]
        if target is None or target.api.drift is None:
            raise CannotFix(
                obj.path,
                obj.line,
                f"cannot tell how to read the averaged weights of `{obj.target}`; log the mean absolute difference to the live weights by hand",
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
            if not inline or sink.call.matches(("json.dumps", "json.dump")):
                raise CannotFix(
                    sink.call.path,
                    sink.call.line,
                    f"`{target.name}` only exists when `{target.conditions[0]}`, and the metrics are logged as one dict",
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
"""


LIGHTNING_PATCH = """\
from lightning.pytorch.callbacks import LearningRateMonitor  # Trainer(callbacks=[LearningRateMonitor("step")])
from lightning.pytorch.utilities import grad_norm

def on_before_optimizer_step(self, optimizer):
    self.log_dict(grad_norm(self, norm_type=2))

# in training_step, with the EMA:
self.log("ema/param_difference", torch.stack([(e - p).abs().mean() for e, p in zip(ema.parameters(), self.model.parameters())]).mean())
"""


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


def lr_expression(index: UnitIndex, trained) -> str:
    """The learning rate the optimizer uses: the schedule's last value, else the first param group's."""
    steps = [s for s in lr_scheduler_steps(index) if s.path == trained.step.path]
    if steps:
        return f"{steps[0].receiver}.get_last_lr()[0]"
    return f'{stepped_optimizer(trained.step)}.param_groups[0]["lr"]'


def _with_torch(edits: Edits, index: UnitIndex, path, template: str, **values: str) -> list[cst.BaseStatement]:
    """``template`` (written with ``torch.``) as statements of ``path``, spelled with the file's own
    name for torch (imported when missing)."""
    torch = module_name(edits, index, path, "torch")
    return template_statements(edits.module(path), template.replace("torch.", f"{torch}."), **values)


def emit(edits: Edits, sink: Sink, curves: list[Curve]) -> None:
    """Log ``curves`` through ``sink``: one ``add_scalar`` per curve after the last one of the block,
    or new entries in the logged dict (as Python floats: tensors are not JSON). A conditional curve
    gets its own sink call under its condition."""
    path = sink.call.path
    module = edits.module(path)
    statement = edits.statement_of(sink.call)
    plain = [c for c in curves if c.conditional is None]
    if sink.entries is None:
        siblings = [
            s
            for s in edits.tree(path).following(statement)
            if m.matches(
                s, m.SimpleStatementLine(body=[m.Expr(value=m.Call(func=m.Attribute(attr=m.Name("add_scalar"))))])
            )
        ]
        step = sink.call.arg(2, "global_step")
        new: list[cst.BaseStatement] = []
        for curve in curves:
            lines = [
                *curve.setup,
                *template_statements(
                    module,
                    f"{sink.call.receiver}.add_scalar({curve.tag(sink, sink.call.arg(0, 'tag'))}, {{value}}{', {step}' if step is not None else ''})",
                    value=curve.value,
                    step=step,
                ),
            ]
            new += (
                curve.conditional.when_present(module, lines, sink.call, "the loss is logged")
                if curve.conditional is not None
                else lines
            )
        edits.insert_after(path, siblings[-1] if siblings else statement, new)
        return
    sample = next((e.key for e in sink.entries.elements if isinstance(e, cst.DictElement)), None)
    edits.insert_before(path, statement, [s for curve in plain for s in curve.setup])

    def extend(node: cst.Dict, curves: list[Curve]) -> cst.Dict:
        for curve in curves:
            node = insert_dict_element(
                node,
                len(node.elements) - 1,
                cst.SimpleString(curve.tag(sink, sample)),
                cst.Call(cst.Name("float"), [cst.Arg(curve.value)]),
            )
        return node

    if plain:
        edits.replace(path, sink.entries, lambda node: extend(node, plain))
    for curve in curves:
        if curve.conditional is None:
            continue
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
