"""What every step of the ema fix shares: one run's state (``EmaEdit``: the unit, its edits, the
trained network, the decay and the checkpoint key the steps agree on), whether code can reach the
EMA, the decay that fits the run, and the manual patches offered when a step refuses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from optimizer_tool.contract import CannotFix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.ema import EmaTarget
from optimizer_tool.edit.handoff import hand_over, handover_patch
from optimizer_tool.edit.settings import ensure_setting, module_name
from optimizer_tool.edit.templates import template_expression, template_statements
from optimizer_tool.index import CallSite, UnitIndex
from optimizer_tool.knowledge.helpers import NotHandedOver, helper_call
from optimizer_tool.knowledge.settings import settings_home
from optimizer_tool.knowledge.training import run_length, trained_model

EMA_DECAY = 0.999  # ~1,000 optimizer steps of averaging, warmed up where the EMA supports it
EMA_DECAY_STEPS = round(1 / (1 - EMA_DECAY))
RUN_FRACTION = 10  # a known run length caps the horizon at a tenth of the run

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
"""  # noqa: E501


def fitting_decay(index: UnitIndex) -> float:
    """0.999, or less when the run is known to be too short for ~1,000 steps of averaging."""
    total = run_length(index)
    if total is None or total[0] >= EMA_DECAY_STEPS * RUN_FRACTION:
        return EMA_DECAY
    return round(1 - RUN_FRACTION / max(total[0], 2 * RUN_FRACTION), 4)


def flagged_calls(calls: list[CallSite], findings: list, code: str) -> list[CallSite]:
    """The calls that the findings of ``code`` point at."""
    spots = {(f.location.path, f.location.line, f.location.col) for f in findings if f.code == code}
    return [c for c in calls if (c.path, c.line, c.col) in spots]


class EmaEdit:
    """One run of the ema fix: the unit and its edits, the network the optimizer step trains, and
    what one step decides for the next (the decay expression, the checkpoint key of the EMA)."""

    def __init__(self, ctx: FixContext) -> None:
        self.ctx = ctx
        self.index = ctx.index
        self.edits = Edits(ctx)
        self.trained = trained_model(self.index)
        self.key: str | None = None  # the checkpoint key the EMA is saved under
        self.created: tuple | None = None  # a new EMA's (path, anchor, statements), placed last
        self._decay: str | None = None

    def statements(self, path: Path, template: str, target: EmaTarget, **values) -> list:
        """``template`` with ``{ema}``, ``{model}`` and ``{weights}`` filled in for ``target``."""
        module = self.edits.module(path)
        if "torch." in template:  # spelled the way the file imports torch (imported when missing)
            template = template.replace("torch.", module_name(self.edits, self.index, path, "torch") + ".")
        weights = template_expression(module, target.api.weights, ema=target.name) if target.api.weights else None
        filled = {
            "ema": target.name,
            "model": target.model,
            **({"weights": weights} if weights is not None else {}),
            **values,
        }
        return template_statements(module, template, **filled)

    def visible(self, target: EmaTarget, function, path: Path) -> bool:
        """Whether code in ``function`` can reach the EMA (a method of the same class, the creating
        function or one nested in it, or anywhere in the file of a module-level EMA)."""
        if path != target.path:
            return False
        if target.name.startswith("self."):
            owner = target.function.class_name if target.function is not None else None
            return (
                function is not None
                and owner is not None
                and any(
                    f.class_name == owner and f.path == path and f.line <= function.line <= f.end_line
                    for f in self.index.functions
                )
            )
        if target.function is None:
            return True
        return function is not None and target.function.line <= function.line <= target.function.end_line

    def unreachable(
        self, target: EmaTarget, function, path: Path, line: int, what: str, patch: str, why: str = ""
    ) -> CannotFix:
        where = f"`{function.name}`" if function is not None else "module level"
        because = f" ({why})" if why else ""
        return CannotFix(
            path,
            line,
            f"{what} happens in {where}, which cannot reach `{target.name}`{because}; pass the EMA there",
            patch,
        )

    def at_step(self, target: EmaTarget, template: str) -> EmaTarget:
        """``target`` as the optimizer step's function sees it. Where that is a helper the trainer calls
        (``train_one_epoch(model, loader, optimizer)``) and nothing else calls, the EMA is handed to it
        as a keyword parameter ``ema=None`` (``ema=ema`` at its call sites): the EMA there is that
        parameter, under ``if ema is not None:``, and the network is the parameter that receives it.
        ``template`` is the code that will run there (for the refusal's manual patch)."""
        step = self.trained.step
        if self.visible(target, step.function, step.path):
            return target
        name = target.name.rsplit(".", 1)[-1]

        def refuse(why: str, model: str = "") -> CannotFix:
            """``model``: the helper's name for the network, none when it does not receive it."""
            code = template.replace("{ema}", name).replace("{model}", model or target.model)
            if "{decay}" in code:
                code = code.replace("{decay}", self.decay_expression())
            also = "" if model or "{model}" not in template else target.model
            patch = handover_patch(handed, name, target.name, code, also) if handed is not None else ""
            return self.unreachable(target, step.function, step.path, step.line, "the optimizer step", patch, why)

        handed = None
        try:
            handed = helper_call(self.index, step, lambda function, path: self.visible(target, function, path))
        except NotHandedOver as exc:
            raise refuse(str(exc)) from None
        model = handed.parameter_for(target.model)
        if model is None:
            raise refuse(f"`{handed.helper.name}` does not receive `{target.model}`, the network the EMA averages")
        if not handed.free(name):
            raise refuse(f"`{name}` is already a name in `{handed.helper.name}`", model)
        if handed.assigns(self.index, model):
            raise refuse(f"`{handed.helper.name}` rebinds `{model}`", model)
        if target.conditions or not all(target.exists_at(site) for site in handed.sites):
            raise refuse(f"`{target.name}` does not exist at every call of `{handed.helper.name}`", model)
        if "{decay}" in template and not _is_number(self.decay_expression()):
            raise refuse(f"the update reads `{self.decay_expression()}`, which `{handed.helper.name}` cannot", model)
        hand_over(self.edits, handed, name, target.name)
        return dataclasses.replace(
            target,
            name=name,
            model=model,
            function=handed.helper,
            path=handed.helper.path,
            conditions=(f"{name} is not None",),
            line=0,
        )

    def accelerator(self) -> str | None:
        """The accelerator whose ``save_state``/``load_state`` write and read the checkpoints."""
        calls = [
            c
            for c in self.index.method_calls("save_state", "load_state")
            if any(o.startswith("accelerate.") for o in self.index.origins(c.receiver))
        ]
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
                self._decay = ensure_setting(
                    self.edits,
                    self.index,
                    home,
                    "ema_decay",
                    "float",
                    repr(decay),
                    "the EMA averages over ~1 / (1 - ema_decay) optimizer steps",
                )
        return self._decay


def _is_number(code: str) -> bool:
    try:
        float(code)
    except ValueError:
        return False
    return True
