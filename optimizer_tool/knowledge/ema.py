"""The EMA of the weights, as analysis of the index: which objects of a unit are EMAs and which calls
update them (``ema_facts``), and how code drives each kind of EMA (``EmaApi``: diffusers ``EMAModel``,
``AveragedModel``, ``ema_pytorch``, timm, a project's own helper class read from its source:
``ema_api``). The ema rules, the EMA the fixes drive (``optimizer_tool.edit.ema``) and the monitoring
rules read it. Nothing here reads the disk: a helper class outside the unit comes from the ``read``
function a caller hands in (``FixContext.project_files.get``)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import libcst as cst

from optimizer_tool.index import Assign, CallSite, UnitIndex, code_of, dotted, literal
from optimizer_tool.knowledge.configured import assignments_of, find_call
from optimizer_tool.knowledge.training import _is_ema_class, has_role, memo, names_in, reached

Read = Callable[[Path], "str | None"]  # a project file's text, None when the caller has no such file


def no_files(path: Path) -> str | None:
    return None


EMA_NAME = re.compile(
    r"(^|_)(ema|emas|ema_model|model_ema|ema_unet|ema_net|ema_params|ema_helper|averaged_model|swa_model)(_|$)", re.I
)
NOT_AN_EMA = re.compile(
    r"rate|decay|beta|every|steps?$|warmup|power|use_|enable|start|after|flag|path|dir|file|metric|loss|score|acc|drift"
    r"|config|cfg|_conf$|_args$|options|settings",  # ai-toolkit's ``self.ema_config = EMAConfig(**ema_config)``
    re.I,
)
UPDATE_METHODS = {"update", "step", "update_parameters", "update_ema", "update_average"}
UPDATE_FUNCTION = re.compile(
    r"(^|_)(update_?ema|ema_?update|ema_?step|step_?ema|update_average|update_moving_average)(_|$)", re.I
)
IN_PLACE_AVERAGE = {"lerp_", "mul_", "add_", "_foreach_lerp_", "_foreach_mul_", "_foreach_add_"}


SETUP_FUNCTION = re.compile(r"(^|_)(setup|create|init|build|make|add)_?(model_?)?ema(_|$)", re.I)


def library_ema_calls(index: UnitIndex) -> list[CallSite]:
    """Calls of an EMA kept out of sight (``task.setup_ema(decay=...)`` and ``task.update_ema(step=n)``
    on timm's task object, a library the unit does not read): the setup calls first, then the
    updates. Only when no EMA object is seen and the callee is not defined in the unit."""

    def compute() -> list[CallSite]:
        found = [
            c
            for c in index.calls
            if c.method
            and (SETUP_FUNCTION.search(c.method) or UPDATE_FUNCTION.search(c.method))
            and c.receiver
            and not index.functions_named(c.method)
        ]
        return sorted(found, key=lambda c: not SETUP_FUNCTION.search(c.method))

    return memo(index, "ema.library_calls", compute)


# --- the unit's EMA objects and updates ----------------------------------------------------------
@dataclass
class EmaFacts:
    objects: list[Assign]
    updates: list[CallSite]
    aliases: list[str] = field(
        default_factory=list
    )  # EMA-named wrappers of an EMA: ``model_ema = Denoiser(inner_model_ema)``

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys([*(a.target for a in self.objects), *self.aliases]))


CODEBOOK_CLASS = re.compile(r"Quantiz|Codebook|Embedding|Cluster", re.I)


def ema_facts(index: UnitIndex) -> EmaFacts:
    """The unit's EMA objects and updates (computed once per index: every EMA and monitoring rule asks)."""
    return memo(index, "ema.facts", lambda: _ema_facts(index))


def _ema_facts(index: UnitIndex) -> EmaFacts:
    objects = [a for a in index.assigns if _is_ema_object(index, a)] + _appended_emas(index)
    objects += _averaged_by_hand(index, objects)
    looped, averaging = _averaged_in_loops(index, objects)
    objects += looped + _returned_emas(index, objects)
    # a vector quantizer's codebook kept by EMA (taming's EmbeddingEMA, VectorQuantizerEMA) averages
    # cluster statistics, not the weights of the model being trained
    objects = [a for a in objects if not (a.function and CODEBOOK_CLASS.search(a.function.class_name or ""))]
    # an EMA built in a method the entry never runs (open_clip's ``TrainingTask.setup_ema``, kept for
    # its tests) is no EMA of this run
    objects = [a for a in objects if reached(index, a.function)]
    names = {a.target for a in objects}
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    updates = []
    for call in index.calls:
        if copies_weights(call):
            continue  # ``update_ema(ema, model, decay=0)``: the one-off copy that initialises the EMA
        receiver_leaf = call.receiver.rsplit(".", 1)[-1]
        on_ema = call.receiver in names or (call.receiver and receiver_leaf in leaves)
        on_ema = on_ema or _fetched_ema(index, call, names)
        first = dotted(call.args[0].value) if call.args else ""
        if on_ema and call.method in UPDATE_METHODS:
            updates.append(call)
        elif call.func_text in names and MODEL_LIKE.search(code_of(call.node.args[0].value) if call.args else ""):
            updates.append(call)  # LitEma-style: ``self.model_ema(self.model)`` updates (not ``g_ema([z])``)
        elif first in names and (call.method or call.func_text) in _averaging_functions(index):
            updates.append(call)  # ``accumulate(g_ema, g_module, accum)``
        elif UPDATE_FUNCTION.search(call.method or call.func_text) and (
            call.function is None or not UPDATE_FUNCTION.search(call.function.name)
        ):
            updates.append(call)
        elif call.method in IN_PLACE_AVERAGE and (
            EMA_NAME.search(_first_arg_or_receiver(call))
            or (call.function and UPDATE_FUNCTION.search(call.function.name))
        ):
            updates.append(call)
    # an in-place average is the update where no call of its function already is (DiT's
    # ``update_ema(ema, model)`` counts at its call, not inside)
    called = {(u.method or u.func_text).rsplit(".", 1)[-1] for u in updates}
    for call in averaging:
        fn = call.function
        if fn is not None and (fn.name in called or UPDATE_FUNCTION.search(fn.name)):
            continue  # an ``update_ema`` helper: its calls are the updates
        if not any(u is call or (u.function is fn and u.line == call.line) for u in updates):
            updates.append(call)
    return EmaFacts(objects, updates, _ema_aliases(index, objects, names) + _instance_emas(index, objects))


DECAY_KEYWORDS = ("decay", "rate", "beta", "alpha", "momentum", "ema_decay", "mu")


def copies_weights(call: CallSite) -> bool:
    """An "update" whose decay is the literal 0 or 1 copies (or keeps) the weights: ``update_ema(ema,
    model, decay=0)`` initialises the EMA before the loop; it is no average to count, move or repeat."""
    for position, arg in enumerate(call.node.args):
        named = arg.keyword is not None and arg.keyword.value in DECAY_KEYWORDS
        value = literal(arg.value)
        if (named or (arg.keyword is None and position >= 2)) and value in (0, 1) and not isinstance(value, bool):
            return True
    return False


def _averaged_by_hand(index: UnitIndex, known: list[Assign]) -> list[Assign]:
    """An EMA-named model handed as the first argument to a function of the unit that averages
    parameters in place (stylegan2's ``accumulate(g_ema, g_module, accum)`` with
    ``par1[k].data.mul_(decay).add_(par2[k].data, alpha=1 - decay)``): its last assignment."""
    averaging = _averaging_functions(index)
    seen = {a.target for a in known}
    found = []
    for call in index.calls:
        first = dotted(call.args[0].value) if call.args else ""
        leaf = first.rsplit(".", 1)[-1]
        if call.method in averaging and first and first not in seen and EMA_NAME.search(leaf):
            assigns = [a for a in index.assigns if a.target == first and a.function == call.function]
            if assigns and not NOT_AN_EMA.search(leaf):
                found.append(assigns[-1])
                seen.add(first)
    return found


PARAMETER_LISTS = re.compile(
    r"^([\w.]+?)\.(parameters|named_parameters|buffers)\(\)$|^([\w.]+?)\.state_dict\(\)\.values\(\)$"
)
ROOT_NAME = re.compile(r"^(\w+)")


def _averaged_in_loops(index: UnitIndex, known: list[Assign]) -> tuple[list[Assign], list[CallSite]]:
    """Models averaged in place element by element, whatever their name: ``for p, p_avg in
    zip(params, self.model_avg.parameters()): p_avg.data.mul_(beta).add_(p.data, alpha=1 - beta)``
    (motion-diffusion-model), DINO's momentum teacher, ``lerp_``/``copy_`` variants, and a function
    that does it to the parameter lists it is handed (LCM's ``update_ema(target_unet.parameters(),
    unet.parameters(), rate)``). Returns each averaged model's last assignment and the averaging calls."""

    def compute() -> tuple[list[Assign], list[CallSite]]:
        seen = {a.target for a in known}
        objects: list[Assign] = []
        calls: list[CallSite] = []

        def averaged(call: CallSite, root: str, mixes) -> None:
            for loop in reversed(call.loops):
                pair = _zip_pair(loop, root)
                if pair is None:
                    continue
                position, others, lists = pair
                if not mixes(others):
                    continue
                for model in _averaged_models(index, call, lists[position]):
                    if model in seen:
                        continue
                    built = _model_assignment(index, model, call.function)
                    if built is not None:
                        objects.append(built)
                        seen.add(model)
                calls.append(call)
                return

        for call in index.calls:
            func = call.node.func
            if not isinstance(func, cst.Attribute) or func.attr.value not in IN_PLACE_AVERAGE | {"copy_"}:
                continue
            root = ROOT_NAME.match(code_of(func))  # ``p_avg.data.mul_(b).add_(p, ...)``: p_avg
            if root is not None:
                averaged(call, root.group(1), lambda others: _mixes(func, call.node.args, root.group(1), others))
        # ``ma_params.data = self.ema_updater.update_average(old_weight, up_weight)`` (lucidrains'
        # stylegan2 / lightweight-gan / early denoising-diffusion-pytorch): a function of the unit
        # returning ``old * beta + (1 - beta) * new`` assigned to a parameter of the zipped pair
        mixing = _mixing_functions(index)
        for assign in index.assigns:
            root = ROOT_NAME.match(assign.target)
            if assign.call is None or assign.call.method not in mixing or root is None:
                continue
            if assign.target in (root.group(1), f"{root.group(1)}.data"):
                averaged(assign.call, root.group(1), lambda others: True)
        return objects, calls

    return memo(index, "ema.averaged_in_loops", compute)


def _mixes(func: cst.Attribute, args, own: str, others: list[str]) -> bool:
    """An in-place weighted average of ``own`` with one of ``others``: ``own.lerp_(other, w)``,
    ``own.mul_(d).add_(other, alpha=1 - d)``, ``own.copy_(own * d + other * (1 - d))``; not a
    scaling alone (``mul_(m)``, weight decay), an accumulation (``add_(g)``) or a copy back
    (``param.copy_(stored)``, an EMA's ``restore``)."""
    text = " ".join(code_of(a.value) for a in args)

    def uses(name: str) -> bool:
        return re.search(rf"\b{re.escape(name)}\b", text) is not None

    if not any(uses(o) for o in others):
        return False
    method = func.attr.value
    if method == "lerp_":
        return True
    if method == "add_":
        return ".mul_(" in code_of(func)
    return method == "copy_" and uses(own)


def _model_assignment(index: UnitIndex, model: str, function) -> Assign | None:
    """The last assignment that builds ``model``: in ``function`` (``self.x`` anywhere), else
    anywhere in the unit (a model handed to the function that averages it), else the attribute of
    another object (EDGE's ``self.diffusion.master_model``, built as ``self.master_model`` in the
    diffusion class); not ``= None``."""
    every = [a for a in index.assigns if a.target == model]
    held = index.assigns_to("self.<leaf>." + model.rsplit(".", 1)[-1]) if model.count(".") > 1 else []
    for found in (assignments_of(index, model, function), every, held):
        found = [a for a in found if literal(a.value) is not None]
        # not ``x = accelerator.unwrap_model(x)``: that keeps the model built before
        built = [a for a in found if model not in names_in(a.value)]
        if built or found:
            return (built or found)[-1]
    return None


def _zip_pair(loop, name: str) -> tuple[int, list[str], list[str]] | None:
    """(position of ``name`` among the loop's targets, the other targets, the code of each zipped
    list) of a ``for a, b in zip(x, y):`` loop that binds ``name``."""
    try:
        target = ast.parse(loop.target, mode="eval").body
        iterated = ast.parse(loop.iter, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(target, ast.Tuple) or not all(isinstance(e, ast.Name) for e in target.elts):
        return None
    names = [e.id for e in target.elts]
    if not (isinstance(iterated, ast.Call) and isinstance(iterated.func, ast.Name) and iterated.func.id == "zip"):
        return None
    if name not in names or len(iterated.args) != len(names):
        return None
    position = names.index(name)
    return position, [n for n in names if n != name], [ast.unparse(a) for a in iterated.args]


def _averaged_models(index: UnitIndex, call: CallSite, zipped: str) -> list[str]:
    """The models whose parameters ``zipped`` lists: ``self.model_avg.parameters()`` gives
    ``self.model_avg``; a parameter of the enclosing function gives what its callers pass there
    (its parameter list, or the model whose ``.parameters()`` the function zips)."""
    match = PARAMETER_LISTS.match(zipped.replace(" ", "").replace("\n", ""))
    fn = call.function
    handed = match.group(1) or match.group(3) if match else zipped
    if fn is None or handed not in fn.passed_params:
        return [handed] if match else []
    found = []
    for _, arg in index.passed_to(fn, handed):
        if match:  # ``update_moving_average(self.GE, self.G)`` zipping ``ma_model.parameters()``
            found.append(dotted(arg))
            continue
        inner = PARAMETER_LISTS.match(code_of(arg).replace(" ", ""))
        if inner:
            found.append(inner.group(1) or inner.group(3))
    return [f for f in found if f]


MIX = re.compile(r"\(\s*1\.?0?\s*-\s*[\w.]+\s*\)\s*\*|\*\s*\(\s*1\.?0?\s*-\s*[\w.]+\s*\)|\blerp\(")


def _mixing_functions(index: UnitIndex) -> set[str]:
    """Functions of the unit, of two or more parameters, that return a weighted average
    (``return old * self.beta + (1 - self.beta) * new``)."""

    def compute() -> set[str]:
        return {
            r.function.name
            for r in index.returns
            if r.function is not None and len(r.function.params) >= 2 and MIX.search(code_of(r.value))
        }

    return memo(index, "ema.mixing_functions", compute)


def _returned_emas(index: UnitIndex, known: list[Assign]) -> list[Assign]:
    """A model that a factory of the unit may return wrapped in an EMA (flow_matching's
    ``instantiate_model(..., use_ema)`` with ``if use_ema: return EMA(model=model)``): the caller's
    ``model = instantiate_model(...)`` holds the EMA, built (and guarded) where the factory builds it."""
    seen = {a.target for a in known}
    factories: dict[str, CallSite] = {}
    for ret in index.returns:
        built = ret.call or (find_call(index, ret.value) if isinstance(ret.value, cst.Call) else None)
        if ret.function is None or built is None or not EMA_CLASS.search(built.func_text.rsplit(".", 1)[-1]):
            continue
        if _averages_a_model(index, built):
            factories.setdefault(ret.function.name, built)
    found = []
    for assign in index.assigns:
        made = assign.call.func_text.rsplit(".", 1)[-1] if assign.call is not None else ""
        if made in factories and assign.target not in seen and assign.position is None:
            built = factories[made]
            found.append(replace(assign, call=built, guards=assign.guards + built.guards))
            seen.add(assign.target)
    return found


EMA_CLASS = re.compile(r"^(EMA\w*|\w*Ema|\w*EMA|AveragedModel|ModelEma\w*|LitEma)$")


def _fetched_ema(index: UnitIndex, call: CallSite, names: set[str]) -> bool:
    """``call`` is on one EMA of a list, fetched by a getter of the unit (imagen:
    ``ema_unet = self.get_ema_unet(n); ema_unet.update()``, ``get_ema_unet`` returning
    ``self.ema_unets[index]``)."""
    if not names or not call.receiver or "." in call.receiver:
        return False
    for assign in assignments_of(index, call.receiver, call.function, call.line)[-1:]:
        getter = assign.call or (find_call(index, assign.value) if isinstance(assign.value, cst.Call) else None)
        leaf = getter.method if getter is not None else ""
        for fn in index.functions_named(leaf) if leaf else []:
            if any(r.function is fn and names_in(r.value) & names for r in index.returns):
                return True
    return False


def _averaging_functions(index: UnitIndex) -> set[str]:
    """Functions of the unit, of two or more parameters, that average tensors in place (``mul_``,
    ``add_``, ``lerp_``): a hand-written EMA update."""

    def compute() -> set[str]:
        return {
            c.function.name
            for c in index.calls
            if c.function is not None
            and isinstance(c.node.func, cst.Attribute)
            and c.node.func.attr.value in IN_PLACE_AVERAGE | {"lerp"}
            and len(c.function.params) >= 2
        }

    return memo(index, "ema.averaging_functions", compute)


def _appended_emas(index: UnitIndex) -> list[Assign]:
    """EMAs built into a list (imagen: ``self.ema_unets.append(EMA(unet, **ema_kwargs))``), as if
    assigned to the list: one per model of a cascade."""
    found = []
    for call in index.calls:
        leaf = call.receiver.rsplit(".", 1)[-1]
        if call.method != "append" or not call.args or not EMA_NAME.search(leaf) or NOT_AN_EMA.search(leaf):
            continue
        value = call.args[0].value
        built = find_call(index, value) if isinstance(value, cst.Call) else None
        if built is not None and re.search(r"EMA|Ema|Averaged", built.func_text):
            found.append(
                Assign(call.path, call.line, call.col, call.receiver, value, call.function, built, "", call.guards)
            )
    return found


def _ema_aliases(index: UnitIndex, objects: list[Assign], names: set[str]) -> list[str]:
    """EMA-named objects built from an EMA (k-diffusion's
    ``model_ema = make_denoiser_wrapper(config)(inner_model_ema)``): sampling with, saving or loading
    them uses the EMA weights."""
    aliases: list[str] = []
    for assign in index.assigns:
        leaf = assign.target.rsplit(".", 1)[-1]
        if assign in objects or assign.target in names or not EMA_NAME.search(leaf) or NOT_AN_EMA.search(leaf):
            continue
        if names_in(assign.value) & names:
            aliases.append(assign.target)
    return aliases


def _instance_emas(index: UnitIndex, objects: list[Assign]) -> list[str]:
    """An EMA kept by a wrapper class, as the code that builds the wrapper names it: mini_edm's
    ``self.ema = copy.deepcopy(self.model)`` in ``class EDM`` is ``edm.ema`` after ``edm = EDM(...)``
    (``torch.save(edm.ema.state_dict(), path)`` saves the EMA)."""
    found: list[str] = []
    for obj in objects:
        owner = obj.function.class_name if obj.function is not None else None
        if owner is None or not obj.target.startswith("self.") or obj.target.count(".") != 1:
            continue
        for assign in index.assigns:
            built = assign.call.func_text.rsplit(".", 1)[-1] if assign.call is not None else ""
            if built == owner and "." not in assign.target and assign.position is None:
                found.append(f"{assign.target}.{obj.target.split('.', 1)[1]}")
    return list(dict.fromkeys(found))


def _first_arg_or_receiver(call: CallSite) -> str:
    text = call.receiver.rsplit(".", 1)[-1]
    if call.args:
        text += " " + code_of(call.args[0].value)
    return text


def _is_ema_object(index: UnitIndex, assign: Assign) -> bool:
    leaf = assign.target.rsplit(".", 1)[-1]
    if NOT_AN_EMA.search(leaf):
        return False
    value_code = code_of(assign.value)
    if _injected_ema(assign, leaf, value_code):
        return True
    if "(" not in value_code:  # ``use_ema = False``, ``self.ema = None``: nothing is built
        return False
    if (
        assign.call is not None
        and has_role(index, assign.target, "ema")
        and assign.call.names & _ema_constructor_names(index, assign)
        and not _wrapped_later(index, assign)
    ):
        return _averages_a_model(index, assign.call)
    return bool(EMA_NAME.search(leaf)) and (
        "deepcopy" in value_code
        or "EMA" in value_code
        or "Ema" in value_code
        or "Averaged" in value_code
        or "copy" in value_code
        or "clone" in value_code
    )


MODEL_LIKE = re.compile(r"model|net|unet|module|parameters|transformer|denoiser|generator|vae", re.I)


def _averages_a_model(index: UnitIndex, call: CallSite) -> bool:
    """A weight EMA is built from a model or its parameters (``EMA(model)``, ``EMAModel(unet.parameters())``,
    ``AveragedModel(net)``, ``AveragedModel(ddpm)`` of a network whose ``.parameters()`` the unit reads);
    an EMA class built from sizes and numbers (a VQ codebook's ``EmbeddingEMA(n_embed, dim)``, a loss
    meter) averages something else."""
    if not call.node.args:
        return True
    if any(dotted(arg.value) == "self" for arg in call.node.args):  # LitEma(self) in a LightningModule
        return True
    names = {name for arg in call.node.args for name in names_in(arg.value)}
    if any(MODEL_LIKE.search(name.rsplit(".", 1)[-1]) for name in names if name != "self"):
        return True
    positional = [dotted(arg.value) for arg in call.node.args if arg.keyword is None]
    if any(has_role(index, name, "optimizer") for name in positional if name):
        return True  # an optimizer wrapper averages the parameters it steps (LSGM/DDGAN ``EMA(optimizer, decay)``)
    return any(c.receiver in names for c in index.method_calls("parameters", "named_parameters", "state_dict"))


def _injected_ema(assign: Assign, leaf: str, value_code: str) -> bool:
    """An EMA handed to a trainer class by its caller: ``self.ema_model = ema_model`` where
    ``ema_model`` is a parameter of the enclosing function (built by the script that calls it)."""
    name = value_code.strip()
    return (
        assign.function is not None
        and name.isidentifier()
        and name in assign.function.params
        and bool(EMA_NAME.search(name))
        and not NOT_AN_EMA.search(name)
        and bool(EMA_NAME.search(leaf))
    )


def _wrapped_later(index: UnitIndex, assign: Assign) -> bool:
    """The object an EMA wrapper takes in and replaces under the same name is not the EMA:
    ``optimizerG = optim.Adam(...)`` then ``if args.use_ema: optimizerG = EMA(optimizerG, ...)``
    (denoising-diffusion-gan) makes only the second an EMA."""
    return any(
        other is not assign
        and other.target == assign.target
        and other.path == assign.path
        and other.line > assign.line
        and other.call is not None
        and any(dotted(arg.value) == assign.target for arg in other.call.node.args)
        for other in index.assigns
    )


def _ema_constructor_names(index: UnitIndex, assign: Assign) -> frozenset[str]:
    return assign.call.names if assign.call is not None else frozenset()


# --- how code drives each kind of EMA ------------------------------------------------------------
STATE_SWAP_IN = (
    "live_weights = copy.deepcopy({model}.state_dict())",
    "{model}.load_state_dict({weights}.state_dict())",
)
STATE_SWAP_OUT = ("{model}.load_state_dict(live_weights)",)


@dataclass(frozen=True)
class EmaApi:
    """How code drives one kind of EMA. Templates take ``{ema}`` (the EMA object), ``{model}`` (the
    network it averages), ``{weights}`` (``weights`` filled in) and ``{state}`` (a loaded state dict)."""

    kind: str
    update: str
    weights: str | None = None  # an nn.Module holding the averaged weights, when the EMA has one
    swap_in: tuple[str, ...] = ()  # load the averaged weights into the model ...
    swap_out: tuple[str, ...] = ()  # ... and the live ones back
    aligned: str | None = None  # the averaged tensors in ``{model}.parameters()`` order
    named: str | None = None  # or a mapping from parameter name to averaged tensor
    export: str | None = None  # copy the averaged weights into the model for good (end of training)
    save: str = "{ema}.state_dict()"
    load: str = "{ema}.load_state_dict({state})"
    swap_imports: tuple[str, ...] = ()  # the modules ``swap_in``/``swap_out`` need

    def swap(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """Statements that swap the averaged weights in and out, and the modules they import."""
        if self.swap_in:
            return self.swap_in, self.swap_out, self.swap_imports
        return STATE_SWAP_IN, STATE_SWAP_OUT, ("copy",)

    @property
    def drift(self) -> str | None:
        """Mean absolute difference between averaged and live weights, as a 0-d tensor (a template
        over several lines: libcst indents bracketed continuation lines with the block)."""
        if self.named:
            return (
                "torch.stack([\n"
                f"    ({self.named}[name].float() - param.detach().float()).abs().mean()\n"
                "    for name, param in {model}.named_parameters()\n"
                f"    if name in {self.named}\n"
                "]).mean()"
            )
        aligned = self.aligned or (f"{self.weights}.parameters()" if self.weights else None)
        if aligned is None:
            return None
        return (
            "torch.stack([\n"
            "    (averaged.detach().float() - param.detach().float()).abs().mean()\n"
            f"    for averaged, param in zip({aligned}, {{model}}.parameters())\n"
            "]).mean()"
        )


STATE_DICT_EMA = EmaApi(  # ``ema = copy.deepcopy(model.state_dict())``: a dict of tensors
    "state dict of the model",
    update=(
        "with torch.no_grad():\n"
        "    for name, value in {model}.state_dict().items():\n"
        "        if value.dtype.is_floating_point:\n"
        "            {ema}[name].lerp_(value, 1 - {decay})\n"
    ),
    swap_in=("live_weights = copy.deepcopy({model}.state_dict())", "{model}.load_state_dict({ema})"),
    swap_out=STATE_SWAP_OUT,
    swap_imports=("copy",),
    named="{ema}",
    save="{ema}",
    load="{ema}.update({state})",
)
AVERAGED_MODEL = EmaApi(
    "torch.optim.swa_utils.AveragedModel", update="{ema}.update_parameters({model})", weights="{ema}.module"
)
TIMM_MODEL_EMA = EmaApi("timm ModelEma", update="{ema}.update({model})", weights="{ema}.module")
EMA_PYTORCH = EmaApi("ema_pytorch.EMA", update="{ema}.update()", weights="{ema}.ema_model")
DIFFUSERS_EMA = EmaApi(
    "diffusers EMAModel",
    update="{ema}.step({model}.parameters())",
    swap_in=("{ema}.store({model}.parameters())", "{ema}.copy_to({model}.parameters())"),
    swap_out=("{ema}.restore({model}.parameters())",),
    aligned="{ema}.shadow_params",
    export="{ema}.copy_to({model}.parameters())",
)
SWAP_METHODS = {"update", "state_dict", "load_state_dict", "apply_shadow", "restore"}


@dataclass(frozen=True)
class EmaHelper:
    """A project's own EMA class (the reference trainer's ``utils/ema.py``), read from its source."""

    name: str
    module: str  # dotted, as the trainer imports it
    relative: int  # 1: ``from .utils.ema import EMA``; 0: ``from utils.ema import EMA``
    init_params: tuple[str, ...]
    update_params: tuple[str, ...]
    methods: frozenset[str]
    has_shadow: bool

    @property
    def usable(self) -> bool:
        return SWAP_METHODS <= self.methods

    @property
    def api(self) -> EmaApi:
        update = "{ema}.update({model})" if self.update_params else "{ema}.update()"
        swap = ("{ema}.apply_shadow()",), ("{ema}.restore()",)
        if not {"apply_shadow", "restore"} <= self.methods:
            swap = (), ()
        return EmaApi(
            f"project helper {self.name}",
            update=update,
            swap_in=swap[0],
            swap_out=swap[1],
            named="{ema}.shadow" if self.has_shadow else None,
        )

    def constructor(self, decay: str) -> str:
        args = ["{model}"]
        if "decay" in self.init_params:
            args.append(f"decay={decay}")
        if "update_every" in self.init_params:
            args.append("update_every=1")  # one update per optimizer step: the caller gates nothing
        if "warmup" in self.init_params:
            args.append("warmup=True")
        return f"{{ema}} = {self.name}({', '.join(args)})"


def helper_from_class(node: ast.ClassDef, module: str = "", relative: int = 0) -> EmaHelper:
    methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}

    def params(name: str) -> tuple[str, ...]:
        fn = methods.get(name)
        return tuple(a.arg for a in fn.args.args[1:] + fn.args.kwonlyargs) if fn else ()

    has_shadow = any(
        isinstance(t, ast.Attribute) and t.attr == "shadow" and isinstance(t.value, ast.Name) and t.value.id == "self"
        for n in ast.walk(node)
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
    )
    return EmaHelper(node.name, module, relative, params("__init__"), params("update"), frozenset(methods), has_shadow)


def ema_class_defs(tree: ast.Module | None) -> list[ast.ClassDef]:
    return [n for n in (tree.body if tree else []) if isinstance(n, ast.ClassDef) and _is_ema_class({n.name})]


def ema_api(index: UnitIndex, obj: Assign, read: Read = no_files) -> EmaApi | None:
    """How to drive an existing EMA object, from what built it (``read``: see ``imported_class``)."""
    origins = index.origins(obj.target)
    if any(o.endswith("EMAModel") for o in origins):
        return DIFFUSERS_EMA
    if any(o.endswith("AveragedModel") for o in origins):
        return AVERAGED_MODEL
    if any(o.startswith("ema_pytorch.") for o in origins):
        return EMA_PYTORCH
    if any(re.search(r"(^|\.)ModelEma(V2|V3)?$", o) for o in origins):
        return TIMM_MODEL_EMA
    for origin in origins:
        node = imported_class(index, obj.path, origin, read)
        if node is not None:
            return helper_from_class(node).api
    if "deepcopy" in code_of(obj.value) and _copies_a_state_dict(obj.value):
        return STATE_DICT_EMA
    if "deepcopy" in code_of(obj.value):
        return EmaApi("deepcopy of the model", update="", weights="{ema}")
    return None


def _copies_a_state_dict(value: cst.BaseExpression) -> bool:
    """``copy.deepcopy(model.state_dict())``: the EMA is a dict of tensors, not a module."""
    return (
        isinstance(value, cst.Call)
        and len(value.args) == 1
        and isinstance(value.args[0].value, cst.Call)
        and dotted(value.args[0].value.func).rsplit(".", 1)[-1] == "state_dict"
    )


def imported_class(index: UnitIndex, importer: Path, origin: str, read: Read = no_files) -> ast.ClassDef | None:
    """The EMA class an import names (``.utils.ema.EMA``), from the unit or, for an import a fix
    just added, from the project file it resolves to beside ``importer`` (its text from ``read``)."""
    module, _, name = origin.rpartition(".")
    for source in index.files:
        found = next((n for n in ema_class_defs(source.tree) if n.name == name), None)
        if found is not None:
            return found
    dotted_path = module.lstrip(".")
    level = len(module) - len(dotted_path)
    bases = [importer.parents[level - 1]] if level else [importer.parent, *importer.parent.parents][:3]
    for base in bases:
        path = base.joinpath(*dotted_path.split(".")).with_suffix(".py") if dotted_path else None
        text = read(path) if path is not None else None
        if text is not None:
            try:
                tree = ast.parse(text)
            except SyntaxError:
                return None
            return next((n for n in ema_class_defs(tree) if n.name == name), None)
    return None


# Calls that only read an EMA (or move it): they cannot be its update.
READ_ONLY_METHODS = {
    "eval",
    "train",
    "to",
    "cuda",
    "cpu",
    "half",
    "float",
    "state_dict",
    "requires_grad_",
    "named_modules",
    "modules",
    "apply_shadow",
    "store",
    "restore",
    "copy_to",
    "forward",
    "__call__",
    "sample",
    "generate",
}
READ_ONLY_CALLS = re.compile(
    r"(^|\.)(save|save_file|save_checkpoint|deepcopy|print|len|isinstance|getattr|hasattr|requires_grad|zip|list)$"
)
ITERATED = {"parameters", "named_parameters", "buffers", "values", "items"}


def possible_update(index: UnitIndex, facts: EmaFacts) -> CallSite | None:
    """A call that may update an EMA without being a recognised update: its parameters iterated
    (``for e, p in zip(ema.parameters(), model.parameters()): e.lerp_(p, ...)``), the EMA handed to a
    function (a module-level ``update_ema(ema, model)`` helper, a ``step_fn(state)``), its state
    loaded. "Never updated" needs none of these: the trace would be incomplete."""
    names = set(facts.names)
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    creations = {id(o.call) for o in facts.objects if o.call is not None}
    for call in index.calls:
        if (
            id(call) in creations
            or call.method in READ_ONLY_METHODS
            or READ_ONLY_CALLS.search(call.func_text or "")
            or copies_weights(call)
        ):
            continue
        on_ema = call.receiver in names or (call.receiver and call.receiver.rsplit(".", 1)[-1] in leaves)
        if on_ema and call.method in ITERATED:
            on_ema = any(c.method in IN_PLACE_AVERAGE | {"copy_"} for c in index.calls_in(call.function)) or any(
                item.container == call.receiver and item.function == call.function for item in index.item_assigns
            )  # a state-dict EMA averaged entry by entry: ``args.ema_dict[k] = w * args.ema_dict[k] + ...``
        passed = any(
            dotted(arg.value) in names or dotted(arg.value).rsplit(".", 1)[-1] in leaves
            for arg in call.node.args
            if dotted(arg.value)
        )
        if on_ema or passed:
            return call
    return None
