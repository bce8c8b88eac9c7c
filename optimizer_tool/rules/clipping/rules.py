"""CLIP001-004: gradients are clipped, after unscaling, before the optimizer step, with a threshold
that is set."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Iterable

import libcst as cst

from optimizer_tool.contract import Hit, Rule
from optimizer_tool.findings import Severity, State
from optimizer_tool.index import UNKNOWN, UnitIndex, dotted, literal
from optimizer_tool.knowledge.training import (
    config_runner,
    exclusive,
    has_role,
    is_torch_clip,
    lightning_configured_elsewhere,
    lightning_trainer_calls,
    optimizer_steps,
    trains,
)
from optimizer_tool.rules.clipping.facts import (
    CLIP_SETTING,
    DISABLED,
    ClipFacts,
    clip_facts,
    disabled_setting,
    guard_names,
    no_limit,
    scalers,
    threshold_node,
)


class NoClipping(Rule):
    code = "CLIP001"
    severity = Severity.MISSING
    title = "gradients are clipped"
    message = (
        "gradients are never clipped: one bad batch or fp16 overflow can throw the weights off; clip the"
        " global norm (1.0 is the common default)"
    )
    explain = """
    Diffusion losses are noisy (the timestep is random, some batches are hard) and mixed precision can
    overflow. Clipping the global gradient norm bounds the damage of a rare huge gradient:
    `torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)` after `scaler.unscale_(optimizer)` and before
    `optimizer.step()`, `accelerator.clip_grad_norm_(...)` under accelerate, `Trainer(gradient_clip_val=1.0)`
    in Lightning. The threshold is a tuning knob (the plan suggests trying 0.5); 1.0 is a sound default.
    """
    VALID = [
        (
            "import torch\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    optimizer.step()\n"
        ),
        (
            "from torch.nn.utils import clip_grad_norm_\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    accelerator.backward(loss)\n"
            "    if accelerator.sync_gradients:\n"
            "        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)\n"
            "    optimizer.step()\n"
        ),
        (
            "import pytorch_lightning as pl\n"
            "class Lit(pl.LightningModule):\n"
            "    def training_step(self, batch, i):\n"
            "        return self.model(batch)\n"
            "trainer = pl.Trainer(max_epochs=10, gradient_clip_val=1.0)\n"
        ),
    ]
    INVALID = [
        # DiT: no clipping
        (
            "import torch\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)\n"
            "for x, y in loader:\n"
            "    loss = model(x, y)\n"
            "    opt.zero_grad()\n"
            "    loss.backward()\n"
            "    opt.step()\n"
        ),
        (
            "import torch\n"
            "scaler = torch.cuda.amp.GradScaler()\n"
            "for x in data:\n"
            "    with torch.autocast('cuda'):\n"
            "        loss = model(x)\n"
            "    scaler.scale(loss).backward()\n"
            "    scaler.step(optimizer)\n"
            "    scaler.update()\n"
        ),
        (
            "import pytorch_lightning as pl\n"
            "class Lit(pl.LightningModule):\n"
            "    def training_step(self, batch, i):\n"
            "        return self.model(batch)\n"
            "    def configure_optimizers(self):\n"
            "        return torch.optim.AdamW(self.parameters(), lr=1e-4)\n"
            "trainer = pl.Trainer(max_epochs=10, precision=16)\n"
            "trainer.fit(Lit())\n"
        ),
    ]

    def applies(self, index: UnitIndex) -> bool:
        return trains(index) and not lightning_configured_elsewhere(index) and config_runner(index) is None

    def when_blind(self, index: UnitIndex) -> tuple[State, str] | None:
        if trains(index) and lightning_configured_elsewhere(index):
            return (
                State.ELSEWHERE,
                "a Lightning module: clipping is an option of the Trainer (gradient_clip_val), which is built "
                "outside this module or from run-time arguments; whoever builds it decides",
            )
        runner = config_runner(index)
        if runner is not None:
            return State.ELSEWHERE, f"{runner}: clipping is its optimizer hook's grad_clip, set in the config"
        return None

    def when_passed(self, index: UnitIndex) -> tuple[State, str] | None:
        # clipping is written, but its threshold's default clips nothing (diffwave's
        # ``clip_grad_norm_(params, self.params.max_grad_norm or 1e9)`` with ``max_grad_norm=None``)
        # only a call that runs unconditionally: a guarded one is judged by its guard (the run's config)
        facts = clip_facts(index)
        hit = _clipping_call_off(index, replace(facts, calls=[c for c in facts.calls if not c.guards]))
        if hit is None or hit.setting is None or hit.setting.kind == "param-default":
            return None  # a function's own default: what its callers pass decides (the verdict's guard walk)
        return State.OFF, hit.message

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if clip_facts(index).present:
            return
        steps = optimizer_steps(index)
        if steps:
            yield Hit.at(steps[0])
            return
        trainers = lightning_trainer_calls(index)
        if trainers:
            yield Hit.at(
                trainers[0],
                "the Lightning Trainer does not clip gradients (no gradient_clip_val): one bad batch or fp16 overflow"
                " can throw the weights off",
            )


class _WithClipping(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return bool(clip_facts(index).calls)


class ClipScaledGradients(_WithClipping):
    code = "CLIP002"
    severity = Severity.BUG
    title = "gradients unscaled before clipping"
    message = (
        "gradients are clipped while still multiplied by the GradScaler's loss scale (no"
        " scaler.unscale_(optimizer) before), so the threshold is meaningless and clipping is effectively"
        " always or never active"
    )
    explain = """
    With `torch.cuda.amp.GradScaler`, `.grad` holds gradients multiplied by the loss scale (2**16 at the start).
    `clip_grad_norm_` then compares that huge norm with your threshold and scales everything down to it,
    which after the scaler divides by the scale leaves tiny updates (or, with a large threshold, never clips).
    Call `scaler.unscale_(optimizer)` right before clipping; `scaler.step()` knows not to unscale twice.
    `accelerator.clip_grad_norm_` and Lightning unscale for you.
    """
    VALID = [
        (
            "import torch\n"
            "scaler = torch.cuda.amp.GradScaler()\n"
            "for x in data:\n"
            "    scaler.scale(model(x)).backward()\n"
            "    scaler.unscale_(optimizer)\n"
            "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    scaler.step(optimizer)\n"
            "    scaler.update()\n"
        ),
        # disabled scaler: nothing is scaled
        (
            "import torch\n"
            "scaler = torch.cuda.amp.GradScaler(enabled=False)\n"
            "for x in data:\n"
            "    scaler.scale(model(x)).backward()\n"
            "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    scaler.step(optimizer)\n"
            "    scaler.update()\n"
        ),
        # the clipping runs only in the full-precision branch
        (
            "import torch\n"
            "scaler = torch.cuda.amp.GradScaler()\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    if use_amp:\n"
            "        scaler.scale(loss).backward()\n"
            "        scaler.step(optimizer)\n"
            "        scaler.update()\n"
            "    else:\n"
            "        loss.backward()\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "        optimizer.step()\n"
        ),
    ]
    INVALID = [
        (
            "import torch\n"
            "scaler = torch.cuda.amp.GradScaler()\n"
            "for x in data:\n"
            "    scaler.scale(model(x)).backward()\n"
            "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    scaler.step(optimizer)\n"
            "    scaler.update()\n"
        ),
        (
            "from torch.cuda.amp import GradScaler\n"
            "from torch.nn.utils import clip_grad_norm_\n"
            "class Trainer:\n"
            "    def __init__(self):\n"
            "        self.scaler = GradScaler()\n"
            "    def step(self, loss):\n"
            "        self.scaler.scale(loss).backward()\n"
            "        clip_grad_norm_(self.model.parameters(), self.max_grad_norm)\n"
            "        self.scaler.unscale_(self.optimizer)\n"
            "        self.scaler.step(self.optimizer)\n"
            "        self.scaler.update()\n"
        ),
    ]

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and bool(scalers(index))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for clip in clip_facts(index).calls:
            if not is_torch_clip(clip):
                continue
            here = index.calls_in(clip.function)
            scaler_calls = [
                c
                for c in here
                if c.method in ("scale", "step", "update")
                and has_role(index, c.receiver, "scaler")
                and not exclusive(c, clip)
            ]
            if not scaler_calls:
                continue
            unscaled = [
                c
                for c in here
                if c.method == "unscale_" and (c.line, c.col) < (clip.line, clip.col) and not exclusive(c, clip)
            ]
            if not unscaled:
                yield Hit.at(
                    clip,
                    f"`{clip.func_text}()` clips the gradients while they are still multiplied by the loss scale of"
                    f" `{scaler_calls[0].receiver}`: call `{scaler_calls[0].receiver}.unscale_(optimizer)` first",
                )


class ClipAfterStep(_WithClipping):
    code = "CLIP003"
    severity = Severity.BUG
    title = "gradients clipped before optimizer.step()"
    message = (
        "gradients are clipped after optimizer.step(), when the update has already been applied: the"
        " clipping has no effect"
    )
    explain = """
    `optimizer.step()` applies the gradients it finds; clipping them afterwards changes nothing for that step
    (and the next `zero_grad()` throws them away). Clip between `backward()` (and `scaler.unscale_`) and
    `optimizer.step()`. A norm logged after the step is fine to compute with `torch.nn.utils.get_total_norm`,
    but that is not clipping.
    """
    VALID = [
        (
            "import torch\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    optimizer.step()\n"
            "    optimizer.zero_grad()\n"
        ),
    ]
    INVALID = [
        (
            "import torch\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    optimizer.zero_grad()\n"
        ),
        (
            "for batch in loader:\n"
            "    loss = model(batch)\n"
            "    accelerator.backward(loss)\n"
            "    optimizer.step()\n"
            "    lr_scheduler.step()\n"
            "    if accelerator.sync_gradients:\n"
            "        accelerator.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    optimizer.zero_grad()\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        steps = optimizer_steps(index)
        for clip in clip_facts(index).calls:
            same = [
                s
                for s in steps
                if s.path == clip.path
                and s.function == clip.function
                and s.loops == clip.loops
                and not exclusive(s, clip)
            ]
            before = [s for s in same if (s.line, s.col) < (clip.line, clip.col)]
            after = [s for s in same if (s.line, s.col) > (clip.line, clip.col)]
            if before and not after:
                yield Hit.at(
                    clip,
                    f"`{clip.func_text or 'clip'}()` runs after `{before[-1].func_text}()` (line {before[-1].line}):"
                    " the update already used the unclipped gradients",
                )


class ClippingDisabled(Rule):
    code = "CLIP004"
    severity = Severity.INFO
    title = "clipping threshold set"
    message = (
        "gradient clipping is implemented but turned off by default (the threshold is None/0), so nothing"
        " is clipped unless the run sets it"
    )
    explain = """
    The trainer clips only when its threshold is set, and the default leaves it unset (`max_grad_norm = None`,
    `--clip_grad 0`, `gradient_clip_val: null`). That is a legitimate choice (the plan even suggests trying
    without clipping first, while watching the gradient norm), so this is information, not a defect:
    make sure the runs you care about set it (1.0 is a sound default).
    """
    VALID = NoClipping.VALID
    INVALID = [
        (
            "import argparse, torch\n"
            "p = argparse.ArgumentParser()\n"
            "p.add_argument('--max_grad_norm', type=float, default=None)\n"
            "args = p.parse_args()\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    if args.max_grad_norm is not None:\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)\n"
            "    optimizer.step()\n"
        ),
        {
            "train.py": (
                "import torch\n"
                "from config import TrainConfig\n"
                "cfg = TrainConfig()\n"
                "for x in data:\n"
                "    loss = model(x)\n"
                "    loss.backward()\n"
                "    if cfg.max_grad_norm:\n"
                "        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)\n"
                "    optimizer.step()\n"
            ),
            "config.py": (
                "from dataclasses import dataclass\n"
                "@dataclass\n"
                "class TrainConfig:\n"
                "    max_grad_norm: float = None  # try without clipping first\n"
            ),
        },
    ]

    def applies(self, index: UnitIndex) -> bool:
        facts = clip_facts(index)
        return bool(facts.calls or facts.handed or facts.configured)

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = clip_facts(index)
        hit = _clipping_call_off(index, facts) or _trainer_off(facts) or _config_off(facts)
        if hit is not None:
            yield hit


def _clipping_call_off(index: UnitIndex, facts: ClipFacts) -> Hit | None:
    """A clipping call whose threshold is 0, or is a setting (or guarded by one) whose default is off."""
    for clip in facts.calls:
        threshold = threshold_node(clip)
        value = literal(threshold) if threshold is not None else UNKNOWN
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            return Hit.at(clip, "the clipping threshold is 0: gradient clipping is turned off")
        candidates = []
        # ``max_grad_norm or 1e9`` (diffwave): the setting, with no clipping where it is unset
        if isinstance(threshold, cst.BooleanOperation) and isinstance(threshold.operator, cst.Or):
            if no_limit(threshold.right):
                threshold = threshold.left
        name = dotted(threshold) if threshold is not None else ""
        if name and name != "None":
            candidates.append(name)
        candidates += [
            n
            for n in guard_names(clip)
            if CLIP_SETTING.search(n.rsplit(".", 1)[-1])
            and not re.match(r"(no|disable|skip|without)_", n.rsplit(".", 1)[-1])
        ]
        for candidate in candidates:
            setting = disabled_setting(index, candidate)
            if setting is not None:
                return Hit(
                    setting.path,
                    setting.line,
                    setting.col,
                    f"gradient clipping is turned off by default ({setting.name} = {setting.value!r}), so nothing"
                    " is clipped unless the run sets it",
                    setting,
                )
    return None


def _trainer_off(facts: ClipFacts) -> Hit | None:
    """A Lightning ``Trainer(gradient_clip_val=None / 0)``."""
    for call in facts.handed:
        if call.method in ("Trainer",):
            value = call.kwarg("gradient_clip_val")
            v = literal(value) if value is not None else "absent"
            if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0):
                return Hit.at(
                    call,
                    "the Lightning Trainer is built with gradient_clip_val None/0: gradient clipping is turned off",
                )
    return None


def _config_off(facts: ClipFacts) -> Hit | None:
    """``gradient_clip_val: null`` (or 0) in a config file."""
    for setting in facts.configured:
        if setting.value in DISABLED and setting.name == "gradient_clip_val":
            return Hit(
                setting.path,
                setting.line,
                setting.col,
                "gradient_clip_val is None/0 in the config: gradient clipping is turned off",
            )
    return None
