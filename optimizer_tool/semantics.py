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
from typing import Iterable, Iterator

from optimizer_tool.index import CallSite, Setting, UnitIndex, code_of, literal, norm

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


NOT_SAMPLING = re.compile(r"^(train|q_sample)|timestep|noise|_t$", re.I)  # q_sample noises x0: training, not sampling


def sampling_functions(index: UnitIndex) -> list:
    return [f for f in index.functions if SAMPLING_FUNCTION.search(f.name) and not NOT_SAMPLING.search(f.name)]


def mentions(index: UnitIndex, functions: list, name: str) -> bool:
    """Whether code in ``functions`` refers to ``name`` (``self.ema`` in ``self.ema.state_dict()``)."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(name)}(?!\w)")
    return any(pattern.search(c.text) for c in index.calls if c.function in functions) or any(
        a.function in functions and (pattern.search(a.target) or pattern.search(code_of(a.value))) for a in index.assigns
    )


def run_length(index: UnitIndex):
    """The run's optimizer steps when the trainer states them (``max_train_steps``...), with the setting."""
    for setting in index.setting(*RUN_LENGTH_SETTINGS):
        if isinstance(setting.value, int) and not isinstance(setting.value, bool) and setting.value > 0:
            return setting.value, setting
    return None


# --- configured values: what a unit sets for one concept ----------------------
# Explicit settings (a config default, an argparse default, a keyword, a YAML key, an
# assignment) decide. Only when none of them is known do the fallbacks count: a parameter
# default that some call relies on, a getattr default, a library's documented default, or
# what the code visibly does. Settings whose value is None mean "defer" and are ignored.
EXPLICIT_KINDS = ("config-file", "argparse", "class-default", "dict", "kwarg", "assign")
FALLBACK_KINDS = ("getattr-default", "param-default", "library-default", "code")
_KIND_RANK = {k: i for i, k in enumerate(EXPLICIT_KINDS + FALLBACK_KINDS)}


@dataclass
class Configured:
    """The classified values a unit configures for one concept, each with its settings,
    best first (files beside the trainer, then config files, argparse, class defaults...)."""

    by_value: dict[str, list[Setting]]
    explicit: bool

    @property
    def value(self) -> str | None:
        """The single value when every deciding setting agrees, else None."""
        return next(iter(self.by_value)) if len(self.by_value) == 1 else None

    def where(self, value: str) -> Setting | None:
        found = self.by_value.get(value)
        return found[0] if found else None


def configured(index: UnitIndex, names: tuple[str, ...], classify, extra: Iterable[Setting] = ()) -> Configured:
    """Classify the known settings called ``names`` (plus ``extra`` synthetic ones) with
    ``classify(setting) -> str | None``; None drops a setting as irrelevant."""
    candidates = [s for s in index.setting(*names) if s.known and s.value is not None] + list(extra)
    pairs = [(v, s) for s in candidates if (v := classify(s)) is not None]
    explicit = [(v, s) for v, s in pairs if s.kind in EXPLICIT_KINDS]
    chosen = explicit or [(v, s) for v, s in pairs if s.kind != "param-default" or param_default_used(index, s)]
    here = index.entry.path.parent
    by_value: dict[str, list[Setting]] = {}
    for v, s in sorted(chosen, key=lambda p: (here not in p[1].path.parents, _KIND_RANK.get(p[1].kind, 99), str(p[1].path), p[1].line, p[1].col)):
        by_value.setdefault(v, []).append(s)
    return Configured(by_value, bool(explicit))


def param_default_used(index: UnitIndex, setting: Setting) -> bool:
    """Whether some call of the function owning this parameter default leaves the parameter
    out (so the default is what runs). Calls with ``*args``/``**kwargs`` may pass it."""
    fn = next((f for f in index.functions if f.qualname == setting.owner and f.path == setting.path), None)
    if fn is None:
        return False
    params = list(fn.params)
    real = next((p for p in params if norm(p) == setting.name), None)
    if real is None:
        return False
    bound = 1 if fn.class_name and params and params[0] in ("self", "cls") else 0
    position = params.index(real) - bound
    callee = fn.class_name if fn.name == "__init__" and fn.class_name else fn.name
    for call in index.calls:
        if not call.func_text or call.func_text.rsplit(".", 1)[-1] != callee:
            continue
        if any(a.star for a in call.node.args) or call.kwarg(real) is not None or len(call.args) > position:
            continue
        return True
    return False


def synthetic_setting(name: str, value: object, kind: str, at: CallSite, owner: str = "") -> Setting:
    """A setting the code implies without writing it (a library default, a literal argument)."""
    return Setting(norm(name), value, kind, at.path, at.line, at.col, owner or at.func_text)


def find_call(index: UnitIndex, node) -> CallSite | None:
    """The indexed call site of a ``cst.Call`` node (identity)."""
    return next((c for c in index.calls if c.node is node), None)


def expression_nodes(node) -> Iterator:
    """Every node of one expression (a small subtree of an indexed fact, never a module)."""
    import libcst as cst

    if node is None:
        return
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(c for c in current.children if isinstance(c, cst.CSTNode))


# Library knowledge: diffusers noise schedulers built directly (not from a pretrained config)
# use their documented defaults for whatever keyword the call leaves out.
DIFFUSERS_SCHEDULER = re.compile(r"^diffusers\.(?:schedulers\.)?(?:[\w.]+\.)?(\w+Scheduler)$")
DIFFUSERS_SCHEDULE_DEFAULTS = {
    **{name: ("linear", "epsilon") for name in (
        "DDPMScheduler", "DDIMScheduler", "DDPMParallelScheduler", "DDIMParallelScheduler", "DDIMInverseScheduler",
        "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler", "LMSDiscreteScheduler", "PNDMScheduler", "UniPCMultistepScheduler",
        "DEISMultistepScheduler", "SASolverScheduler",
    )},
    **{name: ("scaled_linear", "epsilon") for name in ("LCMScheduler", "TCDScheduler", "CogVideoXDDIMScheduler", "CogVideoXDPMScheduler")},
    "UnCLIPScheduler": ("squaredcos_cap_v2", "epsilon"),
}


def diffusers_scheduler_class(call: CallSite) -> str | None:
    """``DDPMScheduler`` for a direct construction of a diffusers noise scheduler."""
    for name in call.qualnames:
        match = DIFFUSERS_SCHEDULER.match(name)
        if match:
            return match.group(1)
    return None


def pretrained_scheduler_loads(index: UnitIndex) -> list[CallSite]:
    """``XScheduler.from_pretrained(...)``: the schedule comes from a stored config."""
    return [c for c in index.calls if c.method == "from_pretrained" and c.receiver.rsplit(".", 1)[-1].endswith("Scheduler")]


PRETRAINED_DENOISER = re.compile(r"(UNet|Unet|Transformer|DiT|UViT|PriorTransformer)\w*\.from_(pretrained|single_file)$")


RELOADS_OWN_CHECKPOINT = re.compile(r"load|resume|restore|hook", re.I)


def pretrained_denoiser(index: UnitIndex) -> CallSite | None:
    """The call that loads a pretrained denoiser (``UNet2DConditionModel.from_pretrained``):
    the trainer fine-tunes it, so its noise schedule and prediction type are not free choices.
    Reloading the run's own checkpoint (accelerate's ``load_model_hook``, a resume function) is not."""
    return next(
        (c for c in index.calls if any(PRETRAINED_DENOISER.search(n) for n in c.names) and not (c.function and RELOADS_OWN_CHECKPOINT.search(c.function.name))),
        None,
    )


# --- the noise schedule -----------------------------------------------------------
BETA_SCHEDULE_SETTINGS = ("beta_schedule", "noise_schedule", "ddpm_beta_schedule", "beta_schedule_type", "noise_schedule_type", "betas_schedule", "diffusion_schedule")
LINEAR_SCHEDULES = {"linear", "scaled_linear", "sqrt_linear", "quad", "quadratic", "linear_scaled"}
COSINE_SCHEDULES = {"cosine", "squaredcos_cap_v2", "squaredcos_cap", "cos", "cosine_beta"}
SCHEDULE_SELECTORS = ("*.get_named_beta_schedule", "*.make_beta_schedule", "*.get_beta_schedule", "get_named_beta_schedule", "make_beta_schedule", "get_beta_schedule")
BETAS_TARGET = re.compile(r"(^|\.)_?(betas?|train_betas|beta_t|betas_t)$")
SCHEDULE_HELPER = re.compile(r"linear|schedule|beta", re.I)


def schedule_family(value: object) -> str | None:
    """'linear' (linear, scaled_linear...), 'cosine' (cosine, squaredcos_cap_v2) or 'other'."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower().replace("-", "_")
    if text in LINEAR_SCHEDULES:
        return "linear"
    if text in COSINE_SCHEDULES or text.startswith("cos") or "squaredcos" in text:
        return "cosine"
    return "other"


def beta_schedule(index: UnitIndex) -> Configured:
    """The unit's noise schedule: settings, literal selector calls (``get_named_beta_schedule("linear", n)``),
    diffusers defaults of schedulers built without ``beta_schedule``, and as a last resort the
    code (``betas = torch.linspace(...)`` / ``betas = cosine_beta_schedule(T)`` run unconditionally)."""
    extra: list[Setting] = []
    for call in index.calls_to(*SCHEDULE_SELECTORS):
        node = call.kwarg("schedule_name") or call.kwarg("schedule") or (call.args[0].value if call.args else None)
        value = literal(node)
        if isinstance(value, str) and not call.guards:
            extra.append(synthetic_setting("beta_schedule", value, "kwarg", call))
    for call in index.calls:
        cls = diffusers_scheduler_class(call)
        if cls in DIFFUSERS_SCHEDULE_DEFAULTS and not _passes(call, "beta_schedule", "trained_betas"):
            extra.append(synthetic_setting("beta_schedule", DIFFUSERS_SCHEDULE_DEFAULTS[cls][0], "library-default", call))
    extra.extend(_schedule_from_code(index))
    return configured(index, BETA_SCHEDULE_SETTINGS, lambda s: schedule_family(s.value), extra)


def _passes(call: CallSite, *keywords: str) -> bool:
    return any(a.star == "**" for a in call.node.args) or any(call.kwarg(k) is not None for k in keywords)


def _schedule_from_code(index: UnitIndex) -> list[Setting]:
    found = []
    sources = [(a.target, a.value, a.function) for a in index.assigns if BETAS_TARGET.search(a.target)]
    for call in index.method_calls("register_buffer"):
        if len(call.args) >= 2 and isinstance(literal(call.args[0].value), str) and BETAS_TARGET.search(literal(call.args[0].value)):
            sources.append((literal(call.args[0].value), call.args[1].value, call.function))
    for _, value, function in sources:
        if function is not None and SCHEDULE_HELPER.search(function.name):
            continue  # a named schedule option (linear_beta_schedule), chosen elsewhere
        site = find_call(index, _innermost_call(value))
        if site is None or site.guards:
            continue
        if site.matches(("torch.linspace", "numpy.linspace", "np.linspace", "jax.numpy.linspace")):
            found.append(synthetic_setting("beta_schedule", "linear", "code", site))
        elif site.func_text and re.search(r"schedul|beta", leaf := site.func_text.rsplit(".", 1)[-1].lower()):
            family = "linear" if "linear" in leaf else "cosine" if "cos" in leaf else "other" if "sigmoid" in leaf else None
            if family:
                found.append(synthetic_setting("beta_schedule", family, "code", site))
    return found


def _innermost_call(node):
    """``torch.linspace(...)`` in ``torch.linspace(...).double() ** 2``."""
    import libcst as cst

    while True:
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Power):
            node = node.left
        elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and isinstance(node.func.value, cst.Call) and node.func.attr.value in {"double", "float", "to", "cuda", "type", "numpy", "astype"}:
            node = node.func.value
        else:
            return node if isinstance(node, cst.Call) else None


# --- the prediction target --------------------------------------------------------
# strict names: any value says something; loose names: only the known spellings count.
PREDICTION_SETTINGS_STRICT = ("prediction_type", "parameterization", "pred_type", "predict_type", "model_prediction_type", "prediction_target")
PREDICTION_SETTINGS_LOOSE = ("objective", "model_mean_type", "mean_type", "pred_objective", "prediction")
PREDICTION_FLAGS = {"predict_xstart": "x0", "predict_v": "v", "v_prediction": "v", "use_v_prediction": "v", "v_pred": "v", "vpred": "v", "use_vpred": "v", "use_v_pred": "v"}
EPSILON_SPELLINGS = {"epsilon", "eps", "pred_noise", "noise", "pred_eps", "epsilon_prediction", "predict_noise"}
V_SPELLINGS = {"v_prediction", "v", "pred_v", "v-prediction", "velocity", "v_pred", "vpred", "predict_v"}
X0_SPELLINGS = {"sample", "x0", "pred_x0", "x_start", "pred_xstart", "start_x", "x_0", "pred_x_start", "predict_x0"}


def prediction_family(name: str, value: object) -> str | None:
    """'epsilon', 'v', 'x0' or 'other' for one setting; None when it says nothing."""
    if name in PREDICTION_FLAGS:
        if value is True:
            return PREDICTION_FLAGS[name]
        return "epsilon" if value is False and name == "predict_xstart" else None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    for family, spellings in (("epsilon", EPSILON_SPELLINGS), ("v", V_SPELLINGS), ("x0", X0_SPELLINGS)):
        if text in spellings or text.replace("-", "_") in spellings:
            return family
    return "other" if name in PREDICTION_SETTINGS_STRICT else None


def prediction_type(index: UnitIndex, extra: Iterable[Setting] = ()) -> Configured:
    """What the model is trained to predict: settings (``prediction_type``, lucidrains ``objective``,
    LDM ``parameterization``, improved-diffusion ``predict_xstart``) and diffusers defaults."""
    more = list(extra)
    for call in index.calls:
        cls = diffusers_scheduler_class(call)
        if cls in DIFFUSERS_SCHEDULE_DEFAULTS and not _passes(call, "prediction_type"):
            more.append(synthetic_setting("prediction_type", DIFFUSERS_SCHEDULE_DEFAULTS[cls][1], "library-default", call))
    names = PREDICTION_SETTINGS_STRICT + PREDICTION_SETTINGS_LOOSE + tuple(PREDICTION_FLAGS)
    return configured(index, names, lambda s: prediction_family(s.name, s.value), more)


# --- training structure (lr-schedule, clipping, monitoring) ---------------------------
def trains(index: UnitIndex) -> bool:
    """The unit steps an optimizer itself, or is a Lightning module (training_step / configure_optimizers)."""
    return bool(optimizer_steps(index)) or bool(index.functions_named("training_step", "configure_optimizers"))


def lightning_trainer_calls(index: UnitIndex) -> list[CallSite]:
    """``Trainer(...)`` of Lightning (``lightning.Trainer``, ``pytorch_lightning.Trainer``, ``L.Trainer``...)."""
    return [
        c for c in index.calls
        if c.method in ("Trainer", "from_argparse_args") and any(n.startswith(("lightning", "pytorch_lightning")) for n in c.qualnames)
    ]


def lightning_configured_elsewhere(index: UnitIndex) -> bool:
    """A LightningModule whose ``Trainer`` (clipping, callbacks, grad-norm tracking) is built outside
    this unit, or from arguments/CLI we cannot read: its Trainer flags are unknown here."""
    if not index.functions_named("training_step"):
        return False
    trainers = lightning_trainer_calls(index)
    return not trainers or any(c.method == "from_argparse_args" or any(a.star for a in c.node.args) for c in trainers) or any(
        n.endswith("LightningCLI") for n in index.names_used()
    )


# Noise schedulers also have a step(): ``noise_scheduler.step(model_output, t, sample)``.
NOISE_SCHEDULER_CLASS = re.compile(r"(^|\.)(DDIM|DDPM|PNDM|DPM|Euler|Heun|LMS|UniPC|DEIM|LCM|TCD|KDPM|Karras|FlowMatch|Noise|Diffusion|Sampler)\w*$")


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
        c for c in role_calls(index, "lr_scheduler", "step")
        if not is_noise_scheduler_step(index, c) and not re.search(r"(^|_)ema(_|$)", c.receiver.rsplit(".", 1)[-1], re.I)
    ]
    return sorted(steps, key=lambda c: (str(c.path), c.line, c.col))


GRAD_CLIP_FUNCTIONS = (
    "torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_value_", "torch.nn.utils.clip_grad_norm",
    "torch.nn.utils.clip_grad.clip_grad_norm_", "torch.nn.utils.clip_grad.clip_grad_value_", "torch.nn.utils.clip_grads_with_norm_",
)
CLIP_METHOD = re.compile(r"^_?(clip_grad_norm_?|clip_grad_value_?|clip_gradients?|clip_grads?|clip_grad_norms?|dispatch_clip_grad|clip_grads_with_norm_)$")


def clip_calls(index: UnitIndex) -> list[CallSite]:
    """Gradient clipping: ``torch.nn.utils.clip_grad_norm_/clip_grad_value_`` in any import spelling,
    ``accelerator.clip_grad_norm_``, Fabric/Lightning ``clip_gradients``, FSDP/fairseq ``clip_grad_norm``,
    timm ``dispatch_clip_grad``, a project's own ``clip_grad(...)`` helper."""
    return [c for c in index.calls if c.matches(GRAD_CLIP_FUNCTIONS) or CLIP_METHOD.match(c.method or "")]


def is_torch_clip(call: CallSite) -> bool:
    """``torch.nn.utils.clip_grad_*`` itself (it sees the gradients as they are: scaled under a GradScaler),
    as opposed to accelerate/Lightning wrappers that unscale first."""
    return call.matches(GRAD_CLIP_FUNCTIONS)


def exclusive(a: CallSite, b: CallSite) -> bool:
    """The two calls sit in different branches of one ``if`` (body vs else/elif): never both run."""
    mine = dict(a.branches)
    return any(line in mine and mine[line] != in_else for line, in_else in b.branches)


def names_in(node) -> set[str]:
    """The names an expression reads: dotted chains (``self.ema.shadow``) and their leaves,
    called functions, and string subscripts as ``["lr"]`` (``param_groups[0]["lr"]``)."""
    import libcst as cst

    from optimizer_tool.index import dotted

    found: set[str] = set()
    for current in expression_nodes(node):
        if isinstance(current, (cst.Name, cst.Attribute)):
            text = dotted(current)
            if text:
                found.add(text)
            if isinstance(current, cst.Attribute):
                found.add(current.attr.value)
        elif isinstance(current, cst.Subscript):
            for element in current.slice:
                if isinstance(element.slice, cst.Index):
                    key = literal(element.slice.value)
                    if isinstance(key, str):
                        found.add(f'["{key}"]')
    return found


def memo(index: UnitIndex, key, compute):
    """A value computed once per unit index (rules ask for the same facts many times)."""
    store = index.__dict__.setdefault("_memo", {})
    if key not in store:
        store[key] = compute()
    return store[key]


def call_of(index: UnitIndex, node) -> CallSite | None:
    """``find_call`` through a per-index table."""
    table = memo(index, "call_of", lambda: {id(c.node): c for c in index.calls})
    return table.get(id(node))


def assignments_of(index: UnitIndex, name: str, function=None, before: int | None = None) -> list:
    """Assignments to ``name`` in ``function`` (before line ``before``); ``self.x`` is looked up in the whole unit."""
    def table():
        by_target: dict[str, list] = {}
        for a in index.assigns:
            by_target.setdefault(a.target, []).append(a)
        return by_target

    found = memo(index, "assigns_by_target", table).get(name, [])
    if name.startswith("self."):
        return list(found)
    return [a for a in found if a.function == function and (before is None or a.line <= before)]


def expanded_names(index: UnitIndex, node, function=None, line: int | None = None, depth: int = 3) -> set[str]:
    """``names_in(node)`` plus, through assignments in the same function (``self.x`` anywhere in the
    unit), the names the variables it reads were computed from: ``lr`` in ``lr = opt.param_groups[0]["lr"]``."""
    names = names_in(node)
    frontier = set(names)
    for _ in range(depth):
        more: set[str] = set()
        for name in frontier:
            for assign in assignments_of(index, name, function, line)[-3:]:
                more |= names_in(assign.value)
        frontier = more - names
        names |= more
        if not frontier:
            break
    return names


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
    from optimizer_tool.index import dotted

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

    from optimizer_tool.index import dotted

    owners: list[str] = []
    for current in ordered_nodes(node):
        if isinstance(current, cst.Call) and isinstance(current.func, cst.Attribute) and current.func.attr.value in ("parameters", "named_parameters"):
            owner = dotted(current.func.value)
            if owner and owner not in owners:
                owners.append(owner)
        elif isinstance(current, (cst.Name, cst.Attribute)) and depth < 3:
            for assign in assignments_of(index, dotted(current), function)[-1:]:
                owners += [o for o in parameter_owners(index, assign.value, assign.function, depth + 1) if o not in owners]
    return owners


def trained_model(index: UnitIndex) -> TrainedModel | None:
    steps = optimizer_steps(index)
    if not steps:
        return None
    step = steps[0]
    optimizer_name = stepped_optimizer(step)
    constructions = optimizer_constructions(index)
    optimizer = next((a for a in constructions if same_object(a.target, optimizer_name)), constructions[0] if constructions else None)
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
    candidates = [a for a in index.assigns if same_object(a.target, name) and a.function == function and a.path == optimizer.path and a.line < limit]
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
    from optimizer_tool.index import dotted

    text = dotted(node)
    if "." not in text:
        return None
    prefix, leaf = text.rsplit(".", 1)
    for setting in index.setting(leaf):
        if setting.kind == "class-default":
            return HyperparameterSource("dataclass", prefix, setting)
        if setting.kind == "argparse":
            flag = next((c for c in index.calls if (c.path, c.line, c.col) == (setting.path, setting.line, setting.col) and c.method == "add_argument"), None)
            if flag is not None:
                spelled = next((literal(a.value) for a in flag.args if str(literal(a.value)).startswith("--")), "")
                return HyperparameterSource("argparse", prefix, setting, spelled)
    return None
