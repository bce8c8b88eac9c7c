"""Exponential moving average of the weights (plan priority 1).

An EMA of the weights is the cheapest quality gain a diffusion model has, but
only when it is updated once per optimizer step, with a horizon that fits the
run, saved with the checkpoints, restored on resume and actually used to
sample. Recognised: the project's own helper (``utils.ema.EMA``), diffusers
``EMAModel``, ``ema_pytorch.EMA``, ``torch.optim.swa_utils.AveragedModel``,
timm ``ModelEmaV2/V3``, ``deepcopy`` copies updated by a hand-written
lerp / ``mul_().add_()`` loop (DiT, openai TrainLoop).
"""

from __future__ import annotations

import ast
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import libcst as cst
import libcst.matchers as m

from optimizer_tool.codemod import Edits, ensure_setting, guarded, is_call_statement, module_name, settings_home, split_docstring
from optimizer_tool.cstedit import (
    insert_dict_element,
    string_literal,
    template_expression,
    template_statements,
    with_comment,
    with_keyword,
    without_comment,
)
from optimizer_tool.findings import Severity
from optimizer_tool.index import UNKNOWN, Assign, CallSite, UnitIndex, code_of, dotted, literal
from optimizer_tool.project import SKIP_DIRS
from optimizer_tool.rules.base import CannotFix, Fix, FixContext, Hit, Rule
from optimizer_tool.semantics import (
    CHECKPOINT_READS,
    CHECKPOINT_WRITES,
    NOT_SAMPLING,
    SAMPLING_FUNCTION,
    _is_ema_class,
    assignments_of,
    calls_in_functions_with,
    has_role,
    is_lightning,
    memo,
    mentions,
    module_imports,
    names_in,
    optimizer_steps,
    ordered_nodes,
    run_length,
    same_object,
    sampling_functions,
    trained_model,
)

KEY = "ema"
TITLE = "EMA of the weights"
SAFE_FIX = True

EMA_NAME = re.compile(r"(^|_)(ema|emas|ema_model|model_ema|ema_unet|ema_net|ema_params|ema_helper|averaged_model|swa_model)(_|$)", re.I)
NOT_AN_EMA = re.compile(r"rate|decay|beta|every|steps?$|warmup|power|use_|enable|start|after|flag|path|dir|file", re.I)
UPDATE_METHODS = {"update", "step", "update_parameters", "update_ema", "update_average"}
UPDATE_FUNCTION = re.compile(r"(^|_)(update_?ema|ema_?update|ema_?step|step_?ema|update_average|update_moving_average)(_|$)", re.I)
IN_PLACE_AVERAGE = {"lerp_", "mul_", "add_", "_foreach_lerp_", "_foreach_mul_", "_foreach_add_"}
SWAP_IN = {"apply_shadow", "copy_to", "store", "swap", "swap_params"}
SAMPLE_LOOPS = {"p_sample_loop", "ddim_sample_loop", "p_sample_loop_progressive", "ddim_sample_loop_progressive", "sample_loop"}
SAMPLING_CALL = re.compile(r"^(sample|samples|generate|p_sample_loop|ddim_sample_loop|forward_with_cfg)$|sample", re.I)
MODEL_PARAMETER = re.compile(r"^(model|unet|net|denoiser|network|model_fn|fn|\w*_model|model_\w*|ema\w*|transformer)$")
WARMUP_SETTINGS = ("use_ema_warmup", "ema_warmup", "inv_gamma", "ema_inv_gamma", "update_after_step", "ema_update_after_step", "ema_warmup_steps", "warmup")


@dataclass
class EmaFacts:
    objects: list[Assign]
    updates: list[CallSite]
    aliases: list[str] = field(default_factory=list)  # EMA-named wrappers of an EMA: ``model_ema = Denoiser(inner_model_ema)``

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([*(a.target for a in self.objects), *self.aliases]))


def ema_facts(index: UnitIndex) -> EmaFacts:
    """The unit's EMA objects and updates (computed once per index: every EMA and monitoring rule asks)."""
    return memo(index, "ema.facts", lambda: _ema_facts(index))


def _ema_facts(index: UnitIndex) -> EmaFacts:
    objects = [a for a in index.assigns if _is_ema_object(index, a)]
    names = {a.target for a in objects}
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    updates = []
    for call in index.calls:
        receiver_leaf = call.receiver.rsplit(".", 1)[-1]
        on_ema = call.receiver in names or (call.receiver and receiver_leaf in leaves)
        if on_ema and call.method in UPDATE_METHODS:
            updates.append(call)
        elif call.func_text in names:  # LitEma-style: ``self.model_ema(self.model)`` updates
            updates.append(call)
        elif UPDATE_FUNCTION.search(call.method or call.func_text) and (call.function is None or not UPDATE_FUNCTION.search(call.function.name)):
            updates.append(call)
        elif call.method in IN_PLACE_AVERAGE and (EMA_NAME.search(_first_arg_or_receiver(call)) or (call.function and UPDATE_FUNCTION.search(call.function.name))):
            updates.append(call)
    return EmaFacts(objects, updates, _ema_aliases(index, objects, names))


def _ema_aliases(index: UnitIndex, objects: list[Assign], names: set[str]) -> list[str]:
    """EMA-named objects built from an EMA (k-diffusion's ``model_ema = make_denoiser_wrapper(config)(inner_model_ema)``):
    sampling with, saving or loading them uses the EMA weights."""
    aliases: list[str] = []
    for assign in index.assigns:
        leaf = assign.target.rsplit(".", 1)[-1]
        if assign in objects or assign.target in names or not EMA_NAME.search(leaf) or NOT_AN_EMA.search(leaf):
            continue
        if names_in(assign.value) & names:
            aliases.append(assign.target)
    return aliases


def _first_arg_or_receiver(call: CallSite) -> str:
    text = call.receiver.rsplit(".", 1)[-1]
    if call.args:
        text += " " + code_of(call.args[0].value)
    return text


def _is_ema_object(index: UnitIndex, assign: Assign) -> bool:
    leaf = assign.target.rsplit(".", 1)[-1]
    if NOT_AN_EMA.search(leaf):
        return False
    value_code = code_of(assign.value)
    if _injected_ema(assign, leaf, value_code):
        return True
    if "(" not in value_code:  # ``use_ema = False``, ``self.ema = None``: nothing is built
        return False
    if assign.call is not None and has_role(index, assign.target, "ema") and assign.call.names & _ema_constructor_names(index, assign):
        return True
    return bool(EMA_NAME.search(leaf)) and ("deepcopy" in value_code or "EMA" in value_code or "Ema" in value_code or "Averaged" in value_code or "copy" in value_code or "clone" in value_code)


def _injected_ema(assign: Assign, leaf: str, value_code: str) -> bool:
    """An EMA handed to a trainer class by its caller: ``self.ema_model = ema_model`` where
    ``ema_model`` is a parameter of the enclosing function (built by the script that calls it)."""
    name = value_code.strip()
    return (
        assign.function is not None
        and name.isidentifier()
        and name in assign.function.params
        and bool(EMA_NAME.search(name))
        and not NOT_AN_EMA.search(name)
        and bool(EMA_NAME.search(leaf))
    )


def _ema_constructor_names(index: UnitIndex, assign: Assign) -> frozenset[str]:
    return assign.call.names if assign.call is not None else frozenset()


def _gates(call: CallSite) -> list[str]:
    return [g for g in call.guards if "%" in g]


def _accumulation_guarded(step: CallSite) -> bool:
    return bool(_gates(step)) or any("sync_gradients" in g for g in step.guards)


def _after_micro_loop(update: CallSite, step: CallSite) -> bool:
    """The step's accumulation gate tests the variable of a micro-batch loop that the update is not in
    (``for i in range(accum): ... if (i + 1) % accum == 0: opt.step()`` then the update after the loop):
    the update runs once per optimizer step."""
    inner = [loop for loop in step.loops if loop not in update.loops]
    targets = {t.strip() for loop in inner for t in loop.target.strip("()").split(",") if t.strip()}
    gates = [g for g in step.guards if "%" in g]
    return bool(targets) and bool(gates) and all(any(re.search(rf"(?<![\w.]){re.escape(t)}(?!\w)", g) for t in targets) for g in gates)


class NoEma(Rule):
    code = "EMA001"
    severity = Severity.MISSING
    title = "EMA of the weights is kept"
    message = "no exponential moving average of the weights: EMA is the cheapest sample-quality gain a diffusion model has"
    explain = """
    Diffusion models sample much better from an exponential moving average of their weights than from
    the raw, noisy weights of the last step (DDPM, ADM, Stable Diffusion and DiT all sample from EMA).
    Keep an EMA (torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn, diffusers EMAModel,
    ema_pytorch.EMA or the project's own helper), update it once per optimizer step, save it in the
    checkpoint and sample with it. `t2s-opt apply --only ema` adds all of that.
    """
    VALID = [
        "import copy\nema = copy.deepcopy(model)\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    update_ema(ema, model)\n",
    ]
    INVALID = ["for x in data:\n    loss = model(x)\n    loss.backward()\n    optimizer.step()\n"]

    def applies(self, index: UnitIndex) -> bool:
        return bool(optimizer_steps(index)) or bool(index.functions_named("training_step"))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if ema_facts(index).objects:
            return
        anchor = (optimizer_steps(index) or [None])[0]
        if anchor is not None:
            yield Hit.at(anchor)
        else:
            fn = index.functions_named("training_step")[0]
            yield Hit(fn.path, fn.line, 1)


class _EmaBug(Rule):
    """Bug rules judge an EMA that exists."""

    def applies(self, index: UnitIndex) -> bool:
        return bool(ema_facts(index).objects)


class EmaNeverUpdated(_EmaBug):
    code = "EMA002"
    severity = Severity.BUG
    title = "EMA is updated during training"
    message = "the EMA is created but never updated, so it stays a copy of the initial weights"
    explain = """
    An EMA that is never stepped holds the weights it was created from; sampling with it gives noise.
    Call its update (`ema.update()`, `ema_model.step(model.parameters())`, `ema.update_parameters(model)`)
    once after every optimizer step.
    """
    INVALID = ["import copy\nema = copy.deepcopy(model)\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n"]
    VALID = NoEma.VALID

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = ema_facts(index)
        if not facts.updates:
            yield Hit(facts.objects[0].path, facts.objects[0].line, facts.objects[0].col)


class EmaUpdateOrder(_EmaBug):
    code = "EMA003"
    severity = Severity.BUG
    title = "EMA updated after the optimizer step, once per step"
    message = "the EMA is updated before optimizer.step() or on every micro-step of gradient accumulation, so it averages stale or repeated weights"
    explain = """
    The EMA must follow the weights the optimizer just produced: update it after `optimizer.step()`,
    and with gradient accumulation only when an optimizer step really happened (inside the same
    `if (step + 1) % accumulation == 0:` or `if accelerator.sync_gradients:` block). Updating on
    every micro-step shortens the averaging horizon by the accumulation factor and averages the
    same weights several times.
    """
    INVALID = [
        "import copy\nema = copy.deepcopy(model)\nfor i, x in enumerate(data):\n    loss(x).backward()\n    update_ema(ema, model)\n    if (i + 1) % 8 == 0:\n        optimizer.step()\n",
        "import copy\nema = copy.deepcopy(model)\nfor x in data:\n    loss(x).backward()\n    update_ema(ema, model)\n    optimizer.step()\n",
    ]
    VALID = [
        "import copy\nema = copy.deepcopy(model)\nfor i, x in enumerate(data):\n    loss(x).backward()\n    if (i + 1) % 8 == 0:\n        optimizer.step()\n        update_ema(ema, model)\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        steps = optimizer_steps(index)
        for update in ema_facts(index).updates:
            for step in steps:
                if not update.same_scope(step):
                    continue
                if (update.line, update.col) < (step.line, step.col) and update.loop_depth == step.loop_depth and set(update.guards) >= set(step.guards):
                    yield Hit.at(update, f"the EMA is updated before {step.func_text}() (line {step.line}): it averages the weights of the previous step")
                elif _accumulation_guarded(step) and not any(g in update.guards for g in step.guards if "%" in g or "sync_gradients" in g) and not _gates(update) and not _after_micro_loop(update, step):
                    gate = next((g for g in reversed(step.guards) if "%" in g or "sync_gradients" in g), step.guards[-1])
                    yield Hit.at(update, f"the EMA is updated on every micro-step while {step.func_text}() only steps under `{gate}`: update it inside the same block")
                elif any("accelerator.accumulate" in w or w.endswith(".accumulate(model)") for w in step.with_items) and not any("sync_gradients" in g for g in update.guards):
                    yield Hit.at(update, "inside accelerator.accumulate() the EMA must be updated only `if accelerator.sync_gradients:`, else it steps on every micro-step")


class EmaGatedTwice(_EmaBug):
    code = "EMA004"
    severity = Severity.BUG
    title = "EMA update gated once"
    message = "the EMA is gated twice (its own update_every and a `step % N` condition), so it updates N times less often than intended"
    explain = """
    Helpers like the plan's `EMA(model, update_every=10)` or ema_pytorch's `EMA(update_every=10)` already
    skip updates internally. Wrapping the call in `if global_step % 10 == 0:` as well makes the real
    interval 100 steps, and with decay 0.9999 the average spans a million steps. Gate once.
    """
    INVALID = [
        "from utils.ema import EMA\nema = EMA(model, decay=0.9999, update_every=10)\nfor step, x in enumerate(data):\n    loss(x).backward()\n    optimizer.step()\n    if step % 10 == 0:\n        ema.update()\n",
    ]
    VALID = [
        "from utils.ema import EMA\nema = EMA(model, decay=0.9999, update_every=10)\nfor step, x in enumerate(data):\n    loss(x).backward()\n    optimizer.step()\n    ema.update()\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = ema_facts(index)
        every = _update_every(index, facts)
        if every is None or every <= 1:
            return
        for update in facts.updates:
            if _gates(update) and update.method in UPDATE_METHODS:
                yield Hit.at(update, f"the EMA is created with update_every={every} and its update is also gated by `{_gates(update)[-1]}`: it updates far less often than intended")


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
    for setting in index.setting("ema_decay", "ema_rate", "decay", "ema_beta", "ema_max_decay"):
        value = setting.value
        if isinstance(value, str):
            value = _first_float(value)
        if isinstance(value, float) and 0.9 <= value < 1:
            return value
    return None


def _first_float(text: str) -> float | None:
    try:
        return float(text.split(",")[0])
    except ValueError:
        return None


class EmaHorizonTooLong(_EmaBug):
    code = "EMA005"
    severity = Severity.BUG
    title = "EMA horizon fits the run"
    message = "the EMA averages over more steps than the run has, without a warm-up, so it stays close to the initial weights"
    explain = """
    An EMA with decay d updated every k steps averages over about k / (1 - d) optimizer steps:
    0.9999 every 10 steps is ~100,000 steps. When the run is shorter (or its length is unknown
    and the horizon is that long), the EMA is dominated by the random initial weights. Use a
    decay warm-up (diffusers `use_ema_warmup`, ema_pytorch's default warm-up, `min(decay, (1 + n) / (10 + n))`)
    or a decay that fits the run.
    """
    INVALID = [
        "from utils.ema import EMA\nema = EMA(model, decay=0.9999, update_every=10)\nmax_train_steps = 5000\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    ema.update()\n",
    ]
    VALID = [
        "from utils.ema import EMA\nema = EMA(model, decay=0.999, update_every=1)\nmax_train_steps = 50000\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    ema.update()\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = ema_facts(index)
        decay = _decay(index, facts)
        if decay is None:
            return
        gate = 1
        for update in facts.updates:
            for guard in _gates(update):
                match = re.search(r"%\s*(\d+)", guard)
                if match:
                    gate = max(gate, int(match.group(1)))
        horizon = int(round((_update_every(index, facts) or 1) * gate / (1 - decay)))
        warm = any(s.value not in (False, None, 0) for s in index.setting(*WARMUP_SETTINGS) if s.known and s.kind != "dict")
        if warm or any("min(" in code_of(o.value) for o in facts.objects):
            return
        total = run_length(index)
        obj = facts.objects[0]
        if total is not None and horizon > total[0]:
            yield Hit(obj.path, obj.line, obj.col, f"the EMA averages over ~{horizon:,} optimizer steps but the run has {total[0]:,} (line {total[1].line}); add a decay warm-up or lower the decay")
        elif total is None and horizon >= 50_000:
            yield Hit(obj.path, obj.line, obj.col, f"the EMA averages over ~{horizon:,} optimizer steps with no warm-up: longer than many runs, so it stays near the initial weights")


class _EmaWithFunctions(_EmaBug):
    """EMA present and the trainer has the functions this rule judges (checkpointing, sampling)."""

    patterns: tuple[str, ...] = ()

    def functions(self, index: UnitIndex) -> list:
        return calls_in_functions_with(index, self.patterns)

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and bool(self.functions(index))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        functions = self.functions(index)
        names = ema_facts(index).names
        if not any(mentions(index, functions, name) for name in names) and not self.handled_elsewhere(index, names):
            site = next(c for c in index.calls if c.function in functions and c.matches(self.patterns or ("*",))) if self.patterns else None
            if site is not None:
                yield Hit.at(site)
            else:
                fn = functions[0]
                yield Hit(fn.path, fn.line, 1)

    def handled_elsewhere(self, index: UnitIndex, names: list[str]) -> bool:
        return False


def _registered_for_checkpointing(index: UnitIndex, names: list[str]) -> bool:
    """accelerate: ``register_for_checkpointing(ema)`` or a save/load hook that handles the EMA."""
    hooks = [c for c in index.calls if c.method in {"register_for_checkpointing", "register_save_state_pre_hook", "register_load_state_pre_hook"}]
    hook_functions = [f for f in index.functions if any(code_of(a.value).strip() in (f.name,) for c in hooks for a in c.node.args)]
    return any(any(n in c.text for n in names) for c in hooks) or any(mentions(index, hook_functions, n) for n in names)


class EmaNotSaved(_EmaWithFunctions):
    code = "EMA006"
    severity = Severity.BUG
    title = "EMA saved in checkpoints"
    message = "checkpoints are written without the EMA weights, so the averaged model is lost when training stops"
    explain = """
    The EMA is the model you will sample from; it must be in every checkpoint (`"ema": ema.state_dict()`,
    `ema_model.save_pretrained(...)` in accelerate's save hook, or `accelerator.register_for_checkpointing(ema)`).
    """
    patterns = CHECKPOINT_WRITES
    INVALID = ["import copy, torch\nema = copy.deepcopy(model)\ndef save(path):\n    torch.save({'model': model.state_dict()}, path)\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    update_ema(ema, model)\n"]
    VALID = ["import copy, torch\nema = copy.deepcopy(model)\ndef save(path):\n    torch.save({'model': model.state_dict(), 'ema': ema.state_dict()}, path)\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    update_ema(ema, model)\n"]

    def handled_elsewhere(self, index: UnitIndex, names: list[str]) -> bool:
        return _registered_for_checkpointing(index, names)


class EmaNotRestored(_EmaWithFunctions):
    code = "EMA007"
    severity = Severity.BUG
    title = "EMA restored on resume"
    message = "resuming loads the model but not the EMA, so the average restarts from the current weights"
    explain = """
    When a run resumes from a checkpoint, load the EMA state too (`ema.load_state_dict(ckpt["ema"])`,
    `EMAModel.from_pretrained` in accelerate's load hook). Otherwise the resumed EMA silently restarts.
    """
    INVALID = ["import copy, torch\nema = copy.deepcopy(model)\ndef resume(path):\n    ckpt = torch.load(path)\n    model.load_state_dict(ckpt['model'])\n    optimizer.load_state_dict(ckpt['opt'])\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    update_ema(ema, model)\n"]
    VALID = [
        "import copy, torch\nema = copy.deepcopy(model)\ndef resume(path):\n    ckpt = torch.load(path)\n    model.load_state_dict(ckpt['model'])\n    optimizer.load_state_dict(ckpt['opt'])\n    ema.load_state_dict(ckpt['ema'])\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    update_ema(ema, model)\n",
        # Loading pretrained weights is not resuming: no optimizer state comes back.
        "import copy, torch\nema = copy.deepcopy(model)\nmodel.load_state_dict(torch.load('pretrained.pt'))\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    update_ema(ema, model)\n",
    ]

    def _resumes(self, index: UnitIndex) -> list:
        """Where a run resumes: the optimizer state (or accelerate's whole state) is loaded."""
        resumes = [c for c in index.method_calls("load_state_dict") if has_role(index, c.receiver, "optimizer")]
        return resumes + index.calls_to("*.load_state")

    def applies(self, index: UnitIndex) -> bool:
        return _EmaBug.applies(self, index) and bool(self._resumes(index))

    def functions(self, index: UnitIndex) -> list:
        return list(dict.fromkeys([*(c.function for c in self._resumes(index)), *calls_in_functions_with(index, CHECKPOINT_READS)]))

    def handled_elsewhere(self, index: UnitIndex, names: list[str]) -> bool:
        # improved-diffusion: ``self.ema_params = [self._load_ema_parameters(rate) ...]``
        loaders = [f for f in index.functions if "ema" in f.name.lower() and "load" in f.name.lower()]
        return _registered_for_checkpointing(index, names) or bool(loaders)


NETWORK_WORD = re.compile(r"(?<![\w])(model|unet|net|denoiser|transformer|network|pipeline|pipe|dit|\w+_model|model_\w+|\w+_net)(?!\w)", re.I)


def _runs_a_network(index: UnitIndex, function) -> bool:
    """A "sampling" function that calls a network (or another sampler): ``_sample_from_latent(latent)``,
    which only draws ``mean + std * randn``, generates nothing with the weights."""
    return any(NETWORK_WORD.search(c.text) or SAMPLING_CALL.search(c.method or c.func_text) or c.method in SAMPLE_LOOPS for c in index.calls_in(function))


class EmaNotUsedForSampling(_EmaBug):
    code = "EMA008"
    severity = Severity.BUG
    title = "samples drawn with the EMA weights"
    message = "samples are generated with the live weights instead of the EMA, which wastes the EMA's quality gain"
    explain = """
    The point of the EMA is to sample from it: pass the EMA model to the sampler, or swap its weights in
    (`ema.apply_shadow()` / `ema_unet.store(...); ema_unet.copy_to(...)`) and restore them afterwards.
    Sampler primitives that receive the model as a parameter (`p_sample_loop(model, ...)`,
    `log_validation(unet, ...)`) are judged where they are called, not where they are defined.
    """
    INVALID = [
        "import copy\nema = copy.deepcopy(model)\ndef generate_samples(n):\n    return sampler(model, n)\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    update_ema(ema, model)\n",
        "import copy\nema = copy.deepcopy(model)\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    update_ema(ema, model)\nsamples = diffusion.p_sample_loop(model.forward_with_cfg, shape)\n",
    ]
    VALID = [
        "import copy\nema = copy.deepcopy(model)\ndef generate_samples(n):\n    return sampler(ema, n)\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    update_ema(ema, model)\n",
        "import copy\nema = copy.deepcopy(model)\ndef p_sample_loop(model, shape):\n    return model(shape)\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    update_ema(ema, model)\nsamples = p_sample_loop(ema, shape)\n",
        "from ema_pytorch import EMA\nema = EMA(model)\nclass Diffusion:\n    def sample(self, n):\n        return self.model(n)\nfor x in data:\n    loss(x).backward()\n    opt.step()\n    ema.update()\nimages = ema.ema_model.sample(16)\n",
    ]

    def _sites(self, index: UnitIndex) -> list:
        """Sampling functions that use a fixed model, and sampler-loop calls outside them."""
        names = ema_facts(index).names
        pattern = re.compile("|".join(rf"(?<![\w.]){re.escape(n)}(?!\w)" for n in names))
        through_ema = [c for c in index.calls if (SAMPLING_CALL.search(c.method) or c.method in SAMPLE_LOOPS) and pattern.search(c.text)]
        swapped = [c for c in index.calls if c.method in SWAP_IN and c.receiver in names]
        if through_ema or swapped:
            return []
        functions = [f for f in sampling_functions(index) if not any(MODEL_PARAMETER.match(p) for p in f.params) and _runs_a_network(index, f)]
        sampler_names = {f.name for f in functions}
        # validation_step -> self.sample(): the callee is where the model is chosen.
        delegating = {c.function for c in index.calls if c.method in sampler_names and c.function is not None and c.function.name != c.method}
        sites = [f for f in functions if f not in delegating and not any(mentions(index, [f], n) for n in names)]
        sites += [c for c in index.calls if c.method in SAMPLE_LOOPS and c.function not in functions and not (c.function and any(MODEL_PARAMETER.match(p) for p in c.function.params))]
        return sites

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and (bool(sampling_functions(index)) or bool(index.method_calls(*SAMPLE_LOOPS)))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for site in self._sites(index)[:1]:
            yield Hit.at(site) if isinstance(site, CallSite) else Hit(site.path, site.line, 1)


class EmaSwapNotRestoredOnError(_EmaBug):
    code = "EMA009"
    severity = Severity.INFO
    title = "live weights restored after EMA sampling, even on error"
    message = "EMA weights are swapped into the model for sampling without a try/finally restore, so an error while sampling leaves training on the averaged weights"
    explain = """
    `ema.apply_shadow()` (or `store()` + `copy_to()`) replaces the live weights. Put the sampling in
    `try:` and `ema.restore()` in `finally:`; otherwise an exception during sampling (out of memory,
    a bad prompt) continues training from the EMA weights, or a missing restore never swaps back.
    """
    INVALID = [
        "from utils.ema import EMA\nema = EMA(model)\ndef generate_samples():\n    ema.apply_shadow()\n    out = sample(model)\n    ema.restore()\n    return out\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    ema.update()\n",
    ]
    VALID = [
        "from utils.ema import EMA\nema = EMA(model)\ndef generate_samples():\n    ema.apply_shadow()\n    try:\n        return sample(model)\n    finally:\n        ema.restore()\nfor x in data:\n    loss(x).backward()\n    optimizer.step()\n    ema.update()\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and bool(self._swaps(index))

    def _swaps(self, index: UnitIndex) -> list[CallSite]:
        names = set(ema_facts(index).names)
        return [c for c in index.calls if c.method in SWAP_IN and c.receiver in names]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        reported = set()
        for swap in self._swaps(index):
            restores = [c for c in index.calls_in(swap.function) if c.method == "restore" and c.receiver == swap.receiver]
            # No restore at all is the end-of-training copy into the model to save it (diffusers).
            if restores and not all(r.in_finally for r in restores) and swap.function not in reported:
                reported.add(swap.function)
                yield Hit.at(swap)


# --- the fix ------------------------------------------------------------------------------------
# ``t2s-opt apply --only ema``: adds an EMA where there is none, or repairs the one there is.
# Every anchor comes from the index: the optimizer step (``optimizer_steps``), the network it
# trains (``trained_model``), the checkpoint dict handed to ``torch.save``, the optimizer-state
# load of a resume, the sampling functions. Where one cannot be proven the fix raises CannotFix
# with the manual patch instead of guessing.
EMA_DECAY = 0.999  # ~1,000 optimizer steps of averaging, warmed up where the EMA supports it
EMA_DECAY_STEPS = round(1 / (1 - EMA_DECAY))
RUN_FRACTION = 10  # a known run length caps the horizon at a tenth of the run
STATE_SWAP_IN = ("live_weights = copy.deepcopy({model}.state_dict())", "{model}.load_state_dict({weights}.state_dict())")
STATE_SWAP_OUT = ("{model}.load_state_dict(live_weights)",)
WHY_EMA = "EMA of the weights: updated once per optimizer step, saved with the checkpoints, used for sampling"


@dataclass(frozen=True)
class EmaApi:
    """How code drives one kind of EMA. Templates take ``{ema}`` (the EMA object), ``{model}`` (the
    network it averages), ``{weights}`` (``weights`` filled in) and ``{state}`` (a loaded state dict)."""

    kind: str
    update: str
    weights: str | None = None  # an nn.Module holding the averaged weights, when the EMA has one
    swap_in: tuple[str, ...] = ()  # load the averaged weights into the model ...
    swap_out: tuple[str, ...] = ()  # ... and the live ones back
    aligned: str | None = None  # the averaged tensors in ``{model}.parameters()`` order
    named: str | None = None  # or a mapping from parameter name to averaged tensor
    export: str | None = None  # copy the averaged weights into the model for good (end of training)
    save: str = "{ema}.state_dict()"
    load: str = "{ema}.load_state_dict({state})"

    def swap(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """Statements that swap the averaged weights in and out, and the modules they import."""
        if self.swap_in:
            return self.swap_in, self.swap_out, ()
        return STATE_SWAP_IN, STATE_SWAP_OUT, ("copy",)

    @property
    def drift(self) -> str | None:
        """Mean absolute difference between averaged and live weights, as a 0-d tensor (a template
        over several lines: libcst indents bracketed continuation lines with the block)."""
        if self.named:
            return (
                "torch.stack([\n"
                f"    ({self.named}[name].float() - param.detach().float()).abs().mean()\n"
                "    for name, param in {model}.named_parameters()\n"
                f"    if name in {self.named}\n"
                "]).mean()"
            )
        aligned = self.aligned or (f"{self.weights}.parameters()" if self.weights else None)
        if aligned is None:
            return None
        return (
            "torch.stack([\n"
            "    (averaged.float() - param.detach().float()).abs().mean()\n"
            f"    for averaged, param in zip({aligned}, {{model}}.parameters())\n"
            "]).mean()"
        )


AVERAGED_MODEL = EmaApi("torch.optim.swa_utils.AveragedModel", update="{ema}.update_parameters({model})", weights="{ema}.module")
TIMM_MODEL_EMA = EmaApi("timm ModelEma", update="{ema}.update({model})", weights="{ema}.module")
EMA_PYTORCH = EmaApi("ema_pytorch.EMA", update="{ema}.update()", weights="{ema}.ema_model")
DIFFUSERS_EMA = EmaApi(
    "diffusers EMAModel",
    update="{ema}.step({model}.parameters())",
    swap_in=("{ema}.store({model}.parameters())", "{ema}.copy_to({model}.parameters())"),
    swap_out=("{ema}.restore({model}.parameters())",),
    aligned="{ema}.shadow_params",
    export="{ema}.copy_to({model}.parameters())",
)
# A ``deepcopy`` of the model averaged in place, when the trainer has no update function of its own.
LERP_UPDATE = "with torch.no_grad():\n    for averaged, param in zip({ema}.parameters(), {model}.parameters()):\n        averaged.lerp_(param.detach(), 1 - {decay})\n"
SWAP_METHODS = {"update", "state_dict", "load_state_dict", "apply_shadow", "restore"}


@dataclass(frozen=True)
class EmaHelper:
    """A project's own EMA class (the reference trainer's ``utils/ema.py``), read from its source."""

    name: str
    module: str  # dotted, as the trainer imports it
    relative: int  # 1: ``from .utils.ema import EMA``; 0: ``from utils.ema import EMA``
    init_params: tuple[str, ...]
    update_params: tuple[str, ...]
    methods: frozenset[str]
    has_shadow: bool

    @property
    def usable(self) -> bool:
        return SWAP_METHODS <= self.methods

    @property
    def api(self) -> EmaApi:
        update = "{ema}.update({model})" if self.update_params else "{ema}.update()"
        swap = ("{ema}.apply_shadow()",), ("{ema}.restore()",)
        if not {"apply_shadow", "restore"} <= self.methods:
            swap = (), ()
        return EmaApi(f"project helper {self.name}", update=update, swap_in=swap[0], swap_out=swap[1], named="{ema}.shadow" if self.has_shadow else None)

    def constructor(self, decay: str) -> str:
        args = ["{model}"]
        if "decay" in self.init_params:
            args.append(f"decay={decay}")
        if "update_every" in self.init_params:
            args.append("update_every=1")  # one update per optimizer step: the caller gates nothing
        if "warmup" in self.init_params:
            args.append("warmup=True")
        return f"{{ema}} = {self.name}({', '.join(args)})"


def _helper_from_class(node: ast.ClassDef, module: str = "", relative: int = 0) -> EmaHelper:
    methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}

    def params(name: str) -> tuple[str, ...]:
        fn = methods.get(name)
        return tuple(a.arg for a in fn.args.args[1:] + fn.args.kwonlyargs) if fn else ()

    has_shadow = any(
        isinstance(t, ast.Attribute) and t.attr == "shadow" and isinstance(t.value, ast.Name) and t.value.id == "self"
        for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
    )
    return EmaHelper(node.name, module, relative, params("__init__"), params("update"), frozenset(methods), has_shadow)


def _ema_class_defs(tree: ast.Module | None) -> list[ast.ClassDef]:
    return [n for n in (tree.body if tree else []) if isinstance(n, ast.ClassDef) and _is_ema_class({n.name})]


def project_helper(trainer: Path, tree: ast.Module | None) -> EmaHelper | None:
    """An EMA class of the trainer's own project that the trainer does not import yet: a module with
    "ema" in its name beside the trainer or one folder down (``utils/ema.py``), with update,
    state_dict/load_state_dict and apply_shadow/restore."""
    folder = trainer.parent
    relative = int(any(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(tree))) if tree else 0
    for path in sorted([*folder.glob("*.py"), *folder.glob("*/*.py")]):
        if "ema" not in path.stem.lower() or path == trainer or set(path.relative_to(folder).parts) & SKIP_DIRS:
            continue
        try:
            helper_tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        module = ".".join(path.relative_to(folder).with_suffix("").parts)
        for node in _ema_class_defs(helper_tree):
            helper = _helper_from_class(node, module, relative)
            if helper.usable:
                return helper
    return None


def ema_api(index: UnitIndex, obj: Assign) -> EmaApi | None:
    """How to drive an existing EMA object, from what built it."""
    origins = index.origins(obj.target)
    if any(o.endswith("EMAModel") for o in origins):
        return DIFFUSERS_EMA
    if any(o.endswith("AveragedModel") for o in origins):
        return AVERAGED_MODEL
    if any(o.startswith("ema_pytorch.") for o in origins):
        return EMA_PYTORCH
    if any(re.search(r"(^|\.)ModelEma(V2|V3)?$", o) for o in origins):
        return TIMM_MODEL_EMA
    for origin in origins:
        node = _imported_class(index, obj.path, origin)
        if node is not None:
            return _helper_from_class(node).api
    if "deepcopy" in code_of(obj.value):
        return EmaApi("deepcopy of the model", update="", weights="{ema}")
    return None


def _imported_class(index: UnitIndex, importer: Path, origin: str) -> ast.ClassDef | None:
    """The EMA class an import names (``.utils.ema.EMA``), from the unit or, for an import a fix
    just added, from the file it resolves to beside ``importer``."""
    module, _, name = origin.rpartition(".")
    for source in index.files:
        found = next((n for n in _ema_class_defs(source.tree) if n.name == name), None)
        if found is not None:
            return found
    dotted_path = module.lstrip(".")
    level = len(module) - len(dotted_path)
    bases = [importer.parents[level - 1]] if level else [importer.parent, *importer.parent.parents][:3]
    for base in bases:
        path = base.joinpath(*dotted_path.split(".")).with_suffix(".py") if dotted_path else None
        if path is not None and path.is_file():
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (OSError, SyntaxError, UnicodeDecodeError):
                return None
            return next((n for n in _ema_class_defs(tree) if n.name == name), None)
    return None


def fitting_decay(index: UnitIndex) -> float:
    """0.999, or less when the run is known to be too short for ~1,000 steps of averaging."""
    total = run_length(index)
    if total is None or total[0] >= EMA_DECAY_STEPS * RUN_FRACTION:
        return EMA_DECAY
    return round(1 - RUN_FRACTION / max(total[0], 2 * RUN_FRACTION), 4)


@dataclass
class EmaTarget:
    """The EMA the fix works with: its name, how to drive it, the network it averages."""

    name: str
    api: EmaApi
    model: str
    function: object  # FunctionInfo where it is created (None: module level)
    path: Path
    conditions: tuple[str, ...] = ()  # the `if`s it is created under (``args.use_ema``)

    def missing_conditions(self, at: CallSite) -> tuple[str, ...]:
        """The conditions the EMA exists under that do not already hold at ``at``."""
        return tuple(c for c in self.conditions if c not in at.guards)

    def reachable(self, condition: str) -> bool:
        """A ``self.`` EMA's condition can be tested in another method only when it reads ``self``."""
        roots = set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)", condition)) - {"and", "or", "not", "is", "in", "None", "True", "False"}
        return not self.name.startswith("self.") or roots <= {"self"}

    def when_present(self, module: cst.Module, statements: list, at: CallSite, what: str) -> list:
        """``statements`` under the EMA's own conditions, where they do not already hold at ``at``."""
        conditions = self.missing_conditions(at)
        if not conditions:
            return statements
        unreachable = [c for c in conditions if not self.reachable(c)]
        if unreachable:
            raise CannotFix(at.path, at.line, f"`{self.name}` only exists when `{unreachable[0]}`, which cannot be tested where {what} happens", _patch_after(at, statements))
        test = template_expression(module, " and ".join(f"({c})" if len(conditions) > 1 else c for c in conditions))
        return [cst.If(test=test, body=cst.IndentedBlock(body=statements))]


def ema_target(index: UnitIndex, model: str) -> EmaTarget | None:
    """The trainer's existing EMA, when this module knows how to drive it."""
    obj = ema_facts(index).objects[0]
    api = ema_api(index, obj)
    if api is None:
        return None
    conditions = tuple(g for g in (obj.call.guards if obj.call is not None else ()) if "__name__" not in g)
    return EmaTarget(obj.target, api, model, obj.function, obj.path, conditions)


class AddEma(Fix):
    """Adds an EMA of the trained network (the project's helper, diffusers ``EMAModel`` in a diffusers
    script, else ``AveragedModel`` with ``get_ema_multi_avg_fn``), or repairs an existing one:
    one update right after the optimizer step, decay warm-up, checkpoint save and resume, sampling
    with the averaged weights swapped in and the live ones restored in ``finally``."""

    codes = ("EMA001", "EMA002", "EMA003", "EMA004", "EMA005", "EMA006", "EMA007", "EMA008")

    def apply(self, ctx: FixContext, findings: list) -> None:
        _EmaFixer(ctx).run({f.code for f in findings}, findings)


class _EmaFixer:
    def __init__(self, ctx: FixContext) -> None:
        self.ctx = ctx
        self.index = ctx.index
        self.edits = Edits(ctx)
        self.trained = trained_model(self.index)
        self.key: str | None = None  # the checkpoint key the EMA is saved under
        self._decay: str | None = None

    # --- plumbing ----------------------------------------------------------------------------
    def statements(self, path: Path, template: str, target: EmaTarget, **values) -> list:
        """``template`` with ``{ema}``, ``{model}`` and ``{weights}`` filled in for ``target``."""
        module = self.edits.module(path)
        if "torch." in template:  # spelled the way the file imports torch (imported when missing)
            template = template.replace("torch.", module_name(self.edits, self.index, path, "torch") + ".")
        weights = template_expression(module, target.api.weights, ema=target.name) if target.api.weights else None
        filled = {"ema": target.name, "model": target.model, **({"weights": weights} if weights is not None else {}), **values}
        return template_statements(module, template, **filled)

    def run(self, codes: set[str], findings: list) -> None:
        where = findings[0].location
        if self.trained is None and is_lightning(self.index):
            raise CannotFix(where.path, where.line, "a LightningModule: Lightning steps the optimizer itself, so the EMA is updated from its `on_train_batch_end` hook", LIGHTNING_EMA_PATCH)
        if self.trained is None:
            raise CannotFix(where.path, where.line, "no optimizer step whose network can be traced (the optimizer's parameters come from no `model.parameters()`)", EMA_PATCH)
        facts = ema_facts(self.index)
        if "EMA001" in codes and not facts.objects:
            target = self.create()
            codes |= {"EMA002", "EMA006", "EMA007", "EMA008"}
        else:
            target = self.existing()
        if "EMA004" in codes:
            self.gate_once(findings)
        if "EMA003" in codes:
            self.move_updates(target, findings)
        elif "EMA002" in codes and not facts.updates:
            self.update_after_step(target, self.statements(self.trained.step.path, target.api.update, target, decay=self.decay_expression() if "{decay}" in target.api.update else ""))
        if "EMA005" in codes and list(EmaHorizonTooLong().check(self.index)):
            self.warm_up(target)
        if "EMA006" in codes:
            self.save(target)
        if "EMA007" in codes:
            self.restore(target)
        if "EMA008" in codes:
            self.sample_with(target)
        self.edits.apply()

    def visible(self, target: EmaTarget, function, path: Path) -> bool:
        """Whether code in ``function`` can reach the EMA (a method of the same class, the creating
        function or one nested in it, or anywhere in the file of a module-level EMA)."""
        if path != target.path:
            return False
        if target.name.startswith("self."):
            owner = target.function.class_name if target.function is not None else None
            return function is not None and owner is not None and any(
                f.class_name == owner and f.path == path and f.line <= function.line <= f.end_line for f in self.index.functions
            )
        if target.function is None:
            return True
        return function is not None and target.function.line <= function.line <= target.function.end_line

    def unreachable(self, target: EmaTarget, function, path: Path, line: int, what: str, patch: str) -> CannotFix:
        where = f"`{function.name}`" if function is not None else "module level"
        return CannotFix(path, line, f"{what} happens in {where}, which cannot reach `{target.name}`; pass the EMA there", patch)

    # --- creating ----------------------------------------------------------------------------
    def create(self) -> EmaTarget:
        trained, index = self.trained, self.index
        anchor_fact = trained.assignment or trained.optimizer
        path = anchor_fact.path
        anchor = self.edits.tree(path).top_statement(anchor_fact.value)
        leaf = trained.name.rsplit(".", 1)[-1]
        name = "self.ema" if trained.name.startswith("self.") else ("ema_model" if leaf == "model" else f"ema_{leaf}")
        if index.assigns_to(name):
            raise CannotFix(path, anchor_fact.line, f"`{name}` is already used for something that is not an EMA; add the EMA by hand", EMA_PATCH)
        decay = self.decay_expression()
        source = next(s for s in index.files if s.path == path)
        helper = project_helper(path, source.tree)
        if helper is not None:
            api, template = helper.api, helper.constructor("{decay}")
            self.edits.add_import(path, helper.module, helper.name, relative=helper.relative)
        elif module_imports(index, "diffusers"):
            api, template = DIFFUSERS_EMA, "{ema} = EMAModel({model}.parameters(), decay={decay})"
            self.edits.add_import(path, "diffusers.training_utils", "EMAModel")
        else:
            api, template = AVERAGED_MODEL, "{ema} = AveragedModel({model}, multi_avg_fn=get_ema_multi_avg_fn({decay}), use_buffers=True)"
            self.edits.add_import(path, "torch.optim.swa_utils", "AveragedModel")
            self.edits.add_import(path, "torch.optim.swa_utils", "get_ema_multi_avg_fn")
        target = EmaTarget(name, api, trained.name, anchor_fact.function, path)
        created = self.statements(path, template, target, decay=decay)
        created[0] = with_comment(created[0], WHY_EMA)
        accelerator = self.accelerate_checkpointing()
        if accelerator is not None:
            created += self.statements(path, f"{accelerator}.register_for_checkpointing({{ema}})", target)
        self.edits.insert_after(path, anchor, created)
        return target

    def accelerate_checkpointing(self) -> str | None:
        """The accelerator whose ``save_state``/``load_state`` write and read the checkpoints."""
        calls = [c for c in self.index.method_calls("save_state", "load_state") if any(o.startswith("accelerate.") for o in self.index.origins(c.receiver))]
        return calls[0].receiver if calls else None

    def decay_expression(self) -> str:
        """The decay: an ``ema_decay`` setting beside the trainer's learning rate (config dataclass
        field or argparse flag, added when missing), else a literal that fits the run."""
        if self._decay is None:
            decay = fitting_decay(self.index)
            optimizer = self.trained.optimizer
            lr = optimizer.call.kwarg("lr") if optimizer.call.kwarg("lr") is not None else optimizer.call.arg(1)
            home = settings_home(self.index, optimizer.function, lr) if lr is not None else None
            if home is None or home.path not in self.ctx.modules:
                self._decay = repr(decay)
            else:
                self._decay = ensure_setting(self.edits, self.index, home, "ema_decay", "float", repr(decay), "the EMA averages over ~1 / (1 - ema_decay) optimizer steps")
        return self._decay

    # --- an EMA that is already there ----------------------------------------------------------
    def existing(self) -> EmaTarget:
        target = ema_target(self.index, self.trained.name)
        if target is None:
            obj = ema_facts(self.index).objects[0]
            raise CannotFix(obj.path, obj.line, f"`{obj.target}` is an EMA of a kind this fix does not know how to drive", EMA_PATCH)
        if not target.api.update:
            target.api = dataclasses.replace(target.api, update=self.copy_update())
        return target

    def copy_update(self) -> str:
        """The update of a ``deepcopy`` EMA: the trainer's own update function when it has one
        (``update_ema(ema, model, decay)``), else an in-place lerp."""
        for fn in self.index.functions:
            if not UPDATE_FUNCTION.search(fn.name) or fn.class_name is not None:
                continue
            args = []
            for param in fn.params:
                if EMA_NAME.search(param) or param in ("target", "target_params"):
                    args.append("{ema}")
                elif MODEL_PARAMETER.match(param) or param in ("source", "source_params", "params"):
                    args.append("{model}")
                elif "decay" in param or param == "rate":
                    if any(s.owner == fn.qualname for s in self.index.setting(param) if s.kind == "param-default"):
                        break  # it has a default: leave it to the function
                    args.append("{decay}")
                else:
                    break
            else:
                if "{ema}" in args and "{model}" in args:
                    return f"{fn.name}({', '.join(args)})"
        return LERP_UPDATE

    # --- updating once per optimizer step --------------------------------------------------------
    def update_after_step(self, target: EmaTarget, new: list) -> None:
        step = self.trained.step
        if not self.visible(target, step.function, step.path):
            raise self.unreachable(target, step.function, step.path, step.line, "the optimizer step", _patch_after(step, new))
        tree = self.edits.tree(step.path)
        statement = tree.statement(step.node)
        new = target.when_present(self.edits.module(step.path), new, step, "the optimizer steps")
        accelerator = _accumulating_accelerator(step)
        if accelerator is None:
            self.edits.insert_after(step.path, statement, new)
            return
        # accelerate: the step runs on every micro-batch; the EMA only after real optimizer steps.
        accumulate = next(a for a in tree.ancestors(step.node) if isinstance(a, cst.With) and any(".accumulate(" in code_of(i.item) for i in a.items))
        sync = m.If(test=m.Attribute(value=m.Name(accelerator), attr=m.Name("sync_gradients")), orelse=None, body=m.IndentedBlock())
        block = next((s for s in tree.following(accumulate) if m.matches(s, sync)), None)
        if block is not None:
            self.edits.replace(step.path, block, lambda node: node.with_changes(body=node.body.with_changes(body=[*new, *node.body.body])))
        else:
            test = template_expression(self.edits.module(step.path), f"{accelerator}.sync_gradients")
            self.edits.insert_after(step.path, statement, [cst.If(test=test, body=cst.IndentedBlock(body=new))])

    def move_updates(self, target: EmaTarget, findings: list) -> None:
        """EMA003: the update runs before the optimizer step or on every micro-step: move it to right
        after the step, inside the step's own accumulation guard."""
        step = self.trained.step
        moved: list = []
        for call in _flagged_calls(ema_facts(self.index).updates, findings, "EMA003"):
            tree = self.edits.tree(call.path)
            statement = tree.statement(call.node)
            if call.function != step.function or call.path != step.path or not is_call_statement(statement, call.node):
                raise CannotFix(call.path, call.line, f"the EMA update `{code_of(call.node).strip()}` is not a plain statement beside {step.func_text}() (line {step.line}); move it to right after that step", _patch_after(step, [statement]))
            gate = tree.owner_statement(statement)
            step_block = tree.block(tree.statement(step.node))
            if isinstance(gate, cst.If) and gate.orelse is None and len(gate.body.body) == 1 and "%" in code_of(gate.test) and tree.block(statement) is not step_block:
                self.edits.remove(call.path, gate)  # the `if i % k == 0:` of a micro-step update goes with it
                moved.append(statement.with_changes(leading_lines=[]))
            else:
                moved.append(self.edits.detach(call.path, statement))
        if moved:
            self.update_after_step(target, moved)

    def gate_once(self, findings: list) -> None:
        """EMA004: the EMA is gated by its own ``update_every`` and by ``step % k``: drop the outer
        gate and update on every optimizer step (``update_every=1``)."""
        facts = ema_facts(self.index)
        flagged = _flagged_calls(facts.updates, findings, "EMA004")
        for call in flagged:
            tree = self.edits.tree(call.path)
            gate = next(a for a in tree.ancestors(call.node) if isinstance(a, cst.If) and "%" in code_of(a.test))
            kept = _without_modulo(gate.test)
            if kept is not None:
                self.edits.replace(call.path, gate, lambda node, kept=kept: node.with_changes(test=kept))
            elif gate.orelse is None and isinstance(gate.body, cst.IndentedBlock):
                self.edits.replace(call.path, gate, lambda node: cst.FlattenSentinel(list(node.body.body)))
            else:
                raise CannotFix(call.path, call.line, f"cannot take the EMA update out of `if {code_of(gate.test).strip()}:`", _patch_after(self.trained.step, [tree.statement(call.node)]))
        for obj in facts.objects if flagged else ():
            if obj.call is not None and literal(obj.call.kwarg("update_every")) not in (UNKNOWN, 1):
                self.edits.replace(obj.path, obj.call.node, lambda node: without_comment(with_keyword(node, "update_every", cst.Integer("1")), "update_every"))

    def warm_up(self, target: EmaTarget) -> None:
        """EMA005: a horizon longer than the run: switch on the EMA's decay warm-up, or lower a
        literal decay to fit the run."""
        obj = next((o for o in ema_facts(self.index).objects if o.call is not None), None)
        if obj is None:
            raise CannotFix(target.path, 1, "the EMA's decay is not set where this fix can change it; add a warm-up or lower the decay", EMA_PATCH)
        helper = next((_imported_class(self.index, obj.path, o) for o in obj.call.names if _imported_class(self.index, obj.path, o) is not None), None)
        if helper is not None and "warmup" in _helper_from_class(helper).init_params:
            self.edits.replace(obj.path, obj.call.node, lambda node: with_keyword(node, "warmup", cst.Name("True")))
        elif target.api is DIFFUSERS_EMA:
            self.edits.replace(obj.path, obj.call.node, lambda node: with_keyword(node, "use_ema_warmup", cst.Name("True")))
        elif isinstance(literal(obj.call.kwarg("decay")), float):
            decay = fitting_decay(self.index)
            self.edits.replace(obj.path, obj.call.node, lambda node: without_comment(with_keyword(node, "decay", cst.Float(repr(decay))), "decay"))
        else:
            raise CannotFix(obj.path, obj.line, "the EMA's decay is not a literal this fix can lower and it has no warm-up switch", EMA_PATCH)

    # --- checkpoints ---------------------------------------------------------------------------------
    def save(self, target: EmaTarget) -> None:
        saved = False
        for function in calls_in_functions_with(self.index, CHECKPOINT_WRITES):
            saves = [(c, p) for c in self.index.calls_in(function) if c.matches(("torch.save",)) and (p := self.checkpoint_payload(c)) is not None]
            saved = saved or bool(saves)
            if not saves or mentions(self.index, [function], target.name):
                continue
            extended: list = []
            for call, payload in saves:
                if not self.visible(target, function, call.path):
                    raise self.unreachable(target, function, call.path, call.line, "saving the checkpoint", f'checkpoint["ema"] = {target.name}.state_dict()\n')
                if not any(payload is done for done in extended):  # one dict saved to two files
                    self.add_to_checkpoint(target, call, payload)
                    extended.append(payload)
        if not saved and self.accelerate_checkpointing() is None:
            writes = self.index.calls_to(*CHECKPOINT_WRITES)
            path, line = (writes[0].path, writes[0].line) if writes else (target.path, 1)
            raise CannotFix(path, line, "no checkpoint dict (a dict of state dicts handed to torch.save) to add the EMA to", f'checkpoint["ema"] = {target.name}.state_dict()\n')

    def checkpoint_payload(self, save: CallSite):
        """What ``torch.save`` writes, when it is a checkpoint (a dict holding state dicts): the dict
        literal, or the name of a dict filled item by item."""
        payload = save.arg(0, "obj")
        if isinstance(payload, cst.Dict):
            return payload if "state_dict(" in code_of(payload) else None
        name = dotted(payload)
        if not name:
            return None
        built = [a for a in assignments_of(self.index, name, save.function, save.line) if a.path == save.path]
        if built and isinstance(built[-1].value, cst.Dict) and "state_dict(" in code_of(built[-1].value):
            return built[-1].value
        items = [i for i in self.index.item_assigns if i.container == name and i.function == save.function and i.path == save.path and i.line < save.line]
        return name if any("state_dict(" in code_of(i.value) for i in items) else None

    def add_to_checkpoint(self, target: EmaTarget, save: CallSite, payload) -> None:
        module = self.edits.module(save.path)
        value = template_expression(module, target.api.save, ema=target.name)
        if isinstance(payload, str):
            self.key = self.key or _ema_key([i.key for i in self.index.item_assigns if i.container == payload and i.path == save.path])
            new = template_statements(module, f"{{container}}[{string_literal(self.key)}] = {{value}}", container=payload, value=value)
            self.edits.insert_before(save.path, self.edits.statement_of(save), target.when_present(module, new, save, "the checkpoint is saved"))
            return
        if target.missing_conditions(save):
            raise CannotFix(save.path, save.line, f"`{target.name}` only exists when `{target.conditions[0]}`, and the checkpoint is a dict literal", f'if {target.conditions[0]}:\n    checkpoint["ema"] = {target.name}.state_dict()\n')
        keys = [literal(e.key) for e in payload.elements if isinstance(e, cst.DictElement)]
        self.key = self.key or _ema_key(keys)
        if self.key in keys:
            raise CannotFix(save.path, save.line, f"the checkpoint already has a {self.key!r} entry that is not the EMA", f'checkpoint["ema_weights"] = {target.name}.state_dict()\n')
        entries = [e for e in payload.elements if isinstance(e, cst.DictElement)]
        model_entry = next((i for i, e in enumerate(payload.elements) if isinstance(e, cst.DictElement) and f"{target.model}.state_dict(" in code_of(e.value)), len(payload.elements) - 1)
        key = cst.SimpleString(string_literal(self.key, entries[0].key if entries else None))
        self.edits.replace(save.path, payload, lambda node: insert_dict_element(node, model_entry, key, value))

    def restore(self, target: EmaTarget) -> None:
        for resume in [c for c in self.index.method_calls("load_state_dict") if has_role(self.index, c.receiver, "optimizer")]:
            function = resume.function
            if mentions(self.index, [function], target.name):
                continue
            argument = resume.arg(0, "state_dict")
            container = dotted(argument.value) if isinstance(argument, cst.Subscript) else ""
            key = self.key or self.saved_key(target) or "ema"
            patch = f'if "{key}" in checkpoint:\n    {target.name}.load_state_dict(checkpoint["{key}"])\n'
            if not container:
                raise CannotFix(resume.path, resume.line, f"cannot tell which checkpoint `{resume.func_text}()` loads from; load the EMA next to it", patch)
            if not self.visible(target, function, resume.path):
                raise self.unreachable(target, function, resume.path, resume.line, "resuming", patch)
            module = self.edits.module(resume.path)
            model_load = next((c for c in self.index.calls_in(function) if c.method == "load_state_dict" and same_object(c.receiver, target.model) and c.path == resume.path), resume)
            subscript = argument.slice[0].slice
            quoted = string_literal(key, subscript.value if isinstance(subscript, cst.Index) else None)
            load = template_expression(module, target.api.load, ema=target.name, state=f"{container}[{quoted}]")
            new = template_statements(module, f"if {quoted} in {{container}}:\n    {{load}}\n", container=container, load=load)
            new = target.when_present(module, new, model_load, "the run resumes")
            self.edits.insert_after(resume.path, self.edits.statement_of(model_load), new)

    def saved_key(self, target: EmaTarget) -> str | None:
        """The key an existing checkpoint dict stores the EMA under."""
        for call in self.index.calls_to("torch.save"):
            payload = self.checkpoint_payload(call)
            if isinstance(payload, cst.Dict):
                for element in payload.elements:
                    if isinstance(element, cst.DictElement) and target.name in code_of(element.value) and isinstance(literal(element.key), str):
                        return literal(element.key)
        items = [i for i in self.index.item_assigns if target.name in code_of(i.value) and isinstance(i.key, str)]
        return items[0].key if items else None

    # --- sampling ----------------------------------------------------------------------------------------
    def sample_with(self, target: EmaTarget) -> None:
        """Sampling functions that use the model get the averaged weights swapped in around their
        body; sampler calls that receive the model get the averaged module (or a swap around them)."""
        index = self.index
        swap_in, swap_out, imports = target.api.swap()
        training = self.trained.step.function
        candidates = [
            f for f in sampling_functions(index)
            if f != training and not any(MODEL_PARAMETER.match(p) for p in f.params) and mentions(index, [f], target.model)
        ]
        # A sampler called by another one (validation -> self.sample) is swapped by its caller.
        delegated = {c.method or c.func_text for c in index.calls if c.function in candidates and (c.method or c.func_text) != c.function.name}
        wrapped = []
        for function in candidates:
            if function.name in delegated or mentions(index, [function], target.name):
                continue
            if not self.visible(target, function, function.path):
                raise self.unreachable(target, function, function.path, function.line, "sampling", _swap_patch(swap_in, swap_out, target))
            inside = next((c for c in index.calls_in(function) if c.path == function.path), None)
            definition = self.edits.tree(function.path).function(inside.node) if inside is not None else None
            if definition is None or not isinstance(definition.body, cst.IndentedBlock):
                raise CannotFix(function.path, function.line, f"cannot swap the EMA weights in around `{function.name}`", _swap_patch(swap_in, swap_out, target))
            module = self.edits.module(function.path)
            before = target.when_present(module, [s for t in swap_in for s in self.statements(function.path, t, target)], inside, "sampling")
            after = target.when_present(module, [s for t in swap_out for s in self.statements(function.path, t, target)], inside, "sampling")
            self.edits.replace(function.path, definition, lambda node, before=before, after=after: _wrap_body(node, before, after))
            for module in imports:
                self.edits.add_import(function.path, module)
            wrapped.append(function)
        names = {f.name for f in wrapped}
        model = re.compile(rf"(?<![\w.]){re.escape(target.model)}(?![\w])")
        for call in index.calls:
            callee = call.method or call.func_text
            if not (SAMPLING_FUNCTION.search(callee) or callee in SAMPLE_LOOPS) or NOT_SAMPLING.search(callee) or callee in names:
                continue
            if not any(model.search(code_of(a.value)) for a in call.node.args) or call.function in wrapped or not self.visible(target, call.function, call.path):
                continue
            if any(isinstance(a, cst.Try) and a.finalbody is not None and target.name in code_of(a.finalbody) for a in self.edits.tree(call.path).ancestors(call.node)):
                continue  # already swapped in, and out in `finally`
            module = self.edits.module(call.path)
            if target.api.weights and not target.missing_conditions(call):
                averaged = template_expression(module, target.api.weights, ema=target.name)
                for arg in call.node.args:
                    for node in _model_references(arg.value, target.model):
                        self.edits.replace(call.path, node, lambda _, averaged=averaged: averaged)
            else:
                before = target.when_present(module, [s for t in swap_in for s in self.statements(call.path, t, target)], call, "sampling")
                after = target.when_present(module, [s for t in swap_out for s in self.statements(call.path, t, target)], call, "sampling")
                self.edits.replace(call.path, self.edits.statement_of(call), lambda node, before=before, after=after: cst.FlattenSentinel(guarded(before, [node], after)))
                for imported in imports:
                    self.edits.add_import(call.path, imported)
        self.export(target)

    def export(self, target: EmaTarget) -> None:
        """diffusers: after training, the exported model gets the averaged weights
        (``unet = accelerator.unwrap_model(unet)`` then ``ema_unet.copy_to(unet.parameters())``)."""
        if target.api.export is None:
            return
        step = self.trained.step
        for assign in self.index.assigns:
            if assign.target != target.model or assign.call is None or assign.call.method != "unwrap_model" or assign.line < step.line:
                continue
            if assign.function != target.function or assign.path != target.path or mentions(self.index, [assign.function], f"{target.name}.copy_to"):
                continue
            statement = self.edits.tree(assign.path).statement(assign.value)
            new = target.when_present(self.edits.module(assign.path), self.statements(assign.path, target.api.export, target), assign.call, "the model is exported")
            self.edits.insert_after(assign.path, statement, new)


EMA_PATCH = """\
# after the model is built:
ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
# right after optimizer.step(), inside the same accumulation guard:
ema.update_parameters(model)
# in the checkpoint dict: "ema": ema.state_dict(); on resume: ema.load_state_dict(checkpoint["ema"])
# sample with ema.module
"""


LIGHTNING_EMA_PATCH = """\
# in __init__:
self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)

# once per optimizer step (Lightning calls this after each batch; with accumulate_grad_batches,
# update only when (batch_idx + 1) % accumulate_grad_batches == 0):
def on_train_batch_end(self, outputs, batch, batch_idx):
    self.ema.update_parameters(self.model)

# on_save_checkpoint / on_load_checkpoint: checkpoint["ema"] = self.ema.state_dict() / self.ema.load_state_dict(checkpoint["ema"])
"""


def _accumulating_accelerator(step: CallSite) -> str | None:
    """``accelerator`` when the step runs inside ``with accelerator.accumulate(...)`` without a
    ``sync_gradients`` guard of its own."""
    if any("sync_gradients" in g for g in step.guards):
        return None
    for item in step.with_items:
        match = re.match(r"([\w.]+)\.accumulate\(", item)
        if match:
            return match.group(1)
    return None


def _flagged_calls(calls: list[CallSite], findings: list, code: str) -> list[CallSite]:
    spots = {(f.location.path, f.location.line, f.location.col) for f in findings if f.code == code}
    return [c for c in calls if (c.path, c.line, c.col) in spots]


def _without_modulo(test: cst.BaseExpression) -> cst.BaseExpression | None:
    """The condition without its ``step % k == 0`` operand (``a and step % k == 0`` -> ``a``); None
    when nothing else is left."""
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        left, right = _without_modulo(test.left), _without_modulo(test.right)
        if left is None:
            return right
        if right is None:
            return left
        return test.with_changes(left=left, right=right)
    return None if "%" in code_of(test) else test


def _ema_key(keys: list) -> str:
    """``ema_state_dict`` beside ``model_state_dict``-style keys, else ``ema``."""
    return "ema_state_dict" if any(isinstance(k, str) and k.endswith("_state_dict") for k in keys) else "ema"


def _swap_patch(swap_in: tuple[str, ...], swap_out: tuple[str, ...], target: EmaTarget) -> str:
    def fill(template: str) -> str:
        weights = (target.api.weights or "").replace("{ema}", target.name)
        return template.replace("{ema}", target.name).replace("{model}", target.model).replace("{weights}", weights)

    return "\n".join([*map(fill, swap_in), "try:", "    ...  # sample", "finally:", *("    " + fill(t) for t in swap_out)]) + "\n"


def _wrap_body(definition: cst.FunctionDef, before: list, after: list) -> cst.FunctionDef:
    docstring, body = split_docstring(definition.body.body)
    return definition.with_changes(body=definition.body.with_changes(body=[*docstring, *guarded(before, body, after)]))


def _model_references(node: cst.CSTNode, model: str) -> list:
    """The ``model`` expressions inside ``node`` (``model`` in ``model.forward_with_cfg``)."""
    return [n for n in ordered_nodes(node) if isinstance(n, (cst.Name, cst.Attribute)) and dotted(n) == model]


def _patch_after(step: CallSite, statements: list) -> str:
    module = cst.Module(body=[])
    lines = "".join(module.code_for_node(s) for s in statements)
    return f"# right after {step.func_text}() (line {step.line}), in the same block:\n{lines}"
