"""What the lpips rules and fix know about a unit: the perceptual-loss modules and calls, the MSE
terms, whether the data are videos and whether a perceptual value reaches the training loss."""

from __future__ import annotations

import re
from dataclasses import dataclass

import libcst as cst

from optimizer_tool.index import CallSite, FunctionInfo, UnitIndex, dotted, literal
from optimizer_tool.knowledge.configured import expression_nodes
from optimizer_tool.knowledge.diffusion import prediction_type
from optimizer_tool.knowledge.objective import squared_difference
from optimizer_tool.knowledge.training import call_of, memo, names_in, run_by_entry, sampling_functions

LPIPS_CONSTRUCTORS = (
    "lpips.LPIPS",
    "lpips.LPIPS.*",
    "lpips.lpips.LPIPS",
    "lpips.lpips.LPIPS.*",
    "lpips.PerceptualLoss",
    "lpips.PerceptualLoss.*",
)
TORCHMETRICS_CONSTRUCTORS = (
    "torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity",
    "torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity.*",
    "torchmetrics.image.LearnedPerceptualImagePatchSimilarity",
    "torchmetrics.image.LearnedPerceptualImagePatchSimilarity.*",
    "torchmetrics.LearnedPerceptualImagePatchSimilarity",
    "torchmetrics.LearnedPerceptualImagePatchSimilarity.*",
)
OTHER_CONSTRUCTORS = (
    "piq.LPIPS",
    "piq.LPIPS.*",
    "piq.DISTS",
    "piq.DISTS.*",
    "pyiqa.create_metric",
    "pyiqa.create_metric.*",
)
FUNCTIONAL = (
    "torchmetrics.functional.image.lpips.learned_perceptual_image_patch_similarity",
    "torchmetrics.functional.learned_perceptual_image_patch_similarity",
    "torchmetrics.functional.image.learned_perceptual_image_patch_similarity",
    "*.learned_perceptual_image_patch_similarity",
)
PERCEPTUAL_CLASS = re.compile(r"Perceptual|LPIPS|Lpips|VGGLoss|VggLoss|VGG16Loss|VGG19Loss|DISTS")
PERCEPTUAL_FUNCTION = re.compile(r"(^|_)(perceptual|lpips)(_|$)", re.I)
# any mention of a perceptual network in source text: a superset of the two above and of the constructors
# ``_constructor_kind`` knows, read before tracing them (which costs seconds on a large unit)
PERCEPTUAL_NAME = re.compile(r"lpips|perceptual|vgg\w*loss|\bdists\b", re.I)
MSE_CALLS = ("torch.nn.functional.mse_loss", "*.mse_loss", "torch.nn.MSELoss", "*.MSELoss", "mse_loss")
LATENT_HINTS = re.compile(
    r"(^|\.)(AutoencoderKL|encode_first_stage|first_stage_model|latent_dist|VQModel)$|(^|\.)vae\.encode$"
)
NOT_TRAINING = re.compile(
    r"(^|_)(val|valid|validate|validation|eval|evaluate|test|metric|metrics|score|benchmark)(_|$)", re.I
)
VIDEO_SETTINGS = (
    "num_frames",
    "n_frames",
    "frames",
    "video_length",
    "num_frames_per_clip",
    "clip_length",
    "clip_len",
    "sequence_length",
    "seq_len_frames",
    "video_frames",
    "frame_count",
)
VIDEO_CLASS = re.compile(r"(3D|3d|Video|video|Temporal)\w*$")
DIMENSION_CASE = re.compile(r"^\w*dim\w*\s*==\s*3$")  # ``dims == 3``: one case of a dimension dispatcher


@dataclass
class Perceptual:
    """One perceptual-loss evaluation."""

    call: CallSite
    kind: str  # 'lpips' | 'torchmetrics' | 'other'
    constructor: CallSite | None = None


# --- the perceptual term ---------------------------------------------------------------
def _constructor_kind(call: CallSite) -> str | None:
    if call.matches(LPIPS_CONSTRUCTORS):
        return "lpips"
    if call.matches(TORCHMETRICS_CONSTRUCTORS):
        return "torchmetrics"
    if call.matches(OTHER_CONSTRUCTORS):
        return "other"
    leaf = call.method or call.func_text
    if leaf and leaf[:1].isupper() and PERCEPTUAL_CLASS.search(leaf):
        return "other"
    return None


def perceptual_objects(index: UnitIndex) -> dict[str, tuple[str, CallSite]]:
    """Variables holding a perceptual loss module: name -> (kind, constructor call)."""
    return memo(index, "lpips.objects", lambda: _perceptual_objects(index))


def _perceptual_objects(index: UnitIndex) -> dict[str, tuple[str, CallSite]]:
    found: dict[str, tuple[str, CallSite]] = {}
    for assign in index.assigns:
        for node in expression_nodes(assign.value):
            if isinstance(node, cst.Call):
                site = call_of(index, node)
                kind = _constructor_kind(site) if site is not None else None
                if kind is not None:
                    found[assign.target] = (kind, site)
                    break
    return found


def perceptual_calls(index: UnitIndex) -> list[Perceptual]:
    return memo(index, "lpips.calls", lambda: _perceptual_calls(index))


def _perceptual_calls(index: UnitIndex) -> list[Perceptual]:
    objects = perceptual_objects(index)
    leaves = {name.rsplit(".", 1)[-1]: value for name, value in objects.items() if name.startswith("self.")}
    found = []
    for call in index.calls:
        target = call.func_text[: -len(".forward")] if call.func_text.endswith(".forward") else call.func_text
        entry = objects.get(target) or (leaves.get(target.rsplit(".", 1)[-1]) if target.startswith("self.") else None)
        if entry is not None and len(call.args) >= 2:
            found.append(Perceptual(call, entry[0], entry[1]))
        elif call.matches(FUNCTIONAL):
            found.append(Perceptual(call, "torchmetrics"))
        elif _constructor_kind(call) is not None and isinstance(call.node.func, cst.Call):
            pass
        elif (
            len(call.args) >= 2
            and PERCEPTUAL_FUNCTION.search(call.method or "")
            and not (call.function and PERCEPTUAL_FUNCTION.search(call.function.name))
        ):
            found.append(Perceptual(call, "other"))
    return found


def training_calls(index: UnitIndex) -> list[Perceptual]:
    """The perceptual calls of the training step (not of sampling, validation or metrics)."""
    return [p for p in perceptual_calls(index) if training_function(index, p.call.function)]


# --- the MSE term ------------------------------------------------------------------------
def _squared_difference(node) -> bool:
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Power) and literal(node.right) == 2:
        return isinstance(node.left, cst.BinaryOperation) and isinstance(node.left.operator, cst.Subtract)
    if (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value in ("pow", "square", "pow_")
    ):
        inner = node.func.value
        return isinstance(inner, cst.BinaryOperation) and isinstance(inner.operator, cst.Subtract)
    return False


def mse_calls(index: UnitIndex) -> list[CallSite]:
    """Pixel losses: ``F.mse_loss``, ``nn.MSELoss``, ``mean_flat((target - out) ** 2)`` and the forms
    written by hand that the objective model reads (``((a - b) ** 2).mean()``, ``.square().sum(dim=...)``,
    a project helper squaring its argument)."""
    found = []
    for call in index.calls:
        if call.matches(MSE_CALLS) or squared_difference(call, index) is not None:
            found.append(call)
            continue
        func = call.node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "mean" and _squared_difference(func.value):
            found.append(call)
        elif (
            call.args
            and _squared_difference(call.args[0].value)
            and (call.method or call.func_text) in ("mean_flat", "mean", "sum_flat")
        ):
            found.append(call)
    return found


def training_function(index: UnitIndex, function: FunctionInfo | None) -> bool:
    """Code of the training step: reached when the unit trains, and not sampling or evaluation."""
    if function is None:
        return True
    if function in sampling_functions(index) or NOT_TRAINING.search(function.name):
        return False
    return run_by_entry(index, function)


def predicts_x0(index: UnitIndex) -> bool:
    return prediction_type(index).value == "x0"


# --- the data ------------------------------------------------------------------------------
def is_video(index: UnitIndex) -> bool:
    """The trainer's data are videos: a frame count, a ``b c t h w`` rearrange, 5-D shapes, 3-D/video models."""
    if any(
        isinstance(s.value, int) and not isinstance(s.value, bool) and s.value > 1
        for s in index.setting(*VIDEO_SETTINGS)
    ):
        return True
    if any(_video_call(call) for call in index.calls):
        return True
    return _unpacks_five_dimensions(index)


def _video_call(call: CallSite) -> bool:
    """An einops pattern with a time axis over five dimensions, or a 3-D / video model class."""
    if (call.method or call.func_text) in ("rearrange", "repeat", "reduce") and len(call.args) >= 2:
        pattern = literal(call.args[1].value)
        if isinstance(pattern, str) and "->" in pattern:
            if any(len(re.findall(r"\([^)]*\)|[a-z_]+", side)) >= 5 for side in pattern.split("->")) and re.search(
                r"\b(t|f|frames?|time)\b", pattern
            ):
                return True
    leaf = call.method or call.func_text
    # guided-diffusion's ``conv_nd(dims, ...)`` builds ``nn.Conv3d`` only ``elif dims == 3``: a layer
    # for any dimension, not a sign of video data
    if not (leaf and leaf[:1].isupper() and VIDEO_CLASS.search(leaf)):
        return False
    return not any(DIMENSION_CASE.search(g) for g in call.guards)


def _unpacks_five_dimensions(index: UnitIndex) -> bool:
    """``b, c, t, h, w = x.shape``: five targets unpacked from one shape."""
    shapes: dict[tuple, int] = {}
    for assign in index.assigns:
        if dotted(assign.value).endswith(".shape") or (
            isinstance(assign.value, cst.Attribute) and assign.value.attr.value == "shape"
        ):
            key = (assign.path, assign.line, assign.col)
            shapes[key] = shapes.get(key, 0) + 1
    return any(n == 5 for n in shapes.values())


# --- where the perceptual value goes ---------------------------------------------------------
def _result_targets(index: UnitIndex, call: CallSite) -> list[str]:
    out = []
    for assign in index.assigns:
        if (
            assign.function == call.function
            and assign.path == call.path
            and assign.line <= call.line
            and any(n is call.node for n in expression_nodes(assign.value))
        ):
            out.append(assign.target)
    return out


def flows_into_loss(index: UnitIndex, call: CallSite) -> bool:
    """The perceptual value is part of what gets back-propagated (a ``loss`` sum, a backward, a return)."""
    targets = set(_result_targets(index, call))
    in_function = [a for a in index.assigns if a.function == call.function and a.path == call.path]
    for assign in in_function:
        if assign.target in targets or not re.search(r"loss", assign.target, re.I):
            continue
        if any(n is call.node for n in expression_nodes(assign.value)):
            return True
        # by name only after it: a training sum above an evaluation block that reuses the name for its
        # no_grad metric (img2img-turbo's ``loss_lpips``) adds the training value, not this one
        if assign.line > call.line and names_in(assign.value) & targets:
            return True
    for ret in index.returns:
        if (
            ret.function == call.function
            and ret.path == call.path
            and (names_in(ret.value) & targets or any(n is call.node for n in expression_nodes(ret.value)))
        ):
            return True
    return any(c.method == "backward" and (names_in(c.node) & targets) for c in index.calls_in(call.function))
