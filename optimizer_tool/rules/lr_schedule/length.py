"""The warm-up length against the run length (LR004)."""

from __future__ import annotations

from typing import Iterable

from optimizer_tool.contract import Hit
from optimizer_tool.findings import Severity
from optimizer_tool.index import UnitIndex
from optimizer_tool.knowledge.lr_schedule import schedule_facts, warmup_fraction
from optimizer_tool.rules.lr_schedule.base import WithSchedule


class WarmupTooLong(WithSchedule):
    code = "LR004"
    severity = Severity.BUG
    title = "warm-up at most 10% of training"
    message = (
        "the warm-up takes more than 10% of the run, so a large part of training happens below the target learning rate"
    )
    explain = """
    Warm-up only has to carry Adam's moment estimates past their first noisy steps; a few hundred to a few
    thousand optimizer steps suffice. When it takes more than ~10% of the run (500 of 2,000 steps, say),
    much of the budget trains at a reduced rate and the decay is squeezed into the rest. The plan caps it:
    `warmup_steps = min(warmup_steps, total_steps // 10)`. Reported only when both lengths are known
    statically (literals, config and argparse defaults); a length computed from `len(dataloader)` is not judged.
    """
    VALID = [
        (
            "import torch\n"
            "from diffusers.optimization import get_scheduler\n"
            "opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)\n"
            "lr_scheduler = get_scheduler('cosine', optimizer=opt, num_warmup_steps=500, "
            "num_training_steps=50000)\n"
            "for batch in loader:\n"
            "    loss(batch).backward()\n"
            "    opt.step()\n"
            "    lr_scheduler.step()\n"
        ),
        # total computed from the dataloader: unknown statically, no claim
        (
            "import torch\n"
            "from transformers import get_cosine_schedule_with_warmup\n"
            "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "total = num_epochs * len(train_dataloader)\n"
            "sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=2000, "
            "num_training_steps=total)\n"
            "for x in data:\n"
            "    loss(x).backward()\n"
            "    opt.step()\n"
            "    sched.step()\n"
        ),
    ]
    INVALID = [
        (
            "import argparse, torch\n"
            "from diffusers.optimization import get_scheduler\n"
            "p = argparse.ArgumentParser()\n"
            "p.add_argument('--max_train_steps', type=int, default=2000)\n"
            "p.add_argument('--lr_warmup_steps', type=int, default=500)\n"
            "args = p.parse_args()\n"
            "opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)\n"
            "lr_scheduler = get_scheduler('cosine', optimizer=opt, "
            "num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes, "
            "num_training_steps=args.max_train_steps * accelerator.num_processes)\n"
            "for batch in loader:\n"
            "    accelerator.backward(loss(batch))\n"
            "    opt.step()\n"
            "    lr_scheduler.step()\n"
        ),
        {
            ("train.py"): (
                "import math, torch\n"
                "from torch.optim.lr_scheduler import LinearLR, CosineAnnealingLR, SequentialLR\n"
                "from config import TrainConfig\n"
                "cfg = TrainConfig()\n"
                "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
                "warm = LinearLR(opt, start_factor=0.001, total_iters=cfg.warmup_steps)\n"
                "cos = CosineAnnealingLR(opt, T_max=cfg.max_steps - cfg.warmup_steps, eta_min=1e-6)\n"
                "sched = SequentialLR(opt, [warm, cos], milestones=[cfg.warmup_steps])\n"
                "for x in data:\n"
                "    loss = model(x)\n"
                "    loss.backward()\n"
                "    opt.step()\n"
                "    sched.step()\n"
            ),
            ("config.py"): (
                "from dataclasses import dataclass\n"
                "@dataclass\n"
                "class TrainConfig:\n"
                "    warmup_steps: int = 2000\n"
                "    max_steps: int = 10000\n"
            ),
        },
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        for sched in schedule_facts(index).top:
            measured = warmup_fraction(index, sched)
            if measured is not None and measured[2] > 0.1:
                warm, total, fraction = measured
                yield Hit(
                    sched.path,
                    sched.line,
                    sched.col,
                    f"the warm-up takes {warm:,.0f} of {total:,.0f} optimizer steps ({fraction:.0%} of the run, more "
                    "than 10%): most of the budget trains below the target learning rate",
                )
