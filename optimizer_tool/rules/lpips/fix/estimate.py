"""The code of the perceptual term's inputs: the x0 estimate recovered from the model output, and
video frames folded into the batch; module-level helpers are added once when the trainer lacks them."""

from __future__ import annotations

import re

import libcst as cst

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.settings import module_name
from optimizer_tool.edit.templates import snippet
from optimizer_tool.index import CallSite, FunctionInfo, UnitIndex
from optimizer_tool.rules.lpips.fix.shared import manual_patch
from optimizer_tool.rules.lpips.fix.step import DenoisingStep, scheduler_class, target_kind

X0_HELPER = '''
def predict_x0(alphas_cumprod, prediction_type, model_output, sample, timesteps):
    """The model's estimate of the clean sample x0 at ``timesteps`` from its output (noise, v or x0)."""
    alpha_bar = alphas_cumprod.to(sample.device, sample.dtype)[timesteps].view(-1, *[1] * (sample.ndim - 1))
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * sample - (1 - alpha_bar).sqrt() * model_output
    if prediction_type == "sample":
        return model_output
    return (sample - (1 - alpha_bar).sqrt() * model_output) / alpha_bar.sqrt()
'''
FRAMES_HELPER = '''
def fold_frames(video, num_frames):
    """``num_frames`` evenly spaced frames of each [B, C, T, H, W] clip folded into the batch as the
    [B * num_frames, C, H, W] images LPIPS takes (every frame when num_frames <= 0)."""
    b, c, t, h, w = video.shape
    if 0 < num_frames < t:
        video = video[:, :, {torch}.linspace(0, t - 1, num_frames, device=video.device).round().long()]
        t = num_frames
    return video.transpose(1, 2).reshape(b * t, c, h, w)
'''


def x0_estimate(edits: Edits, index: UnitIndex, step: DenoisingStep) -> str:
    """Code for the x0 estimate: the scheduler's own ``predict_x0`` when it has one, else ``predict_x0``
    (added to the module) over its ``alphas_cumprod`` and prediction type."""
    _, methods = scheduler_class(index, step.scheduler)
    own = next((f for f in methods if f.name == "predict_x0"), None)
    if own is not None:
        return f"{step.scheduler}.predict_x0({', '.join(_own_predict_x0_args(own, step))})"
    return _x0_from_alphas(edits, index, step, methods)


def _own_predict_x0_args(own: FunctionInfo, step: DenoisingStep) -> list[str]:
    """The arguments of the scheduler's own ``predict_x0``, matched to its parameters by their names."""
    params = [p for p in own.params if p != "self"]
    order = {"pred": step.prediction, "noisy": step.noisy, "t": step.timesteps}
    args = []
    for p in params[:3]:
        role = (
            "t"
            if re.search(r"^t$|time", p)
            else "noisy"
            if re.search(r"sample|x_t|noisy|^x$", p)
            else "pred"
            if re.search(r"output|pred|eps|noise", p)
            else None
        )
        if role is None:
            raise CannotFix(
                own.path, own.line, f"cannot tell what {own.qualname}'s parameter `{p}` takes", manual_patch()
            )
        args.append(order.pop(role))
    return args


def _x0_from_alphas(edits: Edits, index: UnitIndex, step: DenoisingStep, methods: list) -> str:
    """``predict_x0(alphas_cumprod, prediction_type, ...)`` for diffusers and hand-written schedulers
    whose ``alphas_cumprod`` and prediction type are known; refuses otherwise."""
    diffusers = any(o.startswith("diffusers") for o in index.origins(step.scheduler))
    has_alphas = diffusers or any(a.target == "self.alphas_cumprod" and a.function in methods for a in index.assigns)
    if diffusers:
        kind = f"{step.scheduler}.config.prediction_type"
    elif any(a.target == "self.prediction_type" and a.function in methods for a in index.assigns):
        kind = f"{step.scheduler}.prediction_type"
    else:
        kind = target_kind(index, step)
    if not has_alphas or kind is None:
        raise CannotFix(
            step.mse.path,
            step.mse.line,
            f"cannot tell how to recover x0 from `{step.scheduler}` (no predict_x0; no alphas_cumprod and prediction"
            " type)",
            manual_patch(),
        )
    module_helper(edits, index, step.mse, "predict_x0", X0_HELPER)
    return f"predict_x0({step.scheduler}.alphas_cumprod, {kind}, {step.prediction}, {step.noisy}, {step.timesteps})"


def images(edits: Edits, index: UnitIndex, step: DenoisingStep, settings: dict, x0: str) -> tuple[str, str]:
    """The two LPIPS inputs: 4-D images as they are, videos through ``fold_frames``."""
    if not settings.get("video"):
        return x0, step.clean
    module_helper(edits, index, step.mse, "fold_frames", FRAMES_HELPER)
    frames = settings["lpips_frames"]
    return f"fold_frames({x0}, {frames})", f"fold_frames({step.clean}, {frames})"


def module_helper(edits: Edits, index: UnitIndex, near: CallSite, name: str, source: str) -> None:
    """Insert module-level helper ``name`` (once) before the top-level statement that holds ``near``."""
    if any(
        f.name == name and f.path == near.path and f.class_name is None for f in index.functions
    ) or not edits.first_time((near.path, name)):
        return
    tree = edits.tree(near.path)
    top = tree.enclosing_in(near.node, tree.module)
    torch = module_name(edits, index, near.path, "torch")
    helper = snippet(tree.module, source.strip("\n").replace("{torch}", torch) + "\n")
    helper[0] = helper[0].with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()])
    edits.insert_before(near.path, top, helper)
