"""LPIPS002-005: a perceptual term that is there but cannot help: no gradient, computed on the noise
prediction, fed the wrong input range, or given whole 5-D videos."""

from __future__ import annotations

from typing import Iterable

from optimizer_tool.contract import Hit, Rule
from optimizer_tool.findings import Severity
from optimizer_tool.index import UnitIndex, literal
from optimizer_tool.rules.lpips.facts import flows_into_loss, is_video, perceptual_calls, predicts_x0, training_calls
from optimizer_tool.rules.lpips.tracing import NOISE_LIKE, trace


class _WithPerceptual(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return bool(perceptual_calls(index))


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
    diffusion_only = False  # an autoencoder/GAN perceptual loss has the same pitfall
    severity = Severity.BUG
    title = "perceptual loss back-propagated"
    message = (
        "the perceptual loss is computed under torch.no_grad() (or on detached inputs) but added to the training"
        " loss: it contributes no gradient, so it only costs time"
    )
    explain = """
    `torch.no_grad()` (or `.detach()` on the prediction) cuts the graph: the LPIPS term shows up in the loss
    value and the logs but its gradient is zero, so training is exactly MSE-only (the plan's snippet does this).
    Freeze the LPIPS network with `.eval().requires_grad_(False)` instead, and compute the term with gradients
    flowing into the prediction. Evaluating LPIPS as a validation metric under no_grad is fine.
    """
    VALID = [GOOD_SNIPPET]
    INVALID = [PLAN_SNIPPET]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for p in training_calls(index):
            traces = [trace(index, a.value, p.call.function, p.call.line) for a in p.call.args[:2]]
            carriers = [t for t in traces if t.source not in ("data",)]
            detached = bool(carriers) and all(t.detached for t in carriers)
            if (p.call.no_grad or detached) and flows_into_loss(index, p.call):
                why = "under torch.no_grad()" if p.call.no_grad else "on detached inputs"
                yield Hit.at(
                    p.call,
                    f"the perceptual loss is computed {why} but added to the training loss: it contributes no"
                    " gradient, so training stays MSE-only",
                )


class PerceptualOnNoise(_WithPerceptual):
    code = "LPIPS003"
    severity = Severity.BUG
    title = "perceptual loss on the x0 estimate"
    message = (
        "LPIPS is fed the noise / v prediction instead of an image: perceptual similarity of noise is meaningless;"
        " compare the x0 estimate with the clean image"
    )
    explain = """
    An epsilon- or v-prediction model outputs noise-like tensors; LPIPS on them (and on the noise target) measures
    nothing perceptual. Convert the prediction to the x0 estimate first (`x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)`,
    `scheduler.step(...).pred_original_sample`, your scheduler's `predict_x0`) and compare it with the clean
    image. With x0-prediction (`prediction_type="sample"`) the model output is already an image.
    """  # noqa: E501
    VALID = [GOOD_SNIPPET]
    INVALID = [PLAN_SNIPPET]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if predicts_x0(index):
            return
        for p in training_calls(index):
            for arg in p.call.args[:2]:
                t = trace(index, arg.value, p.call.function, p.call.line)
                if t.source in NOISE_LIKE:
                    what = {
                        "noise": "the noise",
                        "velocity": "the v target",
                        "prediction": "the model's raw (noise / v) prediction",
                    }[t.source]
                    yield Hit.at(
                        p.call,
                        f"LPIPS is fed `{t.name or 'the prediction'}`, {what}, instead of an image: compare the x0"
                        " estimate with the clean image",
                    )
                    break


class PerceptualInputRange(_WithPerceptual):
    code = "LPIPS004"
    diffusion_only = False  # an autoencoder/GAN perceptual loss has the same pitfall
    severity = Severity.BUG
    title = "LPIPS inputs in the range it expects"
    message = (
        "the inputs are rescaled to [0, 1] but LPIPS expects [-1, 1] unless normalize=True: the perceptual"
        " distance is computed on washed-out images"
    )
    explain = """
    `lpips.LPIPS` expects images in [-1, 1]; pass `normalize=True` in the call if you feed [0, 1]. torchmetrics'
    `LearnedPerceptualImagePatchSimilarity` likewise expects [-1, 1] unless it is built with `normalize=True`.
    Rescaling diffusion outputs with `(x + 1) / 2` and calling either without `normalize=True` shifts every input
    into the upper half of the range the network was trained on.
    """
    VALID = [
        GOOD_SNIPPET,
        (
            "import lpips\n"
            "fn = lpips.LPIPS(net='alex')\n"
            "def train_step(x0_pred, x0):\n"
            "    loss = fn((x0_pred + 1) / 2, (x0 + 1) / 2, normalize=True).mean()\n"
            "    loss.backward()\n"
            "    opt.step()\n"
        ),
    ]
    INVALID = [
        PLAN_SNIPPET,
        (
            "from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity\n"
            "metric = LearnedPerceptualImagePatchSimilarity(net_type='vgg')\n"
            "def validate(samples, images):\n"
            "    return metric(samples * 0.5 + 0.5, images * 0.5 + 0.5)\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    opt.step()\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for p in perceptual_calls(index):
            if p.kind == "lpips":
                normalized = literal(p.call.kwarg("normalize")) is True or (
                    len(p.call.args) >= 4 and literal(p.call.args[3].value) is True
                )
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
                    yield Hit.at(
                        p.call,
                        f"`{t.name or 'the input'}` is rescaled to [0, 1] but LPIPS expects [-1, 1] unless told"
                        f" otherwise: {where}, or feed [-1, 1]",
                    )
                    break


class PerceptualOnVideo(_WithPerceptual):
    diffusion_only = False  # a video autoencoder passes 5-D tensors too
    code = "LPIPS005"
    severity = Severity.BUG
    title = "LPIPS on 4-D frames"
    message = (
        "a 5-D video tensor is passed whole to LPIPS, which takes 4-D image batches: fold the frames into the batch"
        " first"
    )
    explain = """
    LPIPS is a 2-D image network: it takes [N, 3, H, W]. A video batch [B, C, T, H, W] must have its frames folded
    into the batch (`rearrange(x, "b c t h w -> (b t) c h w")`) or be sliced to chosen frames (`x[:, :, 0]`).
    Passed whole, the call fails, or (after an accidental reshape) compares the wrong axes.
    """
    VALID = [GOOD_SNIPPET, PLAN_SNIPPET.replace("import lpips", "import lpips\nnum_frames = 16")]
    INVALID = [
        (
            "import torch, lpips\n"
            "import torch.nn.functional as F\n"
            "num_frames = 16\n"
            "perceptual = lpips.LPIPS(net='vgg').eval().requires_grad_(False)\n"
            "for batch in loader:\n"
            "    x0 = batch['video']\n"
            "    noise = torch.randn_like(x0)\n"
            "    noisy = scheduler.add_noise(x0, noise, t)\n"
            "    pred = model(noisy, t)\n"
            "    alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1, 1)\n"
            "    x0_pred = (noisy - (1 - alpha_bar).sqrt() * pred) / alpha_bar.sqrt()\n"
            "    loss = F.mse_loss(pred, noise) + 0.1 * perceptual(x0_pred.clamp(-1, 1), x0).mean()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
        )
    ]

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and is_video(index)

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for p in perceptual_calls(index):
            traces = [trace(index, a.value, p.call.function, p.call.line) for a in p.call.args[:2]]
            whole = [t for t in traces if t.source != "unknown" and not t.reduced and not t.opaque]
            if whole and len(whole) == len(traces):
                yield Hit.at(
                    p.call,
                    f"`{whole[0].name or 'the video'}` is passed to LPIPS as a whole 5-D video [B, C, T, H, W]; LPIPS"
                    " takes 4-D images: fold the frames into the batch (rearrange 'b c t h w -> (b t) c h w') or"
                    " pick frames",
                )
