"""An EMA exists and is updated once per optimizer step, after the step, with a horizon that fits
the run (EMA001-005)."""

from __future__ import annotations

import re
from typing import Iterable

from optimizer_tool.contract import Hit, Rule
from optimizer_tool.findings import Severity, State
from optimizer_tool.index import CallSite, UnitIndex, code_of, literal
from optimizer_tool.knowledge.ema import UPDATE_METHODS, EmaFacts, ema_facts, library_ema_calls, possible_update
from optimizer_tool.knowledge.training import names_in, optimizer_steps, run_length
from optimizer_tool.rules.ema.base import EmaBug, gates

WARMUP_SETTINGS = (
    "use_ema_warmup",
    "ema_warmup",
    "inv_gamma",
    "ema_inv_gamma",
    "update_after_step",
    "ema_update_after_step",
    "ema_warmup_steps",
    "warmup",
)


class NoEma(Rule):
    code = "EMA001"
    severity = Severity.MISSING
    title = "EMA of the weights is kept"
    message = (
        "no exponential moving average of the weights: EMA is the cheapest sample-quality gain a diffusion model has"
    )
    generic_message = (
        "no exponential moving average of the weights: evaluating an EMA of the weights is a cheap, common gain"
    )
    explain = """
    Diffusion models sample much better from an exponential moving average of their weights than from
    the raw, noisy weights of the last step (DDPM, ADM, Stable Diffusion and DiT all sample from EMA).
    Keep an EMA (torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn, diffusers EMAModel,
    ema_pytorch.EMA or the project's own helper), update it once per optimizer step, save it in the
    checkpoint and sample with it. `t2s-opt apply --only ema` adds all of that.
    """
    VALID = [
        "import copy\n"
        "ema = copy.deepcopy(model)\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    opt.step()\n"
        "    update_ema(ema, model)\n",
    ]
    INVALID = ["for x in data:\n    loss = model(x)\n    loss.backward()\n    optimizer.step()\n"]

    def applies(self, index: UnitIndex) -> bool:
        return bool(optimizer_steps(index)) or bool(index.functions_named("training_step"))

    def when_passed(self, index: UnitIndex) -> tuple[State, str] | None:
        if ema_facts(index).objects or library_ema_calls(index):
            return None
        call = _unseen_ema(index)[0]
        root = call.receiver.split(".", 1)[0]
        # the function, or the one enclosing its closure, receives it: BigGAN's ``GAN_training_function(G,
        # D, GD, z_, y_, ema, state_dict, config)`` returning ``train``: the caller builds it, or passes none
        holder = next(
            (
                f
                for f in index.functions
                if f.path == call.path and f.line <= call.line <= f.end_line and root in f.passed_params
            ),
            None,
        )
        if holder is not None:
            return (
                State.ELSEWHERE,
                f"`{call.receiver}` is updated as an EMA ({call.path.name}:{call.line}) and handed in as a parameter"
                f" of {holder.name}(): whoever calls it builds the EMA (or passes none)",
            )
        return (
            State.UNKNOWN,
            f"`{call.receiver}` is updated as an EMA ({call.path.name}:{call.line}) but built outside the code the"
            " entry reaches (a base class or package this check does not read): whether and how it averages the"
            " weights is not seen",
        )

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if ema_facts(index).objects or library_ema_calls(index) or _unseen_ema(index):
            return
        anchor = (optimizer_steps(index) or [None])[0]
        if anchor is not None:
            yield Hit.at(anchor)
        else:
            fn = index.functions_named("training_step")[0]
            yield Hit(fn.path, fn.line, 1)


UNSEEN_EMA = re.compile(r"(^|[._])ema(_model)?$", re.I)


def _unseen_ema(index: UnitIndex) -> list[CallSite]:
    """``self.ema.update()`` on an object no code of the unit builds: the EMA of a base class from an
    installed package (fluent-pose-synthesis' trainer on CAMDM's ``BaseTrainingPortal``)."""
    return [
        c
        for c in index.method_calls(*UPDATE_METHODS)
        if UNSEEN_EMA.search(c.receiver) and not index.assigns_to(c.receiver)
    ]


class EmaNeverUpdated(EmaBug):
    code = "EMA002"
    severity = Severity.BUG
    title = "EMA is updated during training"
    message = "the EMA is created but never updated, so it stays a copy of the initial weights"
    explain = """
    An EMA that is never stepped holds the weights it was created from; sampling with it gives noise.
    Call its update (`ema.update()`, `ema_model.step(model.parameters())`, `ema.update_parameters(model)`)
    once after every optimizer step.
    """
    INVALID = [
        "import copy\nema = copy.deepcopy(model)\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n"
    ]
    VALID = NoEma.VALID

    def applies(self, index: UnitIndex) -> bool:
        """Judged only on a complete trace: an EMA whose parameters are iterated next to in-place
        arithmetic, or that is handed to a function, may be updated there."""
        facts = ema_facts(index)
        return super().applies(index) and (bool(facts.updates) or possible_update(index, facts) is None)

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = ema_facts(index)
        if not facts.updates:
            yield Hit(facts.objects[0].path, facts.objects[0].line, facts.objects[0].col)


class EmaUpdateOrder(EmaBug):
    code = "EMA003"
    severity = Severity.BUG
    title = "EMA updated after the optimizer step, once per step"
    message = (
        "the EMA is updated before optimizer.step() or on every micro-step of gradient accumulation, "
        "so it averages stale or repeated weights"
    )
    explain = """
    The EMA must follow the weights the optimizer just produced: update it after `optimizer.step()`,
    and with gradient accumulation only when an optimizer step really happened (inside the same
    `if (step + 1) % accumulation == 0:` or `if accelerator.sync_gradients:` block). Updating on
    every micro-step shortens the averaging horizon by the accumulation factor and averages the
    same weights several times.
    """
    INVALID = [
        "import copy\n"
        "ema = copy.deepcopy(model)\n"
        "for i, x in enumerate(data):\n"
        "    loss(x).backward()\n"
        "    update_ema(ema, model)\n"
        "    if (i + 1) % 8 == 0:\n"
        "        optimizer.step()\n",
        "import copy\n"
        "ema = copy.deepcopy(model)\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    update_ema(ema, model)\n"
        "    optimizer.step()\n",
    ]
    VALID = [
        "import copy\n"
        "ema = copy.deepcopy(model)\n"
        "for i, x in enumerate(data):\n"
        "    loss(x).backward()\n"
        "    if (i + 1) % 8 == 0:\n"
        "        optimizer.step()\n"
        "        update_ema(ema, model)\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        steps = optimizer_steps(index)
        for update in ema_facts(index).updates:
            if not _per_step_weight_update(update):
                continue
            # a GAN's loop steps the generator, updates its EMA, then steps the discriminator
            # (LlamaGen's VQGAN): an update that follows an optimizer step of its loop is after "its" step
            follows = any(
                update.same_scope(s)
                and s.loop_depth == update.loop_depth
                and (s.line, s.col) < (update.line, update.col)
                for s in steps
            )
            for step in steps:
                if update.same_scope(step):
                    yield from self._misplaced(update, step, follows)

    def _misplaced(self, update: CallSite, step: CallSite, follows: bool = False) -> Iterable[Hit]:
        if (
            not follows
            and (update.line, update.col) < (step.line, step.col)
            and update.loop_depth == step.loop_depth
            and set(update.guards) >= set(step.guards)
        ):
            yield Hit.at(
                update,
                f"the EMA is updated before {step.func_text}() (line {step.line}): "
                "it averages the weights of the previous step",
            )
        elif (
            _accumulation_guarded(step)
            and not any(g in update.guards for g in step.guards if "%" in g or "sync_gradients" in g)
            and not gates(update)
            and not _after_micro_loop(update, step)
        ):
            gate = next((g for g in reversed(step.guards) if "%" in g or "sync_gradients" in g), step.guards[-1])
            yield Hit.at(
                update,
                f"the EMA is updated on every micro-step while {step.func_text}() only steps under `{gate}`: "
                "update it inside the same block",
            )
        elif any(
            "accelerator.accumulate" in w or w.endswith(".accumulate(model)") for w in step.with_items
        ) and not any("sync_gradients" in g for g in update.guards):
            yield Hit.at(
                update,
                "inside accelerator.accumulate() the EMA must be updated only `if accelerator.sync_gradients:`, "
                "else it steps on every micro-step",
            )


def _per_step_weight_update(update: CallSite) -> bool:
    """Only a recurring average of the weights is judged: not a call before the loop, not an
    average of a loss statistic (``loss_ema.update(loss.item())``). The one-off copy with a decay
    of 0 (DiT's ``update_ema(ema, model, decay=0)``) is no update at all (``copies_weights``)."""
    if update.loop_depth == 0:
        return False
    read = {name for arg in update.node.args for name in names_in(arg.value)}
    return not any("loss" in name.lower() or name == "item" for name in read)


def _accumulation_guarded(step: CallSite) -> bool:
    return bool(gates(step)) or any("sync_gradients" in g for g in step.guards)


def _after_micro_loop(update: CallSite, step: CallSite) -> bool:
    """The step's accumulation gate tests the variable of a micro-batch loop that the update is not in
    (``for i in range(accum): ... if (i + 1) % accum == 0: opt.step()`` then the update after the loop):
    the update runs once per optimizer step."""
    inner = [loop for loop in step.loops if loop not in update.loops]
    targets = {t.strip() for loop in inner for t in loop.target.strip("()").split(",") if t.strip()}
    conditions = gates(step)
    return (
        bool(targets)
        and bool(conditions)
        and all(any(re.search(rf"(?<![\w.]){re.escape(t)}(?!\w)", g) for t in targets) for g in conditions)
    )


class EmaGatedTwice(EmaBug):
    code = "EMA004"
    severity = Severity.BUG
    title = "EMA update gated once"
    message = (
        "the EMA is gated twice (its own update_every and a `step % N` condition), "
        "so it updates N times less often than intended"
    )
    explain = """
    Helpers like the plan's `EMA(model, update_every=10)` or ema_pytorch's `EMA(update_every=10)` already
    skip updates internally. Wrapping the call in `if global_step % 10 == 0:` as well makes the real
    interval 100 steps, and with decay 0.9999 the average spans a million steps. Gate once.
    """
    INVALID = [
        "from utils.ema import EMA\n"
        "ema = EMA(model, decay=0.9999, update_every=10)\n"
        "for step, x in enumerate(data):\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    if step % 10 == 0:\n"
        "        ema.update()\n",
    ]
    VALID = [
        "from utils.ema import EMA\n"
        "ema = EMA(model, decay=0.9999, update_every=10)\n"
        "for step, x in enumerate(data):\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    ema.update()\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = ema_facts(index)
        every = _update_every(index, facts)
        if every is None or every <= 1:
            return
        for update in facts.updates:
            if gates(update) and update.method in UPDATE_METHODS:
                yield Hit.at(
                    update,
                    f"the EMA is created with update_every={every} and its update is also gated by "
                    f"`{gates(update)[-1]}`: it updates far less often than intended",
                )


def _update_every(index: UnitIndex, facts: EmaFacts) -> int | None:
    for obj in facts.objects:
        if obj.call is not None:
            value = literal(obj.call.kwarg("update_every"))
            if isinstance(value, int):
                return value
    return None


def _decay(index: UnitIndex, facts: EmaFacts) -> float | None:
    for obj in facts.objects:
        if obj.call is not None:
            for name in ("decay", "beta", "power"):
                value = literal(obj.call.kwarg(name))
                if isinstance(value, float) and name != "power":
                    return value
    for update in facts.updates:
        for arg in update.node.args:
            value = literal(arg.value)
            if isinstance(value, float) and 0.9 <= value < 1:
                return value
    if any(_computed_rate(update) for update in facts.updates):
        return None  # ``accumulate(g_ema, g_module, accum)``: the rate is computed, not a setting
    for setting in index.setting("ema_decay", "ema_rate", "decay", "ema_beta", "ema_max_decay"):
        value = setting.value
        if isinstance(value, str):
            value = _first_float(value)
        if isinstance(value, float) and 0.9 <= value < 1:
            return value
    return None


def _computed_rate(update: CallSite) -> bool:
    """An update handed its rate as an expression (a third positional argument or a rate keyword
    that is not a literal number): the decay is whatever that computes."""
    rate = update.kwarg("decay") or update.kwarg("rate") or update.kwarg("beta")
    if rate is None and len(update.args) >= 3:
        rate = update.args[2].value
    return rate is not None and not isinstance(literal(rate), (int, float))


def _first_float(text: str) -> float | None:
    try:
        return float(text.split(",")[0])
    except ValueError:
        return None


class EmaHorizonTooLong(EmaBug):
    code = "EMA005"
    severity = Severity.BUG
    title = "EMA horizon fits the run"
    message = (
        "the EMA averages over more steps than the run has, without a warm-up, so it stays close to the initial weights"
    )
    explain = """
    An EMA with decay d updated every k steps averages over about k / (1 - d) optimizer steps:
    0.9999 every 10 steps is ~100,000 steps. When the run is shorter (or its length is unknown
    and the horizon is that long), the EMA is dominated by the random initial weights. Use a
    decay warm-up (diffusers `use_ema_warmup`, ema_pytorch's default warm-up, `min(decay, (1 + n) / (10 + n))`)
    or a decay that fits the run.
    """
    INVALID = [
        "from utils.ema import EMA\n"
        "ema = EMA(model, decay=0.9999, update_every=10)\n"
        "max_train_steps = 5000\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    ema.update()\n",
    ]
    VALID = [
        "from utils.ema import EMA\n"
        "ema = EMA(model, decay=0.999, update_every=1)\n"
        "max_train_steps = 50000\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    ema.update()\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = ema_facts(index)
        decay = _decay(index, facts)
        if decay is None:
            return
        gate = 1
        for update in facts.updates:
            for guard in gates(update):
                match = re.search(r"%\s*(\d+)", guard)
                if match:
                    gate = max(gate, int(match.group(1)))
        horizon = int(round((_update_every(index, facts) or 1) * gate / (1 - decay)))
        warm = any(
            s.value not in (False, None, 0) for s in index.setting(*WARMUP_SETTINGS) if s.known and s.kind != "dict"
        )
        if warm or any("min(" in code_of(o.value) for o in facts.objects):
            return
        total = run_length(index)
        obj = facts.objects[0]
        if total is not None and horizon > total[0]:
            yield Hit(
                obj.path,
                obj.line,
                obj.col,
                f"the EMA averages over ~{horizon:,} optimizer steps but the run has {total[0]:,} "
                f"(line {total[1].line}); add a decay warm-up or lower the decay",
            )
        elif total is None and horizon >= 50_000:
            yield Hit(
                obj.path,
                obj.line,
                obj.col,
                f"the EMA averages over ~{horizon:,} optimizer steps with no warm-up: "
                "longer than many runs, so it stays near the initial weights",
            )
