"""The lpips codemod: one fix for the five codes, so that a call several findings name is rewritten
once. Each kind of change is a step of its own: ``add_term`` (LPIPS001), ``plan_term`` (LPIPS002-004)
and ``fold`` (LPIPS005), over the shared ``step`` proof, ``estimate``, ``settings`` and ``log`` code."""

from __future__ import annotations

from optimizer_tool.contract import Applicability, CannotFix, Fix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.rules.lpips.facts import mse_calls
from optimizer_tool.rules.lpips.fix.add_term import add_term
from optimizer_tool.rules.lpips.fix.fold import fold_frames
from optimizer_tool.rules.lpips.fix.plan_term import rewrite_plan_term
from optimizer_tool.rules.lpips.fix.shared import perceptual_at


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

    applicability = Applicability.UNSAFE  # adding a loss term changes the training objective

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
                add_term(ctx, index, edits, mse)
            elif finding.code == "LPIPS005":
                fold_frames(index, edits, perceptual_at(index, where))
            else:
                rewrite_plan_term(ctx, index, edits, perceptual_at(index, where))
        edits.apply()
