"""What the lr-schedule rules share."""

from __future__ import annotations

from optimizer_tool.contract import Rule
from optimizer_tool.index import UnitIndex
from optimizer_tool.knowledge.lr_schedule import schedule_facts
from optimizer_tool.knowledge.training import trains


class WithSchedule(Rule):
    """A rule about the schedule the trainer has: nothing to judge without one."""

    def applies(self, index: UnitIndex) -> bool:
        return trains(index) and schedule_facts(index).present
