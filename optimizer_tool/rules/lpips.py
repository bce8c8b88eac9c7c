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

from optimizer_tool.findings import Severity
from optimizer_tool.index import CallSite, FunctionInfo, UnitIndex, dotted, literal
from optimizer_tool.rules.base import Hit, Rule
from optimizer_tool.semantics import (
    assignments_of,
    expression_nodes,
    memo,
    call_of,
    names_in,
    prediction_type,
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
