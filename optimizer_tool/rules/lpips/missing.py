"""LPIPS001: a training loss that is MSE only."""

from __future__ import annotations

from typing import Iterable

from optimizer_tool.contract import Hit, Rule
from optimizer_tool.findings import Severity, State
from optimizer_tool.index import CallSite, UnitIndex
from optimizer_tool.knowledge.domain import sign_language
from optimizer_tool.knowledge.objective import handed_in, loss_handed_in
from optimizer_tool.knowledge.training import trains
from optimizer_tool.rules.lpips.facts import (
    LATENT_HINTS,
    PERCEPTUAL_NAME,
    mse_calls,
    perceptual_calls,
    perceptual_objects,
    training_function,
)


class NoPerceptualLoss(Rule):
    code = "LPIPS001"
    severity = Severity.MISSING
    title = "perceptual (LPIPS) loss term"
    message = (
        "the loss is MSE only: a small LPIPS term on the x0 estimate (weight ~0.1) gives sharper textures"
        " and finer detail"
    )
    explain = """
    MSE treats every pixel alike and favours blurry averages. Adding `lpips_weight * lpips(x0_pred, x0).mean()`
    (lpips.LPIPS(net="vgg") or torchmetrics' LearnedPerceptualImagePatchSimilarity, frozen, in eval mode)
    to the diffusion loss sharpens textures, which matters for hands and faces in sign language. Compute it
    with gradients, on the model's x0 estimate (not the noise prediction), in [-1, 1] (or pass normalize=True
    for [0, 1]), on 4-D frames. In latent diffusion the x0 estimate must be decoded by the VAE first, which
    costs memory and time: weigh that before adding it.
    """
    VALID = [
        (
            "import torch.nn.functional as F\n"
            "import lpips\n"
            "lpips_fn = lpips.LPIPS(net='vgg').eval()\n"
            "for x0, noise, t in data:\n"
            "    pred = model(q_sample(x0, t, noise), t)\n"
            "    x0_pred = predict_x0(x_t, t, pred)\n"
            "    loss = F.mse_loss(pred, noise) + 0.1 * lpips_fn(x0_pred, x0).mean()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
        ),
        (
            "import torch.nn.functional as F\n"
            "from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity\n"
            "lp = LearnedPerceptualImagePatchSimilarity(net_type='vgg', normalize=True)\n"
            "for x0 in data:\n"
            "    out = model(x0)\n"
            "    loss = F.mse_loss(out, x0) + 0.1 * lp(out, x0)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
        ),
    ]
    INVALID = [
        (
            "import torch.nn.functional as F\n"
            "for batch in loader:\n"
            "    noise_pred = model(noisy, t)\n"
            "    loss = F.mse_loss(noise_pred, noise)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
        ),
        # guided-diffusion style squared error
        (
            "import torch\n"
            "def mean_flat(t):\n"
            "    return t.mean(dim=list(range(1, len(t.shape))))\n"
            "for x_start, t in data:\n"
            "    model_output = model(x_t, t)\n"
            "    loss = mean_flat((noise - model_output) ** 2).mean()\n"
            "    loss.backward()\n"
            "    opt.step()\n"
        ),
    ]

    def applies(self, index: UnitIndex) -> bool:
        return trains(index) and bool(self._mse(index))

    def _mse(self, index: UnitIndex) -> list[CallSite]:
        return [c for c in mse_calls(index) if training_function(index, c.function)]

    def when_blind(self, index: UnitIndex) -> tuple[State, str] | None:
        """No MSE call was recognised (EDM's ``weight * (D_yn - y) ** 2``, a library's
        ``training_losses``), but a perceptual term needs a perceptual network: where none is built,
        called or even named in the code the entry reaches, and the loss is not handed in by a
        caller, the loss has none, however it is written."""
        if not trains(index):
            return None
        # a file's text first: tracing the perceptual calls costs seconds on a large unit
        if any(PERCEPTUAL_NAME.search(source.text) for source in index.files) and (
            perceptual_calls(index)
            or perceptual_objects(index)
            or any(PERCEPTUAL_NAME.search(name) for name in index.names_used())
        ):
            return None
        if handed_in(index) or loss_handed_in(index):
            return None
        if any(source.instantiates for source in index.files):
            return None  # parts built from classes a config names (sgm's loss_fn_config): not all seen
        return (
            State.MISSING,
            "no perceptual (LPIPS) network is built, called or named anywhere in the code the entry reaches:"
            " the training loss has no perceptual term",
        )

    def when_passed(self, index: UnitIndex) -> tuple[State, str] | None:
        calls = perceptual_calls(index)
        if any(training_function(index, p.call.function) for p in calls):
            return None
        # only a perceptual module whose use is not traced (DALLE2 builds one to evaluate samples):
        # passing on that alone would claim a perceptual loss nobody saw in the training step
        built = [f"`{name}` ({site.path.name}:{site.line})" for name, (_, site) in perceptual_objects(index).items()]
        return (
            State.UNKNOWN,
            f"a perceptual module ({', '.join(built[:2])}) is built, but no use of it in the training loss was seen",
        )

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        calls = perceptual_calls(index)
        if any(training_function(index, p.call.function) for p in calls) or (perceptual_objects(index) and not calls):
            return  # a perceptual term in the training step (or a module whose use is not traced)
        site = self._mse(index)[0]
        if any(LATENT_HINTS.search(n) for n in index.names_used()):
            yield Hit.at(
                site,
                f"the loss is MSE only: a perceptual (LPIPS) term on the decoded x0 estimate sharpens textures and"
                f" {_detail(index)} (in latent space it needs a VAE decode, which costs memory and time)",
            )
        else:
            yield Hit.at(
                site,
                "the loss is MSE only: a small LPIPS term on the x0 estimate (weight ~0.1) gives sharper textures"
                f" and {_detail(index)}",
            )


def _detail(index: UnitIndex) -> str:
    return "hand detail" if sign_language(index) else "finer detail"
