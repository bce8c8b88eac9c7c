"""What the model says about one schedule: the library or hand-written schedule, whether it warms
up, decays and to what floor, in which unit it counts, and the lengths it was given."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from optimizer_tool.index import CallSite, FunctionInfo, Setting


@dataclass(eq=False)
class Schedule:
    """One learning-rate schedule built (or hand-written) in the unit."""

    site: CallSite | None
    path: object
    line: int
    col: int
    kind: str  # library name: 'get_scheduler', 'LambdaLR', 'manual', 'helper'...
    warmup: bool | None = None
    decay: bool | None = None
    floor: bool | None = None  # decays to a floor > 0 (False: to zero), None unknown / no decay
    per_step: bool | None = None
    warmup_len: cst.BaseExpression | None = None
    total_len: cst.BaseExpression | None = None
    function: FunctionInfo | None = None
    parts: list["Schedule"] = field(default_factory=list)  # SequentialLR components
    unbounded: bool = False  # a lambda factor that grows without limit (a warm-up that never ends)
    unbounded_expr: cst.BaseExpression | None = None
    part_of: "Schedule | None" = None
    # the flag whose default keeps a decay the code has from running (decay is then False)
    decay_switch: Setting | None = None
    # built from what the trainer received (``self.hparams.scheduler(optimizer=...)``): the code handed in
    handed: str = ""

    @property
    def constant(self) -> bool:
        return self.warmup is False and self.decay is False


@dataclass
class ScheduleFacts:
    schedules: list[Schedule]

    @property
    def present(self) -> bool:
        """Some schedule changes the learning rate during training (or may: unknown helpers count)."""
        return any(not s.constant for s in self.top)

    @property
    def top(self) -> list[Schedule]:
        return [s for s in self.schedules if s.part_of is None]
