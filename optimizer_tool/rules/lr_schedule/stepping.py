"""When the schedule advances: once per optimizer step for a schedule written in steps (LR005),
and after ``optimizer.step()`` (LR006)."""

from __future__ import annotations

import ast
import re
from typing import Iterable

from optimizer_tool.contract import Hit
from optimizer_tool.findings import Severity
from optimizer_tool.index import CallSite, FunctionInfo, UnitIndex, literal
from optimizer_tool.knowledge.lr_schedule import ScheduleFacts, schedule_facts, schedules_of
from optimizer_tool.knowledge.training import exclusive, lr_scheduler_steps, optimizer_steps
from optimizer_tool.rules.lr_schedule.base import WithSchedule

LIGHTNING_MANUAL = "automatic_optimization"


def _calls_into(index: UnitIndex, caller: FunctionInfo | None, target: FunctionInfo) -> list[CallSite]:
    return [c for c in index.calls_in(caller) if c.function == caller and (c.method or c.func_text) == target.name]


def step_is_per_epoch(index: UnitIndex, sched_step: CallSite) -> CallSite | None:
    """The optimizer step that runs in a loop the schedule step sits outside of, if any."""
    outer = sched_step.loops
    for opt in optimizer_steps(index):
        if opt.function == sched_step.function:
            chains = [(opt.loops, opt)]
        else:
            chains = (
                [(c.loops + opt.loops, c) for c in _calls_into(index, sched_step.function, opt.function)]
                if opt.function
                else []
            )
        for chain, _ in chains:
            if len(chain) > len(outer) and chain[: len(outer)] == outer and (outer or sched_step.function is not None):
                if exclusive(sched_step, opt):
                    continue
                if (
                    not outer
                    and sched_step.function is not None
                    and opt.function == sched_step.function
                    and sched_step.line < opt.line
                ):
                    continue
                return opt
    return None


class PerStepScheduleSteppedPerEpoch(WithSchedule):
    code = "LR005"
    severity = Severity.BUG
    title = "per-step schedule advanced once per optimizer step"
    message = (
        "a schedule written in optimizer steps is advanced once per epoch, so its warm-up "
        "and decay take far longer than planned (the run may never leave the warm-up)"
    )
    explain = """
    `get_scheduler`, `get_cosine_schedule_with_warmup`, `OneCycleLR`, a `LinearLR` warm-up of `warmup_steps`
    iterations or a LambdaLR over steps count optimizer steps. Calling `lr_scheduler.step()` in the epoch loop
    (outside the batch loop) advances it once per epoch: a 500-step warm-up then lasts 500 epochs. In Lightning,
    `configure_optimizers` must return `{"scheduler": s, "interval": "step"}` for such schedules (the default
    interval is "epoch"). Per-epoch schedules (`StepLR`, `CosineAnnealingLR(T_max=epochs)`) stepped per epoch are fine.
    """
    VALID = [
        (
            "import torch\n"
            "from transformers import get_cosine_schedule_with_warmup\n"
            "sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=500, "
            "num_training_steps=total_steps)\n"
            "for epoch in range(epochs):\n"
            "    for x in loader:\n"
            "        loss(x).backward()\n"
            "        opt.step()\n"
            "        sched.step()\n"
        ),
        (
            "import torch\n"
            "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
            "sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30)\n"
            "for epoch in range(epochs):\n"
            "    for x in loader:\n"
            "        loss(x).backward()\n"
            "        opt.step()\n"
            "    sched.step()\n"
        ),
    ]
    INVALID = [
        (
            "import torch\n"
            "from transformers import get_cosine_schedule_with_warmup\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=500, "
            "num_training_steps=total_steps)\n"
            "for epoch in range(epochs):\n"
            "    for x in loader:\n"
            "        loss(x).backward()\n"
            "        opt.step()\n"
            "        opt.zero_grad()\n"
            "    sched.step()\n"
        ),
        # the step lives in train_step(), the schedule is stepped in the epoch loop of train()
        (
            "import torch\n"
            "from torch.optim.lr_scheduler import LinearLR, CosineAnnealingLR, SequentialLR\n"
            "class Trainer:\n"
            "    def __init__(self, model):\n"
            "        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "        warm = LinearLR(self.optimizer, start_factor=0.001, "
            "total_iters=self.warmup_steps)\n"
            "        cos = CosineAnnealingLR(self.optimizer, T_max=self.total_steps, eta_min=1e-6)\n"
            "        self.lr_scheduler = SequentialLR(self.optimizer, [warm, cos], "
            "milestones=[self.warmup_steps])\n"
            "    def train_step(self, batch):\n"
            "        self.model(batch).backward()\n"
            "        self.optimizer.step()\n"
            "    def train(self):\n"
            "        for epoch in range(self.epochs):\n"
            "            for batch in self.loader:\n"
            "                self.train_step(batch)\n"
            "            self.lr_scheduler.step()\n"
        ),
        # Lightning: the default interval is "epoch"
        (
            "import torch\n"
            "import pytorch_lightning as pl\n"
            "from transformers import get_cosine_schedule_with_warmup\n"
            "class Lit(pl.LightningModule):\n"
            "    def training_step(self, batch, i):\n"
            "        return self.model(batch)\n"
            "    def configure_optimizers(self):\n"
            "        opt = torch.optim.AdamW(self.parameters(), lr=1e-4)\n"
            "        sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=500, "
            "num_training_steps=10000)\n"
            "        return [opt], [sched]\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = schedule_facts(index)
        for step in lr_scheduler_steps(index):
            schedules = schedules_of(index, facts, step.receiver)
            if not schedules or not all(s.per_step for s in schedules):
                continue
            opt = step_is_per_epoch(index, step)
            if opt is not None:
                yield Hit.at(
                    step,
                    f"`{step.func_text}()` advances a schedule written in optimizer steps once per epoch (outside the "
                    f"loop of `{opt.func_text}()` at line {opt.line}): its warm-up and decay stretch over epochs",
                )
        yield from self._lightning(index, facts)

    def _lightning(self, index: UnitIndex, facts: ScheduleFacts) -> Iterable[Hit]:
        if any(a.target.endswith(LIGHTNING_MANUAL) and literal(a.value) is False for a in index.assigns):
            return
        for fn in index.functions_named("configure_optimizers"):
            inside = [s for s in facts.top if s.function == fn and s.kind not in ("manual", "helper")]
            if not inside or not all(s.per_step for s in inside):
                continue
            intervals = [s for s in index.setting("interval") if s.path == fn.path and fn.line <= s.line <= fn.end_line]
            if any(s.value != "epoch" for s in intervals):
                continue
            where = intervals[0] if intervals else inside[0]
            why = '`interval` is "epoch"' if intervals else 'no `interval` given, and Lightning\'s default is "epoch"'
            yield Hit(
                where.path,
                where.line,
                where.col,
                f"Lightning steps this schedule once per epoch ({why}) although it counts optimizer steps: "
                'return {"scheduler": ..., "interval": "step"}',
            )


class SchedulerBeforeOptimizer(WithSchedule):
    code = "LR006"
    severity = Severity.BUG
    title = "lr_scheduler.step() after optimizer.step()"
    message = (
        "the learning-rate schedule is stepped before optimizer.step(), so the first value "
        "of the schedule (the start of the warm-up) is skipped; PyTorch warns about it"
    )
    explain = """
    Since PyTorch 1.1 the order is `optimizer.step()` then `lr_scheduler.step()`. Stepping the schedule first
    moves it to its second value before any update, skipping the first learning rate (and shifting the whole
    schedule by one step, or one epoch for epoch-level schedules stepped at the start of the epoch).
    """
    VALID = [
        (
            "import torch\n"
            "for x in data:\n"
            "    loss(x).backward()\n"
            "    optimizer.step()\n"
            "    lr_scheduler.step()\n"
            "    optimizer.zero_grad()\n"
        ),
    ]
    INVALID = [
        "import torch\nfor x in data:\n    loss(x).backward()\n    lr_scheduler.step()\n    optimizer.step()\n",
        (
            "import torch\n"
            "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
            "scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=30)\n"
            "for epoch in range(epochs):\n"
            "    scheduler.step()\n"
            "    for x in loader:\n"
            "        loss(x).backward()\n"
            "        opt.step()\n"
        ),
    ]

    def applies(self, index: UnitIndex) -> bool:
        return bool(lr_scheduler_steps(index)) and bool(optimizer_steps(index))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        steps = optimizer_steps(index)
        for sched in lr_scheduler_steps(index):
            if sched.node.args:
                continue  # step(epoch) / step(metric): an explicit position or a plateau metric
            if _own_schedule(index, sched):
                continue  # I-JEPA's WarmupCosineSchedule sets this iteration's lr first: no torch LRScheduler
            for opt in steps:
                if opt.path != sched.path or opt.function != sched.function or exclusive(opt, sched):
                    continue
                if opt.loops[: len(sched.loops)] != sched.loops:
                    continue
                if (sched.line, sched.col) < (opt.line, opt.col):
                    earlier = [
                        o
                        for o in steps
                        if o.function == sched.function
                        and (o.line, o.col) < (sched.line, sched.col)
                        and o.loops == sched.loops
                    ]
                    if not earlier:
                        yield Hit.at(
                            sched,
                            f"`{sched.func_text}()` runs before `{opt.func_text}()` (line {opt.line}): "
                            "the schedule skips its first value",
                        )
                        break


TORCH_SCHEDULER_BASE = re.compile(r"(^|\.)(_?LRScheduler|LambdaLR|\w+LR)$")


def _own_schedule(index: UnitIndex, sched) -> bool:
    """The scheduler is a class of the project that is no ``torch.optim`` LRScheduler (its ``step()``
    sets the coming iteration's lr, so calling it before ``optimizer.step()`` skips nothing)."""
    leaves = {o.rsplit(".", 1)[-1] for o in index.origins(sched.receiver)}
    if not leaves:
        return False
    classes = [
        node
        for source in index.files
        for node in (source.tree.body if source.tree is not None else ())
        if isinstance(node, ast.ClassDef) and node.name in leaves
    ]
    return bool(classes) and all(
        not any(TORCH_SCHEDULER_BASE.search(ast.unparse(base)) for base in node.bases) for node in classes
    )
