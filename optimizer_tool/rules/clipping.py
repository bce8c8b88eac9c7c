"""Gradient clipping (plan priority 8).

Clipping the global gradient norm (1.0 is the common default) keeps a rare large
gradient — a bad batch, a high-noise timestep, an fp16 overflow — from throwing
the weights far off. It only works on the real gradients: after
``scaler.unscale_(optimizer)`` when a ``GradScaler`` is used, and before
``optimizer.step()``. The plan's 0.5 is an experiment to try, not a defect, and
``max_grad_norm = None`` simply turns clipping off.

Recognised: ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_`` in any import
spelling, ``accelerator.clip_grad_norm_``, Fabric / Lightning ``clip_gradients``,
Lightning ``Trainer(gradient_clip_val=...)`` (also from its YAML config), a
project's own ``clip_grad(...)`` helper, a ``max_grad_norm`` handed to a helper
that clips (timm / MAE loss scalers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import libcst as cst

from optimizer_tool.codemod import (
    Edits,
    accelerator_of,
    ensure_setting,
    expression,
    is_call_statement,
    module_name,
    optimizer_parameters,
    settings_home,
    statement,
)
from optimizer_tool.cstedit import with_keyword
from optimizer_tool.findings import Severity
from optimizer_tool.index import UNKNOWN, CallSite, Setting, UnitIndex, code_of, dotted, literal
from optimizer_tool.rules.base import CannotFix, Fix, FixContext, Hit, Rule
from optimizer_tool.semantics import (
    ROLE_CONSTRUCTORS,
    clip_calls,
    exclusive,
    has_role,
    is_torch_clip,
    lightning_configured_elsewhere,
    lightning_trainer_calls,
    names_in,
    optimizer_steps,
    sampling_functions,
    trains,
)

KEY = "clipping"
TITLE = "Gradient clipping"
SAFE_FIX = True

# Keywords that hand a clipping threshold to something that clips (Lightning Trainer, timm/MAE scalers,
# DeepSpeed, a project's optimize() helper).
CLIP_KWARGS = {"gradient_clip_val", "clip_grad", "max_grad_norm", "grad_clip", "grad_clip_norm", "clip_grad_norm", "gradient_clipping", "clip_norm", "grad_norm_clip", "max_norm_grad"}
CONFIG_CALLEE = re.compile(r"(Config|Configs|Args|Arguments|Options|Opts|Params|Hparams|HParams|Namespace|Settings|Cfg)$|^(dict|OmegaConf\.create|SimpleNamespace|EasyDict|edict|add_argument)$")
CLIP_SETTING = re.compile(r"clip|grad_norm|max_norm", re.I)
DISABLED = (None, 0, 0.0, False)


@dataclass
class ClipFacts:
    calls: list[CallSite]  # clipping calls
    handed: list[CallSite]  # calls that receive a clipping threshold (Trainer(gradient_clip_val=...), scalers)
    configured: list[Setting]  # config files that set a Lightning / DeepSpeed clipping value

    @property
    def present(self) -> bool:
        return bool(self.calls or self.handed or self.configured)


def clip_facts(index: UnitIndex) -> ClipFacts:
    handed = []
    class_names = {s.owner for s in index.settings if s.kind == "class-default" and s.owner}
    for call in index.calls:
        leaf = call.method or call.func_text
        if not leaf or CONFIG_CALLEE.search(call.func_text or leaf) or leaf in class_names:
            continue
        if any(a.keyword is not None and a.keyword.value in CLIP_KWARGS for a in call.node.args):
            handed.append(call)
    configured = [s for s in index.setting("gradient_clip_val", "gradient_clipping", "clip_grad", "grad_clip") if s.kind == "config-file"]
    return ClipFacts([c for c in clip_calls(index) if not measures_only(c)], handed, configured)


def measures_only(call: CallSite) -> bool:
    """``clip_grad_norm_(params, float("inf"))``: computes the norm, clips nothing."""
    threshold = _threshold_node(call)
    if threshold is None:
        return False
    text = code_of(threshold).replace(" ", "").lower()
    return text in ('float("inf")', "float('inf')", "math.inf", "torch.inf", "np.inf", "numpy.inf", "inf", "1e9", "1e10", "1e12")


def _threshold_node(call: CallSite) -> cst.BaseExpression | None:
    if call.method in ("clip_grad_value_",) or "value" in call.method:
        return call.arg(1, "clip_value")
    if call.method in ("clip_gradients",):
        return call.kwarg("gradient_clip_val")
    return call.arg(1, "max_norm")


def disabled_setting(index: UnitIndex, name: str) -> Setting | None:
    """The default that turns clipping off: ``max_grad_norm: float = None``, ``--clip_grad 0``, a YAML
    ``gradient_clip_val: null`` — when every default of ``name`` that the run starts from says so."""
    leaf = name.rsplit(".", 1)[-1]
    found = [s for s in index.setting(leaf) if s.kind in ("config-file", "argparse", "class-default", "param-default", "getattr-default", "dict")]
    if not found:
        return None
    ranked = sorted(found, key=lambda s: ("config-file", "argparse", "class-default", "dict", "getattr-default", "param-default").index(s.kind))
    best = [s for s in ranked if s.kind == ranked[0].kind]
    if all(s.known and s.value in DISABLED and not isinstance(s.value, str) for s in best):
        return best[0]
    return None


def _guard_names(call: CallSite) -> set[str]:
    names: set[str] = set()
    for guard in call.guards:
        try:
            names |= names_in(cst.parse_expression(guard))
        except cst.ParserSyntaxError:
            continue
    return names


def _scalers(index: UnitIndex) -> list[str]:
    pats = ROLE_CONSTRUCTORS["scaler"]
    found = []
    for assign in index.assigns:
        if assign.call is not None and assign.call.matches(pats):
            enabled = assign.call.kwarg("enabled")
            if enabled is not None and literal(enabled) is False:
                continue
            found.append(assign.target)
    return found


class NoClipping(Rule):
    code = "CLIP001"
    severity = Severity.MISSING
    title = "gradients are clipped"
    message = "gradients are never clipped: one bad batch or fp16 overflow can throw the weights off; clip the global norm (1.0 is the common default)"
    explain = """
    Diffusion losses are noisy (the timestep is random, some batches are hard) and mixed precision can
    overflow. Clipping the global gradient norm bounds the damage of a rare huge gradient:
    `torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)` after `scaler.unscale_(optimizer)` and before
    `optimizer.step()`, `accelerator.clip_grad_norm_(...)` under accelerate, `Trainer(gradient_clip_val=1.0)`
    in Lightning. The threshold is a tuning knob (the plan suggests trying 0.5); 1.0 is a sound default.
    """
    VALID = [
        "import torch\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.step()\n",
        "from torch.nn.utils import clip_grad_norm_\nfor x in data:\n    loss = model(x)\n    accelerator.backward(loss)\n    if accelerator.sync_gradients:\n        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)\n    optimizer.step()\n",
        "import pytorch_lightning as pl\nclass Lit(pl.LightningModule):\n    def training_step(self, batch, i):\n        return self.model(batch)\ntrainer = pl.Trainer(max_epochs=10, gradient_clip_val=1.0)\n",
    ]
    INVALID = [
        # DiT: no clipping
        "import torch\nopt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)\nfor x, y in loader:\n    loss = model(x, y)\n    opt.zero_grad()\n    loss.backward()\n    opt.step()\n",
        "import torch\nscaler = torch.cuda.amp.GradScaler()\nfor x in data:\n    with torch.autocast('cuda'):\n        loss = model(x)\n    scaler.scale(loss).backward()\n    scaler.step(optimizer)\n    scaler.update()\n",
        "import pytorch_lightning as pl\nclass Lit(pl.LightningModule):\n    def training_step(self, batch, i):\n        return self.model(batch)\n    def configure_optimizers(self):\n        return torch.optim.AdamW(self.parameters(), lr=1e-4)\ntrainer = pl.Trainer(max_epochs=10, precision=16)\ntrainer.fit(Lit())\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        return trains(index) and not lightning_configured_elsewhere(index)

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if clip_facts(index).present:
            return
        steps = optimizer_steps(index)
        if steps:
            yield Hit.at(steps[0])
            return
        trainers = lightning_trainer_calls(index)
        if trainers:
            yield Hit.at(trainers[0], "the Lightning Trainer does not clip gradients (no gradient_clip_val): one bad batch or fp16 overflow can throw the weights off")


class _WithClipping(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return bool(clip_facts(index).calls)


class ClipScaledGradients(_WithClipping):
    code = "CLIP002"
    severity = Severity.BUG
    title = "gradients unscaled before clipping"
    message = "gradients are clipped while still multiplied by the GradScaler's loss scale (no scaler.unscale_(optimizer) before), so the threshold is meaningless and clipping is effectively always or never active"
    explain = """
    With `torch.cuda.amp.GradScaler`, `.grad` holds gradients multiplied by the loss scale (2**16 at the start).
    `clip_grad_norm_` then compares that huge norm with your threshold and scales everything down to it,
    which after the scaler divides by the scale leaves tiny updates (or, with a large threshold, never clips).
    Call `scaler.unscale_(optimizer)` right before clipping; `scaler.step()` knows not to unscale twice.
    `accelerator.clip_grad_norm_` and Lightning unscale for you.
    """
    VALID = [
        "import torch\nscaler = torch.cuda.amp.GradScaler()\nfor x in data:\n    scaler.scale(model(x)).backward()\n    scaler.unscale_(optimizer)\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    scaler.step(optimizer)\n    scaler.update()\n",
        # disabled scaler: nothing is scaled
        "import torch\nscaler = torch.cuda.amp.GradScaler(enabled=False)\nfor x in data:\n    scaler.scale(model(x)).backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    scaler.step(optimizer)\n    scaler.update()\n",
        # the clipping runs only in the full-precision branch
        "import torch\nscaler = torch.cuda.amp.GradScaler()\nfor x in data:\n    loss = model(x)\n    if use_amp:\n        scaler.scale(loss).backward()\n        scaler.step(optimizer)\n        scaler.update()\n    else:\n        loss.backward()\n        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n        optimizer.step()\n",
    ]
    INVALID = [
        "import torch\nscaler = torch.cuda.amp.GradScaler()\nfor x in data:\n    scaler.scale(model(x)).backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    scaler.step(optimizer)\n    scaler.update()\n",
        "from torch.cuda.amp import GradScaler\nfrom torch.nn.utils import clip_grad_norm_\nclass Trainer:\n    def __init__(self):\n        self.scaler = GradScaler()\n    def step(self, loss):\n        self.scaler.scale(loss).backward()\n        clip_grad_norm_(self.model.parameters(), self.max_grad_norm)\n        self.scaler.unscale_(self.optimizer)\n        self.scaler.step(self.optimizer)\n        self.scaler.update()\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and bool(_scalers(index))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for clip in clip_facts(index).calls:
            if not is_torch_clip(clip):
                continue
            here = index.calls_in(clip.function)
            scaler_calls = [c for c in here if c.method in ("scale", "step", "update") and has_role(index, c.receiver, "scaler") and not exclusive(c, clip)]
            if not scaler_calls:
                continue
            unscaled = [c for c in here if c.method == "unscale_" and (c.line, c.col) < (clip.line, clip.col) and not exclusive(c, clip)]
            if not unscaled:
                yield Hit.at(clip, f"`{clip.func_text}()` clips the gradients while they are still multiplied by the loss scale of `{scaler_calls[0].receiver}`: call `{scaler_calls[0].receiver}.unscale_(optimizer)` first")


class ClipAfterStep(_WithClipping):
    code = "CLIP003"
    severity = Severity.BUG
    title = "gradients clipped before optimizer.step()"
    message = "gradients are clipped after optimizer.step(), when the update has already been applied: the clipping has no effect"
    explain = """
    `optimizer.step()` applies the gradients it finds; clipping them afterwards changes nothing for that step
    (and the next `zero_grad()` throws them away). Clip between `backward()` (and `scaler.unscale_`) and
    `optimizer.step()`. A norm logged after the step is fine to compute with `torch.nn.utils.get_total_norm`,
    but that is not clipping.
    """
    VALID = [
        "import torch\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.step()\n    optimizer.zero_grad()\n",
    ]
    INVALID = [
        "import torch\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    optimizer.step()\n    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.zero_grad()\n",
        "for batch in loader:\n    loss = model(batch)\n    accelerator.backward(loss)\n    optimizer.step()\n    lr_scheduler.step()\n    if accelerator.sync_gradients:\n        accelerator.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.zero_grad()\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        steps = optimizer_steps(index)
        for clip in clip_facts(index).calls:
            same = [s for s in steps if s.path == clip.path and s.function == clip.function and s.loops == clip.loops and not exclusive(s, clip)]
            before = [s for s in same if (s.line, s.col) < (clip.line, clip.col)]
            after = [s for s in same if (s.line, s.col) > (clip.line, clip.col)]
            if before and not after:
                yield Hit.at(clip, f"`{clip.func_text or 'clip'}()` runs after `{before[-1].func_text}()` (line {before[-1].line}): the update already used the unclipped gradients")


class ClippingDisabled(Rule):
    code = "CLIP004"
    severity = Severity.INFO
    title = "clipping threshold set"
    message = "gradient clipping is implemented but turned off by default (the threshold is None/0), so nothing is clipped unless the run sets it"
    explain = """
    The trainer clips only when its threshold is set, and the default leaves it unset (`max_grad_norm = None`,
    `--clip_grad 0`, `gradient_clip_val: null`). That is a legitimate choice (the plan even suggests trying
    without clipping first, while watching the gradient norm), so this is information, not a defect:
    make sure the runs you care about set it (1.0 is a sound default).
    """
    VALID = NoClipping.VALID
    INVALID = [
        "import argparse, torch\np = argparse.ArgumentParser()\np.add_argument('--max_grad_norm', type=float, default=None)\nargs = p.parse_args()\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    if args.max_grad_norm is not None:\n        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)\n    optimizer.step()\n",
        {
            "train.py": "import torch\nfrom config import TrainConfig\ncfg = TrainConfig()\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    if cfg.max_grad_norm:\n        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)\n    optimizer.step()\n",
            "config.py": "from dataclasses import dataclass\n@dataclass\nclass TrainConfig:\n    max_grad_norm: float = None  # try without clipping first\n",
        },
    ]

    def applies(self, index: UnitIndex) -> bool:
        facts = clip_facts(index)
        return bool(facts.calls or facts.handed or facts.configured)

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = clip_facts(index)
        for clip in facts.calls:
            threshold = _threshold_node(clip)
            value = literal(threshold) if threshold is not None else UNKNOWN
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
                yield Hit.at(clip, "the clipping threshold is 0: gradient clipping is turned off")
                return
            candidates = []
            name = dotted(threshold) if threshold is not None else ""
            if name and name != "None":
                candidates.append(name)
            candidates += [n for n in _guard_names(clip) if CLIP_SETTING.search(n.rsplit(".", 1)[-1]) and not re.match(r"(no|disable|skip|without)_", n.rsplit(".", 1)[-1])]
            for candidate in candidates:
                setting = disabled_setting(index, candidate)
                if setting is not None:
                    yield Hit(setting.path, setting.line, setting.col, f"gradient clipping is turned off by default ({setting.name} = {setting.value!r}), so nothing is clipped unless the run sets it")
                    return
        for call in facts.handed:
            if call.method in ("Trainer",):
                value = call.kwarg("gradient_clip_val")
                v = literal(value) if value is not None else "absent"
                if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0):
                    yield Hit.at(call, "the Lightning Trainer is built with gradient_clip_val None/0: gradient clipping is turned off")
                    return
        for setting in facts.configured:
            if setting.value in DISABLED and setting.name == "gradient_clip_val":
                yield Hit(setting.path, setting.line, setting.col, "gradient_clip_val is None/0 in the config: gradient clipping is turned off")
                return


# --- fix -----------------------------------------------------------------------------
MAX_GRAD_NORM_WHY = "clip the global gradient norm to this before each optimizer step (try 0.5 for gentler clipping)"


class ClippingFix(Fix):
    """Clip the real gradients right before the optimizer step.

    CLIP001: insert ``torch.nn.utils.clip_grad_norm_(<the optimizer's parameters>, <max_grad_norm>)``
    before every optimizer step (``accelerator.clip_grad_norm_`` under accelerate, under
    ``if accelerator.sync_gradients:`` inside ``accelerator.accumulate``; after
    ``scaler.unscale_(optimizer)``, inserted when missing, with a GradScaler; ``gradient_clip_val``
    on a Lightning Trainer). The threshold is the trainer's ``max_grad_norm`` setting, added as a
    config field or argparse flag with default 1.0 when it has none; an existing value (the plan's
    0.5 included) is kept. CLIP002: move the existing ``scaler.unscale_`` before the clipping, or
    insert one. CLIP003: move the clipping (with the ``if`` that guards only it) before the step.
    """

    codes = ("CLIP001", "CLIP002", "CLIP003")

    def apply(self, ctx: FixContext, findings: list) -> None:
        index = ctx.index
        edits = Edits(ctx)
        for finding in sorted(findings, key=lambda f: f.code):
            where = (finding.location.path, finding.location.line, finding.location.col)
            if finding.code == "CLIP001":
                self._add_clipping(index, edits, where)
            elif finding.code == "CLIP002":
                self._unscale_first(index, edits, _call_at(index, where, clip_calls(index)))
            else:
                self._clip_before_step(index, edits, _call_at(index, where, clip_calls(index)))
        edits.apply()

    # CLIP001 -----------------------------------------------------------------------
    def _add_clipping(self, index: UnitIndex, edits: Edits, where) -> None:
        trainer = next((c for c in lightning_trainer_calls(index) if (c.path, c.line, c.col) == where), None)
        if trainer is not None:
            home = settings_home(index, trainer.function)
            value = ensure_setting(edits, index, home, "max_grad_norm", "float", "1.0", MAX_GRAD_NORM_WHY) if home else "1.0"
            module = edits.module(trainer.path)
            edits.replace(trainer.path, trainer.node, lambda node: with_keyword(node, "gradient_clip_val", expression(module, value)))
            return
        steps = [s for s in optimizer_steps(index) if not _in_sampling(index, s)]
        if not steps:
            path, line, _ = where
            raise CannotFix(path, line, "no optimizer step to clip before", "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # before optimizer.step()")
        for step in steps:
            self._clip_before(index, edits, step)

    def _clip_before(self, index: UnitIndex, edits: Edits, step: CallSite) -> None:
        tree = edits.tree(step.path)
        module = edits.module(step.path)
        anchor = tree.statement(step.node)
        scaler = step.receiver if has_role(index, step.receiver, "scaler") else ""
        optimizer = code_of(step.args[0].value).strip() if scaler and step.args else step.receiver
        params = optimizer_parameters(index, optimizer, step.function)
        home = settings_home(index, step.function)
        threshold = ensure_setting(edits, index, home, "max_grad_norm", "float", "1.0", MAX_GRAD_NORM_WHY) if home else "1.0"
        if not is_call_statement(anchor, step.node) or not optimizer:
            raise CannotFix(step.path, step.line, f"`{step.text}` is not a statement of its own, so there is no proven place to clip before it",
                            f"torch.nn.utils.clip_grad_norm_({params}, {threshold})  # right before {step.text}")
        accelerator = accelerator_of(index, step)
        new: list[cst.BaseStatement] = []
        if accelerator:
            clip = f"{accelerator}.clip_grad_norm_({params}, {threshold})"
            if any(re.search(r"\.accumulate\(", w) for w in step.with_items):
                # Inside accelerator.accumulate the gradients are complete only on sync steps.
                new.append(statement(module, f"if {accelerator}.sync_gradients:\n    {clip}\n"))
            else:
                new.append(statement(module, clip))
        else:
            if scaler and not _unscaled_before(index, scaler, step):
                new.append(statement(module, f"{scaler}.unscale_({optimizer})  # clip the real gradients, not the loss-scaled ones"))
            torch = module_name(edits, index, step.path, "torch")
            new.append(statement(module, f"{torch}.nn.utils.clip_grad_norm_({params}, {threshold})"))
        edits.insert_before(step.path, anchor, new)

    # CLIP002 -----------------------------------------------------------------------
    def _unscale_first(self, index: UnitIndex, edits: Edits, clip: CallSite) -> None:
        tree = edits.tree(clip.path)
        clip_stmt = tree.statement(clip.node)
        here = index.calls_in(clip.function)
        scaler_steps = [c for c in here if c.method == "step" and has_role(index, c.receiver, "scaler") and c.args and not exclusive(c, clip)]
        if not scaler_steps:
            raise CannotFix(clip.path, clip.line, "cannot tell which optimizer the GradScaler steps", "scaler.unscale_(optimizer)  # right before the clipping")
        scaler, optimizer = scaler_steps[0].receiver, code_of(scaler_steps[0].args[0].value).strip()
        later = [c for c in here if c.method == "unscale_" and c.receiver == scaler and (c.line, c.col) > (clip.line, clip.col) and not exclusive(c, clip)]
        if later:
            unscale_stmt = tree.statement(later[0].node)
            if tree.block(unscale_stmt) is not tree.block(clip_stmt) or not is_call_statement(unscale_stmt, later[0].node):
                raise CannotFix(clip.path, clip.line, f"`{later[0].text}` runs after the clipping but in another block: moving it could unscale twice",
                                f"{later[0].text}\n{clip.text}")
            edits.move_before(clip.path, unscale_stmt, clip_stmt)
        else:
            edits.insert_before(clip.path, clip_stmt, [statement(edits.module(clip.path), f"{scaler}.unscale_({optimizer})  # clip the real gradients, not the loss-scaled ones")])

    # CLIP003 -----------------------------------------------------------------------
    def _clip_before_step(self, index: UnitIndex, edits: Edits, clip: CallSite) -> None:
        tree = edits.tree(clip.path)
        moved = tree.statement(clip.node)
        steps = [s for s in optimizer_steps(index) if s.path == clip.path and s.function == clip.function and (s.line, s.col) < (clip.line, clip.col) and not exclusive(s, clip)]
        step = steps[-1]
        step_stmt = tree.statement(step.node)
        block = tree.block(step_stmt)
        if tree.block(moved) is not block:
            holder = tree.owner_statement(moved)
            # `if accelerator.sync_gradients:` around the clipping alone moves with it.
            if isinstance(holder, cst.If) and holder.orelse is None and len(holder.body.body) == 1 and tree.block(holder) is block:
                moved = holder
        if tree.block(moved) is not block or not (is_call_statement(moved, clip.node) or isinstance(moved, cst.If)):
            raise CannotFix(clip.path, clip.line, f"the clipping and `{step.text}` are in different blocks: no proven place to move it to",
                            f"{clip.text}  # move right before {step.text} (line {step.line})")
        scaler = step.receiver if has_role(index, step.receiver, "scaler") else ""
        if scaler and is_torch_clip(clip) and step.args and not _unscaled_before(index, scaler, step):
            optimizer = code_of(step.args[0].value).strip()
            edits.insert_before(clip.path, step_stmt, [statement(edits.module(clip.path), f"{scaler}.unscale_({optimizer})  # clip the real gradients, not the loss-scaled ones")])
        edits.move_before(clip.path, moved, step_stmt)


def _call_at(index: UnitIndex, where, calls: list[CallSite]) -> CallSite:
    found = next((c for c in calls if (c.path, c.line, c.col) == where), None)
    if found is None:
        path, line, _ = where
        raise CannotFix(path, line, "the clipping call this finding names is gone", "")
    return found


def _unscaled_before(index: UnitIndex, scaler: str, step: CallSite) -> bool:
    return any(
        c.method == "unscale_" and c.receiver == scaler and (c.line, c.col) < (step.line, step.col) and not exclusive(c, step)
        for c in index.calls_in(step.function)
    )


def _in_sampling(index: UnitIndex, call: CallSite) -> bool:
    return call.function is not None and call.function in sampling_functions(index)
