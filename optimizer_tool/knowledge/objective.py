"""What a unit's training loss compares with: a loss (library call, loss module, or written by
hand) whose target is the sampled Gaussian noise is an epsilon objective; with the configured
prediction type this gives the objective the unit trains (used by the v-prediction and zero
terminal SNR checks)."""

from __future__ import annotations

import re
from functools import lru_cache

import libcst as cst

from optimizer_tool.index import Assign, CallSite, FunctionInfo, UnitIndex, code_of, dotted
from optimizer_tool.knowledge.configured import (
    Configured,
    assignments_of,
    can_call,
    expression_nodes,
    find_call,
    memo,
    names_in,
    required_params,
    synthetic_setting,
)
from optimizer_tool.knowledge.diffusion import (
    PREDICTION_FLAGS,
    PREDICTION_SETTINGS_LOOSE,
    PREDICTION_SETTINGS_STRICT,
    SIGMA_REASON,
    prediction_type,
    sigma_noising,
)
from optimizer_tool.knowledge.training import SAMPLING_FUNCTION, registry_functions

LOSS_FUNCTIONS = (
    "torch.nn.functional.mse_loss",
    "torch.nn.functional.l1_loss",
    "torch.nn.functional.smooth_l1_loss",
    "torch.nn.functional.huber_loss",
    "*.mean_flat",
    "mean_flat",
)
LOSS_MODULES = ("torch.nn.MSELoss", "torch.nn.L1Loss", "torch.nn.SmoothL1Loss", "torch.nn.HuberLoss")
RANDN = (
    "torch.randn_like",
    "torch.randn",
    "torch.normal",
    "numpy.random.randn",
    "numpy.random.normal",
    "torch.randn_like",
)
NOISE_NAMES = {"noise", "eps", "epsilon", "gaussian_noise", "noises", "true_noise", "noise_gt", "gt_noise"}
PREDICTION_NAMES = set(PREDICTION_SETTINGS_STRICT) | set(PREDICTION_SETTINGS_LOOSE) | set(PREDICTION_FLAGS)


def _loss_calls(index: UnitIndex) -> list[CallSite]:
    """The unit's loss computations (computed once per index: several rules ask)."""
    return memo(index, "objective.loss_calls", lambda: _find_loss_calls(index))


def _find_loss_calls(index: UnitIndex) -> list[CallSite]:
    modules = {a.target for a in index.assigns if a.call is not None and a.call.matches(LOSS_MODULES)}
    # ``def __init__(self, ..., criterion=nn.MSELoss()): self.criterion = criterion`` (minDiffusion)
    defaults = {(c.function, c.default_of) for c in index.calls if c.default_of and c.matches(LOSS_MODULES)}
    modules |= {a.target for a in index.assigns if (a.function, dotted(a.value)) in defaults}
    calls = [
        c
        for c in index.calls
        if c.matches(LOSS_FUNCTIONS)
        or (c.func_text and c.func_text in modules)
        or squared_difference(c, index) is not None
    ]
    return [
        c
        for c in calls
        if not c.no_grad
        and not (c.function and SAMPLING_FUNCTION.search(c.function.name) and not c.function.name.startswith("train"))
    ]


SQUARING = {"pow", "square", "abs"}
STRIPPED = {"float", "to", "double", "half", "detach", "type", "contiguous", "reshape", "view", "flatten"}


def _strip(node):
    """``x`` in ``x.float().detach()`` and in ``(x)``."""
    while isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in STRIPPED:
        node = node.func.value
    return node


def squared_difference(call: CallSite, index: UnitIndex | None = None) -> cst.BinaryOperation | None:
    """The ``a - b`` of a loss written by hand: ``((a - b) ** 2).mean()``, ``(a - b).pow(2).mean()``,
    ``(a - b).square().sum(dim=(1, 2, 3))`` (ermongroup/ddim), ``(a - b).abs().mean()``,
    ``torch.mean((a - b) ** 2)``, and, given the unit, ``mos(a - b)`` where the project's own
    ``mos`` returns the mean of its argument squared (U-ViT)."""
    func = call.node.func
    method = func.attr.value if isinstance(func, cst.Attribute) else ""
    if index is not None and call.args and _squaring_helper(index, call):
        node = _strip(call.args[0].value)
        return node if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Subtract) else None
    if method not in ("mean", "sum"):
        return None
    if call.func_text not in ("torch.mean", "torch.sum"):
        node = func.value  # the arguments, if any, are the dimensions reduced
    elif call.args:
        node = call.args[0].value
    else:
        return None
    node = _strip(node)
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Power):
        node = node.left
    elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in SQUARING:
        node = node.func.value
    elif isinstance(node, cst.Call) and dotted(node.func) in ("torch.square", "torch.abs") and node.args:
        node = node.args[0].value
    else:
        return None
    node = _strip(node)
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Subtract):
        return node
    return None


def _squaring_helper(index: UnitIndex, call: CallSite) -> bool:
    """``call`` calls a function of the unit that returns its first parameter squared and reduced
    (``def mos(a, start_dim=1): return a.pow(2).flatten(start_dim=start_dim).mean(dim=-1)``)."""
    leaf = call.func_text.rsplit(".", 1)[-1] if call.func_text else ""
    if not leaf or leaf in ("mean", "sum"):
        return False
    return leaf in memo(index, "objective.squaring_helpers", lambda: _squaring_helpers(index))


def _squaring_helpers(index: UnitIndex) -> set[str]:
    """Names of the unit's functions that return their first parameter squared and reduced."""
    found: set[str] = set()
    returned = index.returns_by_function
    for fn in index.functions:
        if fn not in returned:
            continue
        first = next((p for p in fn.params if p not in ("self", "cls")), None)
        if first is None:
            continue
        squared = re.compile(
            rf"(\b{first}\s*\*\*\s*2|\b{first}\s*\.\s*(pow\(\s*2|square\()|(torch\.)?square\(\s*{first}\b)"
        )
        if any(squared.search(code_of(r.value)) for r in returned[fn]):
            found.add(fn.name)
    return found


def operands(call: CallSite, index: UnitIndex | None = None) -> list[str]:
    difference = squared_difference(call, index)
    if difference is not None:
        return [n for n in (dotted(_strip(difference.left)), dotted(_strip(difference.right))) if n]
    if call.matches(("*.mean_flat", "mean_flat")):
        return (
            [
                dotted(n)
                for n in expression_nodes(call.args[0].value)
                if isinstance(n, (cst.Name, cst.Attribute)) and dotted(n)
            ]
            if call.args
            else []
        )
    nodes = [a.value for a in call.args[:2]] + [call.kwarg(k) for k in ("input", "target") if call.kwarg(k) is not None]
    return [dotted(_strip(node)) for node in nodes if dotted(_strip(node))]


def local_assigns(index: UnitIndex, function: FunctionInfo | None, name: str) -> list[Assign]:
    return [a for a in index.assigns if a.function == function and a.target == name]


def is_noise(index: UnitIndex, function: FunctionInfo | None, name: str, depth: int = 0) -> bool:
    """``name`` holds the sampled Gaussian noise (``noise = torch.randn_like(x)``, an alias of it,
    or a parameter/variable conventionally called ``noise``)."""
    if depth > 4:
        return False
    assigns = local_assigns(index, function, name)
    if not assigns:
        handed = _passed_noise(index, function, name, depth) if function is not None else None
        return handed if handed is not None else name.rsplit(".", 1)[-1] in NOISE_NAMES
    for assign in assigns:
        alias = dotted(assign.value)
        if alias and alias != name:
            if not is_noise(index, function, alias, depth + 1):
                return False
            continue
        if assign.position is not None:
            if not _returned_noise(index, assign, depth):
                return False
            continue
        if not _draws_noise(index, assign.value):
            return False
    return True


GAUSSIAN_DRAWS = re.compile(
    r"(^|\.)(randn|randn_like|normal_?|randn_tensor|standard_normal|Normal|MultivariateNormal|normal_like)$"
)


def noiseless_objective(index: UnitIndex) -> str | None:
    """Why the unit is no diffusion trainer although no classification or adversarial objective
    names it: it computes its loss in its own code (MAE's ``(pred - target) ** 2`` on patches)
    and draws no Gaussian noise anywhere in the code it reaches, while every denoising objective
    noises its data. None when some call may draw noise or no loss is seen."""
    if any(
        GAUSSIAN_DRAWS.search(c.method or c.func_text or "") and not INITIALISERS.search(c.func_text)
        for c in index.calls
    ):
        return None
    sites = [(c.path, c.line) for c in _loss_calls(index) if not c.no_grad]
    # ``loss = (pred - target) ** 2`` then reduced later (MAE), a cross-entropy by hand (DINO)
    sites += [(a.path, a.line) for a in index.assigns if WRITTEN_LOSS.search(code_of(a.value))]
    sites += [(c.path, c.line) for c in index.calls if (c.method or c.func_text).endswith("log_softmax")]
    if not sites:
        return None
    path, line = sites[0]
    return f"its loss is computed in its own code ({path.name}:{line}) and it draws no Gaussian noise anywhere"


INITIALISERS = re.compile(r"(^|\.)init\.")  # ``nn.init.normal_(w, std=.02)`` draws weights, not noise
WRITTEN_LOSS = re.compile(r"^\(\s*[^()]+?\s-\s[^()]+\)\s*\*\*\s*2$")


def _draws_noise(index: UnitIndex, value, depth: int = 0) -> bool:
    """The expression calls torch.randn/randn_like (or numpy's) somewhere, or a function of the
    unit that returns such a draw (RectifiedFlow's ``z0 = sde.get_z0(batch)``, two calls deep)."""
    for node in expression_nodes(value):
        site = find_call(index, node) if isinstance(node, cst.Call) else None
        if site is None:
            continue
        if site.matches(RANDN):
            return True
        leaf = site.method or (site.func_text or "").rsplit(".", 1)[-1]
        if depth < 2 and leaf and _returns_noise(index, leaf, depth + 1):
            return True
    return False


def _returns_noise(index: UnitIndex, name: str, depth: int) -> bool:
    """Some function of the unit called ``name`` returns a Gaussian draw."""

    def find() -> bool:
        return any(
            r.value is not None and _draws_noise(index, r.value, depth)
            for fn in index.functions_named(name)
            for r in index.returns_by_function.get(fn, ())
        )

    return memo(index, ("objective.returns_noise", name, depth), find)


def _passed_noise(index: UnitIndex, function: FunctionInfo, name: str, depth: int) -> bool | None:
    """For a parameter ``name`` of a plain function: whether every call of it in the unit (by name,
    or through a dict registry: ermongroup/ddim's ``loss_registry[...](model, x, t, e, b)``) passes
    the sampled noise there. None when it is no such parameter or no call is found."""
    if function.class_name is not None or name not in function.params:
        return None
    position = function.call_position(name)
    verdicts = []
    for call in index.calls:
        leaf = (call.func_text or "").rsplit(".", 1)[-1]
        if leaf != function.name and function.name not in registry_functions(index, call):
            continue
        if any(a.star for a in call.node.args):
            return None
        node = call.arg(position, name) if position is not None else call.kwarg(name)
        passed = dotted(node) if node is not None else None
        if not passed:
            return None
        verdicts.append(is_noise(index, call.function, passed, depth + 1))
    return all(verdicts) if verdicts else None


def _returned_noise(index: UnitIndex, assign: Assign, depth: int) -> bool:
    """``x_t, noise = diffusion.noise_images(x, t)`` where the helper returns ``..., eps`` with
    ``eps = torch.randn_like(x)`` (a helper of the unit, followed one call deep)."""
    site = find_call(index, assign.value) if isinstance(assign.value, cst.Call) else None
    helpers = index.functions_named(site.method) if site is not None and site.method else []
    for helper in helpers:
        for ret in index.returns:
            if ret.function is helper and isinstance(ret.value, cst.Tuple):
                elements = ret.value.elements
                if assign.position < len(elements) and (name := dotted(elements[assign.position].value)):
                    if is_noise(index, helper, name, depth + 1):
                        return True
    return False


@lru_cache(maxsize=4096)
def mentions_prediction(guard: str) -> bool:
    try:
        expr = cst.parse_expression(guard)
    except cst.ParserSyntaxError:
        return False
    for node in expression_nodes(expr):
        leaf = (
            node.value if isinstance(node, cst.Name) else node.attr.value if isinstance(node, cst.Attribute) else None
        )
        if leaf and leaf.lower() in PREDICTION_NAMES:
            return True
    return False


def losses_on_noise(index: UnitIndex) -> list[CallSite]:
    """Training losses whose target is the sampled noise, with no branch on the prediction type."""
    return memo(index, "objective.losses_on_noise", lambda: _losses_on_noise(index))


def _losses_on_noise(index: UnitIndex) -> list[CallSite]:
    found = []
    for call in _loss_calls(index):
        if any(mentions_prediction(g) for g in call.guards):
            continue
        if any(is_noise(index, call.function, name) for name in operands(call, index)):
            found.append(call)
    return found


def configured_prediction(index: UnitIndex) -> Configured:
    on_noise = losses_on_noise(index)
    evidence = [] if _rivals(index) else [synthetic_setting("prediction_type", "epsilon", "code", c) for c in on_noise]
    return prediction_type(index, evidence)


def _rivals(index: UnitIndex) -> bool:
    """Alternatives of one loss method that train different targets (k-diffusion's ``Denoiser.loss``
    and ``SimpleLossDenoiser.loss``): whichever class the run picks decides, the code alone shows no
    objective."""
    return memo(index, "objective.rivals", lambda: _find_rivals(index))


def _find_rivals(index: UnitIndex) -> bool:
    on_noise = losses_on_noise(index)
    methods = {(c.function.name, id(c.function)) for c in on_noise if c.function is not None}
    return any(
        c not in on_noise
        and c.function is not None
        and any(name == c.function.name and key != id(c.function) for name, key in methods)
        for c in _loss_calls(index)
    )


def karras_preconditioned(index: UnitIndex) -> str | None:
    """Where the network output is mixed with its input by EDM's preconditioning
    (``D = c_skip * x + c_out * F`` with ``c_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)``):
    the network learns a target that is well conditioned at every noise level, as a v-prediction
    network does (Karras et al. 2022). None where it is not seen (``c_skip = 1`` is plain epsilon
    or x0 preconditioning) or where rival loss methods leave the objective to the run."""
    if _rivals(index):
        return None
    for assign in index.assigns:
        # ``1 / (sigmas**2 + 1)``: sigma_data = 1 written out (SVD_Xtend)
        if assign.target.rsplit(".", 1)[-1] == "c_skip" and EDM_SKIP.search(code_of(assign.value)):
            return f"{assign.path.name}:{assign.line}"
    return None


EDM_SKIP = re.compile(r"sigma_data|\bsigmas?\s*\*\*\s*2")


LOSS_METHOD = re.compile(
    r"^((training|train|compute|get)_loss(es)?|p_losses|loss(es)?|forward_loss|calc_loss|diffusion_loss)$"
)
PARTIALS = ("functools.partial", "partial")


def handed_in(index: UnitIndex) -> str | None:
    """Where the objective comes from when the unit only receives it: the loss is a method of an
    object stored from a parameter (openai's ``TrainLoop(model, diffusion, ...)`` keeps
    ``self.diffusion = diffusion`` and trains on ``self.diffusion.training_losses``, also through
    ``functools.partial``). Returns a sentence naming the parameter, or None."""
    for call in index.calls:
        holder = (call.func_text or "").rpartition(".")[0]
        fn = call.function
        if (
            LOSS_METHOD.match(call.method)
            and fn is not None
            and fn.class_name is None
            and holder in fn.params
            and not _built_here(index, fn)
        ):
            # DiffGesture's step ``train_iter_diffusion(args, ..., pose_diffusion, optimizer)``
            return (
                f"the loss is `{call.func_text}` of an object the step function receives (parameter `{holder}` of"
                f" {fn.qualname}, {call.path.name}:{fn.line}): whoever builds it decides; check the entry script"
            )
    methods = [c.func_text for c in index.calls if LOSS_METHOD.match(c.method)]
    methods += [dotted(c.args[0].value) for c in index.calls if c.matches(PARTIALS) and c.args]
    for text in methods:
        if not text or text.count(".") != 2 or not text.startswith("self."):
            continue
        holder, method = text.rsplit(".", 1)
        if not LOSS_METHOD.match(method):
            continue
        for assign in index.assigns:
            fn = assign.function
            name = dotted(assign.value)
            if assign.target == holder and fn is not None and name in fn.params and not _built_here(index, fn):
                return (
                    f"the loss is `{text}` of an object the trainer receives (parameter `{name}` of "
                    f"{fn.qualname}, {assign.path.name}:{fn.line}): whoever builds it decides; check the entry script"
                )
    return None


def loss_handed_in(index: UnitIndex) -> str | None:
    """Where the trained loss is computed by an object the unit receives: a ``loss = f(...)`` next
    to a ``backward()``, with ``f`` built from a parameter of the function that sets it (Palette's
    ``self.netG = networks[0]``, a network whose forward is the loss; EDM's ``training_loop`` with
    ``loss_fn = construct_class_by_name(**loss_kwargs)``). A sentence naming the parameter, or None."""
    trained = {
        c.function
        for c in index.calls
        if c.function is not None and isinstance(c.node.func, cst.Attribute) and c.node.func.attr.value == "backward"
    }
    for assign in index.assigns:
        if assign.function not in trained or assign.call is None or "loss" not in assign.target.lower():
            continue
        callee = assign.call.func_text
        if not callee or assign.call.method in ("backward", "mean", "sum"):
            continue
        fn = assign.function
        if callee in fn.params and not _has_default(index, fn, callee) and not _built_here(index, fn):
            # CSDI's ``train(model, config, train_loader, ...)``: ``loss = model(train_batch)``
            return (
                f"the loss is computed by `{callee}`, parameter of {fn.qualname} ({assign.path.name}:{fn.line}):"
                " whoever passes it decides the objective; check the entry script"
            )
        sources = assignments_of(index, callee, assign.function) if not callee.startswith("self.") else []
        sources += [a for a in index.assigns if callee.startswith("self.") and a.target == callee]
        for source in sources:
            fn = source.function
            if fn is None or _built_here(index, fn):
                continue
            taken = [
                p
                for p in fn.params
                if p not in ("self", "cls") and p in names_in(source.value) and not _has_default(index, fn, p)
            ]
            if taken:
                return (
                    f"the loss is computed by `{callee}`, built from parameter `{taken[0]}` of {fn.qualname} "
                    f"({source.path.name}:{source.line}): whoever builds it decides the objective; check the entry "
                    "script"
                )
    return None


def _has_default(index: UnitIndex, fn: FunctionInfo, param: str) -> bool:
    """The parameter has a default the run uses when the caller leaves it out (EDM2's
    ``loss_kwargs=dict(class_name="training.training_loop.EDM2Loss")``): not simply handed in. An
    empty default (EDM's ``loss_kwargs={}``, None) is no objective: the caller must give one."""
    return any(c.default_of == param and c.function is fn and c.node.args for c in index.calls) or any(
        s.kind == "param-default" and s.owner == fn.qualname and s.path == fn.path and s.known and s.value
        for s in index.setting(param)
    )


def _built_here(index: UnitIndex, fn: FunctionInfo) -> bool:
    """The object's origin is in the unit even where this model cannot follow it: ``fn`` is not in
    the entry file (an entry script that imports the trainer class builds it, or a subclass of it),
    or some code of the unit calls ``fn`` (builds its class)."""
    if fn.path != index.entry.path:
        return True
    required = required_params(index, fn)
    return any(can_call(c, required) for c in index.calls_named(fn.callee))


# --- flow matching / rectified flow: x_t = (1 - t) * x + t * noise ---------------------------------
FLOW_PATH = re.compile(
    r"\(\s*1(?:\.0*)?\s*-\s*(?P<t>[\w.]+)\s*\)\s*\*\s*(?P<a>[\w.]+)\s*\+\s*(?P=t)\s*\*\s*(?P<b>[\w.]+)"
    r"|(?P<t2>[\w.]+)\s*\*\s*(?P<b2>[\w.]+)\s*\+\s*\(\s*1(?:\.0*)?\s*-\s*(?P=t2)\s*\)\s*\*\s*(?P<a2>[\w.]+)"
)


# reshaping and broadcasting that leave the path's coefficient what it is: ``t.unsqueeze(1).repeat(1, n, d)``,
# ``t[:, None, None]``, ``t.view(-1, 1, 1, 1)``, ``append_dims(t, x.ndim)`` (x-flux's ControlNet trainer)
BROADCAST = re.compile(
    r"\.(?:unsqueeze|repeat|view|reshape|expand|expand_as|to|float|half|type_as)\((?:[^()]|\([^()]*\))*\)"
    r"|\[[^\[\]]*None[^\[\]]*\]"
)
APPENDED_DIMS = re.compile(r"\bappend_dims\(\s*([\w.]+)\s*,[^()]*\)")


def _broadcast_free(text: str) -> str:
    return BROADCAST.sub("", APPENDED_DIMS.sub(r"\1", text))


FLOW_REASON = "a flow-matching trainer, its input on the straight path between the data and the noise"


def flow_path(index: UnitIndex) -> str | None:
    """Where the unit trains a flow-matching / rectified-flow model: an input on the straight path
    between the data and the sampled Gaussian noise, ``zt = (1 - t) * x + t * z1`` with
    ``z1 = torch.randn_like(x)`` (minRF, SD3-style trainers). Such a trainer has no beta schedule
    (cosine and its offset do not apply), regresses a velocity, and reaches pure noise at t = 1."""

    def find() -> str | None:
        for assign in index.assigns:
            text = code_of(assign.value)
            match = FLOW_PATH.search(_broadcast_free(text))
            if match is not None:
                ends = [match.group("a") or match.group("a2"), match.group("b") or match.group("b2")]
            elif assign.call is not None and assign.call.node.func is not None and _lerp(assign.call):
                # ``noised = noise.lerp(data, t)`` (lucidrains rectified-flow), ``torch.lerp(x, noise, t)``
                call = assign.call
                receiver = [call.receiver] if call.func_text != "torch.lerp" else []
                ends = receiver + [dotted(a.value) for a in call.args[:2]]
            else:
                continue
            if any(_sampled(index, assign.function, end) for end in ends) or (
                any(end and end.rsplit(".", 1)[-1] in NOISE_NAMES for end in ends) and draws
            ):
                return f"`{assign.target} = {text[:60]}` ({assign.path.name}:{assign.line})"
        return None

    # a noise named so, drawn where the batch is made (mochi's ``get_batch`` returns ``eps =
    # torch.randn_like(z)`` in a tuple the loop unpacks): the unit draws Gaussian noise somewhere
    draws = any(c.matches(RANDN) for c in index.calls)

    return memo(index, "objective.flow_path", find)


def _lerp(call: CallSite) -> bool:
    return call.func_text == "torch.lerp" or (isinstance(call.node.func, cst.Attribute) and call.method == "lerp")


def _sampled(index: UnitIndex, function: FunctionInfo | None, name: str) -> bool:
    """``name`` is assigned from torch.randn/randn_like in ``function`` (not a conventional name alone)."""
    return any(_draws_noise(index, assign.value) for assign in local_assigns(index, function, name))


def without_betas(index: UnitIndex) -> tuple[str, str] | None:
    """("sigma" | "flow", why) where the unit trains without a beta schedule: it noises with a
    continuous sigma (EDM, Karras) or on a straight flow path; the beta-schedule changes (cosine, its
    offset, the zero-terminal-SNR rescale) then concern nothing it has. None otherwise."""
    sigma = sigma_noising(index)
    if sigma is not None:
        return "sigma", f"{SIGMA_REASON} ({sigma})"
    flow = flow_path(index)
    return ("flow", f"{FLOW_REASON} ({flow})") if flow is not None else None
