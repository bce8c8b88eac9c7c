"""What the EMA rules share: the base of the rules that judge an EMA that exists, the gates an
update runs under, and the sampling vocabulary the rules and the fix both read."""

from __future__ import annotations

import re

from optimizer_tool.contract import Rule
from optimizer_tool.index import CallSite, UnitIndex
from optimizer_tool.knowledge.ema import ema_facts

SAMPLE_LOOPS = {
    "p_sample_loop",
    "ddim_sample_loop",
    "p_sample_loop_progressive",
    "ddim_sample_loop_progressive",
    "sample_loop",
}
MODEL_PARAMETER = re.compile(r"^(model|unet|net|denoiser|network|model_fn|fn|\w*_model|model_\w*|ema\w*|transformer)$")


class EmaBug(Rule):
    """Bug rules judge an EMA that exists."""

    def applies(self, index: UnitIndex) -> bool:
        return bool(ema_facts(index).objects)


def gates(call: CallSite) -> list[str]:
    """The ``step % N`` conditions a call runs under."""
    return [g for g in call.guards if "%" in g]
