"""What the training libraries' names mean: the roles objects play in a trainer.

Shared knowledge for the rules (which call is an optimizer step, which object
is an EMA); the engine itself stays free of it. A role is inferred from the
call that created an object (through imports, aliases and
``accelerator.prepare`` unpacking) and, for objects that arrive as function
parameters, from conventional names (``optimizer``, ``opt``, ``scaler``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

import libcst as cst

from optimizer_tool.index import CallSite, Setting, UnitIndex, code_of, dotted, literal
from optimizer_tool.knowledge.configured import assignments_of, class_bases, memo, names_in
from optimizer_tool.knowledge.diffusion import DIFFUSERS_SCHEDULER
from optimizer_tool.project import TRAINING_FUNCTIONS

ROLE_CONSTRUCTORS: dict[str, tuple[str, ...]] = {
    "optimizer": (
        "torch.optim.Adam",
        "torch.optim.AdamW",
        "torch.optim.SGD",
        "torch.optim.RMSprop",
        "torch.optim.Adagrad",
        "torch.optim.Adafactor",
        "torch.optim.Lion",
        "torch.optim.NAdam",
        "torch.optim.RAdam",
        "bitsandbytes.optim.*",
        "*.AdamW8bit",
        "transformers.AdamW",
        "transformers.Adafactor",
        "timm.optim.*",
        "*.create_optimizer",
        "*.create_optimizer_v2",
        "apex.optimizers.*",
        "lion_pytorch.Lion",
        "*.configure_optimizers",
    ),
    "lr_scheduler": (
        "torch.optim.lr_scheduler.*",
        "diffusers.optimization.get_scheduler",
        "transformers.get_scheduler",
        "transformers.get_*",
        "*.get_cosine_schedule_with_warmup",
        "*.get_linear_schedule_with_warmup",
        "*.get_constant_schedule_with_warmup",
        "*.get_polynomial_decay_schedule_with_warmup",
        "timm.scheduler.*",
        "*._create_lr_scheduler",
        "*.create_lr_scheduler",
    ),
    "scaler": (
        "torch.cuda.amp.GradScaler",
        "torch.amp.GradScaler",
        "torch.cuda.amp.grad_scaler.GradScaler",
        "torch.amp.grad_scaler.GradScaler",
    ),
    "ema": (
        "diffusers.training_utils.EMAModel",
        "ema_pytorch.EMA",
        "ema_pytorch.ema_pytorch.EMA",
        "ema_pytorch.PostHocEMA",
        "torch.optim.swa_utils.AveragedModel",
        "timm.utils.ModelEma",
        "timm.utils.ModelEmaV2",
        "timm.utils.ModelEmaV3",
        "timm.utils.model_ema.*",
        "*.ExponentialMovingAverage",
        "torch_ema.ExponentialMovingAverage",
    ),
    "writer": (
        "torch.utils.tensorboard.SummaryWriter",
        "tensorboardX.SummaryWriter",
        "torch.utils.tensorboard.writer.SummaryWriter",
    ),
}

# Names users give objects that reach a function as parameters.
ROLE_NAMES: dict[str, re.Pattern] = {
    "optimizer": re.compile(r"(^|_)(optimizer|optim|opt|optimizer_[a-z]+)$"),
    "lr_scheduler": re.compile(
        r"(^|_)(lr_scheduler|scheduler_lr|lr_sched|lr_schedule|sched|scheduler|warmup_scheduler)$"
    ),
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
    # BigGAN's lower-case ``utils.ema(G, G_ema, decay, start)`` too
    return any(re.search(r"(^|\.)(ema|EMA|Ema\w*|\w*EMA|\w*Ema|ExponentialMovingAverage)$", o) for o in origins)


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
    # the steps the entry script runs first: a finding about "the" step names one that trains
    return sorted(steps, key=lambda c: (not run_by_entry(index, c.function), str(c.path), c.line, c.col))


def is_lightning(index: UnitIndex) -> bool:
    return (
        bool(index.functions_named("training_step"))
        and any(n.startswith(("lightning", "pytorch_lightning")) for n in index.names_used())
        or any(f.name == "configure_optimizers" for f in index.functions)
    )


def module_imports(index: UnitIndex, prefix: str) -> bool:
    return any(n == prefix or n.startswith(prefix + ".") for n in index.names_used())


# --- places in a trainer ------------------------------------------------------
CHECKPOINT_WRITES = (
    "torch.save",
    "*.save_state",
    "safetensors.torch.save_file",
    "*.save_checkpoint",
    "accelerate.Accelerator.save",
    "*.save_model",
)
CHECKPOINT_READS = (
    "torch.load",
    "*.load_state",
    "safetensors.torch.load_file",
    "*.load_from_checkpoint",
    "*.load_checkpoint",
)
SAMPLING_FUNCTION = re.compile(
    r"(^|_)(generate|sample|samples|sampling|validation|validate|evaluate|eval|log_images|inference|visuali[sz]e|log_validation)(_|$)",
    re.I,
)
RUN_LENGTH_SETTINGS = (
    "max_train_steps",
    "total_steps",
    "num_train_steps",
    "max_steps",
    "train_steps",
    "lr_anneal_steps",
    "iterations",
    "num_iterations",
    "total_iters",
    "max_iters",
)


def calls_in_functions_with(index: UnitIndex, patterns: tuple[str, ...]) -> list:
    """Functions that contain a call matching ``patterns`` (e.g. the checkpoint writers)."""
    return list(dict.fromkeys(c.function for c in index.calls_to(*patterns)))


# Names that say "sample" but draw no images: q_sample noises x0 (training), a sample budget or
# batch size, a data sampler, sampled indices or weights.
NOT_SAMPLING = re.compile(
    r"^(train|q_sample)|timestep|noise|_t$|"
    r"(^|_)(budget|batch|batch_size|size|sampler|indices|weights?|data|loader|count|num|per_batch|rate)(_|$)",
    re.I,
)


def sampling_functions(index: UnitIndex) -> list:
    return [f for f in index.functions if SAMPLING_FUNCTION.search(f.name) and not NOT_SAMPLING.search(f.name)]


def mentions(index: UnitIndex, functions: list, name: str) -> bool:
    """Whether code in ``functions`` refers to ``name`` (``self.ema`` in ``self.ema.state_dict()``)."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(name)}(?!\w)")
    return any(pattern.search(c.text) for c in index.calls if c.function in functions) or any(
        a.function in functions and (pattern.search(a.target) or pattern.search(code_of(a.value)))
        for a in index.assigns
    )


def run_length(index: UnitIndex):
    """The run's optimizer steps when the trainer states them (``max_train_steps``...), with the setting."""
    for setting in index.setting(*RUN_LENGTH_SETTINGS):
        if isinstance(setting.value, int) and not isinstance(setting.value, bool) and setting.value > 0:
            return setting.value, setting
    return None


# --- training structure (lr-schedule, clipping, monitoring) ---------------------------
def trains(index: UnitIndex) -> bool:
    """The unit steps an optimizer itself, or is a Lightning module (training_step / configure_optimizers)."""
    return bool(optimizer_steps(index)) or bool(index.functions_named("training_step", "configure_optimizers"))


def lightning_trainer_calls(index: UnitIndex) -> list[CallSite]:
    """``Trainer(...)`` of Lightning (``lightning.Trainer``, ``pytorch_lightning.Trainer``, ``L.Trainer``...)."""
    return [
        c
        for c in index.calls
        if c.method in ("Trainer", "from_argparse_args")
        and any(n.startswith(("lightning", "pytorch_lightning")) for n in c.qualnames)
    ]


def lightning_configured_elsewhere(index: UnitIndex) -> bool:
    """A LightningModule whose ``Trainer`` (clipping, callbacks, grad-norm tracking) is built outside
    this unit, or from arguments/CLI we cannot read: its Trainer flags are unknown here."""
    if not index.functions_named("training_step"):
        return False
    if any(c.method == "training_step" for c in index.calls):
        return False  # a hand-written loop calls its own ``training_step`` (ResShift's TrainerDifIR)
    # the entry runs a hand-written loop: a LightningModule it merely reaches (Kandinsky's MOVQ
    # autoencoder) is not what trains
    modules = {f.class_name for f in index.functions_named("training_step")}
    if any(
        s.function is None or s.function.class_name not in modules
        for s in optimizer_steps(index)
        if run_by_entry(index, s.function)
    ):
        return False
    trainers = lightning_trainer_calls(index)
    return (
        not trainers
        or any(c.method == "from_argparse_args" or any(a.star for a in c.node.args) for c in trainers)
        or any(n.endswith("LightningCLI") for n in index.names_used())
    )


# OpenMMLab runners: the model's ``train_step`` returns the loss; the runner's hooks, built from the
# config, step the optimizer (``optimizer_config.grad_clip``), the lr (``lr_config`` / ``param_scheduler``)
# and log (``log_config``).
OPENMMLAB_RUNNERS = re.compile(
    r"^(mmcv\.runner|mmengine\.runner)(\.\w+)*\.(build_runner|EpochBasedRunner|IterBasedRunner|Runner|FlexibleRunner)"
    r"(\.from_cfg)?$"
)


def config_runner(index: UnitIndex) -> str | None:
    """Where an OpenMMLab runner (mmcv, mmengine) trains the unit's model, in words (ReMoDiffuse's
    ``build_runner(cfg.runner, ...)`` then ``runner.register_training_hooks(cfg.lr_config,
    cfg.optimizer_config, ...)``): the hooks that clip, schedule and log are the config's."""

    def find() -> str | None:
        for call in index.calls:
            if any(OPENMMLAB_RUNNERS.match(q) for q in call.qualnames):
                return f"an OpenMMLab runner trains the model (`{call.func_text}` at {call.path.name}:{call.line})"
        return None

    return memo(index, "training.config_runner", find)


# Noise schedulers also have a step(): ``noise_scheduler.step(model_output, t, sample)``.
NOISE_SCHEDULER_CLASS = re.compile(
    r"(^|\.)(DDIM|DDPM|PNDM|DPM|Euler|Heun|LMS|UniPC|DEIM|LCM|TCD|KDPM|Karras|FlowMatch|Noise|Diffusion|Sampler)\w*$"
)


def is_noise_scheduler_step(index: UnitIndex, call: CallSite) -> bool:
    origins = index.origins(call.receiver)
    if any(_matches(o, ROLE_CONSTRUCTORS["lr_scheduler"]) for o in origins):
        return False
    if any(NOISE_SCHEDULER_CLASS.search(o) or DIFFUSERS_SCHEDULER.match(o) for o in origins):
        return True
    if NOISE_SCHEDULER_NAMES.search(call.receiver):
        return True
    return len(call.args) >= 2 or any(call.kwarg(k) is not None for k in ("model_output", "sample", "timestep"))


def lr_scheduler_steps(index: UnitIndex) -> list[CallSite]:
    """``lr_scheduler.step()`` calls (not noise-scheduler steps), in source order."""
    steps = [
        c
        for c in role_calls(index, "lr_scheduler", "step")
        if not is_noise_scheduler_step(index, c)
        and not re.search(r"(^|_)ema(_|$)", c.receiver.rsplit(".", 1)[-1], re.I)
    ]
    return sorted(steps, key=lambda c: (str(c.path), c.line, c.col))


GRAD_CLIP_FUNCTIONS = (
    "torch.nn.utils.clip_grad_norm_",
    "torch.nn.utils.clip_grad_value_",
    "torch.nn.utils.clip_grad_norm",
    "torch.nn.utils.clip_grad.clip_grad_norm_",
    "torch.nn.utils.clip_grad.clip_grad_value_",
    "torch.nn.utils.clip_grads_with_norm_",
)
CLIP_METHOD = re.compile(
    r"^_?(clip_grad_norm_?|clip_grad_value_?|clip_gradients?|clip_grads?|clip_grad_norms?|dispatch_clip_grad|clip_grads_with_norm_)$"
)


def clip_calls(index: UnitIndex) -> list[CallSite]:
    """Gradient clipping: ``torch.nn.utils.clip_grad_norm_/clip_grad_value_`` in any import spelling,
    ``accelerator.clip_grad_norm_``, Fabric/Lightning ``clip_gradients``, FSDP/fairseq ``clip_grad_norm``,
    timm ``dispatch_clip_grad``, a project's own ``clip_grad(...)`` helper; not in code the entry
    script never runs (motion-diffusion-model's evaluator ``trainers.py`` beside its TrainLoop)."""
    scalers = _grad_scalers(index)
    return [
        c
        for c in index.calls
        if (
            c.matches(GRAD_CLIP_FUNCTIONS)
            or CLIP_METHOD.match(c.method or "")
            or (c.method in scalers and CLIP_WORD.search(" ".join((*c.guards, code_of(c.node)))))
        )
        and run_by_module(index, c.function)
    ]


# a clipping threshold in a guard or an argument (``if grad_norm > args.grad_clip: scale_grad(model, ...)``)
CLIP_WORD = re.compile(r"clip|max_norm", re.I)
GRAD_TENSOR = re.compile(r"\.grad(\.data)?$")


def _grad_scalers(index: UnitIndex) -> set[str]:
    """The unit's functions that scale the gradients in place (``param.grad.mul_(factor)`` over the
    parameters): called with a clipping threshold, gradient clipping written by hand (Lumina's
    ``scale_grad(model, args.grad_clip / grad_norm)``)."""

    def find() -> set[str]:
        return {
            c.function.name
            for c in index.method_calls("mul_")
            if c.function is not None and c.function.class_name is None and GRAD_TENSOR.search(c.receiver)
        }

    return memo(index, "training.grad_scalers", find)


def is_torch_clip(call: CallSite) -> bool:
    """``torch.nn.utils.clip_grad_*`` itself (it sees the gradients as they are: scaled under a GradScaler),
    as opposed to accelerate/Lightning wrappers that unscale first."""
    return call.matches(GRAD_CLIP_FUNCTIONS)


def exclusive(a: CallSite, b: CallSite) -> bool:
    """The two calls sit in different branches of one ``if`` (body vs else/elif): never both run."""
    mine = dict(a.branches)
    return any(line in mine and mine[line] != in_else for line, in_else in b.branches)


def call_of(index: UnitIndex, node) -> CallSite | None:
    """``find_call`` through a per-index table."""
    table = memo(index, "call_of", lambda: {id(c.node): c for c in index.calls})
    return table.get(id(node))


# --- what a trainer trains, and where its hyperparameters come from (used by the fixes) ---------
NOT_THE_DENOISER = re.compile(r"text|clip|vae|tokeni[sz]er|encoder|discriminator|lpips|critic|embed", re.I)


def ordered_nodes(node) -> Iterator:
    """Every node of one expression in source order (``expression_nodes`` is unordered)."""
    import libcst as cst

    if node is None:
        return
    yield node
    for child in node.children:
        if isinstance(child, cst.CSTNode):
            yield from ordered_nodes(child)


@dataclass
class TrainedModel:
    """The network an optimizer step trains: ``name`` as the code spells it (``self.model``, ``unet``),
    the optimizer's construction, the first optimizer step, and the last assignment of the model
    before that step (None when it arrives as a parameter)."""

    name: str
    optimizer: object  # index.Assign
    step: CallSite
    assignment: object | None  # index.Assign


def optimizer_constructions(index: UnitIndex) -> list:
    return [a for a in index.assigns if a.call is not None and a.call.matches(ROLE_CONSTRUCTORS["optimizer"])]


def stepped_optimizer(step: CallSite) -> str:
    """``optimizer`` for ``optimizer.step()`` and for ``scaler.step(optimizer)``."""

    if step.args and step.receiver and not ROLE_NAMES["optimizer"].search(step.receiver.rsplit(".", 1)[-1]):
        return dotted(step.args[0].value) or step.receiver
    return step.receiver


def same_object(a: str, b: str) -> bool:
    """Two spellings of one object: equal, or ``self.x`` attributes with the same leaf."""
    return a == b or (a.startswith("self.") and b.startswith("self.") and a.rsplit(".", 1)[-1] == b.rsplit(".", 1)[-1])


def parameter_owners(index: UnitIndex, node, function, depth: int = 0) -> list[str]:
    """Modules whose ``.parameters()`` feed an expression, in source order, through the variables
    it reads (``self.params = list(self.model.parameters()) + ...``)."""
    import libcst as cst

    owners: list[str] = []
    for current in ordered_nodes(node):
        if (
            isinstance(current, cst.Call)
            and isinstance(current.func, cst.Attribute)
            and current.func.attr.value in ("parameters", "named_parameters")
        ):
            owner = dotted(current.func.value)
            if owner and owner not in owners:
                owners.append(owner)
        elif isinstance(current, (cst.Name, cst.Attribute)) and depth < 3:
            for assign in assignments_of(index, dotted(current), function)[-1:]:
                owners += [
                    o for o in parameter_owners(index, assign.value, assign.function, depth + 1) if o not in owners
                ]
    return owners


def trained_model(index: UnitIndex) -> TrainedModel | None:
    steps = optimizer_steps(index)
    if not steps:
        return None
    step = steps[0]
    optimizer_name = stepped_optimizer(step)
    constructions = optimizer_constructions(index)
    optimizer = next(
        (a for a in constructions if same_object(a.target, optimizer_name)), constructions[0] if constructions else None
    )
    if optimizer is None:
        return None
    owners = parameter_owners(index, optimizer.call.arg(0, "params"), optimizer.function)
    if not owners:
        return None
    name = next((o for o in owners if not NOT_THE_DENOISER.search(o.rsplit(".", 1)[-1])), owners[0])
    return TrainedModel(name, optimizer, step, model_assignment(index, name, optimizer, step))


def model_assignment(index: UnitIndex, name: str, optimizer, step: CallSite):
    """The last assignment of the model in the function that builds the optimizer, before the first
    optimizer step and before the run resumes from a checkpoint (``accelerator.prepare`` unpacking counts)."""
    function = optimizer.function
    limit = function.end_line if function is not None else float("inf")
    if step.function == function and step.path == optimizer.path:
        limit = min(limit, step.line)
    resumes = [c.line for c in index.calls_in(function) if c.path == optimizer.path and c.matches(CHECKPOINT_READS)]
    limit = min([limit, *resumes])
    candidates = [
        a
        for a in index.assigns
        if same_object(a.target, name) and a.function == function and a.path == optimizer.path and a.line < limit
    ]
    return candidates[-1] if candidates else None


@dataclass
class HyperparameterSource:
    """Where a trainer reads one hyperparameter: a config dataclass field read through ``prefix``
    (``self.train_config``), or an argparse flag read through ``prefix`` (``args``)."""

    kind: str  # "dataclass" | "argparse"
    prefix: str
    setting: Setting  # the field's class default, or the flag's add_argument
    spelled: str = ""  # the flag as written (``--learning-rate``)

    def read(self, field_name: str) -> str:
        return f"{self.prefix}.{field_name}"

    def flag(self, field_name: str) -> str:
        """The flag for a new field, spelled like the existing one (``--ema_decay`` / ``--ema-decay``)."""
        return "--" + (field_name.replace("_", "-") if "-" in self.spelled.lstrip("-") else field_name)


def hyperparameter_source(index: UnitIndex, node) -> HyperparameterSource | None:
    """Where the value ``node`` (e.g. the optimizer's ``lr=`` argument) comes from, when it is read
    from a config dataclass or from parsed command-line arguments."""

    text = dotted(node)
    if "." not in text:
        return None
    prefix, leaf = text.rsplit(".", 1)
    for setting in index.setting(leaf):
        if setting.kind == "class-default":
            return HyperparameterSource("dataclass", prefix, setting)
        if setting.kind == "argparse":
            flag = next(
                (
                    c
                    for c in index.calls
                    if (c.path, c.line, c.col) == (setting.path, setting.line, setting.col)
                    and c.method == "add_argument"
                ),
                None,
            )
            if flag is not None:
                spelled = next((literal(a.value) for a in flag.args if str(literal(a.value)).startswith("--")), "")
                return HyperparameterSource("argparse", prefix, setting, spelled)
    return None


def reached(index: UnitIndex, function) -> bool:
    """Whether code in ``function`` can run when the unit trains. From an entry script, what its
    module-level code calls, transitively: plain functions by name, classes it names (their bases,
    framework hooks and the methods reached code calls by name), so that ``edm_train.py`` does not
    own the ``CMTrainLoop`` of ``cm_train.py`` in a shared ``train_util.py``. When that trace finds
    no training (a Lightning model named in a YAML config, a library file checked alone), module-level
    code and methods count and plain functions only when reached from them (``LambdaLR(opt,
    warmup_fn)``). A helper that sits in the package and is never called must not count."""
    if function is None:
        return True
    strict = _strict(index)
    if strict is not None:
        return id(function) in strict
    if function.class_name is not None:
        return not _uncalled_method(index, function)
    return function.name in memo(index, "training.reached", lambda: _reached_functions(index))


def _uncalled_method(index: UnitIndex, function) -> bool:
    """A method of a file the unit imports that nothing in the unit calls and no framework calls for
    it (open_clip's ``TrainingTask.setup_ema``, called only by its tests); the checked file's own
    methods may be called by code outside the unit."""
    if function.path == index.entry.path or function.name == "__init__" or HOOKS.match(function.name):
        return False
    return function.name not in memo(index, "training.referenced_names", lambda: _referenced_names(index))


def _referenced_names(index: UnitIndex) -> set[str]:
    """Every ``.name`` and quoted identifier in the unit's text: what code may call as a method, hand
    over as a callback (``hook=self.update_ema``) or look up (``getattr(task, "setup_ema")``)."""
    found: set[str] = set()
    for source in index.files:
        found.update(REFERENCE.findall(source.text))
    return {a or b for a, b in found}


REFERENCE = re.compile(r"\.([A-Za-z_]\w*)|['\"]([A-Za-z_]\w*)['\"]")


def run_by_entry(index: UnitIndex, function) -> bool:
    """Whether ``function`` runs from the entry script, as far as the trace from it goes: True for
    any function when there is no such trace (a trainer module checked on its own)."""
    strict = _strict(index)
    return function is None or strict is None or id(function) in strict


def _strict(index: UnitIndex) -> set[int] | None:
    return memo(index, "training.reached_strict", lambda: _reached_from_entry(index))


# Method names too common to say which class a received object is of (``model.train()``).
GENERIC_METHOD = re.compile(
    r"^(__\w+__|train|eval|forward|step|update|run|main|fit|call|apply|save|load|state_dict|load_state_dict|"
    r"to|cuda|cpu|item|mean|sum|backward|zero_grad|parameters|named_parameters|sample|generate|log|reset)$"
)
# Methods a framework or Python calls without the trainer naming them.
HOOKS = re.compile(
    r"^(__\w+__|forward|training_step|train_step|validation_step|test_step|predict_step|configure_\w+|on_\w+|"
    r"setup|prepare_data|\w+_dataloader|backward|optimizer_step|lr_scheduler_step|run|main)$"
)


def registry_functions(index: UnitIndex, call: CallSite) -> list[str]:
    """The functions a call through a dict registry may reach: ``loss_registry[config.model.type](...)``
    with ``loss_registry = {"simple": noise_estimation_loss}`` (ermongroup/ddim): the leaf names of the
    dict literal's values."""
    func = call.node.func
    if not isinstance(func, cst.Subscript):
        return []
    name = dotted(func.value)
    if not name:
        return []
    leaf = name.rsplit(".", 1)[-1]

    def table() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for assign in index.assigns:
            if isinstance(assign.value, cst.Dict):
                values = [dotted(e.value) for e in assign.value.elements if isinstance(e, cst.DictElement)]
                found.setdefault(assign.target.rsplit(".", 1)[-1], []).extend(v.rsplit(".", 1)[-1] for v in values if v)
        return found

    return memo(index, "training.registries", table).get(leaf, [])


def _used(calls: list[CallSite], index: UnitIndex) -> set[str]:
    """The names these calls call or hand on (``LambdaLR(opt, warmup_fn)``, ``partial(self.loss)``,
    a function picked from a dict registry)."""
    names: set[str] = set()
    for call in calls:
        names.add((call.func_text or "").rsplit(".", 1)[-1])
        names.update(registry_functions(index, call))
        if isinstance(call.node.func, cst.Attribute):  # TrainLoop(...).run_loop()
            names.add(call.node.func.attr.value)
        for arg in call.node.args:
            names.update(n.rsplit(".", 1)[-1] for n in names_in(arg.value))
    return names


def _reached_from_entry(index: UnitIndex) -> set[int] | None:
    """ids of the functions the entry script's own module-level code reaches, or None when the
    entry has no such code or the trace reaches no training step."""
    entry = index.entry.path
    roots = [c for c in index.calls if c.function is None and c.path == entry]
    if not roots or not index.entry.is_script:
        return None
    return _reached_from(index, roots)


def run_by_module(index: UnitIndex, function) -> bool:
    """Whether ``function`` can run from the checked file itself: ``run_by_entry`` for an entry script;
    for a trainer module checked on its own, what its own code, functions and methods reach (MDM's and
    CLoSD's ``training_loop.py`` do not run the evaluator trainers' ``clip_norm`` of a sibling
    ``trainers.py``). True where that trace finds no training."""
    if _strict(index) is not None or function is None or function.path == index.entry.path:
        return run_by_entry(index, function)

    def trace() -> set[int] | None:
        own = tuple(f for f in index.functions if f.path == index.entry.path)
        roots = [c for c in index.calls if c.path == index.entry.path]
        return _reached_from(index, roots, own) if roots else None

    found = memo(index, "training.reached_from_module", trace)
    return found is None or id(function) in found


def _reached_from(index: UnitIndex, roots: list[CallSite], seeds: tuple = ()) -> set[int] | None:
    """ids of the functions ``roots`` reach (with the functions ``seeds`` they sit in), transitively:
    plain functions by name, the classes they name with their bases, hooks and the methods called by
    name; with ``seeds`` (a module checked on its own, whose objects arrive built) also any class's
    method of a distinctive name it calls (VAR's ``self.var_opt.backward_clip_step(...)``, not
    ``model.train()``); None where none trains."""
    by_function = index.calls_by_function
    bases = class_bases(index)
    wanted, classes, done = _used(roots, index), set(), {id(f): f for f in seeds}
    while True:
        named = {c for c in bases if c in wanted}
        while named - classes:
            classes |= named
            named = classes | {b for c in classes for b in bases.get(c, ())}
        new = [
            f
            for f in index.functions
            if id(f) not in done
            and (
                (f.class_name is None and f.name in wanted)
                or (f.class_name in classes and (f.name in wanted or HOOKS.match(f.name)))
                or (seeds and f.name in wanted and not GENERIC_METHOD.match(f.name))
            )
        ]
        if not new:
            break
        for f in new:
            done[id(f)] = f
            wanted |= _used(by_function.get(f, []), index)
    trained = any(f.name in TRAINING_FUNCTIONS for f in done.values()) or any(
        (c.method or c.func_text or "").endswith("backward")
        for f in [None, *done.values()]
        for c in by_function.get(f, [])
    )
    return set(done) if trained else None


def _reached_functions(index: UnitIndex) -> set[str]:
    by_function = index.calls_by_function
    plain = [f for f in index.functions if f.class_name is None]
    # Roots: module-level code, methods, and the plain functions that train themselves (EDM's
    # ``training_loop()`` checked on its own: its caller is another script; a ``train_one_epoch``).
    trainers = {id(c.function) for c in optimizer_steps(index) if c.function is not None}
    trainers |= {id(f) for f in plain if f.name.startswith("train")}  # train_one_epoch(model, ..., lr_schedule)
    # a library module checked on its own: its functions are what the script importing it calls
    # (SEDD's ``run_train.py``: ``run_multiprocess`` -> ``_run`` builds the EMA, ``train.py`` spawns it)
    entry = index.entry
    if not entry.is_script and not entry.runs_code:
        trainers |= {id(f) for f in plain if f.path == entry.path}
    roots = [
        c
        for fn, calls in by_function.items()
        if fn is None or fn.class_name is not None or id(fn) in trainers
        for c in calls
    ]
    wanted, done = _used(roots, index) | {f.name for f in plain if id(f) in trainers}, set()
    while True:
        new = [f for f in plain if f.name in wanted and id(f) not in done]
        if not new:
            return {f.name for f in plain if id(f) in done}
        for f in new:
            done.add(id(f))
            wanted |= _used(by_function.get(f, []), index)
