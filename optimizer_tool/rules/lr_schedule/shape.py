"""The shape of the schedule: a warm-up, then a decay to a floor (LR001, LR002, LR003, LR007), and a
warm-up factor that stops growing (LR008)."""

from __future__ import annotations

from typing import Iterable

import libcst as cst

from optimizer_tool.contract import Hit, Rule
from optimizer_tool.findings import Severity, State
from optimizer_tool.index import Setting, UnitIndex, code_of, dotted
from optimizer_tool.knowledge.guards import default_of, reads_config
from optimizer_tool.knowledge.lr_schedule import runs_of, schedule_facts
from optimizer_tool.knowledge.training import ROLE_CONSTRUCTORS, config_runner, optimizer_steps, trains
from optimizer_tool.rules.lr_schedule.base import WithSchedule


def optimizer_anchor(index: UnitIndex) -> Hit | None:
    pats = tuple(p for p in ROLE_CONSTRUCTORS["optimizer"] if p != "*.configure_optimizers")
    constructors = index.calls_to(*pats)
    if constructors:
        return Hit.at(constructors[0])
    steps = optimizer_steps(index)
    if steps:
        return Hit.at(steps[0])
    fn = (index.functions_named("configure_optimizers") or index.functions_named("training_step") or [None])[0]
    return Hit(fn.path, fn.line, 1) if fn else None


def _named_by_the_runs_config(index: UnitIndex, unread: list) -> str | None:
    """Why schedules whose warm-up or decay could not be read are the run's config's: the config the
    run names on the command line names them (MotionLCM's ``get_scheduler(cfg.TRAIN.lr_scheduler,
    num_warmup_steps=cfg.TRAIN.lr_warmup_steps, ...)`` with a required ``--cfg``)."""
    choice = index.unit.config_choice
    if not unread or choice is None or not choice.at_run_time:
        return None
    named = [(s, _schedule_name(s.site)) for s in unread if s.site is not None]
    reading = [s for s, name in named if name is not None and reads_config(index, code_of(name))]
    if not reading:
        return None
    first = reading[0]
    return (
        f"the {first.kind} schedule ({first.path.name}:{first.line}) is set by the config the run names "
        f"({choice.describe()}): check the one you train with"
    )


def _schedule_name(site) -> cst.BaseExpression | None:
    """What names the schedule a factory builds: ``get_scheduler(name, ...)``'s first argument."""
    return site.kwarg("name") or site.kwarg("scheduler_type") or (site.args[0].value if site.args else None)


class NoSchedule(Rule):
    code = "LR001"
    severity = Severity.MISSING
    title = "learning rate warms up and decays"
    message = (
        "the learning rate is constant (no warm-up, no decay): a warm-up steadies the "
        "first updates and a decay lets training converge"
    )
    explain = """
    A constant learning rate makes the first Adam updates of a random network large and noisy and keeps the
    last ones bouncing around the optimum. Warm up linearly over a few hundred to a few thousand optimizer
    steps (at most ~10% of the run), then decay (cosine) to about 1% of the base rate, stepping the schedule
    once per optimizer step: `get_scheduler("cosine", optimizer, num_warmup_steps=..., num_training_steps=...)`
    (diffusers/transformers) or `SequentialLR([LinearLR(...), CosineAnnealingLR(..., eta_min=0.01 * lr)])`.
    DiT and lucidrains' trainers train at a constant rate; diffusers' examples default to `constant`.
    """
    VALID = [
        (
            "import torch\n"
            "from diffusers.optimization import get_scheduler\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "sched = get_scheduler('cosine', optimizer=opt, num_warmup_steps=500, "
            "num_training_steps=50000)\n"
            "for x in data:\n"
            "    loss(x).backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
        # improved-diffusion: a hand-written linear anneal
        (
            "import torch\n"
            "class TrainLoop:\n"
            "    def __init__(self, model, lr, lr_anneal_steps=0):\n"
            "        self.lr = lr\n"
            "        self.lr_anneal_steps = lr_anneal_steps\n"
            "        self.opt = torch.optim.AdamW(model.parameters(), lr=lr)\n"
            "    def _anneal_lr(self):\n"
            "        frac_done = self.step / self.lr_anneal_steps\n"
            "        lr = self.lr * (1 - frac_done)\n"
            "        for param_group in self.opt.param_groups:\n"
            "            param_group['lr'] = lr\n"
            "    def run_step(self, batch):\n"
            "        self.model(batch).backward()\n"
            "        self._anneal_lr()\n"
            "        self.opt.step()\n"
        ),
        # Lightning
        (
            "import torch\n"
            "import lightning as L\n"
            "class Lit(L.LightningModule):\n"
            "    def training_step(self, batch, i):\n"
            "        return self.model(batch)\n"
            "    def configure_optimizers(self):\n"
            "        opt = torch.optim.AdamW(self.parameters(), lr=1e-4)\n"
            "        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-4, "
            "total_steps=self.trainer.estimated_stepping_batches)\n"
            "        return {'optimizer': opt, 'lr_scheduler': {'scheduler': sched, "
            "'interval': 'step'}}\n"
        ),
    ]
    INVALID = [
        # DiT: constant learning rate
        (
            "import torch\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)\n"
            "for epoch in range(epochs):\n"
            "    for x, y in loader:\n"
            "        loss = model(x, y)\n"
            "        opt.zero_grad()\n"
            "        loss.backward()\n"
            "        opt.step()\n"
        ),
        # diffusers example: the selected schedule is `constant`
        (
            "import argparse, torch\n"
            "from diffusers.optimization import get_scheduler\n"
            "p = argparse.ArgumentParser()\n"
            "p.add_argument('--lr_scheduler', type=str, default='constant')\n"
            "p.add_argument('--lr_warmup_steps', type=int, default=500)\n"
            "args = p.parse_args()\n"
            "opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)\n"
            "lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=opt, "
            "num_warmup_steps=args.lr_warmup_steps, num_training_steps=1000)\n"
            "for batch in loader:\n"
            "    loss(batch).backward()\n"
            "    opt.step()\n"
            "    lr_scheduler.step()\n"
        ),
        # lucidrains-style trainer: Adam, no scheduler
        (
            "from torch.optim import Adam\n"
            "class Trainer:\n"
            "    def __init__(self, diffusion_model, train_lr=1e-4):\n"
            "        self.opt = Adam(diffusion_model.parameters(), lr=train_lr, betas=(0.9, 0.99))\n"
            "    def train(self):\n"
            "        while self.step < self.train_num_steps:\n"
            "            loss = self.model(next(self.dl))\n"
            "            self.accelerator.backward(loss)\n"
            "            self.opt.step()\n"
            "            self.opt.zero_grad()\n"
        ),
    ]

    def applies(self, index: UnitIndex) -> bool:
        # A LightningModule whose configure_optimizers is inherited from elsewhere: nothing to judge here.
        pats = tuple(p for p in ROLE_CONSTRUCTORS["optimizer"] if p != "*.configure_optimizers")
        return (
            trains(index)
            and config_runner(index) is None
            and bool(optimizer_steps(index) or index.functions_named("configure_optimizers") or index.calls_to(*pats))
        )

    def when_blind(self, index: UnitIndex) -> tuple[State, str] | None:
        runner = config_runner(index)
        if trains(index) and runner is not None:
            return State.ELSEWHERE, f"{runner}: the learning rate follows its lr hook (lr_config), set in the config"
        return None

    def when_passed(self, index: UnitIndex) -> tuple[State, str] | None:
        top = schedule_facts(index).top
        if not top or any(s.warmup and s.decay for s in top):
            return None
        where = f"{top[0].path.name}:{top[0].line}" if hasattr(top[0].path, "name") else str(top[0].line)
        if all(s.handed for s in top):
            return (
                State.ELSEWHERE,
                f"the learning-rate scheduler is built from what the module receives (`{top[0].handed}`, "
                f"{where}): whoever builds the module (its config) decides the warm-up and decay",
            )
        lacking = [s for s in top if s.warmup is False or s.decay is False]
        if len(lacking) == len(top):
            # one half is known to be absent from every schedule the run may use: the other does not matter
            first = lacking[0]
            half = "warm-up" if first.warmup is False else "decay"
            where = f"{first.path.name}:{first.line}" if hasattr(first.path, "name") else str(first.line)
            return State.MISSING, f"the {first.kind} schedule ({where}) has no {half}: it needs a warm-up and a decay"
        named = _named_by_the_runs_config(index, [s for s in top if s.warmup is None or s.decay is None])
        if named is not None:
            return State.ELSEWHERE, named
        if all(s.warmup is None and s.decay is None for s in top):
            return (
                State.UNKNOWN,
                f"the learning rate is set by a {top[0].kind} schedule ({where}) "
                "whose warm-up and decay could not be read",
            )
        # one half is known, the other not (a schedule named by a variable: `get_scheduler(lr_scheduler, ...)`)
        # (also beside a constant alternative: flow_matching's LinearLR(end_factor=1e-8 / args.lr) under
        # `if args.decay_lr:`, else ConstantLR, read as present before)
        unread = next((s for s in top if s.decay is None or s.warmup is None), None)
        if unread is not None:
            half = "decay" if unread.decay is None else "warm-up"
            where = f"{unread.path.name}:{unread.line}" if hasattr(unread.path, "name") else str(unread.line)
            return State.UNKNOWN, f"the {unread.kind} schedule ({where}): whether it has a {half} could not be read"
        return None

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        facts = schedule_facts(index)
        if facts.present:
            return
        anchor = optimizer_anchor(index)
        if anchor is None:
            return
        constant = next((s for s in facts.top if s.constant), None)
        if constant is not None:
            yield Hit(
                constant.path,
                constant.line,
                constant.col,
                setting=_selected_by(index, constant),
                message=(
                    "the learning-rate schedule is `constant` (no warm-up, no decay): a warm-up "
                    "steadies the first updates and a decay lets training converge"
                ),
            )
        else:
            yield anchor


def _selected_by(index: UnitIndex, schedule) -> Setting | None:
    """The flag or config key that names a library schedule (``get_scheduler(args.lr_scheduler, ...)``
    with ``--lr_scheduler`` defaulting to ``constant``): the trainer then has other schedules, off by
    default."""
    if schedule.site is None or not schedule.site.args:
        return None
    name = dotted(schedule.site.args[0].value)
    if not name or "." not in name:
        return None
    _, setting = default_of(index, name.rsplit(".", 1)[-1])
    return setting


class NoDecay(WithSchedule):
    code = "LR002"
    severity = Severity.MISSING
    title = "learning rate decays after the warm-up"
    message = (
        "the learning rate warms up and then stays constant: decaying it (cosine to ~1% of "
        "the base rate) lets training converge"
    )
    explain = """
    A warm-up alone (`constant_with_warmup`, a `LinearLR` warm-up without a following decay, a lambda that
    only ramps up) leaves the rest of the run at the peak learning rate, so the weights keep bouncing around
    the optimum. Follow the warm-up with a cosine decay to about 1% of the base rate: `get_scheduler("cosine", ...)`,
    or `SequentialLR([LinearLR(...), CosineAnnealingLR(..., eta_min=0.01 * lr)], milestones=[warmup])`.
    """
    VALID = [
        (
            "import torch\n"
            "from torch.optim.lr_scheduler import LinearLR, CosineAnnealingLR, SequentialLR\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "warm = LinearLR(opt, start_factor=0.001, total_iters=warmup_steps)\n"
            "cos = CosineAnnealingLR(opt, T_max=total_steps - warmup_steps, eta_min=1e-6)\n"
            "sched = SequentialLR(opt, schedulers=[warm, cos], milestones=[warmup_steps])\n"
            "for x in data:\n"
            "    loss(x).backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
    ]
    INVALID = [
        (
            "import torch\n"
            "from transformers import get_constant_schedule_with_warmup\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "sched = get_constant_schedule_with_warmup(opt, num_warmup_steps=500)\n"
            "for x in data:\n"
            "    loss(x).backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
        (
            "import torch\n"
            "from diffusers.optimization import get_scheduler\n"
            "opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)\n"
            "lr_scheduler = get_scheduler('constant_with_warmup', optimizer=opt, "
            "num_warmup_steps=500)\n"
            "for batch in loader:\n"
            "    accelerator.backward(loss(batch))\n"
            "    opt.step()\n"
            "    lr_scheduler.step()\n"
        ),
        (
            "import torch\n"
            "from torch.optim.lr_scheduler import LambdaLR\n"
            "opt = torch.optim.Adam(model.parameters(), lr=2e-4)\n"
            "sched = LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup_steps))\n"
            "for x in data:\n"
            "    loss(x).backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for run in runs_of(index, [s for s in schedule_facts(index).top if not s.constant]):
            if run and all(s.decay is False and not s.unbounded for s in run) and any(s.warmup for s in run):
                s = next(s for s in run if s.warmup)
                switch = next((r.decay_switch for r in run if r.decay_switch is not None), None)
                yield Hit(s.path, s.line, s.col, setting=switch)


class DecaysToZero(WithSchedule):
    code = "LR003"
    severity = Severity.INFO
    title = "learning rate decays to a floor, not to zero"
    message = (
        "the learning rate decays all the way to 0, so the final steps make almost no "
        "progress; the plan keeps a floor of ~1% of the base rate (eta_min / min_lr / a "
        "floor in the lambda)"
    )
    explain = """
    Cosine and linear schedules that end at 0 (`get_scheduler("cosine")`, `get_cosine_schedule_with_warmup`,
    `CosineAnnealingLR` without `eta_min`, a lambda clamped with `max(0.0, ...)`) spend their last steps at a
    learning rate too small to change the weights. The plan keeps a floor of ~1% of the base rate:
    `CosineAnnealingLR(..., eta_min=0.01 * lr)`, transformers' `cosine_with_min_lr`, or
    `max(0.01, 0.5 * (1 + cos(pi * progress)))` in a LambdaLR. This is a tuning suggestion, not a defect:
    decaying to zero is a common, valid choice.
    """
    VALID = NoDecay.VALID + [
        (
            "import math, torch\n"
            "from torch.optim.lr_scheduler import LambdaLR\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "def lr_lambda(step):\n"
            "    if step < warmup_steps:\n"
            "        return (step + 1) / warmup_steps\n"
            "    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)\n"
            "    return max(0.01, 0.5 * (1.0 + math.cos(math.pi * progress)))\n"
            "sched = LambdaLR(opt, lr_lambda)\n"
            "for x in data:\n"
            "    loss(x).backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
    ]
    INVALID = [
        # the reference trainer's lambda: warm-up then cosine clamped at 0
        (
            "import math, torch\n"
            "from torch.optim.lr_scheduler import LambdaLR\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "def lr_lambda(step):\n"
            "    if step < warmup_steps:\n"
            "        return (step + 1) / warmup_steps\n"
            "    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)\n"
            "    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))\n"
            "sched = LambdaLR(opt, lr_lambda)\n"
            "for x in data:\n"
            "    loss(x).backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
        (
            "import torch\n"
            "from diffusers.optimization import get_scheduler\n"
            "opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)\n"
            "lr_scheduler = get_scheduler('cosine', optimizer=opt, num_warmup_steps=500, "
            "num_training_steps=100000)\n"
            "for batch in loader:\n"
            "    accelerator.backward(loss(batch))\n"
            "    opt.step()\n"
            "    lr_scheduler.step()\n"
        ),
        (
            "import torch\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=num_steps)\n"
            "for x in data:\n"
            "    loss(x).backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        top = [s for s in schedule_facts(index).top if not s.constant]
        decays = [s for s in top if s.decay]
        if decays and all(s.floor is False for s in decays) and not any(s.decay is None for s in top):
            s = decays[0]
            yield Hit(s.path, s.line, s.col)


class NoWarmup(WithSchedule):
    code = "LR007"
    severity = Severity.MISSING
    title = "learning rate warms up before it decays"
    message = (
        "the learning rate decays but never warms up: the first Adam updates of a freshly "
        "initialised network run at the full rate, which is when training is least stable"
    )
    explain = """
    Adam's second-moment estimate is unreliable for the first few hundred steps, so full-size updates on a
    random network can push it into a bad region (loss spikes, dead attention heads). A linear warm-up over a
    few hundred to a few thousand optimizer steps (at most ~10% of the run) avoids that at no cost:
    `get_scheduler("cosine", optimizer, num_warmup_steps=1000, ...)`, a `LinearLR` warm-up in a `SequentialLR`,
    or a `min(1, step / warmup)` factor in front of a hand-written anneal (improved-diffusion's `_anneal_lr`).
    """
    VALID = DecaysToZero.VALID
    INVALID = [
        (
            "import torch\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=1e-6)\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
        # improved-diffusion's linear anneal (turned on by image_train.py's defaults), no warm-up
        (
            "import torch\n"
            "defaults = dict(lr=1e-4, lr_anneal_steps=300000)\n"
            "class TrainLoop:\n"
            "    def __init__(self, model, lr, lr_anneal_steps=0):\n"
            "        self.lr = lr\n"
            "        self.lr_anneal_steps = lr_anneal_steps\n"
            "        self.opt = torch.optim.AdamW(model.parameters(), lr=lr)\n"
            "    def _anneal_lr(self):\n"
            "        if not self.lr_anneal_steps:\n"
            "            return\n"
            "        frac_done = (self.step + self.resume_step) / self.lr_anneal_steps\n"
            "        lr = self.lr * (1 - frac_done)\n"
            "        for param_group in self.opt.param_groups:\n"
            "            param_group['lr'] = lr\n"
            "    def run_step(self, batch):\n"
            "        loss = self.model(batch)\n"
            "        loss.backward()\n"
            "        self._anneal_lr()\n"
            "        self.opt.step()\n"
        ),
        (
            "import torch\n"
            "from diffusers.optimization import get_scheduler\n"
            "opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)\n"
            "lr_scheduler = get_scheduler('cosine', optimizer=opt, num_warmup_steps=0, "
            "num_training_steps=10000)\n"
            "for batch in loader:\n"
            "    loss = unet(batch)\n"
            "    loss.backward()\n"
            "    opt.step()\n"
            "    lr_scheduler.step()\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for run in runs_of(index, [s for s in schedule_facts(index).top if not s.constant]):
            if run and all(s.warmup is False for s in run) and any(s.decay for s in run):
                s = next(s for s in run if s.decay)
                yield Hit(s.path, s.line, s.col)


class WarmupNeverEnds(WithSchedule):
    code = "LR008"
    severity = Severity.BUG
    title = "warm-up factor capped"
    message = (
        "the learning-rate factor keeps growing with the step count and nothing caps it: "
        "the warm-up never ends and the learning rate explodes"
    )
    explain = """
    A warm-up lambda must stop growing at the base rate: `min(1.0, (step + 1) / warmup_steps)`, or an
    `if step < warmup_steps:` branch. Without the cap (`lambda step: step / warmup_steps`,
    `lambda step: 1e-3 * growth ** step`) the multiplier passes 1 at the end of the warm-up and keeps
    climbing, so the loss diverges a few hundred steps later.
    """
    VALID = NoDecay.INVALID[2:] + [
        (
            "import torch\n"
            "from torch.optim.lr_scheduler import LambdaLR\n"
            "opt = torch.optim.SGD(model.parameters(), lr=0.02)\n"
            "sched = LambdaLR(opt, lambda epoch: 0.95 ** epoch)\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
    ]
    INVALID = [
        (
            "import torch\n"
            "from torch.optim.lr_scheduler import LambdaLR\n"
            "opt = torch.optim.SGD(model.parameters(), lr=0.02)\n"
            "warmup_steps = 100\n"
            "growth = 1000.0 ** (1.0 / warmup_steps)\n"
            "sched = LambdaLR(opt, lr_lambda=lambda step: 1e-3 * growth ** step)\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
        (
            "import torch\n"
            "from torch.optim.lr_scheduler import LambdaLR\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "sched = LambdaLR(opt, lambda step: (step + 1) / warmup_steps)\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for s in schedule_facts(index).top:
            if s.unbounded:
                yield Hit(
                    s.path,
                    s.line,
                    s.col,
                    f"the learning-rate factor `{code_of(s.unbounded_expr).strip()}` keeps growing with the step count "
                    "and nothing caps it (min(1.0, ...)): the warm-up never ends and the learning rate explodes",
                )
