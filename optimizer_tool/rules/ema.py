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

import re
from dataclasses import dataclass
from typing import Iterable

from optimizer_tool.findings import Severity
from optimizer_tool.index import Assign, CallSite, UnitIndex, code_of, literal
from optimizer_tool.rules.base import Hit, Rule
from optimizer_tool.semantics import (
    CHECKPOINT_READS,
    CHECKPOINT_WRITES,
    calls_in_functions_with,
    has_role,
    mentions,
    optimizer_steps,
    run_length,
    sampling_functions,
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

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(a.target for a in self.objects))


def ema_facts(index: UnitIndex) -> EmaFacts:
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
    return EmaFacts(objects, updates)


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
    if "(" not in value_code:  # ``use_ema = False``, ``self.ema = None``: nothing is built
        return False
    if assign.call is not None and has_role(index, assign.target, "ema") and assign.call.names & _ema_constructor_names(index, assign):
        return True
    return bool(EMA_NAME.search(leaf)) and ("deepcopy" in value_code or "EMA" in value_code or "Ema" in value_code or "Averaged" in value_code or "copy" in value_code or "clone" in value_code)


def _ema_constructor_names(index: UnitIndex, assign: Assign) -> frozenset[str]:
    return assign.call.names if assign.call is not None else frozenset()


def _gates(call: CallSite) -> list[str]:
    return [g for g in call.guards if "%" in g]


def _accumulation_guarded(step: CallSite) -> bool:
    return bool(_gates(step)) or any("sync_gradients" in g for g in step.guards)


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
                elif _accumulation_guarded(step) and not any(g in update.guards for g in step.guards if "%" in g or "sync_gradients" in g) and not _gates(update):
                    yield Hit.at(update, f"the EMA is updated on every micro-step while {step.func_text}() only steps under `{step.guards[-1]}`: update it inside the same block")
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
        functions = [f for f in sampling_functions(index) if not any(MODEL_PARAMETER.match(p) for p in f.params)]
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
