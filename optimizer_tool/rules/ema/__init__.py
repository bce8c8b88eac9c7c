"""Exponential moving average of the weights (plan priority 1).

An EMA of the weights is the cheapest quality gain a diffusion model has, but
only when it is updated once per optimizer step, with a horizon that fits the
run, saved with the checkpoints, restored on resume and actually used to
sample. Recognised: the project's own helper (``utils.ema.EMA``), diffusers
``EMAModel``, ``ema_pytorch.EMA``, ``torch.optim.swa_utils.AveragedModel``,
timm ``ModelEmaV2/V3``, ``deepcopy`` copies updated by a hand-written
lerp / ``mul_().add_()`` loop (DiT, openai TrainLoop).
"""

# The package's modules: ``base`` (what every EMA rule shares), ``updates`` (EMA001-005: an EMA
# exists and is updated once per optimizer step with a horizon that fits the run), ``usage``
# (EMA006-009: saved, restored, sampled with and swapped back) and ``fix`` (the codemod, one step
# per code). The EMA facts the monitoring rules share live in ``optimizer_tool.knowledge.ema``.

from optimizer_tool.index import CallSite, UnitIndex
from optimizer_tool.knowledge.ema import ema_facts, library_ema_calls

KEY = "ema"
TITLE = "EMA of the weights"
ORDER = 10  # place in the checklist: the plan's order


def implementations(index: UnitIndex) -> list[CallSite]:
    """The calls that create the unit's EMAs (under ``if args.use_ema:`` the EMA is off by default),
    or, when none is seen, the calls that set up or update an EMA kept by a library object."""
    facts = ema_facts(index)
    if facts.objects:
        return [obj.call for obj in facts.objects if obj.call is not None]
    return library_ema_calls(index)[:1]
