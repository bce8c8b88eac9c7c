"""The learning-rate schedule model, as analysis of the index: which schedule a trainer has (a
library scheduler, a ``LambdaLR``, a hand-written ``param_group["lr"]``, a helper it cannot see
into), whether it warms up, decays and to what floor, whether it counts optimizer steps or epochs,
and the warm-up against the run length. No editing here: the lr-schedule rules and fix and the
monitoring rules read it."""

from optimizer_tool.knowledge.lr_schedule.discovery import runs_of, schedule_facts, schedules_of
from optimizer_tool.knowledge.lr_schedule.lambdas import end_value, lambda_target
from optimizer_tool.knowledge.lr_schedule.lengths import Quantity, number_literal, warmup_fraction
from optimizer_tool.knowledge.lr_schedule.schedule import Schedule, ScheduleFacts

__all__ = [
    "Quantity",
    "Schedule",
    "ScheduleFacts",
    "end_value",
    "lambda_target",
    "number_literal",
    "runs_of",
    "schedule_facts",
    "schedules_of",
    "warmup_fraction",
]
