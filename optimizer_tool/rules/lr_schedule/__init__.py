"""Learning-rate warm-up and decay (plan priority 7).

A diffusion model trained with Adam at a constant learning rate starts with large,
noisy updates of a random network and ends still bouncing around the optimum. A
short linear warm-up (a few hundred to a few thousand optimizer steps, at most
~10% of the run) and a decay for the rest of training (cosine to a floor of ~1%
of the base rate) give smoother and better converged training. The schedule must
advance once per optimizer step when it is written in steps, and after
``optimizer.step()``.

Recognised: diffusers/transformers ``get_scheduler`` and ``get_*_schedule_with_warmup``,
``torch.optim.lr_scheduler`` (``LinearLR`` + ``CosineAnnealingLR`` in ``SequentialLR``,
``OneCycleLR``, ``LambdaLR`` over steps, ``StepLR``...), timm schedulers, a hand-written
schedule that sets ``param_group["lr"]`` (improved-diffusion's ``lr_anneal_steps``),
Lightning ``configure_optimizers`` with its ``interval``.
"""

from optimizer_tool.index import CallSite, UnitIndex
from optimizer_tool.knowledge.lr_schedule import schedule_facts

KEY = "lr-schedule"
TITLE = "Learning-rate warm-up and decay"
ORDER = 60  # place in the checklist: the plan's order


def implementations(index: UnitIndex) -> list[CallSite]:
    """The calls that build the unit's learning-rate schedules."""
    return [s.site for s in schedule_facts(index).top if s.site is not None]
