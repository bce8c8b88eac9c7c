"""MON001-MON003: the gradient norm, the learning rate and the EMA drift reach a metrics sink."""

from __future__ import annotations

from typing import Iterable

from optimizer_tool.contract import Hit, Rule
from optimizer_tool.findings import Severity, State
from optimizer_tool.index import UnitIndex
from optimizer_tool.knowledge.ema import ema_facts
from optimizer_tool.knowledge.lr_schedule import schedule_facts
from optimizer_tool.knowledge.training import (
    clip_calls,
    config_runner,
    lightning_configured_elsewhere,
    lr_scheduler_steps,
    optimizer_steps,
    trains,
)
from optimizer_tool.rules.monitoring.facts import ema_drift_logged, grad_norm_logged, lr_logged


class _Monitoring(Rule):
    def applies(self, index: UnitIndex) -> bool:
        return trains(index) and not lightning_configured_elsewhere(index) and config_runner(index) is None

    def when_blind(self, index: UnitIndex) -> tuple[State, str] | None:
        runner = config_runner(index)
        if trains(index) and runner is not None:
            return (
                State.ELSEWHERE,
                f"{runner}: what reaches the logs is its logger hooks' (log_config), set in the config",
            )
        return None


class GradNormNotLogged(_Monitoring):
    code = "MON001"
    severity = Severity.MISSING
    title = "gradient norm logged"
    message = "the gradient norm is never logged, so instabilities and the effect of clipping stay invisible"
    explain = """
    The global gradient norm is the first curve to look at when a diffusion run diverges or stalls, and the
    only way to see whether clipping is active. `clip_grad_norm_` (torch and accelerate) already returns it:
    `grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)` then `writer.add_scalar("train/grad_norm",
    grad_norm, step)` / `accelerator.log({"grad_norm": grad_norm.item()}, step=step)`. In Lightning log
    `lightning.pytorch.utilities.grad_norm(self, norm_type=2)` in `on_before_optimizer_step`.
    """
    VALID = [
        (
            "import torch\n"
            "from torch.utils.tensorboard import SummaryWriter\n"
            "writer = SummaryWriter()\n"
            "for step, x in enumerate(data):\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    optimizer.step()\n"
            "    writer.add_scalar('train/grad_norm', grad_norm, step)\n"
        ),
        # improved-diffusion: computed by hand, logged with logkv_mean
        (
            "import numpy as np\n"
            "from . import logger\n"
            "class TrainLoop:\n"
            "    def _log_grad_norm(self):\n"
            "        sqsum = 0.0\n"
            "        for p in self.master_params:\n"
            "            sqsum += (p.grad ** 2).sum().item()\n"
            "        logger.logkv_mean('grad_norm', np.sqrt(sqsum))\n"
            "    def optimize_normal(self):\n"
            "        self._log_grad_norm()\n"
            "        self.opt.step()\n"
            "    def forward_backward(self, batch):\n"
            "        loss = self.model(batch)\n"
            "        loss.backward()\n"
        ),
        (
            "import wandb\n"
            "for x in data:\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    norm = accelerator.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    optimizer.step()\n"
            "    logs = {'loss': loss.item()}\n"
            "    logs['gn'] = norm.item()\n"
            "    wandb.log(logs)\n"
        ),
    ]
    INVALID = [
        # the reference pattern: the norm clip_grad_norm_ returns is thrown away
        (
            "import torch\n"
            "from torch.utils.tensorboard import SummaryWriter\n"
            "writer = SummaryWriter()\n"
            "for step, x in enumerate(data):\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    lr = optimizer.param_groups[0]['lr']\n"
            "    optimizer.step()\n"
            "    writer.add_scalar('train/loss', loss.item(), step)\n"
            "    writer.add_scalar('train/lr', lr, step)\n"
        ),
        # printed only
        (
            "for step, x in enumerate(data):\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    grad_norm = accelerator.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    optimizer.step()\n"
            "    print(f'step {step} grad norm {grad_norm}')\n"
            "    accelerator.log({'train_loss': loss.item()}, step=step)\n"
        ),
    ]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if grad_norm_logged(index):
            return
        returned_lines = {(a.path, a.line) for a in index.assigns}
        discarded = [c for c in clip_calls(index) if (c.path, c.line) not in returned_lines]
        if discarded:
            c = discarded[0]
            yield Hit.at(
                c,
                f"the gradient norm is never logged: `{c.func_text}()` returns it, but the value is discarded; log it to see instabilities and whether clipping is active",  # noqa: E501
            )
            return
        anchor = (optimizer_steps(index) or [None])[0]
        if anchor is not None:
            yield Hit.at(anchor)
        else:
            fn = index.functions_named("training_step", "configure_optimizers")[0]
            yield Hit(fn.path, fn.line, 1, LIGHTNING_MESSAGE)

    def applies(self, index: UnitIndex) -> bool:
        # A Lightning module logs its own gradient norm (Lightning 2 has no Trainer flag for it), so
        # a Trainer built elsewhere does not decide this one.
        return trains(index) and config_runner(index) is None


LIGHTNING_MESSAGE = (
    "the gradient norm is never logged: in a LightningModule, log it in `on_before_optimizer_step` "
    "(`self.log_dict(grad_norm(self, norm_type=2))`, from lightning.pytorch.utilities; "
    "`Trainer(track_grad_norm=2)` before Lightning 2.0)"
)


class LrNotLogged(_Monitoring):
    code = "MON002"
    severity = Severity.MISSING
    title = "learning rate logged"
    message = "the learning rate is never logged, so you cannot check that the warm-up and decay do what you planned"
    explain = """
    A schedule is easy to get wrong (stepped per epoch instead of per step, a warm-up longer than the run,
    a resumed run restarting the schedule). Logging `lr_scheduler.get_last_lr()[0]` or
    `optimizer.param_groups[0]["lr"]` next to the loss makes such mistakes visible at a glance; in Lightning
    add the `LearningRateMonitor` callback. Only judged when the learning rate changes during training.
    """
    VALID = [
        (
            "import torch\n"
            "from torch.utils.tensorboard import SummaryWriter\n"
            "writer = SummaryWriter()\n"
            "sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)\n"
            "for step, x in enumerate(data):\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    sched.step()\n"
            "    writer.add_scalar('train/lr', sched.get_last_lr()[0], step)\n"
        ),
        (
            "from diffusers.optimization import get_scheduler\n"
            "lr_scheduler = get_scheduler('cosine', optimizer=optimizer, num_warmup_steps=500, num_training_steps=10000)\n"  # noqa: E501
            "for step, batch in enumerate(loader):\n"
            "    loss = model(batch)\n"
            "    accelerator.backward(loss)\n"
            "    optimizer.step()\n"
            "    lr_scheduler.step()\n"
            "    logs = {'loss': loss.detach().item(), 'lr': lr_scheduler.get_last_lr()[0]}\n"
            "    progress_bar.set_postfix(**logs)\n"
            "    accelerator.log(logs, step=step)\n"
        ),
    ]
    INVALID = [
        # diffusers train_text_to_image: the lr only reaches the progress bar
        (
            "from diffusers.optimization import get_scheduler\n"
            "lr_scheduler = get_scheduler('cosine', optimizer=optimizer, num_warmup_steps=500, num_training_steps=10000)\n"  # noqa: E501
            "for step, batch in enumerate(loader):\n"
            "    loss = model(batch)\n"
            "    accelerator.backward(loss)\n"
            "    optimizer.step()\n"
            "    lr_scheduler.step()\n"
            "    accelerator.log({'train_loss': loss.item()}, step=step)\n"
            "    logs = {'step_loss': loss.detach().item(), 'lr': lr_scheduler.get_last_lr()[0]}\n"
            "    progress_bar.set_postfix(**logs)\n"
        ),
    ]

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and schedule_facts(index).present

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if lr_logged(index):
            return
        steps = lr_scheduler_steps(index)
        if steps:
            yield Hit.at(steps[0])
            return
        sched = next((s for s in schedule_facts(index).top if not s.constant), None)
        if sched is not None:
            yield Hit(sched.path, sched.line, sched.col)


class EmaDriftNotLogged(_Monitoring):
    code = "MON003"
    severity = Severity.MISSING
    title = "EMA drift logged"
    message = (
        "the distance between the EMA and the live weights is never logged, so an EMA stuck at its initial weights (or "
        "updated too rarely) goes unnoticed"
    )
    explain = """
    An EMA that is never updated, updated too rarely or with a horizon longer than the run stays close to the
    random initial weights, and samples drawn from it look like noise long after the model has learned. Log the
    mean absolute difference between EMA and model parameters every few hundred steps (the plan's
    `ema/param_difference`): it should grow early and then settle. Only judged when the trainer keeps an EMA.
    """
    VALID = [
        (
            "import copy, torch\n"
            "from torch.utils.tensorboard import SummaryWriter\n"
            "writer = SummaryWriter()\n"
            "ema = copy.deepcopy(model)\n"
            "for step, x in enumerate(data):\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    update_ema(ema, model)\n"
            "    diff = sum((e - m).abs().mean() for e, m in zip(ema.parameters(), model.parameters()))\n"
            "    writer.add_scalar('ema/param_difference', diff, step)\n"
        ),
    ]
    INVALID = [
        (
            "import copy, torch\n"
            "from torch.utils.tensorboard import SummaryWriter\n"
            "writer = SummaryWriter()\n"
            "ema = copy.deepcopy(model)\n"
            "for step, x in enumerate(data):\n"
            "    loss = model(x)\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    update_ema(ema, model)\n"
            "    writer.add_scalar('train/loss', loss.item(), step)\n"
        ),
    ]

    def applies(self, index: UnitIndex) -> bool:
        return trains(index) and bool(ema_facts(index).objects)

    def when_blind(self, index: UnitIndex) -> tuple[State, str] | None:
        """No EMA, no drift to log: the verdict is the gradient norm's and the learning rate's (reached
        only when MON001 and MON002 judged the unit and passed)."""
        if _Monitoring.applies(self, index) and not ema_facts(index).objects:
            return State.PRESENT, "the gradient norm and the learning rate are logged (no EMA is kept: no drift to log)"
        return None

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        if ema_drift_logged(index):
            return
        facts = ema_facts(index)
        if facts.updates:
            in_loop = [u for u in facts.updates if u.loop_depth > 0]
            yield Hit.at((in_loop or facts.updates)[0])
        else:
            obj = facts.objects[0]
            yield Hit(obj.path, obj.line, obj.col)
