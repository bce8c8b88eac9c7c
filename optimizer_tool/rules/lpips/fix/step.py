"""The denoising step a new perceptual term is built from, proven through the assignments of the
MSE term's function, and where its model is built and lives."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.index import CallSite, UnitIndex, code_of, dotted
from optimizer_tool.knowledge.configured import expression_nodes
from optimizer_tool.knowledge.training import assignments_of, same_object
from optimizer_tool.rules.lpips.fix.shared import manual_patch
from optimizer_tool.rules.lpips.tracing import trace

PASS_THROUGH_CALLS = {"float", "half", "double", "to", "contiguous", "bfloat16"}


@dataclass
class DenoisingStep:
    """What the perceptual term is built from, each proven through the assignments of one function:
    ``noisy = scheduler.add_noise(clean, noise, t)``, ``pred = model(noisy, t, ...)``, ``mse(pred, ...)``."""

    mse: CallSite
    prediction: str  # the model output as the code names it (``noise_pred``)
    noisy: str
    clean: str
    timesteps: str
    scheduler: str


def strip(node):
    """``model_pred.float()`` -> ``model_pred``; ``unet(...).sample`` -> ``unet(...)``."""
    while True:
        if (
            isinstance(node, cst.Call)
            and isinstance(node.func, cst.Attribute)
            and node.func.attr.value in PASS_THROUGH_CALLS
        ):
            node = node.func.value
        elif isinstance(node, cst.Attribute) and node.attr.value == "sample" and isinstance(node.value, cst.Call):
            node = node.value
        else:
            return node


def denoising_step(index: UnitIndex, mse: CallSite) -> DenoisingStep:
    """Prove, through the assignments of the MSE term's function, which argument is the model's output
    and what it was computed from; refuse when any link is missing."""
    fn = mse.function
    for arg in mse.args[:2]:
        name = dotted(strip(arg.value))
        assigned = [a for a in assignments_of(index, name, fn, mse.line) if a.line <= mse.line] if name else []
        if not assigned:
            continue
        model_call = strip(assigned[-1].value)
        if not isinstance(model_call, cst.Call) or len(model_call.args) < 2:
            continue
        noisy = dotted(model_call.args[0].value)
        noised = (
            [
                a
                for a in assignments_of(index, noisy, fn, mse.line)
                if a.call is not None and a.call.method in ("add_noise", "q_sample")
            ]
            if noisy
            else []
        )
        if not noised:
            continue
        add_noise = noised[-1].call
        clean = add_noise.arg(0, "original_samples") if add_noise.method == "add_noise" else add_noise.arg(0, "x_start")
        t_add = add_noise.arg(2, "timesteps") if add_noise.method == "add_noise" else add_noise.arg(1, "t")
        t_model = model_call.args[1].value
        if (
            clean is None
            or t_add is None
            or code_of(t_add).strip() != code_of(t_model).strip()
            or not add_noise.receiver
        ):
            continue
        return DenoisingStep(mse, name, noisy, code_of(clean).strip(), code_of(t_model).strip(), add_noise.receiver)
    raise CannotFix(
        mse.path,
        mse.line,
        "cannot prove which MSE argument is the model output of `noisy = scheduler.add_noise(x0, noise, t)`",
        manual_patch(),
    )


def scheduler_class(index: UnitIndex, scheduler: str) -> tuple[str, list]:
    origins = index.origins(scheduler)
    leaves = {o.rsplit(".", 1)[-1] for o in origins}
    methods = [f for f in index.functions if f.class_name in leaves]
    return next(iter(sorted(leaves)), ""), methods


def target_kind(index: UnitIndex, step: DenoisingStep) -> str | None:
    """What the model predicts, as the loss target proves it: the noise (epsilon), ``get_velocity`` (v)
    or the clean sample; None when the target depends on a run-time choice."""
    other = next((a.value for a in step.mse.args[:2] if dotted(strip(a.value)) != step.prediction), None)
    source = trace(index, other, step.mse.function, step.mse.line).source if other is not None else "unknown"
    return {"noise": '"epsilon"', "velocity": '"v_prediction"', "data": '"sample"'}.get(source)


def model_of(index: UnitIndex, step: DenoisingStep) -> str:
    assigned = assignments_of(index, step.prediction, step.mse.function, step.mse.line)
    call = strip(assigned[-1].value)
    return dotted(call.func)


def model_assignment(index: UnitIndex, model: str, mse: CallSite):
    """The assignment that builds ``model``: in ``__init__`` for ``self.model``, else in the step's function
    before the MSE term (the first one: later ones re-wrap it, e.g. ``accelerator.prepare``)."""
    if model.startswith("self."):
        found = [
            a
            for a in index.assigns
            if same_object(a.target, model)
            and a.function is not None
            and a.function.name == "__init__"
            and mse.function is not None
            and a.function.class_name == mse.function.class_name
        ]
    else:
        found = [
            a
            for a in index.assigns
            if a.target == model and a.function == mse.function and a.path == mse.path and a.line < mse.line
        ]
    return found[0] if found else None


def device_of(index: UnitIndex, assign, step: DenoisingStep) -> str | None:
    """The model's device: the argument of its ``.to(...)``, the accelerator's device, a ``device`` variable."""
    for node in expression_nodes(assign.value):
        if (
            isinstance(node, cst.Call)
            and isinstance(node.func, cst.Attribute)
            and node.func.attr.value == "to"
            and node.args
        ):
            return code_of(node.args[0].value).strip()
    accelerators = [
        c.receiver
        for c in index.calls_in(step.mse.function)
        if c.method == "backward" and any(o.startswith("accelerate.") for o in index.origins(c.receiver))
    ]
    if accelerators:
        return f"{accelerators[0]}.device"
    for name in ("self.device", "device"):
        if any(a.target == name and (a.function == assign.function or name.startswith("self.")) for a in index.assigns):
            return name
    return None
