"""The ema codemod (``t2s-opt apply --only ema``): adds an EMA where there is none, or repairs the one
there is. One fix for the eight codes, so that their changes land in one pass over each file; each
code is a step of its own: ``create`` (EMA001), ``update`` (EMA002, EMA003), ``gate`` (EMA004),
``warmup`` (EMA005), ``save`` (EMA006), ``restore`` (EMA007) and ``sample`` (EMA008), over the
shared run state in ``common``, the EMA already there (``existing``) and ``placement`` (right after
the optimizer step).

Every anchor comes from the index: the optimizer step (``optimizer_steps``), the network it trains
(``trained_model``), the checkpoint dict handed to ``torch.save``, the optimizer-state load of a
resume, the sampling functions. Where one cannot be proven the fix raises CannotFix with the manual
patch instead of guessing."""

from __future__ import annotations

from optimizer_tool.contract import Applicability, CannotFix, Fix, FixContext
from optimizer_tool.edit.ema import EmaTarget
from optimizer_tool.knowledge.ema import ema_facts
from optimizer_tool.knowledge.training import is_lightning
from optimizer_tool.rules.ema.fix.common import EMA_PATCH, LIGHTNING_EMA_PATCH, EmaEdit
from optimizer_tool.rules.ema.fix.create import create_ema, place_created
from optimizer_tool.rules.ema.fix.existing import existing_ema
from optimizer_tool.rules.ema.fix.gate import gate_once
from optimizer_tool.rules.ema.fix.restore import restore
from optimizer_tool.rules.ema.fix.sample import sample_with
from optimizer_tool.rules.ema.fix.save import save
from optimizer_tool.rules.ema.fix.update import add_update, move_updates
from optimizer_tool.rules.ema.fix.warmup import warm_up
from optimizer_tool.rules.ema.updates import EmaHorizonTooLong


class AddEma(Fix):
    """Adds an EMA of the trained network (the project's helper, diffusers ``EMAModel`` in a diffusers
    script, else ``AveragedModel`` with ``get_ema_multi_avg_fn``), or repairs an existing one:
    one update right after the optimizer step, decay warm-up, checkpoint save and resume, sampling
    with the averaged weights swapped in and the live ones restored in ``finally``."""

    applicability = Applicability.SAFE  # only adds code

    codes = ("EMA001", "EMA002", "EMA003", "EMA004", "EMA005", "EMA006", "EMA007", "EMA008")

    def apply(self, ctx: FixContext, findings: list) -> None:
        fix = EmaEdit(ctx)
        codes = {f.code for f in findings}
        _require_trained_network(fix, findings)
        facts = ema_facts(fix.index)
        target: EmaTarget
        created = "EMA001" in codes and not facts.objects
        if created:
            target = create_ema(fix)
            codes |= {"EMA002", "EMA006", "EMA007", "EMA008"}
        else:
            target = existing_ema(fix)
        if "EMA004" in codes:
            gate_once(fix, findings)
        if "EMA003" in codes:
            move_updates(fix, target, findings)
        elif "EMA002" in codes and (created or not facts.updates):  # updates elsewhere are not of a new EMA
            add_update(fix, target)
        if "EMA005" in codes and list(EmaHorizonTooLong().check(fix.index)):
            warm_up(fix, target)
        kept = save(fix, target) if "EMA006" in codes else True
        if "EMA007" in codes:
            restore(fix, target)
        sampled = sample_with(fix, target) if "EMA008" in codes else True
        if created:
            place_created(fix, saved=kept, sampled=sampled)
        if created and not kept and not sampled:
            where = findings[0].location
            raise CannotFix(
                where.path,
                where.line,
                "the trainer saves nothing and samples nowhere the averaged weights can be swapped in: "
                "a new EMA would be averaged and never used",
                EMA_PATCH,
            )
        fix.edits.apply()


def _require_trained_network(fix: EmaEdit, findings: list) -> None:
    """Every step anchors on the optimizer step and the network it trains: refuse without them."""
    where = findings[0].location
    if fix.trained is None and is_lightning(fix.index):
        raise CannotFix(
            where.path,
            where.line,
            "a LightningModule: Lightning steps the optimizer itself, "
            "so the EMA is updated from its `on_train_batch_end` hook",
            LIGHTNING_EMA_PATCH,
        )
    if fix.trained is None:
        raise CannotFix(
            where.path,
            where.line,
            "no optimizer step whose network can be traced "
            "(the optimizer's parameters come from no `model.parameters()`)",
            EMA_PATCH,
        )
