"""What a trainer logs: metrics sinks, the values that reach them, and whether the gradient norm,
the learning rate and the EMA drift are among them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

import libcst as cst

from optimizer_tool.index import UNKNOWN, CallSite, FunctionInfo, UnitIndex, dotted, literal
from optimizer_tool.knowledge.configured import expanded_names, expression_nodes
from optimizer_tool.knowledge.ema import EMA_NAME, ema_facts
from optimizer_tool.knowledge.guards import switched_off
from optimizer_tool.knowledge.training import assignments_of, clip_calls, memo, reached

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


TEXT_SINKS = ("print", "info", "debug", "warning", "write", "set_description", "set_postfix", "set_postfix_str")


def is_text_sink(call: CallSite) -> bool:
    """A line of text a person reads: ``print(f"... {loss:.4f}")``, ``logger.info(...)``, a progress bar's
    ``set_description``/``set_postfix``, ``tqdm.write``; not a file's ``write`` of non-text."""
    name = call.method or call.func_text
    if name not in TEXT_SINKS or not call.node.args or any(NOT_SINKS.search(n) for n in call.names):
        return False
    if name in ("print", "set_postfix"):
        return True
    return any(isinstance(a.value, (cst.FormattedString, cst.ConcatenatedString, cst.Call)) for a in call.node.args)


def _text_items(index: UnitIndex, call: CallSite) -> Iterator[Logged]:
    """The values a text line shows, keyed by the words before them (``f"grad_norm {g:.3f}"``: ``grad_norm``);
    a progress bar's postfix dict by its keys (``set_postfix(**logs)``, entries added by ``logs["k"] = v``)."""
    for arg in call.node.args:
        if arg.keyword is not None:  # ``set_postfix(loss=...)``; print's ``sep=``/``file=`` show nothing
            if call.method == "set_postfix":
                yield Logged(arg.keyword.value, arg.value, call.function, call.line, call)
            continue
        if call.method == "set_postfix":
            yield from _items(index, arg.value, None, call)
            continue
        for node in expression_nodes(arg.value):
            if isinstance(node, cst.FormattedString):
                words = None
                for part in node.parts:
                    if isinstance(part, cst.FormattedStringText):
                        words = part.value.strip(" :=,|/-")
                    else:
                        yield Logged(words or None, part.expression, call.function, call.line, call)
                        words = None
        if not isinstance(arg.value, (cst.FormattedString, cst.ConcatenatedString, cst.SimpleString)):
            yield Logged(None, arg.value, call.function, call.line, call)


def text_lines(index: UnitIndex) -> list[Logged]:
    """What the unit's text lines inside loops show (the gradient norm printed each step is logged too;
    a line printed once before training shows settings, not curves)."""
    return memo(
        index,
        "monitoring.text",
        lambda: [
            i
            for c in index.calls
            if c.loop_depth > 0 and is_text_sink(c) and reached(index, c.function)
            for i in _text_items(index, c)
        ],
    )


def shown_values(index: UnitIndex) -> list[Logged]:
    """What reaches a metrics sink; for a unit that has none, what its progress lines show (curves
    belong in the tracker when there is one: a learning rate shown only on the progress bar of a
    TensorBoard-logged run is not logged)."""
    return logged_values(index) or text_lines(index)


def _json_sinks(index: UnitIndex) -> list[CallSite]:
    """``f.write(json.dumps({...}) + "\\n")`` and ``json.dump({...}, f)``: a metrics file."""
    return [c for c in index.calls if c.matches(("json.dumps", "json.dump")) and c.args]


def logged_values(index: UnitIndex) -> list[Logged]:
    return memo(index, "monitoring.logged", lambda: _logged_values(index))


def _logged_values(index: UnitIndex) -> list[Logged]:
    """What the sinks of code that runs when the unit trains log: a trainer class of an imported
    module that the entry never builds (torchcfm's ``MixedPrecisionTrainer``) logs nothing."""
    found: list[Logged] = []
    for call in index.calls:
        if is_sink(call) and reached(index, call.function):
            found.extend(_items_of_call(index, call))
    for call in _json_sinks(index):
        if reached(index, call.function):
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
    for caller, value in index.passed_to(function, param):
        yield from _items(index, value, None, _at(call, caller.function), depth + 1)


def _facts(index: UnitIndex, item: Logged, depth: int = 3) -> tuple[set[str], bool]:
    """Names the logged value is computed from (``depth`` assignments back), and whether that
    computation takes a difference."""
    names = expanded_names(index, item.node, item.function, None, depth)
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
        if switched_off(index, watch.guards) is not None:
            continue  # open_clip: ``if args.debug: wb.watch(model, log='all')``
        if watch.kwarg("log") is None or literal(watch.kwarg("log")) in ("gradients", "all"):
            return True
    if any(c.kwarg("track_grad_norm") is not None for c in index.calls):
        return True
    for item in shown_values(index):
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
    for item in shown_values(index):
        # the value itself or what it was just read from (``lr = scheduler.get_last_lr()[0]``): deeper, a
        # clipped grad norm reaches the optimizer's ``lr=args.generator_lr`` (DMD2)
        names, _ = _facts(index, item, depth=1)
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
    for item in shown_values(index):
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
