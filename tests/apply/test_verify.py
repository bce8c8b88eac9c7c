"""What apply checks in a fix's change before writing it, beyond the rules: no name read where it
may be unbound (an LPIPS module created inside an ``if`` and used after it crashed a patched trainer
at run time while py_compile and the re-check passed)."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest

from optimizer_tool.contract import CannotFix
from optimizer_tool.verify import refuse_unbound

BEFORE = """\
import torch.nn.functional as F


def train_step(model, x0, noise, t, args):
    pred = model(x0 + noise, t)
    loss = F.mse_loss(pred, noise)
    loss.backward()
"""


def _check(after: str) -> None:
    path = Path("train.py")
    refuse_unbound({path: cst.parse_module(BEFORE)}, {path: cst.parse_module(after)}, Path("."))


def test_a_name_set_in_one_branch_and_read_after_it_is_refused():
    after = BEFORE.replace(
        "    loss = F.mse_loss(pred, noise)\n",
        "    if args.use_lpips:\n"
        "        perceptual = lpips_fn(pred, x0).mean()\n"
        "    loss = F.mse_loss(pred, noise) + 0.1 * perceptual\n",
    )
    with pytest.raises(CannotFix) as refused:
        _check(after)
    assert "reads `perceptual` at line 8, where it may be unbound" in refused.value.message
    assert "+        perceptual = lpips_fn(pred, x0).mean()" in refused.value.patch  # the diff, to apply by hand


def test_a_name_set_on_every_path_or_before_is_accepted():
    both = BEFORE.replace(
        "    loss = F.mse_loss(pred, noise)\n",
        "    if args.use_lpips:\n"
        "        perceptual = lpips_fn(pred, x0).mean()\n"
        "    else:\n"
        "        perceptual = 0.0\n"
        "    loss = F.mse_loss(pred, noise) + 0.1 * perceptual\n",
    )
    _check(both)
    inside = BEFORE.replace(
        "    loss = F.mse_loss(pred, noise)\n",
        "    loss = F.mse_loss(pred, noise)\n"
        "    if args.use_lpips:\n"
        "        perceptual = lpips_fn(pred, x0).mean()\n"
        "        loss = loss + 0.1 * perceptual\n",
    )
    _check(inside)


def test_a_name_bound_only_inside_a_loop_is_refused():
    after = BEFORE.replace(
        "    loss.backward()\n",
        "    for group in args.groups:\n        scale = group['scale']\n    loss = loss * scale\n    loss.backward()\n",
    )
    with pytest.raises(CannotFix):
        _check(after)
