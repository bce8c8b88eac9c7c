"""Diffusion knowledge: diffusers noise schedulers and their defaults, pretrained denoisers,
the noise (beta) schedule and the prediction target a unit trains with."""

from __future__ import annotations

import ast
import re
from typing import Iterable

import libcst as cst

from optimizer_tool.index import CallSite, Setting, UnitIndex, code_of, dotted, literal
from optimizer_tool.knowledge.configured import (
    Configured,
    configured,
    default_runs,
    expression_nodes,
    feeding_assigns,
    find_call,
    memo,
    names_in,
    synthetic_setting,
)
from optimizer_tool.knowledge.guards import default_of, holding, reads_config

# use their documented defaults for whatever keyword the call leaves out.
DIFFUSERS_SCHEDULER = re.compile(r"^diffusers\.(?:schedulers\.)?(?:[\w.]+\.)?(\w+Scheduler)$")
DIFFUSERS_SCHEDULE_DEFAULTS = {
    **{
        name: ("linear", "epsilon")
        for name in (
            "DDPMScheduler",
            "DDIMScheduler",
            "DDPMParallelScheduler",
            "DDIMParallelScheduler",
            "DDIMInverseScheduler",
            "DPMSolverMultistepScheduler",
            "DPMSolverSinglestepScheduler",
            "EulerDiscreteScheduler",
            "EulerAncestralDiscreteScheduler",
            "HeunDiscreteScheduler",
            "KDPM2DiscreteScheduler",
            "KDPM2AncestralDiscreteScheduler",
            "LMSDiscreteScheduler",
            "PNDMScheduler",
            "UniPCMultistepScheduler",
            "DEISMultistepScheduler",
            "SASolverScheduler",
        )
    },
    **{
        name: ("scaled_linear", "epsilon")
        for name in ("LCMScheduler", "TCDScheduler", "CogVideoXDDIMScheduler", "CogVideoXDPMScheduler")
    },
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
    return [
        c for c in index.calls if c.method == "from_pretrained" and c.receiver.rsplit(".", 1)[-1].endswith("Scheduler")
    ]


PRETRAINED_DENOISER = re.compile(
    r"(UNet|Unet|Transformer|DiT|UViT|PriorTransformer)\w*\.from_(pretrained|single_file)$"
)


RELOADS_OWN_CHECKPOINT = re.compile(r"load|resume|restore|hook", re.I)
FLOW_SCHEDULER = re.compile(r"^FlowMatch\w*Scheduler$")


def pretrained_denoiser(index: UnitIndex) -> CallSite | None:
    """The call that loads a pretrained denoiser (``UNet2DConditionModel.from_pretrained``):
    the trainer fine-tunes it, so its noise schedule and prediction type are not free choices.
    Reloading the run's own checkpoint (accelerate's ``load_model_hook``, a resume function) is not."""
    return next(
        (
            c
            for c in index.calls
            if any(PRETRAINED_DENOISER.search(n) for n in c.names)
            and not (c.function and RELOADS_OWN_CHECKPOINT.search(c.function.name))
        ),
        None,
    )


def inherited(index: UnitIndex, what: str = "schedule", keyword: str = "beta_schedule") -> str | None:
    """Why the noise ``what`` (schedule, prediction type) is not chosen by this code, or None: the
    trainer fine-tunes a pretrained denoiser, or reads a scheduler config with ``from_pretrained``
    (without ``keyword``)."""
    denoiser = pretrained_denoiser(index)
    # a fine-tune that noises with its own continuous sigma (SVD_Xtend's ``noisy_latents = latents +
    # noise * sigmas``, sigmas drawn log-normal, EDM preconditioning) trains with the code's noise levels
    if denoiser is not None and sigma_noising(index) is None:
        where = f"{denoiser.path.name}:{denoiser.line}"
        return f"fine-tunes a pretrained denoiser ({denoiser.func_text} at {where}): its {what} comes with it"
    # a flow-matching scheduler's stored config holds shift and sigmas, no beta schedule and no
    # prediction type: the objective is the velocity the training code regresses (LTX-Video-Trainer,
    # finetrainers), judged from that code
    loads = [
        c
        for c in pretrained_scheduler_loads(index)
        if c.kwarg(keyword) is None and not FLOW_SCHEDULER.search(c.receiver.rsplit(".", 1)[-1])
    ]
    if loads:
        return f"the noise {what} is read from a pretrained scheduler config ({loads[0].path.name}:{loads[0].line})"
    return None


# --- the noise schedule -----------------------------------------------------------
BETA_SCHEDULE_SETTINGS = (
    "beta_schedule",
    "noise_schedule",
    "ddpm_beta_schedule",
    "beta_schedule_type",
    "noise_schedule_type",
    "betas_schedule",
    "diffusion_schedule",
)
# "vp": the variance-preserving SDE's linear beta(t), discretised (Diffusion-QL)
LINEAR_SCHEDULES = {"linear", "scaled_linear", "sqrt_linear", "quad", "quadratic", "linear_scaled", "vp"}
COSINE_SCHEDULES = {"cosine", "squaredcos_cap_v2", "squaredcos_cap", "cos", "cosine_beta"}
SCHEDULE_SELECTORS = (
    "*.get_named_beta_schedule",
    "*.make_beta_schedule",
    "*.get_beta_schedule",
    "get_named_beta_schedule",
    "make_beta_schedule",
    "get_beta_schedule",
)
BETAS_TARGET = re.compile(r"(^|\.)_?(betas?|train_betas|beta_t|betas_t)$")
SCHEDULE_HELPER = re.compile(r"linear|schedule|beta", re.I)
# the cumulative product itself, written by hand (minimal-diffusion's ``self.alpha_bar_scheduler = lambda t:
# math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2``)
ALPHA_BAR_TARGET = re.compile(r"(^|\.)_?(alpha_bar\w*|alphas_cumprod)$")
# an interpolant trainer's path (SiT's transport and the trainers that copy it, REPA): ``--path-type``
# Linear (alpha_t = 1 - t) or GVP / cosine (alpha_t = cos(pi t / 2)); SiT's VP path has linear betas.
# Other values of a ``path_type`` (a sampler's "edm") say nothing about the schedule.
PATH_SETTINGS = ("path_type",)
PATH_FAMILIES = {"linear": "linear", "vp": "linear", "gvp": "cosine", "cosine": "cosine"}
PATH_COSINE = ("GVP", "cosine")


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
        node = _selector_name(call)
        value = literal(node)
        if isinstance(value, str) and not call.guards:
            extra.append(synthetic_setting("beta_schedule", value, "kwarg", call))
        elif isinstance(node, cst.Name) and call.function is not None and not call.guards:
            # ``get_named_beta_schedule(scheduler, num_timesteps)`` with ``scheduler`` a parameter of the
            # function it sits in: its default, or what the callers pass (tab-ddpm's ``train(...,
            # scheduler='cosine')`` building ``GaussianMultinomialDiffusion(..., scheduler=scheduler)``)
            if node.value in call.function.params:
                extra.extend(_parameter_values(index, node.value, call.function))
                continue
            # a local set once to a literal just before (MotionDiffuse's ``beta_scheduler = 'linear'``)
            local = [a for a in index.assigns_to(node.value) if a.function == call.function]
            if len(local) == 1 and isinstance(literal(local[0].value), str) and not local[0].guards:
                extra.append(synthetic_setting("beta_schedule", literal(local[0].value), "kwarg", call))
    for call in index.calls:
        cls = diffusers_scheduler_class(call)
        if cls in DIFFUSERS_SCHEDULE_DEFAULTS and not _passes(call, "beta_schedule", "trained_betas"):
            extra.append(
                synthetic_setting("beta_schedule", DIFFUSERS_SCHEDULE_DEFAULTS[cls][0], "library-default", call)
            )
    extra.extend(_schedule_from_code(index))
    return configured(index, BETA_SCHEDULE_SETTINGS + PATH_SETTINGS, _schedule_of, extra)


def _selector_name(call: CallSite) -> cst.BaseExpression | None:
    """What names the schedule a selector builds: ``get_named_beta_schedule(name, T)``'s first argument."""
    return call.kwarg("schedule_name") or call.kwarg("schedule") or (call.args[0].value if call.args else None)


def schedule_from_run_config(index: UnitIndex) -> str | None:
    """Why the schedule is the config's the run names: a selector reads a parameter of a factory
    that is called with ``**`` a config section, the config named on the command line (Kandinsky's
    ``create_gaussian_diffusion(**config['diffusion_config'])`` with a required ``--config``)."""
    choice = index.unit.config_choice
    if choice is None or not choice.at_run_time:
        return None
    for call in index.calls_to(*SCHEDULE_SELECTORS):
        node = _selector_name(call)
        fn = call.function
        if not isinstance(node, cst.Name) or fn is None or node.value not in fn.params:
            continue
        passed = [(caller, f"{node.value}={code_of(arg)}") for caller, arg in index.passed_to(fn, node.value)]
        spread = [(c, a) for c in index.calls_named(fn.callee) for a in c.node.args if a.star == "**"]
        passed += [(caller, f"**{code_of(a.value)}") for caller, a in spread]
        # ``**self._diffusion_kwargs`` built as ``dict(..., noise_schedule=config.diffusion.noise_schedule)``
        for caller, a in spread:
            for built in index.assigns_to(dotted(a.value) or ""):
                site = built.call
                if site is not None and site.func_text == "dict" and site.kwarg(node.value) is not None:
                    passed.append((caller, f"{node.value}={code_of(site.kwarg(node.value))}"))
        for caller, how in passed:
            if reads_config(index, how.split("=", 1)[-1].lstrip("*")):
                return (
                    f"`{caller.func_text}({how})` ({caller.path.name}:{caller.line}) passes the schedule from the"
                    f" config the run names ({choice.describe()}): check the one you train with"
                )
    return None


def _schedule_of(setting: Setting) -> str | None:
    if setting.name in PATH_SETTINGS:
        return PATH_FAMILIES.get(str(setting.value).strip().lower())
    return schedule_family(setting.value)


def _parameter_values(index: UnitIndex, name: str, function, depth: int = 0) -> list[Setting]:
    """The values parameter ``name`` of ``function`` takes: its default where it runs, else what the
    callers pass, literals or their own parameters' values (two levels up)."""
    own = [
        s
        for s in index.setting(name)
        if s.kind == "param-default" and s.owner == function.qualname and s.path == function.path
    ]
    if own and default_runs(index, own[0]):
        return own
    found: list[Setting] = []
    for caller, arg in index.passed_to(function, name) if depth < 2 else ():
        if isinstance(arg, cst.Name) and caller.function is not None:
            found += _parameter_values(index, arg.value, caller.function, depth + 1)
        elif isinstance(literal(arg), str):
            found.append(synthetic_setting(name, literal(arg), "kwarg", caller))
        elif isinstance(arg, cst.Attribute) and (passed := dotted(arg)):
            # ``VarianceSchedule(..., mode=args.sched_mode)``: the flag's one default (diffusion-point-cloud)
            value, setting = default_of(index, passed.rsplit(".", 1)[-1])
            if isinstance(value, str) and setting is not None:
                found.append(setting)
    return found


def _guards_hold(index: UnitIndex, guards: tuple[str, ...], function) -> tuple[bool, Setting | None]:
    """Whether ``guards`` hold with the defaults, reading a parameter of ``function`` they compare
    as the values it takes; and the setting that decides them."""
    if not guards:
        return True, None
    held, deciding = holding(index, guards)
    if not held and function is not None:
        return _held_by_parameters(index, guards, function)
    return held, deciding


def _held_by_parameters(index: UnitIndex, guards: tuple[str, ...], function) -> tuple[bool, Setting | None]:
    """``holding`` for guards that compare a parameter of ``function`` with a literal (``if mode ==
    'linear':`` in ``VarianceSchedule.__init__(self, ..., mode='linear')``): true where every value
    the parameter takes (its default where it runs, what the callers pass) makes each guard true."""
    deciding = None
    for guard in guards:
        try:
            node = ast.parse(guard.strip(), mode="eval").body
        except SyntaxError:
            return False, None
        if holding(index, (guard,))[0]:
            continue
        if not (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.Eq)
            and isinstance(node.left, ast.Name)
            and node.left.id in function.params
            and isinstance(node.comparators[0], ast.Constant)
        ):
            return False, None
        values = _parameter_values(index, node.left.id, function)
        if not values or any(v.value != node.comparators[0].value for v in values):
            return False, None
        deciding = deciding or values[0]
    return True, deciding


def _passes(call: CallSite, *keywords: str) -> bool:
    return any(a.star == "**" for a in call.node.args) or any(call.kwarg(k) is not None for k in keywords)


def _schedule_from_code(index: UnitIndex) -> list[Setting]:
    found = []
    sources = [
        (a.value, a.function, a.guards)
        for a in index.assigns
        if BETAS_TARGET.search(a.target) or ALPHA_BAR_TARGET.search(a.target)
    ]
    for call in index.method_calls("register_buffer"):
        if (
            len(call.args) >= 2
            and isinstance(literal(call.args[0].value), str)
            and BETAS_TARGET.search(literal(call.args[0].value))
        ):
            sources.append((call.args[1].value, call.function, call.guards))
    for value, function, guards in sources:
        held, deciding = _guards_hold(index, guards, function)
        if not held or (
            function is not None and SCHEDULE_HELPER.search(function.name) and not _always_called(index, function)
        ):
            continue  # a named schedule option (linear_beta_schedule), chosen elsewhere
        family = _family_of(index, value, function)
        if family is None:
            continue
        # code picked by a setting's default (a flag with a cosine branch beside): that setting is the choice
        if deciding is not None and schedule_family(deciding.value) == family[0]:
            found.append(deciding)
        else:
            found.append(synthetic_setting("beta_schedule", family[0], "code", family[1]))
    return found


RAMPS = ("torch.linspace", "numpy.linspace", "np.linspace", "jax.numpy.linspace")
HAND_RAMPS = {"linspace", "arange"}
CURVES = {"cos": "cosine", "sigmoid": "other"}
NOT_AFFINE = {"exp", "log", "sin", "tan", "tanh", "sqrt", "atan", "arctan", "cumprod", "clip", "clamp"}


def _family_of(index: UnitIndex, value, function, depth: int = 0) -> tuple[str, CallSite] | None:
    """The schedule family of a betas expression and the call that shows it: a ``linspace``
    (squared or not), a helper named after its family (``cosine_beta_schedule(T)``), a helper of
    the unit followed to what it returns (``self.prepare_noise_schedule()`` returning a
    ``torch.linspace``), else the arithmetic that computes it (``(b2 - b1) * torch.arange(T + 1) / T + b1``
    is linear; a ``cos`` makes it cosine)."""
    site = find_call(index, _innermost_call(value))
    if site is not None and site.guards and not _guards_hold(index, site.guards, site.function)[0]:
        return None
    if site is not None and site.matches(RAMPS):
        return "linear", site
    leaf = site.func_text.rsplit(".", 1)[-1].lower() if site is not None and site.func_text else ""
    if re.search(r"schedul|beta", leaf):
        named = "linear" if "linear" in leaf else "cosine" if "cos" in leaf else "other" if "sigmoid" in leaf else None
        if named:
            return named, site
        # the helper of that name, the one in the caller's file first
        helper = min(index.functions_named(site.method), key=lambda f: f.path != site.path, default=None)
        picks = site.matches(SCHEDULE_SELECTORS) or any(site.kwarg(k) is not None for k in BETA_SCHEDULE_SETTINGS)
        if helper is not None and depth < 2 and not picks:  # a selector's choice is read from its argument
            for ret in index.returns:
                if ret.function is helper and (got := _family_of(index, ret.value, helper, depth + 1)):
                    return got
        return None
    return _by_arithmetic(index, value, function)


def _by_arithmetic(index: UnitIndex, value, function) -> tuple[str, CallSite] | None:
    feeding = feeding_assigns(index, value, function)
    if any(a.guards for a in feeding):
        return None  # computed differently in different branches
    nodes = [value, *(a.value for a in feeding)]
    calls = [
        site
        for node in nodes
        for n in expression_nodes(node)
        if isinstance(n, cst.Call) and (site := find_call(index, n))
    ]
    leaves = {c.method or c.func_text for c in calls}
    for curve, family in CURVES.items():
        if curve in leaves:
            return family, next(c for c in calls if (c.method or c.func_text) == curve)
    ramps = [c for c in calls if (c.method or c.func_text) in HAND_RAMPS]
    if ramps and not leaves & NOT_AFFINE:
        return "linear", ramps[0]
    return None


def _always_called(index: UnitIndex, function) -> bool:
    """Some code of the unit calls ``function`` outside any condition (DDPM's ``ddpm_schedules(b1, b2, T)``
    in ``__init__``), rather than dispatching to it by name (``if name == "linear": linear_beta_schedule()``)."""
    return any(c.method == function.name and not c.guards for c in index.calls)


def _innermost_call(node):
    """``torch.linspace(...)`` in ``torch.linspace(...).double() ** 2``."""
    import libcst as cst

    while True:
        if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Power):
            node = node.left
        elif (
            isinstance(node, cst.Call)
            and isinstance(node.func, cst.Attribute)
            and isinstance(node.func.value, cst.Call)
            and node.func.attr.value in {"double", "float", "to", "cuda", "type", "numpy", "astype"}
        ):
            node = node.func.value
        else:
            return node if isinstance(node, cst.Call) else None


# --- the prediction target --------------------------------------------------------
# strict names: any value says something; loose names: only the known spellings count.
PREDICTION_SETTINGS_STRICT = (
    "prediction_type",
    "parameterization",
    "pred_type",
    "predict_type",
    "model_prediction_type",
    "prediction_target",
)
PREDICTION_SETTINGS_LOOSE = ("objective", "model_mean_type", "mean_type", "pred_objective", "prediction")
PREDICTION_FLAGS = {
    "predict_xstart": "x0",
    "predict_v": "v",
    "v_prediction": "v",
    "use_v_prediction": "v",
    "v_pred": "v",
    "vpred": "v",
    "use_vpred": "v",
    "use_v_pred": "v",
    "predict_epsilon": "epsilon",  # Janner's diffuser, Diffusion-QL, EDGE: False trains x0
}
# what a prediction flag set to False trains instead
PREDICTION_FLAGS_OFF = {"predict_xstart": "epsilon", "predict_epsilon": "x0"}
EPSILON_SPELLINGS = {"epsilon", "eps", "pred_noise", "noise", "pred_eps", "epsilon_prediction", "predict_noise"}
V_SPELLINGS = {"v_prediction", "v", "pred_v", "v-prediction", "velocity", "v_pred", "vpred", "predict_v"}
X0_SPELLINGS = {
    "sample",
    "x0",
    "pred_x0",
    "x_start",
    "xstart",
    "pred_xstart",
    "predict_xstart",
    "start_x",
    "x_0",
    "pred_x_start",
    "predict_x0",
}


def prediction_family(name: str, value: object) -> str | None:
    """'epsilon', 'v', 'x0' or 'other' for one setting; None when it says nothing."""
    if name in PREDICTION_FLAGS:
        if value is True:
            return PREDICTION_FLAGS[name]
        return PREDICTION_FLAGS_OFF.get(name) if value is False else None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    for family, spellings in (("epsilon", EPSILON_SPELLINGS), ("v", V_SPELLINGS), ("x0", X0_SPELLINGS)):
        if text in spellings or text.replace("-", "_") in spellings:
            return family
    return "other" if name in PREDICTION_SETTINGS_STRICT else None


# the config keys that choose what the model predicts
PREDICTION_KEYS = PREDICTION_SETTINGS_STRICT + PREDICTION_SETTINGS_LOOSE + tuple(PREDICTION_FLAGS)


def prediction_type(index: UnitIndex, extra: Iterable[Setting] = ()) -> Configured:
    """What the model is trained to predict: settings (``prediction_type``, lucidrains ``objective``,
    LDM ``parameterization``, improved-diffusion ``predict_xstart``) and diffusers defaults."""
    more = list(extra)
    for call in index.calls:
        cls = diffusers_scheduler_class(call)
        if cls in DIFFUSERS_SCHEDULE_DEFAULTS and not _passes(call, "prediction_type"):
            more.append(
                synthetic_setting("prediction_type", DIFFUSERS_SCHEDULE_DEFAULTS[cls][1], "library-default", call)
            )
    return configured(index, PREDICTION_KEYS, lambda s: prediction_family(s.name, s.value), more)


# --- is this a diffusion trainer? ---------------------------------------------------------
DIFFUSION_LIBRARIES = (
    "diffusers",
    "k_diffusion",
    "denoising_diffusion_pytorch",
    "video_diffusion_pytorch",
    "imagen_pytorch",
    "guided_diffusion",
    "improved_diffusion",
    "score_sde",
)
# Methods and functions that noise data or compute a denoising objective, and diffusion objects.
# What of diffusers is diffusion machinery: its noise schedulers, denoisers and pipelines. Its
# utilities, autoencoders and building blocks are no diffusion objective: LatentSync's SyncNet
# trainer logs with ``diffusers.utils.logging``, encodes frames with ``AutoencoderKL`` and builds
# its blocks from ``diffusers.models.attention.FeedForward``.
DIFFUSERS_MACHINERY = re.compile(
    r"^(\w*Scheduler\w*|schedulers|scheduling_\w+|UNet\w*|unets|\w*Pipeline|pipelines|\w*Transformer\w*Model|"
    r"DiT\w*|ControlNet\w*|PriorTransformer|\w*Adapter)$"
)


def _machinery(name: str) -> bool:
    """``name`` (a qualified name in a diffusion library) is diffusion machinery."""
    parts = name.split(".")
    return parts[0] != "diffusers" or any(DIFFUSERS_MACHINERY.match(p) for p in parts[1:])


DIFFUSION_CALLS = re.compile(
    r"(^|\.)(add_noise|q_sample|training_losses|p_losses|get_velocity|create_diffusion|create_gaussian_diffusion|"
    r"GaussianDiffusion\w*|SpacedDiffusion|IDDPM|get_named_beta_schedule|make_beta_schedule|"
    r"\w*[Dd]iffusion[Ll]oss|EDMLoss|VPLoss|VELoss|denoise|sample_timesteps?|DDPM\w*|DDIM\w*|\w*Diffusion|"
    # denoising score matching (NCSN's ``anneal_dsm_score_estimation``)
    r"\w*dsm_score_estimation|\w*denoising_score_matching\w*)$"
)
# Names a trainer gives its diffusion machinery (read anywhere in a call: ``partial(self.diffusion.training_losses``).
DIFFUSION_NAMES = re.compile(
    r"^(diffusion|noise_scheduler|schedule_sampler|q_sample|training_losses|p_losses|alphas_cumprod|"
    r"sqrt_alphas_cumprod|sigma_data|num_train_timesteps|num_timesteps|noise_pred|pred_noise|eps_pred|"
    r"noisy\w*|x_noisy|x_t|xt|z_t|noised\w*|v_pred|v_target|x_start)$"
)
# Names other code gives its own states too (SAC's ``x_t = normal.rsample()``): diffusion machinery
# only where the unit computes them from a noise or a schedule
STATE_NAMES = re.compile(r"^(x_t|xt|z_t)$")
NOISED_VALUE = re.compile(r"sqrt|alpha|sigma|noise|\beps|randn|beta|q_sample|add_noise")
# Names of other objectives' machinery: adversarial pairs, VAE terms, classifier targets.
OTHER_NAMES = re.compile(
    r"^(discriminator|netD|d_loss|g_loss|disc_loss|loss_D|loss_G|optimizer_idx|kld|kl_loss|recon_loss|"
    r"rec_loss|logits|real_validity|fake_validity)$"
)
# A loss that regresses the added noise: ``F.mse_loss(model(x + noise), noise)``, ``criterion(pred, eps)``.
NOISE_TARGET_LOSS = re.compile(r"(^|\.)(mse_loss|l1_loss|smooth_l1_loss|huber_loss|criterion|loss_fn|MSELoss)$")
NOISE_TARGETS = {"noise", "eps", "epsilon", "target_noise", "true_noise"}
NOISE_LEVEL_NAMES = re.compile(r"^(timesteps?|sigmas?|noise_level|log_snr|alphas_cumprod|t_emb|logsnr)$")
# What other trainers optimise: classification, language modelling, adversarial or VAE objectives.
OTHER_OBJECTIVES = re.compile(
    r"(^|\.)(cross_entropy|CrossEntropyLoss|nll_loss|NLLLoss|BCEWithLogitsLoss|binary_cross_entropy\w*|BCELoss|"
    r"kl_div|KLDivLoss|AutoModelFor\w+|from_pretrained|Discriminator|\w*discriminator|hinge_d_loss|vanilla_d_loss|"
    r"LPIPSWithDiscriminator|VQLPIPS\w*|accuracy|top_k_accuracy|"
    # a VAE's (or a stochastic policy's) reparameterised sample and KL term (TEMOS, SAC)
    r"rsample|kl_divergence)$"
)


def diffusion_evidence(index: UnitIndex) -> str | None:
    """What shows the unit trains a diffusion (denoising) model, in words; None when nothing does."""
    for call in index.calls:
        for name in sorted(call.qualnames):
            if name.split(".")[0] in DIFFUSION_LIBRARIES and _machinery(name):
                return f"uses {name}"
        if call.func_text and DIFFUSION_CALLS.search(call.func_text):
            return f"calls {call.func_text}()"
    if beta_schedule(index).explicit:
        return "configures a noise schedule"
    if prediction_type(index).explicit:
        return "configures a prediction type"
    for call in index.calls:
        if NOISE_TARGET_LOSS.search(call.func_text or "") and any(
            isinstance(arg.value, cst.Name) and arg.value.value in NOISE_TARGETS for arg in call.node.args
        ):
            return f"regresses the added noise ({call.func_text})"
    for names in _call_names(index):
        for name in names:
            leaf = name.rsplit(".", 1)[-1]
            if DIFFUSION_NAMES.match(leaf) and (not STATE_NAMES.match(leaf) or _noised_state(index, name)):
                return f"uses {name}"
    return None


def _noised_state(index: UnitIndex, name: str) -> bool:
    return any(NOISED_VALUE.search(code_of(a.value)) for a in index.assigns_to(name))


def noise_levels_drawn(index: UnitIndex) -> str | None:
    """Weaker evidence than ``diffusion_evidence``: the unit draws noise and a noise level at random.
    A GAN's augmentation does too (StyleGAN3's ``sigma = torch.randn(...) * self.noise_std``), so
    another objective seen in the unit outweighs it."""
    # a noise level drawn at random (``t = torch.randint(...)``, ``sigma = (randn * P_std + P_mean).exp()``),
    # not a kernel bandwidth or a VAE's posterior scale computed from data
    levels = sorted(
        a.target.rsplit(".", 1)[-1]
        for a in index.assigns
        if NOISE_LEVEL_NAMES.match(a.target.rsplit(".", 1)[-1]) and _random(a.value)
    )
    if levels and any("randn" in (c.func_text or "") for c in index.calls):
        return f"samples noise and noise levels ({levels[0]})"
    return None


RANDOM_CALLS = re.compile(
    r"(^|\.)(randint|rand|randn|rand_like|randn_like|uniform_?|normal_?|lognormal_?|choice|sample\w*)$"
)


def _random(value: cst.BaseExpression) -> bool:
    return any(
        isinstance(node, cst.Call) and RANDOM_CALLS.search(dotted(node.func) or "") for node in expression_nodes(value)
    )


def _call_names(index: UnitIndex) -> list[list[str]]:
    """The names each call reads, sorted (walked once per unit: both objective checks scan them)."""
    return memo(index, "diffusion.call_names", lambda: [sorted(names_in(call.node)) for call in index.calls])


def other_objective(index: UnitIndex) -> str | None:
    """What shows the unit trains something else (a classifier, a language model, a GAN or VAE)."""
    for call in index.calls:
        if call.func_text and OTHER_OBJECTIVES.search(call.func_text):
            return f"calls {call.func_text}()"
    for names in _call_names(index):
        for name in names:
            if OTHER_NAMES.match(name.rsplit(".", 1)[-1]):
                return f"uses {name}"
    return None


# --- continuous noise levels (EDM, VE, k-diffusion): no betas to schedule ------------------------
# ``n = torch.randn_like(y) * sigma``, ``x_t = x_start + noise * append_dims(sigmas, dims)``
SIGMA_NOISING = re.compile(
    r"(randn\w*\([^()]*\)|\bnoise\b|\bnoises\b)\s*\*\s*[\w.]*?(append_dims\(\s*|_expand\w*\(\s*)?[\w.]*sigmas?\b"
    r"|\bsigmas?\b[\w.\[\]]*\s*\*\s*(torch\.)?randn"
    # ``torch.einsum('b,bijk->bijk', sigma, noise)`` (mini_edm): the same product, written as an einsum
    r"|einsum\(\s*['\"][^'\"]*['\"]\s*,\s*(sigmas?\s*,\s*(noise|randn\w*\([^()]*\))|(noise|randn\w*\([^()]*\))\s*,\s*sigmas?)\s*\)"
)
DISCRETE_SCHEDULE_NAMES = re.compile(
    r"(^|_)(betas|alphas_cumprod|alphas_bar|alpha_bar|alphas_hat|beta_schedule|noise_schedule|log_snr)$"
)


SIGMA_REASON = "the noise level is a continuous sigma, as in EDM and VE/Karras samplers"


def sigma_noising(index: UnitIndex) -> str | None:
    """Where the unit noises its data with a continuous noise level sigma and keeps no discrete
    schedule (no betas, no alphas_cumprod): EDM's ``n = torch.randn_like(y) * sigma``, the Karras
    ``x_t = x_start + noise * append_dims(sigmas, dims)``. The cosine schedule, its offset and the
    zero-terminal-SNR rescale are changes to a beta schedule, which such a trainer does not have."""

    def find() -> str | None:
        if any(DISCRETE_SCHEDULE_NAMES.search(a.target.rsplit(".", 1)[-1]) for a in index.assigns):
            return None
        if index.setting("beta_schedule", "noise_schedule", "schedule"):
            return None
        found = [a for a in index.assigns if SIGMA_NOISING.search(code_of(a.value))]
        # the noised model input before a conditioning augmentation (SVD_Xtend noises both)
        found.sort(key=lambda a: "nois" not in a.target.rsplit(".", 1)[-1])
        for assign in found[:1]:
            return f"`{assign.target} = {code_of(assign.value)[:60]}` ({assign.path.name}:{assign.line})"
        return None

    return memo(index, "diffusion.sigma_noising", find)
