"""What the EMA rules share: the base of the rules that judge an EMA that exists, the gates an
update runs under, and the sampling vocabulary the rules and the fix both read."""

from __future__ import annotations

import re

import libcst as cst

from optimizer_tool.contract import Rule
from optimizer_tool.index import CallSite, UnitIndex, dotted
from optimizer_tool.knowledge.ema import ema_facts
from optimizer_tool.knowledge.training import NOT_SAMPLING, SAMPLING_FUNCTION

SAMPLE_LOOPS = {
    "p_sample_loop",
    "ddim_sample_loop",
    "p_sample_loop_progressive",
    "ddim_sample_loop_progressive",
    "sample_loop",
}
MODEL_PARAMETER = re.compile(r"^(model|unet|net|denoiser|network|model_fn|fn|\w*_model|model_\w*|ema\w*|transformer)$")
MODE_SWITCHES = ("eval", "train")  # ``model.eval()`` matches the sampler names; it sets a mode, it draws nothing


def called_name(call: CallSite) -> str:
    """The called name, also on a receiver that is no plain chain (``accelerator.unwrap_model(m).sample``)."""
    return call.method or (call.node.func.attr.value if isinstance(call.node.func, cst.Attribute) else "")


def is_sampler_call(call: CallSite) -> bool:
    """A call of a sampler by its name (``sample_N_images(...)``, ``diffusion.p_sample_loop(...)``,
    ``flow.sample(...)``), not of a mode switch or of a sampler of timesteps, noise or batches."""
    callee = called_name(call)
    return (
        bool(callee)
        and (bool(SAMPLING_FUNCTION.search(callee)) or callee in SAMPLE_LOOPS)
        and not NOT_SAMPLING.search(callee)
        and callee not in MODE_SWITCHES
    )


def network_receiver(call: CallSite, model: str) -> cst.BaseExpression | None:
    """The network a sampler method is called on, when it is ``model`` itself (minDiffusion's
    ``ddpm.sample(8, shape)``) or accelerate's unwrapped ``model``
    (``accelerator.unwrap_model(model).sample(noise)``): the ``model`` expression, else None."""
    if not model or not isinstance(call.node.func, cst.Attribute):
        return None
    receiver = call.node.func.value
    if (
        isinstance(receiver, cst.Call)
        and dotted(receiver.func).rsplit(".", 1)[-1] == "unwrap_model"
        and len(receiver.args) == 1
    ):
        receiver = receiver.args[0].value
    return receiver if dotted(receiver) == model else None


class EmaBug(Rule):
    """Bug rules judge an EMA that exists."""

    def applies(self, index: UnitIndex) -> bool:
        return bool(ema_facts(index).objects)


def gates(call: CallSite) -> list[str]:
    """The ``step % N`` conditions a call runs under."""
    return [g for g in call.guards if "%" in g]
