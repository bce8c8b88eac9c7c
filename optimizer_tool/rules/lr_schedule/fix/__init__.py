"""The lr-schedule fixes, one per kind of change, each with its own applicability:

- ``ScheduleShapeFix`` (LR001, LR002, LR003, LR004, LR007) gives the schedule the plan's shape. Its
  steps, one module each: ``library`` (get_scheduler / transformers helpers), ``lambda_lr``,
  ``cosine`` (CosineAnnealingLR) and ``add`` (no schedule at all). These codes stay in one fix: on a
  library schedule the capped warm-up and the floor are written into one new call.
- ``ScheduleStepFix`` (LR005, LR006) moves ``scheduler.step()`` to right after the optimizer step
  (``order``).

Both are SAFE today, so that ``apply`` changes what it always changed. Of the shape steps, those that
rewrite a schedule the author chose deserve UNSAFE later (they change what the model learns): the
floor put into an existing lambda's return (``lambda_lr``, LR003), the ``--lr_scheduler`` default
switched to ``cosine_with_min_lr`` and an existing warm-up capped at 10% of the run (``library``,
``lambda_lr``, LR003/LR004), and the warm-up put in front of an existing ``CosineAnnealingLR``
(``cosine``, LR007). Adding a schedule where there is none (``add``, LR001) and moving the step calls
(``order``, LR005/LR006: the schedule the code already describes, advanced as written) can stay SAFE.
Making one of them UNSAFE means giving its codes a Fix of their own (the apply engine runs each fix
on the modules the fixes before it left, with a fresh index); for LR003/LR004 on a library schedule
the step must first stop writing the capped warm-up and the floor into one call.
"""

from __future__ import annotations

from optimizer_tool.contract import Applicability, CannotFix, Fix, FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.knowledge.lr_schedule import Schedule, schedule_facts
from optimizer_tool.knowledge.lr_schedule.vocabulary import HF_HELPER_NAMES
from optimizer_tool.rules.lr_schedule.fix.add import add_schedule
from optimizer_tool.rules.lr_schedule.fix.common import manual_schedule_patch, run_step
from optimizer_tool.rules.lr_schedule.fix.cosine import cosine_annealing
from optimizer_tool.rules.lr_schedule.fix.lambda_lr import lambda_lr
from optimizer_tool.rules.lr_schedule.fix.library import library_schedule
from optimizer_tool.rules.lr_schedule.fix.order import reorder


class ScheduleShapeFix(Fix):
    """Bring the learning-rate schedule to the plan: a linear warm-up of at most 10% of the run
    (the plan's 2000 steps, capped at ``total // 10``), a cosine decay to a floor of 1% of the base
    rate, advanced once per optimizer step.

    - ``get_scheduler(args.lr_scheduler, ...)`` (diffusers/transformers): the warm-up argument is
      capped (``min(args.lr_warmup_steps, args.max_train_steps // 10) * accelerator.num_processes``);
      the floor comes from a floored cosine chosen by a new default ``--lr_scheduler cosine_with_min_lr``
      so the flag keeps working: transformers' ``get_cosine_with_min_lr_schedule_with_warmup`` where the
      target project's transformers has it, else torch's ``LinearLR`` + ``CosineAnnealingLR(eta_min=...)``
      in a ``SequentialLR``. Which one depends on the target project only (``fix/versions.py``): a
      transformers requirement it declares decides (every admitted version 4.40 or later, or no floor
      at all: the helper; a floor below 4.40: torch); with none, the helper when its code imports
      transformers, torch when it does not. Never on the transformers installed where the tool runs;
    - a ``LambdaLR`` over a local warm-up/cosine function (the reference trainer): its decaying return
      gets the floor (``min_lr_ratio + (1 - min_lr_ratio) * cosine``), its warm-up the 10% cap against
      the total the factory computes, and the warm-up setting the plan's 2000;
    - ``CosineAnnealingLR`` gets ``eta_min=min_lr_ratio * lr``, and a ``LinearLR`` warm-up in a
      ``SequentialLR`` when it has none;
    - no schedule at all: a ``SequentialLR`` (``LinearLR`` + ``CosineAnnealingLR``) over the real total
      (epochs x optimizer steps per epoch from ``len(dataloader)`` and the accumulation), stepped after
      each optimizer step and saved/restored beside the optimizer in the checkpoint dict.
    """

    applicability = Applicability.SAFE  # only adds code; see the module docstring for the steps that deserve UNSAFE

    codes = ("LR001", "LR002", "LR003", "LR004", "LR007")

    def apply(self, ctx: FixContext, findings: list) -> None:
        run_step(ctx, lambda edits: self._edit(ctx, edits, findings))

    def _edit(self, ctx: FixContext, edits: Edits, findings: list) -> None:
        facts = schedule_facts(ctx.index)
        wanted: dict[int, tuple[Schedule, set[str]]] = {}
        for finding in findings:
            where = (finding.location.path, finding.location.line, finding.location.col)
            sched = next((s for s in facts.top if (s.path, s.line, s.col) == where), None)
            if sched is None and finding.code == "LR001":
                add_schedule(ctx, edits, where)
                continue
            if sched is None:
                raise CannotFix(where[0], where[1], "cannot find the schedule this finding names", "")
            wanted.setdefault(id(sched), (sched, set()))[1].add(finding.code)
        for sched, codes in wanted.values():
            if sched.kind == "get_scheduler" or sched.kind in HF_HELPER_NAMES:
                library_schedule(ctx, edits, sched, codes)
            elif sched.kind == "LambdaLR":
                lambda_lr(ctx, edits, sched, codes)
            elif sched.kind == "CosineAnnealingLR":
                cosine_annealing(ctx, edits, sched, codes)
            else:
                what = {
                    "manual": 'a hand-written schedule (param_group["lr"] = ...)',
                    "helper": "a schedule built by a helper this fix cannot see into",
                }.get(sched.kind, f"a `{sched.kind}` schedule")
                raise CannotFix(sched.path, sched.line, f"no automatic rewrite for {what}", manual_schedule_patch())


class ScheduleStepFix(Fix):
    """Advance the schedule once per optimizer step, right after it: ``scheduler.step()`` before
    ``optimizer.step()`` moves after it (LR006); a per-step schedule stepped in the epoch loop moves
    after the optimizer step in the batch loop, and Lightning's ``"interval": "epoch"`` becomes
    ``"step"`` (LR005)."""

    applicability = Applicability.SAFE  # moves existing calls to where the code's own schedule expects them

    codes = ("LR005", "LR006")

    def apply(self, ctx: FixContext, findings: list) -> None:
        run_step(ctx, lambda edits: self._edit(ctx, edits, findings))

    def _edit(self, ctx: FixContext, edits: Edits, findings: list) -> None:
        for finding in findings:
            where = (finding.location.path, finding.location.line, finding.location.col)
            reorder(ctx.index, edits, finding.code, where)
