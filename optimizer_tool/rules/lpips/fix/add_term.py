"""LPIPS001: add the perceptual term to an MSE-only loss, and build the frozen LPIPS network beside
the model."""

from __future__ import annotations

from optimizer_tool.contract import CannotFix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.templates import snippet
from optimizer_tool.edit.tree import names_in_node
from optimizer_tool.index import CallSite, UnitIndex
from optimizer_tool.knowledge.settings import settings_home
from optimizer_tool.rules.lpips.facts import LATENT_HINTS, is_video
from optimizer_tool.rules.lpips.fix.estimate import images, x0_estimate
from optimizer_tool.rules.lpips.fix.log import log_terms
from optimizer_tool.rules.lpips.fix.settings import lpips_settings
from optimizer_tool.rules.lpips.fix.shared import assigned_name, call_code, manual_patch, renamed, wrapped
from optimizer_tool.rules.lpips.fix.step import DenoisingStep, denoising_step, device_of, model_assignment, model_of

NEW_NAMES = {"mse_loss", "x0_pred", "lpips_loss"}


def add_term(ctx: FixContext, index: UnitIndex, edits: Edits, mse: CallSite) -> None:
    """``loss = F.mse_loss(pred, target)`` becomes ``mse_loss = ...`` followed by the LPIPS term on the
    clamped x0 estimate and ``loss = mse_loss + lpips_weight * lpips_loss``; both terms are logged."""
    if any(LATENT_HINTS.search(n) for n in index.names_used()):
        raise CannotFix(
            mse.path,
            mse.line,
            "latent diffusion: LPIPS needs the x0 estimate decoded to pixels by the VAE (memory and time per step),"
            " a trade-off to decide by hand",
            manual_patch(latent=True),
        )
    tree = edits.tree(mse.path)
    module = edits.module(mse.path)
    stmt = tree.statement(mse.node)
    loss = assigned_name(stmt, mse.node)
    if loss is None:
        raise CannotFix(
            mse.path, mse.line, "the MSE term is not assigned to a name on a line of its own", manual_patch()
        )
    step = denoising_step(index, mse)
    fn_def = tree.function(mse.node)
    taken = names_in_node(fn_def) if fn_def is not None else set()
    clash = NEW_NAMES & (taken | {loss})
    if clash:
        raise CannotFix(
            mse.path,
            mse.line,
            f"the names {', '.join(sorted(clash))} are already used in this function",
            manual_patch(),
        )
    home = settings_home(index, mse.function)
    settings = lpips_settings(ctx, edits, index, home, video=is_video(index))
    lpips_fn = _create_network(index, edits, step, settings)
    x0 = x0_estimate(edits, index, step)
    pred_frames, true_frames = images(edits, index, step, settings, "x0_pred")
    lines = [
        "# LPIPS on the x0 estimate (not the raw prediction), in the [-1, 1] it expects, with gradients",
        "# flowing into the prediction (the LPIPS network itself is frozen).",
        f"x0_pred = {wrapped(x0)}.clamp(-1, 1)",
        f"lpips_loss = {call_code(lpips_fn, pred_frames, true_frames)}.mean()",
        f"{loss} = mse_loss + {settings['lpips_weight']} * lpips_loss",
    ]
    edits.replace(mse.path, stmt, renamed("mse_loss"))
    edits.insert_after(mse.path, stmt, snippet(module, "\n".join(lines) + "\n"))
    log_terms(ctx, index, edits, mse, {"mse_loss": "mse_loss", "lpips_loss": "lpips_loss"})


def _create_network(index: UnitIndex, edits: Edits, step: DenoisingStep, settings: dict) -> str:
    """Build ``lpips.LPIPS`` once beside the model (``self.lpips_fn`` in ``__init__`` for a trainer
    class), on the model's device, in eval mode with frozen weights; returns how the step calls it."""
    model = model_of(index, step)
    assign = model_assignment(index, model, step.mse)
    if assign is None:
        raise CannotFix(
            step.mse.path,
            step.mse.line,
            f"cannot find where `{model}` is built to create the LPIPS network next to it",
            manual_patch(),
        )
    device = device_of(index, assign, step)
    if device is None:
        raise CannotFix(assign.path, assign.line, f"cannot tell which device `{model}` lives on", manual_patch())
    name = "self.lpips_fn" if model.startswith("self.") else "lpips_fn"
    if any(a.target == name for a in index.assigns):
        raise CannotFix(assign.path, assign.line, f"`{name}` already exists", manual_patch())
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
