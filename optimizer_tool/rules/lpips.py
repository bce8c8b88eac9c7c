"""Perceptual loss (plan priority 3).

MSE weighs every pixel alike; a small LPIPS term (weight ~0.1) computed on the
model's estimate of the clean image x0 pushes training toward sharper textures
and hand shapes. It only helps when it is a real, differentiable term on an
image: not under ``torch.no_grad()``, not on a detached input, on the x0
estimate rather than the noise / v prediction, in the input range the metric
expects ([-1, 1] for ``lpips.LPIPS`` unless ``normalize=True``), and on 4-D
image batches (video frames folded into the batch).

Recognised: ``lpips.LPIPS``, torchmetrics ``LearnedPerceptualImagePatchSimilarity``
(and its functional form), ``piq`` LPIPS/DISTS, a project's own VGG / perceptual
loss class or ``perceptual_loss`` function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

import libcst as cst

import libcst.matchers as m

from optimizer_tool.codemod import (
    Edits,
    ensure_flag,
    ensure_setting,
    expression,
    module_name,
    names_in_node,
    set_in_presets,
    settings_home,
    snippet,
    statement,
)
from optimizer_tool.cstedit import insert_dict_element
from optimizer_tool.findings import Severity
from optimizer_tool.index import CallSite, FunctionInfo, UnitIndex, code_of, dotted, literal
from optimizer_tool.rules.base import CannotFix, Fix, FixContext, Hit, Rule
from optimizer_tool.semantics import (
    assignments_of,
    expression_nodes,
    has_role,
    memo,
    call_of,
    names_in,
    prediction_type,
    same_object,
    sampling_functions,
    trains,
)

KEY = "lpips"
TITLE = "Perceptual (LPIPS) loss"
SAFE_FIX = False  # adding a loss term changes the training objective

LPIPS_CONSTRUCTORS = ("lpips.LPIPS", "lpips.LPIPS.*", "lpips.lpips.LPIPS", "lpips.lpips.LPIPS.*", "lpips.PerceptualLoss", "lpips.PerceptualLoss.*")
TORCHMETRICS_CONSTRUCTORS = (
    "torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity", "torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity.*",
    "torchmetrics.image.LearnedPerceptualImagePatchSimilarity", "torchmetrics.image.LearnedPerceptualImagePatchSimilarity.*",
    "torchmetrics.LearnedPerceptualImagePatchSimilarity", "torchmetrics.LearnedPerceptualImagePatchSimilarity.*",
)
OTHER_CONSTRUCTORS = ("piq.LPIPS", "piq.LPIPS.*", "piq.DISTS", "piq.DISTS.*", "pyiqa.create_metric", "pyiqa.create_metric.*")
FUNCTIONAL = ("torchmetrics.functional.image.lpips.learned_perceptual_image_patch_similarity", "torchmetrics.functional.learned_perceptual_image_patch_similarity",
              "torchmetrics.functional.image.learned_perceptual_image_patch_similarity", "*.learned_perceptual_image_patch_similarity")
PERCEPTUAL_CLASS = re.compile(r"Perceptual|LPIPS|Lpips|VGGLoss|VggLoss|VGG16Loss|VGG19Loss|DISTS")
PERCEPTUAL_FUNCTION = re.compile(r"(^|_)(perceptual|lpips)(_|$)", re.I)
MSE_CALLS = ("torch.nn.functional.mse_loss", "*.mse_loss", "torch.nn.MSELoss", "*.MSELoss", "mse_loss")
LATENT_HINTS = re.compile(r"(^|\.)(AutoencoderKL|encode_first_stage|first_stage_model|latent_dist|VQModel)$|(^|\.)vae\.encode$")
NOT_TRAINING = re.compile(r"(^|_)(val|valid|validate|validation|eval|evaluate|test|metric|metrics|score|benchmark)(_|$)", re.I)

# Where a traced tensor comes from.
NOISE_LIKE = {"noise", "velocity", "prediction"}
# A name alone (a parameter, a loop variable) only says "noise prediction" when it cannot mean anything else.
STRONG_PREDICTION_NAME = re.compile(r"^(noise_pred|pred_noise|eps|eps_pred|pred_eps|epsilon|v_pred|pred_v|noise_prediction|predicted_noise|pred_velocity|v_prediction)$")
NOISE_NAME = re.compile(r"^(noise|noises|eps_target|velocity|v_target|target_noise)$")
X0_NAME = re.compile(r"x0|x_0|x_start|xstart|pred_original|original_sample|recon|clean|denoised|decoded|image|img|video|frame|pixel|sample_gt|gt|latents?$", re.I)
ESTIMATE_NAME = re.compile(r"pred_?x0|x0_?(pred|hat|est)|pred_?xstart|xstart_?pred|x_start_pred|pred_original|original_sample|denoised|recon|decoded", re.I)
X0_CALL = re.compile(r"predict_x0|predict_start|pred_x0|x0_from|_predict_xstart|predict_xstart|get_x0|predict_original|denoise|decode|x_start", re.I)
MODEL_CALL = re.compile(r"(^|[._])(model|unet|net|denoiser|transformer|dit|eps_model|denoise_fn|network|backbone)$", re.I)
ALPHA_NAME = re.compile(r"alpha|sqrt|sigma|snr|beta", re.I)
PASS_THROUGH = {"float", "half", "double", "bfloat16", "to", "cuda", "cpu", "contiguous", "clamp", "clamp_", "clip", "clip_", "type", "type_as", "requires_grad_", "detach_"}
SHAPE_OPS = {"flatten", "reshape", "view", "squeeze", "select", "unbind", "index_select", "mean", "sum", "narrow", "movedim", "unflatten", "chunk", "split", "permute", "transpose", "repeat", "expand", "view_as", "reshape_as", "gather", "max", "min", "amax"}
ARITH_METHODS = {"add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul", "div": "div", "div_": "div"}
VIDEO_SETTINGS = ("num_frames", "n_frames", "frames", "video_length", "num_frames_per_clip", "clip_length", "clip_len", "sequence_length", "seq_len_frames", "video_frames", "frame_count")
VIDEO_CLASS = re.compile(r"(3D|3d|Video|video|Temporal)\w*$")


@dataclass
class Perceptual:
    """One perceptual-loss evaluation."""

    call: CallSite
    kind: str  # 'lpips' | 'torchmetrics' | 'other'
    constructor: CallSite | None = None


@dataclass
class Trace:
    """What one argument of a perceptual call is, followed back through rescales, slices and assignments."""

    source: str = "unknown"  # noise | velocity | prediction | x0 | data | unknown
    name: str = ""
    detached: bool = False
    reduced: bool = False  # a dimension indexed away or frames folded into the batch (4-D)
    opaque: bool = False  # went through an operation whose shape effect is unknown
    ops: list = field(default_factory=list)  # arithmetic with literals, outermost first: ('div', 2.0)

    @property
    def rescaled_to_unit(self) -> bool:
        """(x + 1) / 2, (x + 1) * 0.5, x * 0.5 + 0.5, x / 2 + 0.5."""
        for outer, inner in zip(self.ops, self.ops[1:]):
            if outer in (("div", 2.0), ("mul", 0.5)) and inner == ("add", 1.0):
                return True
            if outer == ("add", 0.5) and inner in (("mul", 0.5), ("div", 2.0)):
                return True
        return False


# --- finding the pieces -------------------------------------------------------------
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
        elif len(call.args) >= 2 and PERCEPTUAL_FUNCTION.search(call.method or "") and not (call.function and PERCEPTUAL_FUNCTION.search(call.function.name)):
            found.append(Perceptual(call, "other"))
    return found


def has_perceptual(index: UnitIndex) -> bool:
    return bool(perceptual_objects(index)) or bool(perceptual_calls(index))


def _squared_difference(node) -> bool:
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Power) and literal(node.right) == 2:
        return isinstance(node.left, cst.BinaryOperation) and isinstance(node.left.operator, cst.Subtract)
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in ("pow", "square", "pow_"):
        inner = node.func.value
        return isinstance(inner, cst.BinaryOperation) and isinstance(inner.operator, cst.Subtract)
    return False


def mse_calls(index: UnitIndex) -> list[CallSite]:
    """MSE terms: ``F.mse_loss``, ``nn.MSELoss``, ``mean_flat((target - out) ** 2)``, ``((a - b) ** 2).mean()``."""
    found = []
    for call in index.calls:
        if call.matches(MSE_CALLS):
            found.append(call)
            continue
        func = call.node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "mean" and _squared_difference(func.value):
            found.append(call)
        elif call.args and _squared_difference(call.args[0].value) and (call.method or call.func_text) in ("mean_flat", "mean", "sum_flat"):
            found.append(call)
    return found


def _training_function(index: UnitIndex, function: FunctionInfo | None) -> bool:
    if function is None:
        return True
    if function in sampling_functions(index) or NOT_TRAINING.search(function.name):
        return False
    return True


def is_video(index: UnitIndex) -> bool:
    """The trainer's data are videos: a frame count, a ``b c t h w`` rearrange, 5-D shapes, 3-D/video models."""
    if any(isinstance(s.value, int) and not isinstance(s.value, bool) and s.value > 1 for s in index.setting(*VIDEO_SETTINGS)):
        return True
    for call in index.calls:
        if (call.method or call.func_text) in ("rearrange", "repeat", "reduce") and len(call.args) >= 2:
            pattern = literal(call.args[1].value)
            if isinstance(pattern, str) and "->" in pattern:
                if any(len(re.findall(r"\([^)]*\)|[a-z_]+", side)) >= 5 for side in pattern.split("->")) and re.search(r"\b(t|f|frames?|time)\b", pattern):
                    return True
        leaf = call.method or call.func_text
        if leaf and leaf[:1].isupper() and VIDEO_CLASS.search(leaf):
            return True
    shapes: dict[tuple, int] = {}
    for assign in index.assigns:
        if dotted(assign.value).endswith(".shape") or (isinstance(assign.value, cst.Attribute) and assign.value.attr.value == "shape"):
            key = (assign.path, assign.line, assign.col)
            shapes[key] = shapes.get(key, 0) + 1
    return any(n == 5 for n in shapes.values())


# --- tracing an argument ------------------------------------------------------------------
def trace(index: UnitIndex, node, function: FunctionInfo | None, line: int, depth: int = 0) -> Trace:
    t = Trace()
    _trace(index, node, function, line, t, depth)
    return t


def _number(node) -> float | None:
    value = literal(node)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _trace(index: UnitIndex, node, function, line: int, t: Trace, depth: int) -> None:
    for _ in range(40):
        if node is None or depth > 6:
            return
        if isinstance(node, cst.Subscript):
            key = literal(node.slice[0].slice.value) if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index) else None
            if isinstance(key, str):  # batch["video"]
                t.name = t.name or key
                t.source = "data" if X0_NAME.search(key) else "unknown"
                return
            if any(isinstance(e.slice, cst.Index) and not isinstance(e.slice.value, cst.Ellipsis) and not (isinstance(e.slice.value, cst.Name) and e.slice.value.value == "None") for e in node.slice):
                t.reduced = True
            node = node.value
            continue
        if isinstance(node, cst.BinaryOperation):
            left, right = _number(node.left), _number(node.right)
            op = node.operator
            kind = {cst.Add: "add", cst.Subtract: "sub", cst.Multiply: "mul", cst.Divide: "div"}.get(type(op))
            if kind and (left is not None) != (right is not None):
                t.ops.append((kind, left if left is not None else right))
                node = node.right if left is not None else node.left
                continue
            names = names_in(node)
            if any(ALPHA_NAME.search(n) for n in names):
                t.source = "x0"
                t.name = t.name or _main_name(node)
            return
        if isinstance(node, cst.Attribute) and not dotted(node):
            attr = node.attr.value
            if attr in ("pred_original_sample", "pred_xstart", "x0", "pred_x0", "denoised"):
                t.source = "x0"
                return
            if attr == "sample" and isinstance(node.value, cst.Call):
                _classify_call(index, node.value, t)
                return
            t.opaque = True
            return
        if isinstance(node, cst.Call):
            func = node.func
            callee = dotted(func)
            args = [a.value for a in node.args if a.keyword is None and not a.star]
            if isinstance(func, cst.Attribute):
                method = func.attr.value
                if method == "detach":
                    t.detached = True
                    node = func.value
                    continue
                if method in PASS_THROUGH:
                    node = func.value
                    continue
                if method in ARITH_METHODS and len(args) == 1 and _number(args[0]) is not None:
                    t.ops.append((ARITH_METHODS[method], _number(args[0])))
                    node = func.value
                    continue
                if method in SHAPE_OPS:
                    t.reduced = True
                    node = func.value
                    continue
            leaf = callee.rsplit(".", 1)[-1] if callee else ""
            if leaf in ("rearrange",) and len(args) >= 2:
                pattern = literal(args[1])
                if isinstance(pattern, str) and "->" in pattern:
                    out = pattern.split("->")[1]
                    if len(re.findall(r"\([^)]*\)|[A-Za-z_]+", out)) <= 4:
                        t.reduced = True
                else:
                    t.opaque = True
                node = args[0]
                continue
            if callee in ("torch.clamp", "torch.clip", "clamp") and args:
                node = args[0]
                continue
            _classify_call(index, node, t)
            return
        name = dotted(node)
        if not name:
            t.opaque = True
            return
        t.name = t.name or name
        assigned = [a for a in assignments_of(index, name, function, line) if a.line < line or name.startswith("self.")]
        if assigned:
            sources = []
            for assign in assigned[-4:]:
                sub = Trace(name=t.name, detached=t.detached, reduced=t.reduced, opaque=t.opaque, ops=list(t.ops))
                _trace(index, assign.value, assign.function, assign.line, sub, depth + 1)
                sources.append(sub)
            _merge(t, sources)
            return
        leaf = name.rsplit(".", 1)[-1]
        if STRONG_PREDICTION_NAME.search(leaf):
            t.source = "prediction"
        elif NOISE_NAME.search(leaf):
            t.source = "noise"
        elif ESTIMATE_NAME.search(leaf):
            t.source = "x0"
        elif X0_NAME.search(leaf):
            t.source = "data"
        if function is not None and leaf in function.params:
            t.opaque = True  # a parameter: its shape depends on the caller
        return


def _main_name(node) -> str:
    names = sorted(n for n in names_in(node) if "." not in n)
    return names[0] if names else ""


def _merge(t: Trace, sources: list[Trace]) -> None:
    """Branches of an if (``target = noise`` / ``target = get_velocity(...)``): noise wins, else x0."""
    kinds = [s.source for s in sources]
    pick = next((s for s in sources if s.source in NOISE_LIKE), None) or next((s for s in sources if s.source in ("x0", "data")), None) or sources[0]
    t.source = pick.source if all(k != "unknown" for k in kinds) or pick.source in NOISE_LIKE else "unknown"
    t.detached = all(s.detached for s in sources)
    t.reduced = any(s.reduced for s in sources)
    t.opaque = any(s.opaque for s in sources)
    t.ops = pick.ops


def _classify_call(index: UnitIndex, node: cst.Call, t: Trace) -> None:
    callee = dotted(node.func)
    site = call_of(index, node)
    names = set(site.names) if site is not None else {callee}
    leaf = callee.rsplit(".", 1)[-1] if callee else ""
    if any(n.startswith("torch.randn") or n.endswith(("randn_like", ".randn", "normal_")) for n in names):
        t.source = "noise"
    elif leaf == "get_velocity":
        t.source = "velocity"
    elif X0_CALL.search(leaf):
        t.source = "x0"
    elif callee and MODEL_CALL.search(callee) or leaf in ("forward",) or (leaf == "apply_model"):
        t.source = "prediction"
    else:
        t.opaque = True


def _predicts_x0(index: UnitIndex) -> bool:
    return prediction_type(index).value == "x0"


def _result_targets(index: UnitIndex, call: CallSite) -> list[str]:
    out = []
    for assign in index.assigns:
        if assign.function == call.function and assign.path == call.path and assign.line <= call.line and any(n is call.node for n in expression_nodes(assign.value)):
            out.append(assign.target)
    return out


def flows_into_loss(index: UnitIndex, call: CallSite) -> bool:
    """The perceptual value is part of what gets back-propagated (a ``loss`` sum, a backward, a return)."""
    targets = set(_result_targets(index, call))
    in_function = [a for a in index.assigns if a.function == call.function and a.path == call.path]
    for assign in in_function:
        if assign.target in targets or not re.search(r"loss", assign.target, re.I):
            continue
        if names_in(assign.value) & targets or any(n is call.node for n in expression_nodes(assign.value)):
            return True
    for ret in index.returns:
        if ret.function == call.function and ret.path == call.path and (names_in(ret.value) & targets or any(n is call.node for n in expression_nodes(ret.value))):
            return True
    return any(c.method == "backward" and (names_in(c.node) & targets) for c in index.calls_in(call.function))


# --- rules --------------------------------------------------------------------------
class NoPerceptualLoss(Rule):
    code = "LPIPS001"
    severity = Severity.MISSING
    title = "perceptual (LPIPS) loss term"
    message = "the loss is MSE only: a small LPIPS term on the x0 estimate (weight ~0.1) gives sharper textures and hand detail"
    explain = """
    MSE treats every pixel alike and favours blurry averages. Adding `lpips_weight * lpips(x0_pred, x0).mean()`
    (lpips.LPIPS(net="vgg") or torchmetrics' LearnedPerceptualImagePatchSimilarity, frozen, in eval mode)
    to the diffusion loss sharpens textures, which matters for hands and faces in sign language. Compute it
    with gradients, on the model's x0 estimate (not the noise prediction), in [-1, 1] (or pass normalize=True
    for [0, 1]), on 4-D frames. In latent diffusion the x0 estimate must be decoded by the VAE first, which
    costs memory and time: weigh that before adding it.
    """
    VALID = [
        "import torch.nn.functional as F\nimport lpips\nlpips_fn = lpips.LPIPS(net='vgg').eval()\nfor x0, noise, t in data:\n    pred = model(q_sample(x0, t, noise), t)\n    x0_pred = predict_x0(x_t, t, pred)\n    loss = F.mse_loss(pred, noise) + 0.1 * lpips_fn(x0_pred, x0).mean()\n    loss.backward()\n    optimizer.step()\n",
        "import torch.nn.functional as F\nfrom torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity\nlp = LearnedPerceptualImagePatchSimilarity(net_type='vgg', normalize=True)\nfor x0 in data:\n    out = model(x0)\n    loss = F.mse_loss(out, x0) + 0.1 * lp(out, x0)\n    loss.backward()\n    optimizer.step()\n",
    ]
    INVALID = [
        "import torch.nn.functional as F\nfor batch in loader:\n    noise_pred = model(noisy, t)\n    loss = F.mse_loss(noise_pred, noise)\n    loss.backward()\n    optimizer.step()\n",
        # guided-diffusion style squared error
        "import torch\ndef mean_flat(t):\n    return t.mean(dim=list(range(1, len(t.shape))))\nfor x_start, t in data:\n    model_output = model(x_t, t)\n    loss = mean_flat((noise - model_output) ** 2).mean()\n    loss.backward()\n    opt.step()\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        return trains(index) and bool(self._mse(index))

    def _mse(self, index: UnitIndex) -> list[CallSite]:
        return [c for c in mse_calls(index) if _training_function(index, c.function)]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if has_perceptual(index):
            return
        site = self._mse(index)[0]
        if any(LATENT_HINTS.search(n) for n in index.names_used()):
            yield Hit.at(site, "the loss is MSE only: a perceptual (LPIPS) term on the decoded x0 estimate sharpens textures and hand detail (in latent space it needs a VAE decode, which costs memory and time)")
        else:
            yield Hit.at(site)


class _WithPerceptual(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return bool(perceptual_calls(index))


def _training_calls(index: UnitIndex) -> list[Perceptual]:
    return [p for p in perceptual_calls(index) if _training_function(index, p.call.function)]


PLAN_SNIPPET = """import torch
import torch.nn.functional as F
import lpips
class Trainer:
    def __init__(self):
        self.lpips_loss_fn = lpips.LPIPS(net='vgg').to(self.device).eval()
        self.lpips_weight = 0.1
    def train_step(self, batch):
        videos = batch['video']
        noise = torch.randn_like(videos)
        noisy_videos = self.noise_scheduler.add_noise(videos, noise, timesteps)
        target = noise
        noise_pred = self.model(noisy_videos, timesteps, context)
        mse_loss = F.mse_loss(noise_pred, target)
        with torch.no_grad():
            pred_frame = (noise_pred[:, :, 0] + 1) / 2
            target_frame = (target[:, :, 0] + 1) / 2
            perceptual_loss = self.lpips_loss_fn(pred_frame, target_frame).mean()
        loss = mse_loss + self.lpips_weight * perceptual_loss
        loss.backward()
        self.optimizer.step()
"""

GOOD_SNIPPET = """import torch
import torch.nn.functional as F
import lpips
from einops import rearrange
class Trainer:
    def __init__(self):
        self.lpips_loss_fn = lpips.LPIPS(net='vgg').to(self.device).eval().requires_grad_(False)
    def train_step(self, batch):
        videos = batch['video']
        noise = torch.randn_like(videos)
        noisy_videos = self.noise_scheduler.add_noise(videos, noise, timesteps)
        noise_pred = self.model(noisy_videos, timesteps, context)
        mse_loss = F.mse_loss(noise_pred, noise)
        x0_pred = self.noise_scheduler.predict_x0(noisy_videos, noise_pred, timesteps)
        pred_frames = rearrange(x0_pred.clamp(-1, 1), 'b c t h w -> (b t) c h w')
        true_frames = rearrange(videos, 'b c t h w -> (b t) c h w')
        perceptual_loss = self.lpips_loss_fn(pred_frames, true_frames).mean()
        loss = mse_loss + 0.1 * perceptual_loss
        loss.backward()
        self.optimizer.step()
"""


class PerceptualWithoutGradient(_WithPerceptual):
    code = "LPIPS002"
    severity = Severity.BUG
    title = "perceptual loss back-propagated"
    message = "the perceptual loss is computed under torch.no_grad() (or on detached inputs) but added to the training loss: it contributes no gradient, so it only costs time"
    explain = """
    `torch.no_grad()` (or `.detach()` on the prediction) cuts the graph: the LPIPS term shows up in the loss
    value and the logs but its gradient is zero, so training is exactly MSE-only (the plan's snippet does this).
    Freeze the LPIPS network with `.eval().requires_grad_(False)` instead, and compute the term with gradients
    flowing into the prediction. Evaluating LPIPS as a validation metric under no_grad is fine.
    """
    VALID = [GOOD_SNIPPET]
    INVALID = [PLAN_SNIPPET]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for p in _training_calls(index):
            traces = [trace(index, a.value, p.call.function, p.call.line) for a in p.call.args[:2]]
            carriers = [t for t in traces if t.source not in ("data",)]
            detached = bool(carriers) and all(t.detached for t in carriers)
            if (p.call.no_grad or detached) and flows_into_loss(index, p.call):
                why = "under torch.no_grad()" if p.call.no_grad else "on detached inputs"
                yield Hit.at(p.call, f"the perceptual loss is computed {why} but added to the training loss: it contributes no gradient, so training stays MSE-only")


class PerceptualOnNoise(_WithPerceptual):
    code = "LPIPS003"
    severity = Severity.BUG
    title = "perceptual loss on the x0 estimate"
    message = "LPIPS is fed the noise / v prediction instead of an image: perceptual similarity of noise is meaningless; compare the x0 estimate with the clean image"
    explain = """
    An epsilon- or v-prediction model outputs noise-like tensors; LPIPS on them (and on the noise target) measures
    nothing perceptual. Convert the prediction to the x0 estimate first (`x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)`,
    `scheduler.step(...).pred_original_sample`, your scheduler's `predict_x0`) and compare it with the clean
    image. With x0-prediction (`prediction_type="sample"`) the model output is already an image.
    """
    VALID = [GOOD_SNIPPET]
    INVALID = [PLAN_SNIPPET]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if _predicts_x0(index):
            return
        for p in _training_calls(index):
            for arg in p.call.args[:2]:
                t = trace(index, arg.value, p.call.function, p.call.line)
                if t.source in NOISE_LIKE:
                    what = {"noise": "the noise", "velocity": "the v target", "prediction": "the model's raw (noise / v) prediction"}[t.source]
                    yield Hit.at(p.call, f"LPIPS is fed `{t.name or 'the prediction'}`, {what}, instead of an image: compare the x0 estimate with the clean image")
                    break


class PerceptualInputRange(_WithPerceptual):
    code = "LPIPS004"
    severity = Severity.BUG
    title = "LPIPS inputs in the range it expects"
    message = "the inputs are rescaled to [0, 1] but LPIPS expects [-1, 1] unless normalize=True: the perceptual distance is computed on washed-out images"
    explain = """
    `lpips.LPIPS` expects images in [-1, 1]; pass `normalize=True` in the call if you feed [0, 1]. torchmetrics'
    `LearnedPerceptualImagePatchSimilarity` likewise expects [-1, 1] unless it is built with `normalize=True`.
    Rescaling diffusion outputs with `(x + 1) / 2` and calling either without `normalize=True` shifts every input
    into the upper half of the range the network was trained on.
    """
    VALID = [
        GOOD_SNIPPET,
        "import lpips\nfn = lpips.LPIPS(net='alex')\ndef train_step(x0_pred, x0):\n    loss = fn((x0_pred + 1) / 2, (x0 + 1) / 2, normalize=True).mean()\n    loss.backward()\n    opt.step()\n",
    ]
    INVALID = [
        PLAN_SNIPPET,
        "from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity\nmetric = LearnedPerceptualImagePatchSimilarity(net_type='vgg')\ndef validate(samples, images):\n    return metric(samples * 0.5 + 0.5, images * 0.5 + 0.5)\nfor x in data:\n    loss = model(x)\n    loss.backward()\n    opt.step()\n",
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for p in perceptual_calls(index):
            if p.kind == "lpips":
                normalized = literal(p.call.kwarg("normalize")) is True or (len(p.call.args) >= 4 and literal(p.call.args[3].value) is True)
                where = "pass normalize=True in the call"
            elif p.kind == "torchmetrics":
                source = p.constructor or p.call
                normalized = source.kwarg("normalize") is not None and literal(source.kwarg("normalize")) is not False
                where = "build it with normalize=True"
            else:
                continue
            if normalized:
                continue
            for arg in p.call.args[:2]:
                t = trace(index, arg.value, p.call.function, p.call.line)
                if t.rescaled_to_unit:
                    yield Hit.at(p.call, f"`{t.name or 'the input'}` is rescaled to [0, 1] but LPIPS expects [-1, 1] unless told otherwise: {where}, or feed [-1, 1]")
                    break


class PerceptualOnVideo(_WithPerceptual):
    code = "LPIPS005"
    severity = Severity.BUG
    title = "LPIPS on 4-D frames"
    message = "a 5-D video tensor is passed whole to LPIPS, which takes 4-D image batches: fold the frames into the batch first"
    explain = """
    LPIPS is a 2-D image network: it takes [N, 3, H, W]. A video batch [B, C, T, H, W] must have its frames folded
    into the batch (`rearrange(x, "b c t h w -> (b t) c h w")`) or be sliced to chosen frames (`x[:, :, 0]`).
    Passed whole, the call fails, or (after an accidental reshape) compares the wrong axes.
    """
    VALID = [GOOD_SNIPPET, PLAN_SNIPPET.replace("import lpips", "import lpips\nnum_frames = 16")]
    INVALID = [
        "import torch, lpips\nimport torch.nn.functional as F\nnum_frames = 16\nperceptual = lpips.LPIPS(net='vgg').eval().requires_grad_(False)\nfor batch in loader:\n    x0 = batch['video']\n    noise = torch.randn_like(x0)\n    noisy = scheduler.add_noise(x0, noise, t)\n    pred = model(noisy, t)\n    alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1, 1)\n    x0_pred = (noisy - (1 - alpha_bar).sqrt() * pred) / alpha_bar.sqrt()\n    loss = F.mse_loss(pred, noise) + 0.1 * perceptual(x0_pred.clamp(-1, 1), x0).mean()\n    loss.backward()\n    optimizer.step()\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and is_video(index)

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for p in perceptual_calls(index):
            traces = [trace(index, a.value, p.call.function, p.call.line) for a in p.call.args[:2]]
            whole = [t for t in traces if t.source != "unknown" and not t.reduced and not t.opaque]
            if whole and len(whole) == len(traces):
                yield Hit.at(p.call, f"`{whole[0].name or 'the video'}` is passed to LPIPS as a whole 5-D video [B, C, T, H, W]; LPIPS takes 4-D images: fold the frames into the batch (rearrange 'b c t h w -> (b t) c h w') or pick frames")


# --- fix -----------------------------------------------------------------------------
LPIPS_WHY = {
    "lpips_weight": "weight of the perceptual (LPIPS) term added to the diffusion loss",
    "lpips_net": 'LPIPS backbone: "vgg", "alex" or "squeeze"',
    "lpips_frames": "frames per clip (evenly spaced) the LPIPS term compares; 0 = every frame",
    "lpips_pretrained_backbone": "False: random LPIPS backbone, no torchvision download (offline smoke runs only)",
    "lpips_random_backbone": "random LPIPS backbone, no torchvision download (offline smoke runs only)",
}
PASS_THROUGH_CALLS = {"float", "half", "double", "to", "contiguous", "bfloat16"}
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


class LpipsFix(Fix):
    """Add a perceptual term the way the plan meant it, and repair the plan's version.

    LPIPS001: ``loss = F.mse_loss(pred, target)`` becomes ``mse_loss = ...``; the x0 estimate is
    recovered from the prediction with the noise scheduler's own ``predict_x0`` (or, for diffusers and
    hand-written schedulers, from ``alphas_cumprod`` and the prediction type), clamped to [-1, 1]; video
    frames (a configurable, evenly spaced subset) are folded into the batch; ``loss = mse_loss +
    lpips_weight * lpips_loss`` keeps its gradient. ``lpips.LPIPS(net=...)`` is built once next to the
    model, on its device, in eval mode with frozen weights. Settings ``lpips_weight`` (0.1), ``lpips_net``
    ("vgg"), ``lpips_frames`` (4) and ``lpips_pretrained_backbone`` are added; small presets
    (``smoke_config``) turn the pretrained backbone off so they run offline. Both terms are logged next
    to the existing loss scalar. Latent diffusion is refused: the x0 estimate would need a VAE decode.
    LPIPS002-004 (the plan's snippet): the ``no_grad`` block is replaced by the same computation, keeping
    the variable the loss reads. LPIPS005: a whole 5-D video argument gets its frames folded into the batch.
    """

    codes = ("LPIPS001", "LPIPS002", "LPIPS003", "LPIPS004", "LPIPS005")

    def apply(self, ctx: FixContext, findings: list) -> None:
        index = ctx.index
        edits = Edits(ctx)
        done: set[tuple] = set()
        for finding in sorted(findings, key=lambda f: f.code):
            where = (finding.location.path, finding.location.line, finding.location.col)
            if where in done:
                continue  # LPIPS002-004 on one call: one rewrite
            done.add(where)
            if finding.code == "LPIPS001":
                mse = next((c for c in mse_calls(index) if (c.path, c.line, c.col) == where), None)
                if mse is None:
                    raise CannotFix(where[0], where[1], "cannot find the MSE term this finding names", "")
                self._add_term(ctx, index, edits, mse)
            elif finding.code == "LPIPS005":
                self._fold_frames(index, edits, _perceptual_at(index, where))
            else:
                self._rewrite_plan_term(ctx, index, edits, _perceptual_at(index, where))
        edits.apply()

    # LPIPS001 -------------------------------------------------------------------------
    def _add_term(self, ctx, index: UnitIndex, edits: Edits, mse: CallSite) -> None:
        if any(LATENT_HINTS.search(n) for n in index.names_used()):
            raise CannotFix(mse.path, mse.line, "latent diffusion: LPIPS needs the x0 estimate decoded to pixels by the VAE (memory and time per step), a trade-off to decide by hand",
                            _manual_patch(latent=True))
        tree = edits.tree(mse.path)
        module = edits.module(mse.path)
        stmt = tree.statement(mse.node)
        loss = _assigned_name(stmt, mse.node)
        if loss is None:
            raise CannotFix(mse.path, mse.line, "the MSE term is not assigned to a name on a line of its own", _manual_patch())
        step = denoising_step(index, mse)
        fn_def = tree.function(mse.node)
        taken = names_in_node(fn_def) if fn_def is not None else set()
        clash = {"mse_loss", "x0_pred", "lpips_loss"} & (taken | {loss})
        if clash:
            raise CannotFix(mse.path, mse.line, f"the names {', '.join(sorted(clash))} are already used in this function", _manual_patch())
        home = settings_home(index, mse.function)
        settings = _lpips_settings(ctx, edits, index, home, video=is_video(index))
        lpips_fn = self._create(ctx, index, edits, step, settings)
        x0 = _x0_estimate(edits, index, step)
        pred_frames, true_frames = _images(edits, index, step, settings, "x0_pred")
        lines = [
            "# LPIPS on the x0 estimate (not the raw prediction), in the [-1, 1] it expects, with gradients",
            "# flowing into the prediction (the LPIPS network itself is frozen).",
            f"x0_pred = {_wrapped(x0)}.clamp(-1, 1)",
            f"lpips_loss = {_call(lpips_fn, pred_frames, true_frames)}.mean()",
            f"{loss} = mse_loss + {settings['lpips_weight']} * lpips_loss",
        ]
        edits.replace(mse.path, stmt, _renamed("mse_loss"))
        edits.insert_after(mse.path, stmt, snippet(module, "\n".join(lines) + "\n"))
        _log_terms(ctx, index, edits, mse, {"mse_loss": "mse_loss", "lpips_loss": "lpips_loss"})

    def _create(self, ctx, index: UnitIndex, edits: Edits, step: DenoisingStep, settings: dict) -> str:
        """Build ``lpips.LPIPS`` once beside the model (``self.lpips_fn`` in ``__init__`` for a trainer
        class), on the model's device, in eval mode with frozen weights; returns how the step calls it."""
        model = _model_of(index, step)
        assign = _model_assignment(index, model, step.mse)
        if assign is None:
            raise CannotFix(step.mse.path, step.mse.line, f"cannot find where `{model}` is built to create the LPIPS network next to it", _manual_patch())
        device = _device_of(index, assign, step)
        if device is None:
            raise CannotFix(assign.path, assign.line, f"cannot tell which device `{model}` lives on", _manual_patch())
        name = "self.lpips_fn" if model.startswith("self.") else "lpips_fn"
        if any(a.target == name for a in index.assigns):
            raise CannotFix(assign.path, assign.line, f"`{name}` already exists", _manual_patch())
        module = edits.module(assign.path)
        create = (
            f"# Perceptual loss network: frozen (eval mode, no weight gradients); gradients still flow to its inputs.\n"
            f"{name} = lpips.LPIPS(\n"
            f"    net={settings['lpips_net']}, pnet_rand={settings['pnet_rand']}, verbose=False\n"
            f").to({device}).eval().requires_grad_(False)\n"
        )
        edits.insert_after(assign.path, edits.tree(assign.path).statement(assign.value), snippet(module, create))
        edits.add_import(assign.path, "lpips")
        return name

    # LPIPS005 -------------------------------------------------------------------------
    def _fold_frames(self, index: UnitIndex, edits: Edits, perceptual: Perceptual) -> None:
        call = perceptual.call
        module = edits.module(call.path)
        for arg in call.args[:2]:
            t = trace(index, arg.value, call.function, call.line)
            if not t.reduced and not t.opaque:
                # [B, C, T, H, W] -> [B * T, C, H, W]: every frame becomes an image of the batch
                edits.replace(call.path, arg.value, lambda node: expression(module, "{x}.transpose(1, 2).flatten(0, 1)", x=_parenthesized(node)))

    # LPIPS002-004 ----------------------------------------------------------------------
    def _rewrite_plan_term(self, ctx, index: UnitIndex, edits: Edits, perceptual: Perceptual) -> None:
        """The plan's ``with torch.no_grad():`` block (noise prediction rescaled to [0, 1], first frame)
        becomes the LPIPS term on the x0 estimate, with gradients, under the name the loss already reads."""
        call = perceptual.call
        tree = edits.tree(call.path)
        stmt = tree.statement(call.node)
        result = _assigned_name(stmt, call.node) or (_assigned_name(stmt, _outer_call(tree, call.node)) if _outer_call(tree, call.node) is not None else None)
        holder = tree.owner_statement(stmt)
        block_stmt = holder if isinstance(holder, cst.With) and call.no_grad else stmt
        mse = next((c for c in mse_calls(index) if c.function == call.function and c.line < call.line), None)
        if result is None or mse is None or perceptual.kind != "lpips":
            raise CannotFix(call.path, call.line, "the perceptual term is not `name = lpips_fn(a, b)...` after an MSE term of the same step", _manual_patch())
        if block_stmt is holder and any(not isinstance(s, cst.SimpleStatementLine) for s in holder.body.body):
            raise CannotFix(call.path, call.line, "the no_grad block holds more than the perceptual term's assignments", _manual_patch())
        step = denoising_step(index, mse)
        home = settings_home(index, call.function)
        settings = _lpips_settings(ctx, edits, index, home, video=is_video(index), new_term=False)
        module = edits.module(call.path)
        taken = names_in_node(tree.function(call.node)) - names_in_node(block_stmt)
        if "x0_pred" in taken:
            raise CannotFix(call.path, call.line, "the name x0_pred is already used in this function", _manual_patch())
        x0 = _x0_estimate(edits, index, step)
        pred_frames, true_frames = _images(edits, index, step, settings, "x0_pred")
        new = snippet(module, (
            "# LPIPS on the x0 estimate (not the noise prediction), in the [-1, 1] it expects, with gradients\n"
            "# flowing into the prediction (the LPIPS network itself is frozen).\n"
            f"x0_pred = {_wrapped(x0)}.clamp(-1, 1)\n"
            f"{result} = {_call(dotted(call.node.func), pred_frames, true_frames)}.mean()\n"
        ))
        # The plan's comments above the block described what it did wrong: only its blank lines stay.
        blank = [line for line in block_stmt.leading_lines if line.comment is None]
        new[0] = new[0].with_changes(leading_lines=[*blank, *new[0].leading_lines])
        edits.replace(call.path, block_stmt, cst.FlattenSentinel(new))
        _freeze(index, edits, perceptual)


# --- fix helpers ---------------------------------------------------------------------
def _perceptual_at(index: UnitIndex, where) -> Perceptual:
    found = next((p for p in perceptual_calls(index) if (p.call.path, p.call.line, p.call.col) == where), None)
    if found is None:
        raise CannotFix(where[0], where[1], "cannot find the perceptual call this finding names", _manual_patch())
    return found


def _manual_patch(latent: bool = False) -> str:
    decode = "x0_pred = vae.decode(x0_pred / vae.config.scaling_factor).sample  # latents -> pixels\n" if latent else ""
    return (
        "# __init__: built once, frozen\n"
        "self.lpips_fn = lpips.LPIPS(net=\"vgg\").to(device).eval().requires_grad_(False)\n"
        "# train step, with gradients:\n"
        "mse_loss = F.mse_loss(model_output, target)\n"
        "x0_pred = noise_scheduler.predict_x0(model_output, noisy, timesteps)  # or from alphas_cumprod\n"
        f"{decode}"
        "b, c, t, h, w = x0_pred.shape  # video: fold the frames into the batch\n"
        "lpips_loss = self.lpips_fn(x0_pred.clamp(-1, 1).transpose(1, 2).reshape(b * t, c, h, w),\n"
        "                           clean.transpose(1, 2).reshape(b * t, c, h, w)).mean()\n"
        "loss = mse_loss + 0.1 * lpips_loss"
    )


def _assigned_name(stmt, call) -> str | None:
    if call is not None and m.matches(stmt, m.SimpleStatementLine(body=[m.Assign(targets=[m.AssignTarget(target=m.Name())], value=m.MatchIfTrue(lambda n: n is call))])):
        return stmt.body[0].targets[0].target.value
    return None


def _outer_call(tree, node):
    """``lpips_fn(a, b).mean()``: the ``.mean()`` call around the perceptual call."""
    parent = tree.parent.get(node)
    if isinstance(parent, cst.Attribute) and isinstance(tree.parent.get(parent), cst.Call):
        return tree.parent[parent]
    return None


def _renamed(name: str):
    """``x = value`` -> ``name = value`` (comments and layout kept)."""
    return lambda node: node.with_changes(body=[node.body[0].with_changes(targets=[node.body[0].targets[0].with_changes(target=cst.Name(name))])])


def _strip(node):
    """``model_pred.float()`` -> ``model_pred``; ``unet(...).sample`` -> ``unet(...)``."""
    while True:
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in PASS_THROUGH_CALLS:
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
        name = dotted(_strip(arg.value))
        assigned = [a for a in assignments_of(index, name, fn, mse.line) if a.line <= mse.line] if name else []
        if not assigned:
            continue
        model_call = _strip(assigned[-1].value)
        if not isinstance(model_call, cst.Call) or len(model_call.args) < 2:
            continue
        noisy = dotted(model_call.args[0].value)
        noised = [a for a in assignments_of(index, noisy, fn, mse.line) if a.call is not None and a.call.method in ("add_noise", "q_sample")] if noisy else []
        if not noised:
            continue
        add_noise = noised[-1].call
        clean = add_noise.arg(0, "original_samples") if add_noise.method == "add_noise" else add_noise.arg(0, "x_start")
        t_add = add_noise.arg(2, "timesteps") if add_noise.method == "add_noise" else add_noise.arg(1, "t")
        t_model = model_call.args[1].value
        if clean is None or t_add is None or code_of(t_add).strip() != code_of(t_model).strip() or not add_noise.receiver:
            continue
        return DenoisingStep(mse, name, noisy, code_of(clean).strip(), code_of(t_model).strip(), add_noise.receiver)
    raise CannotFix(mse.path, mse.line, "cannot prove which MSE argument is the model output of `noisy = scheduler.add_noise(x0, noise, t)`", _manual_patch())


def _scheduler_class(index: UnitIndex, scheduler: str) -> tuple[str, list]:
    origins = index.origins(scheduler)
    leaves = {o.rsplit(".", 1)[-1] for o in origins}
    methods = [f for f in index.functions if f.class_name in leaves]
    return next(iter(sorted(leaves)), ""), methods


def _x0_estimate(edits: Edits, index: UnitIndex, step: DenoisingStep) -> str:
    """Code for the x0 estimate: the scheduler's own ``predict_x0`` when it has one, else ``predict_x0``
    (added to the module) over its ``alphas_cumprod`` and prediction type."""
    _, methods = _scheduler_class(index, step.scheduler)
    own = next((f for f in methods if f.name == "predict_x0"), None)
    if own is not None:
        params = [p for p in own.params if p != "self"]
        order = {"pred": step.prediction, "noisy": step.noisy, "t": step.timesteps}
        args = []
        for p in params[:3]:
            role = "t" if re.search(r"^t$|time", p) else "noisy" if re.search(r"sample|x_t|noisy|^x$", p) else "pred" if re.search(r"output|pred|eps|noise", p) else None
            if role is None:
                raise CannotFix(own.path, own.line, f"cannot tell what {own.qualname}'s parameter `{p}` takes", _manual_patch())
            args.append(order.pop(role))
        return f"{step.scheduler}.predict_x0({', '.join(args)})"
    diffusers = any(o.startswith("diffusers") for o in index.origins(step.scheduler))
    has_alphas = diffusers or any(a.target == "self.alphas_cumprod" and a.function in methods for a in index.assigns)
    if diffusers:
        kind = f"{step.scheduler}.config.prediction_type"
    elif any(a.target == "self.prediction_type" and a.function in methods for a in index.assigns):
        kind = f"{step.scheduler}.prediction_type"
    else:
        kind = _target_kind(index, step)
    if not has_alphas or kind is None:
        raise CannotFix(step.mse.path, step.mse.line, f"cannot tell how to recover x0 from `{step.scheduler}` (no predict_x0; no alphas_cumprod and prediction type)", _manual_patch())
    _module_helper(edits, index, step.mse, "predict_x0", X0_HELPER)
    return f"predict_x0({step.scheduler}.alphas_cumprod, {kind}, {step.prediction}, {step.noisy}, {step.timesteps})"


def _call(function: str, *args: str, width: int = 80) -> str:
    """``function(a, b)``, one argument per line when that would be long."""
    flat = f"{function}({', '.join(args)})"
    return flat if len(flat) <= width else f"{function}(\n" + "".join(f"    {a},\n" for a in args) + ")"


def _wrapped(call: str, width: int = 90) -> str:
    """``f(a, b, c)`` over three lines when it is long: ``f(\\n    a, b, c\\n)``."""
    if len(call) <= width or "(" not in call:
        return call
    head, _, rest = call.partition("(")
    return f"{head}(\n    {rest[:-1]}\n)"


def _target_kind(index: UnitIndex, step: DenoisingStep) -> str | None:
    """What the model predicts, as the loss target proves it: the noise (epsilon), ``get_velocity`` (v)
    or the clean sample; None when the target depends on a run-time choice."""
    other = next((a.value for a in step.mse.args[:2] if dotted(_strip(a.value)) != step.prediction), None)
    source = trace(index, other, step.mse.function, step.mse.line).source if other is not None else "unknown"
    return {"noise": '"epsilon"', "velocity": '"v_prediction"', "data": '"sample"'}.get(source)


def _module_helper(edits: Edits, index: UnitIndex, near: CallSite, name: str, source: str) -> None:
    """Insert module-level helper ``name`` (once) before the top-level statement that holds ``near``."""
    if any(f.name == name and f.path == near.path and f.class_name is None for f in index.functions) or not edits.first_time((near.path, name)):
        return
    tree = edits.tree(near.path)
    top = tree.enclosing_in(near.node, tree.module)
    torch = module_name(edits, index, near.path, "torch")
    helper = snippet(tree.module, source.strip("\n").replace("{torch}", torch) + "\n")
    helper[0] = helper[0].with_changes(leading_lines=[cst.EmptyLine(), cst.EmptyLine()])
    edits.insert_before(near.path, top, helper)


def _images(edits: Edits, index: UnitIndex, step: DenoisingStep, settings: dict, x0: str) -> tuple[str, str]:
    """The two LPIPS inputs: 4-D images as they are, videos through ``fold_frames``."""
    if not settings.get("video"):
        return x0, step.clean
    _module_helper(edits, index, step.mse, "fold_frames", FRAMES_HELPER)
    frames = settings["lpips_frames"]
    return f"fold_frames({x0}, {frames})", f"fold_frames({step.clean}, {frames})"


def _lpips_settings(ctx, edits: Edits, index: UnitIndex, home, video: bool, new_term: bool = True) -> dict:
    """The settings the new code reads (added to the trainer's config or argparse when absent): the
    frame count for videos, and for a new term its weight and how the LPIPS network is built."""
    out: dict = {"video": video}
    if home is None:
        out.update(lpips_weight="0.1", lpips_net='"vgg"', lpips_frames="4", pnet_rand="False")
        return out
    if new_term:
        out["lpips_weight"] = ensure_setting(edits, index, home, "lpips_weight", "float", "0.1", LPIPS_WHY["lpips_weight"])
        out["lpips_net"] = ensure_setting(edits, index, home, "lpips_net", "str", '"vgg"', LPIPS_WHY["lpips_net"])
    if video:
        out["lpips_frames"] = ensure_setting(edits, index, home, "lpips_frames", "int", "4", LPIPS_WHY["lpips_frames"])
    if not new_term:
        return out
    if home.kind == "dataclass":
        pretrained = ensure_setting(edits, index, home, "lpips_pretrained_backbone", "bool", "True", LPIPS_WHY["lpips_pretrained_backbone"])
        out["pnet_rand"] = f"not {pretrained}"
        if set_in_presets(edits, index, home, "lpips_pretrained_backbone", "False"):
            ctx.note("the smoke preset builds LPIPS with a random backbone (lpips_pretrained_backbone=False): it runs offline, its perceptual term is not meaningful")
    else:
        out["pnet_rand"] = ensure_flag(edits, index, home, "lpips_random_backbone", LPIPS_WHY["lpips_random_backbone"])
    return out


def _model_of(index: UnitIndex, step: DenoisingStep) -> str:
    assigned = assignments_of(index, step.prediction, step.mse.function, step.mse.line)
    call = _strip(assigned[-1].value)
    return dotted(call.func)


def _model_assignment(index: UnitIndex, model: str, mse: CallSite):
    """The assignment that builds ``model``: in ``__init__`` for ``self.model``, else in the step's function
    before the MSE term (the first one: later ones re-wrap it, e.g. ``accelerator.prepare``)."""
    if model.startswith("self."):
        found = [a for a in index.assigns if same_object(a.target, model) and a.function is not None and a.function.name == "__init__"
                 and mse.function is not None and a.function.class_name == mse.function.class_name]
    else:
        found = [a for a in index.assigns if a.target == model and a.function == mse.function and a.path == mse.path and a.line < mse.line]
    return found[0] if found else None


def _device_of(index: UnitIndex, assign, step: DenoisingStep) -> str | None:
    """The model's device: the argument of its ``.to(...)``, the accelerator's device, a ``device`` variable."""
    for node in expression_nodes(assign.value):
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "to" and node.args:
            return code_of(node.args[0].value).strip()
    accelerators = [c.receiver for c in index.calls_in(step.mse.function) if c.method == "backward" and any(o.startswith("accelerate.") for o in index.origins(c.receiver))]
    if accelerators:
        return f"{accelerators[0]}.device"
    for name in ("self.device", "device"):
        if any(a.target == name and (a.function == assign.function or name.startswith("self.")) for a in index.assigns):
            return name
    return None


def _freeze(index: UnitIndex, edits: Edits, perceptual: Perceptual) -> None:
    """``.requires_grad_(False)`` on the LPIPS network when its construction lacks it: with gradients
    flowing through it, its own weights would otherwise collect gradients nobody clears."""
    site = perceptual.constructor
    if site is None:
        return
    assign = next((a for a in index.assigns if any(n is site.node for n in expression_nodes(a.value))), None)
    if assign is None or "requires_grad_" in code_of(assign.value):
        return
    edits.replace(assign.path, assign.value, lambda node: cst.Call(func=cst.Attribute(value=node, attr=cst.Name("requires_grad_")), args=[cst.Arg(cst.Name("False"))]))


def _log_terms(ctx, index: UnitIndex, edits: Edits, mse: CallSite, terms: dict[str, str]) -> None:
    """Log both loss terms beside the existing loss scalar (``writer.add_scalar``) or accelerate log dict."""
    writes = [c for c in index.calls_in(mse.function) if c.method == "add_scalar" and has_role(index, c.receiver, "writer") and c.line > mse.line and len(c.args) >= 3]
    if writes:
        first = writes[0]
        tree = edits.tree(first.path)
        block = tree.block(tree.statement(first.node))
        same_block = [c for c in writes if tree.block(tree.statement(c.node)) is block]
        tag = literal(first.args[0].value)
        prefix = tag.rsplit("/", 1)[0] + "/" if isinstance(tag, str) and "/" in tag else ""
        step_code = code_of(first.args[2].value).strip()
        new = [statement(edits.module(first.path), f'{first.receiver}.add_scalar("{prefix}{name}", {var}.item(), {step_code})') for name, var in terms.items()]
        edits.insert_after(first.path, tree.statement(same_block[-1].node), new)
        return
    # accelerator.log({"train_loss": ...}), logs = {"loss": ...}, json.dumps({"step": ..., "loss": ...}):
    # the first dict of logged values after the MSE term that has a loss entry.
    dicts = [(c.line, c.args[0].value) for c in index.calls_in(mse.function) if c.line > mse.line and c.args and isinstance(c.args[0].value, cst.Dict)]
    dicts += [(a.line, a.value) for a in index.assigns if a.function == mse.function and a.path == mse.path and a.line > mse.line and isinstance(a.value, cst.Dict)]
    logged = [(line, d) for line, d in dicts if any(isinstance(k := literal(e.key), str) and "loss" in k for e in d.elements if isinstance(e, cst.DictElement))]
    if logged:
        module = edits.module(mse.path)
        first = min(logged, key=lambda pair: pair[0])[1]

        def with_terms(d: cst.Dict) -> cst.Dict:
            for name, var in terms.items():
                d = insert_dict_element(d, len(d.elements) - 1, expression(module, f'"{name}"'), expression(module, f"{var}.detach().item()"))
            return d

        edits.replace(mse.path, first, with_terms)
        return
    ctx.note("no loss logging found in the training step: log mse_loss and lpips_loss yourself")


def _parenthesized(node: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) or node.lpar:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
