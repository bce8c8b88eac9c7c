"""Helpers every step of the lpips fix uses: the manual patch offered on refusal, finding the call a
finding names, and small syntax helpers for assignments and generated calls."""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from optimizer_tool.contract import CannotFix
from optimizer_tool.index import UnitIndex
from optimizer_tool.rules.lpips.facts import Perceptual, perceptual_calls


def manual_patch(latent: bool = False) -> str:
    decode = "x0_pred = vae.decode(x0_pred / vae.config.scaling_factor).sample  # latents -> pixels\n" if latent else ""
    return (
        "# __init__: built once, frozen\n"
        'self.lpips_fn = lpips.LPIPS(net="vgg").to(device).eval().requires_grad_(False)\n'
        "# train step, with gradients:\n"
        "mse_loss = F.mse_loss(model_output, target)\n"
        "x0_pred = noise_scheduler.predict_x0(model_output, noisy, timesteps)  # or from alphas_cumprod\n"
        f"{decode}"
        "b, c, t, h, w = x0_pred.shape  # video: fold the frames into the batch\n"
        "lpips_loss = self.lpips_fn(x0_pred.clamp(-1, 1).transpose(1, 2).reshape(b * t, c, h, w),\n"
        "                           clean.transpose(1, 2).reshape(b * t, c, h, w)).mean()\n"
        "loss = mse_loss + 0.1 * lpips_loss"
    )


def perceptual_at(index: UnitIndex, where) -> Perceptual:
    found = next((p for p in perceptual_calls(index) if (p.call.path, p.call.line, p.call.col) == where), None)
    if found is None:
        raise CannotFix(where[0], where[1], "cannot find the perceptual call this finding names", manual_patch())
    return found


def assigned_name(stmt, call) -> str | None:
    """``name`` when ``stmt`` is exactly ``name = <call>``."""
    if call is not None and m.matches(
        stmt,
        m.SimpleStatementLine(
            body=[m.Assign(targets=[m.AssignTarget(target=m.Name())], value=m.MatchIfTrue(lambda n: n is call))]
        ),
    ):
        return stmt.body[0].targets[0].target.value
    return None


def outer_call(tree, node):
    """``lpips_fn(a, b).mean()``: the ``.mean()`` call around the perceptual call."""
    parent = tree.parent.get(node)
    if isinstance(parent, cst.Attribute) and isinstance(tree.parent.get(parent), cst.Call):
        return tree.parent[parent]
    return None


def renamed(name: str):
    """``x = value`` -> ``name = value`` (comments and layout kept)."""
    return lambda node: node.with_changes(
        body=[node.body[0].with_changes(targets=[node.body[0].targets[0].with_changes(target=cst.Name(name))])]
    )


def parenthesized(node: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(node, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)) or node.lpar:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def call_code(function: str, *args: str, width: int = 80) -> str:
    """``function(a, b)``, one argument per line when that would be long."""
    flat = f"{function}({', '.join(args)})"
    return flat if len(flat) <= width else f"{function}(\n" + "".join(f"    {a},\n" for a in args) + ")"


def wrapped(call: str, width: int = 90) -> str:
    """``f(a, b, c)`` over three lines when it is long: ``f(\\n    a, b, c\\n)``."""
    if len(call) <= width or "(" not in call:
        return call
    head, _, rest = call.partition("(")
    return f"{head}(\n    {rest[:-1]}\n)"
