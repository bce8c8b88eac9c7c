"""What the training libraries' names mean: the roles objects play in a trainer.

Shared knowledge for the rules (which call is an optimizer step, which object
is an EMA); the engine itself stays free of it. A role is inferred from the
call that created an object (through imports, aliases and
``accelerator.prepare`` unpacking) and, for objects that arrive as function
parameters, from conventional names (``optimizer``, ``opt``, ``scaler``).
"""

from __future__ import annotations

import re

from optimizer_tool.index import CallSite, UnitIndex

ROLE_CONSTRUCTORS: dict[str, tuple[str, ...]] = {
    "optimizer": (
        "torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD", "torch.optim.RMSprop", "torch.optim.Adagrad",
        "torch.optim.Adafactor", "torch.optim.Lion", "torch.optim.NAdam", "torch.optim.RAdam",
        "bitsandbytes.optim.*", "*.AdamW8bit", "transformers.AdamW", "transformers.Adafactor", "timm.optim.*",
        "*.create_optimizer", "*.create_optimizer_v2", "apex.optimizers.*", "lion_pytorch.Lion", "*.configure_optimizers",
    ),
    "lr_scheduler": (
        "torch.optim.lr_scheduler.*", "diffusers.optimization.get_scheduler", "transformers.get_scheduler",
        "transformers.get_*", "*.get_cosine_schedule_with_warmup", "*.get_linear_schedule_with_warmup",
        "*.get_constant_schedule_with_warmup", "*.get_polynomial_decay_schedule_with_warmup", "timm.scheduler.*",
        "*._create_lr_scheduler", "*.create_lr_scheduler",
    ),
    "scaler": ("torch.cuda.amp.GradScaler", "torch.amp.GradScaler", "torch.cuda.amp.grad_scaler.GradScaler", "torch.amp.grad_scaler.GradScaler"),
    "ema": (
        "diffusers.training_utils.EMAModel", "ema_pytorch.EMA", "ema_pytorch.ema_pytorch.EMA", "ema_pytorch.PostHocEMA",
        "torch.optim.swa_utils.AveragedModel", "timm.utils.ModelEma", "timm.utils.ModelEmaV2", "timm.utils.ModelEmaV3",
        "timm.utils.model_ema.*", "*.ExponentialMovingAverage", "torch_ema.ExponentialMovingAverage",
    ),
    "writer": ("torch.utils.tensorboard.SummaryWriter", "tensorboardX.SummaryWriter", "torch.utils.tensorboard.writer.SummaryWriter"),
}

# Names users give objects that reach a function as parameters.
ROLE_NAMES: dict[str, re.Pattern] = {
    "optimizer": re.compile(r"(^|_)(optimizer|optim|opt|optimizer_[a-z]+)$"),
    "lr_scheduler": re.compile(r"(^|_)(lr_scheduler|scheduler_lr|lr_sched|sched|scheduler|warmup_scheduler)$"),
    "scaler": re.compile(r"(^|_)(scaler|grad_scaler|amp_scaler|loss_scaler)$"),
    "ema": re.compile(r"(^|_)(ema|ema_model|ema_unet|model_ema|ema_helper|ema_net|emas?)$"),
    "writer": re.compile(r"(^|_)(writer|summary_writer|tb_writer|tb)$"),
}

# Noise schedulers are also called "scheduler"; their step() takes a model output.
NOISE_SCHEDULER_NAMES = re.compile(r"noise_scheduler|diffusion|ddim|ddpm|sampler", re.I)


def has_role(index: UnitIndex, name: str, role: str) -> bool:
    if not name:
        return False
    origins = index.origins(name)
    patterns = ROLE_CONSTRUCTORS.get(role, ())
    if any(_matches(o, patterns) for o in origins):
        return True
    if role == "ema" and _is_ema_class(origins):
        return True
    if origins - {name} and role not in ("optimizer", "lr_scheduler"):
        return False
    leaf = name.rsplit(".", 1)[-1].lower()
    if role == "lr_scheduler" and NOISE_SCHEDULER_NAMES.search(name):
        return False
    return bool(ROLE_NAMES[role].search(leaf))


def _is_ema_class(origins: set[str]) -> bool:
    """A project's own EMA helper class (``utils.ema.EMA``, ``ExponentialMovingAverage``, ``LitEma``)."""
    return any(re.search(r"(^|\.)(EMA|Ema\w*|\w*EMA|\w*Ema|ExponentialMovingAverage)$", o) for o in origins)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    from optimizer_tool.index import _match

    return any(_match(name, p) for p in patterns)


def role_calls(index: UnitIndex, role: str, *methods: str) -> list[CallSite]:
    """Calls of ``methods`` on objects playing ``role`` (``optimizer.step()``, ``ema.update()``)."""
    return [c for c in index.method_calls(*methods) if has_role(index, c.receiver, role)]


def optimizer_steps(index: UnitIndex) -> list[CallSite]:
    """Optimizer steps, including ``scaler.step(optimizer)`` and Lightning's manual ``opt.step()``."""
    steps = role_calls(index, "optimizer", "step")
    steps += [c for c in role_calls(index, "scaler", "step")]
    return sorted(steps, key=lambda c: (str(c.path), c.line, c.col))


def is_lightning(index: UnitIndex) -> bool:
    return bool(index.functions_named("training_step")) and any(
        n.startswith(("lightning", "pytorch_lightning")) for n in index.names_used()
    ) or any(f.name == "configure_optimizers" for f in index.functions)


def module_imports(index: UnitIndex, prefix: str) -> bool:
    return any(n == prefix or n.startswith(prefix + ".") for n in index.names_used())


# --- places in a trainer ------------------------------------------------------
CHECKPOINT_WRITES = ("torch.save", "*.save_state", "safetensors.torch.save_file", "*.save_checkpoint", "accelerate.Accelerator.save", "*.save_model")
CHECKPOINT_READS = ("torch.load", "*.load_state", "safetensors.torch.load_file", "*.load_from_checkpoint", "*.load_checkpoint")
SAMPLING_FUNCTION = re.compile(r"(^|_)(generate|sample|samples|sampling|validation|validate|evaluate|eval|log_images|inference|visuali[sz]e|log_validation)(_|$)", re.I)
RUN_LENGTH_SETTINGS = ("max_train_steps", "total_steps", "num_train_steps", "max_steps", "train_steps", "lr_anneal_steps", "iterations", "num_iterations", "total_iters", "max_iters")


def calls_in_functions_with(index: UnitIndex, patterns: tuple[str, ...]) -> list:
    """Functions that contain a call matching ``patterns`` (e.g. the checkpoint writers)."""
    return list(dict.fromkeys(c.function for c in index.calls_to(*patterns)))


def sampling_functions(index: UnitIndex) -> list:
    return [f for f in index.functions if SAMPLING_FUNCTION.search(f.name) and not f.name.startswith("train")]


def mentions(index: UnitIndex, functions: list, name: str) -> bool:
    """Whether code in ``functions`` refers to ``name`` (``self.ema`` in ``self.ema.state_dict()``)."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(name)}(?!\w)")
    return any(pattern.search(c.text) for c in index.calls if c.function in functions) or any(
        a.function in functions and (pattern.search(a.target) or pattern.search(_code(a.value))) for a in index.assigns
    )


def _code(node) -> str:
    from optimizer_tool.index import code_of

    return code_of(node)


def run_length(index: UnitIndex):
    """The run's optimizer steps when the trainer states them (``max_train_steps``...), with the setting."""
    for setting in index.setting(*RUN_LENGTH_SETTINGS):
        if isinstance(setting.value, int) and not isinstance(setting.value, bool) and setting.value > 0:
            return setting.value, setting
    return None
