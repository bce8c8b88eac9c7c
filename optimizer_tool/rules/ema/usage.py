"""The EMA is saved with the checkpoints, restored on resume, used to sample, and the live weights
come back after sampling (EMA006-009)."""

from __future__ import annotations

import re
from typing import Iterable

import libcst as cst

from optimizer_tool.contract import Hit
from optimizer_tool.findings import Severity
from optimizer_tool.index import CallSite, UnitIndex, code_of, dotted, literal
from optimizer_tool.knowledge.configured import assignments_of, names_in
from optimizer_tool.knowledge.ema import ema_facts
from optimizer_tool.knowledge.training import (
    CHECKPOINT_READS,
    CHECKPOINT_WRITES,
    calls_in_functions_with,
    has_role,
    mentions,
    run_by_entry,
    sampling_functions,
    trained_model,
)
from optimizer_tool.rules.ema.base import (
    MODEL_PARAMETER,
    SAMPLE_LOOPS,
    EmaBug,
    called_name,
    is_sampler_call,
    network_receiver,
)

SWAP_IN = {"apply_shadow", "copy_to", "store", "swap", "swap_params"}
SAMPLING_CALL = re.compile(r"^(sample|samples|generate|p_sample_loop|ddim_sample_loop|forward_with_cfg)$|sample", re.I)
NETWORK_WORD = re.compile(
    r"(?<![\w])(model|unet|net|denoiser|transformer|network|pipeline|pipe|dit|\w+_model|model_\w+|\w+_net)(?!\w)", re.I
)


class _EmaWithFunctions(EmaBug):
    """EMA present and the trainer has the functions this rule judges (checkpointing, sampling)."""

    patterns: tuple[str, ...] = ()

    def functions(self, index: UnitIndex) -> list:
        return calls_in_functions_with(index, self.patterns)

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and bool(self.functions(index))

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        functions = self.functions(index)
        names = ema_facts(index).names
        # a helper that saves the network it is given (``save_network(self.netG_EMA, "ema")``) is
        # judged with its callers
        named = {f.name for f in functions if f is not None}
        callers = list(dict.fromkeys(c.function for c in index.calls if c.method in named and c.function is not None))
        around = [*functions, *callers]
        if (
            not any(mentions(index, around, name) for name in names)
            and not self.handled_elsewhere(index, names)
            and not reads_an_ema(index, around)
        ):
            site = (
                next(c for c in index.calls if c.function in functions and c.matches(self.patterns or ("*",)))
                if self.patterns
                else None
            )
            if site is not None:
                yield Hit.at(site)
            else:
                fn = functions[0]
                yield Hit(fn.path, fn.line, 1)

    def handled_elsewhere(self, index: UnitIndex, names: list[str]) -> bool:
        return False


EMA_TOKEN = re.compile(r"(?<![a-z])ema(?![a-z])", re.I)


def reads_an_ema(index: UnitIndex, functions: list) -> bool:
    """The functions (or functions nested in them) read an EMA-named object the facts do not hold
    (``score_model_ema = ScoreModel(nnet_ema)``, ``self.ema_params``), or save what they do not name
    (``for key, val in self.__dict__.items(): torch.save(val.state_dict(), ...)``): the trace cannot
    prove the EMA is left out, so there is no bug to report."""
    return any(
        EMA_TOKEN.search(c.text) or "__dict__" in c.text or "vars(" in c.text
        for f in functions
        if f is not None
        for c in _calls_within(index, f)
    )


def _registered_for_checkpointing(index: UnitIndex, names: list[str]) -> bool:
    """accelerate: ``register_for_checkpointing(ema)`` or a save/load hook that handles the EMA."""
    hooks = [
        c
        for c in index.calls
        if c.method in {"register_for_checkpointing", "register_save_state_pre_hook", "register_load_state_pre_hook"}
    ]
    hook_functions = [
        f for f in index.functions if any(code_of(a.value).strip() in (f.name,) for c in hooks for a in c.node.args)
    ]
    return (
        any(any(n in c.text for n in names) for c in hooks)
        or any(mentions(index, hook_functions, n) for n in names)
        or _saved_by_name(index, names)
    )


def _saved_by_name(index: UnitIndex, names: list[str]) -> bool:
    """Attributes saved and loaded through their names (ddpm-torch: ``roster = ["model", "optimizer"];
    if self.use_ema: roster.append("ema")`` then ``getattr(self, k).state_dict()`` for each): the
    EMA's attribute name is a string of the unit and state dicts are fetched with ``getattr``."""
    if not any(
        isinstance(c.node.func, cst.Attribute)
        and c.node.func.attr.value in ("state_dict", "load_state_dict")
        and code_of(c.node.func.value).startswith("getattr(")
        for c in index.calls
    ):
        return False
    leaves = {n.split(".", 1)[1] for n in names if n.startswith("self.") and n.count(".") == 1}
    listed = (a.value.elements for a in index.assigns if isinstance(a.value, cst.List))
    strings = [literal(arg.value) for c in index.calls for arg in c.node.args]
    strings += [literal(e.value) for elements in listed for e in elements]
    return any(isinstance(s, str) and s in leaves for s in strings)


class EmaNotSaved(_EmaWithFunctions):
    code = "EMA006"
    severity = Severity.BUG
    title = "EMA saved in checkpoints"
    message = "checkpoints are written without the EMA weights, so the averaged model is lost when training stops"
    explain = """
    The EMA is the model you will sample from; it must be in every checkpoint (`"ema": ema.state_dict()`,
    `ema_model.save_pretrained(...)` in accelerate's save hook, or `accelerator.register_for_checkpointing(ema)`).
    """
    patterns = CHECKPOINT_WRITES
    INVALID = [
        "import copy, torch\n"
        "ema = copy.deepcopy(model)\n"
        "def save(path):\n"
        "    torch.save({'model': model.state_dict()}, path)\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    update_ema(ema, model)\n"
    ]
    VALID = [
        "import copy, torch\n"
        "ema = copy.deepcopy(model)\n"
        "def save(path):\n"
        "    torch.save({'model': model.state_dict(), 'ema': ema.state_dict()}, path)\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    update_ema(ema, model)\n"
    ]

    def handled_elsewhere(self, index: UnitIndex, names: list[str]) -> bool:
        return _registered_for_checkpointing(index, names)


class EmaNotRestored(_EmaWithFunctions):
    code = "EMA007"
    severity = Severity.BUG
    title = "EMA restored on resume"
    message = "resuming loads the model but not the EMA, so the average restarts from the current weights"
    explain = """
    When a run resumes from a checkpoint, load the EMA state too (`ema.load_state_dict(ckpt["ema"])`,
    `EMAModel.from_pretrained` in accelerate's load hook). Otherwise the resumed EMA silently restarts.
    """
    INVALID = [
        "import copy, torch\n"
        "ema = copy.deepcopy(model)\n"
        "def resume(path):\n"
        "    ckpt = torch.load(path)\n"
        "    model.load_state_dict(ckpt['model'])\n"
        "    optimizer.load_state_dict(ckpt['opt'])\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    update_ema(ema, model)\n"
    ]
    VALID = [
        "import copy, torch\n"
        "ema = copy.deepcopy(model)\n"
        "def resume(path):\n"
        "    ckpt = torch.load(path)\n"
        "    model.load_state_dict(ckpt['model'])\n"
        "    optimizer.load_state_dict(ckpt['opt'])\n"
        "    ema.load_state_dict(ckpt['ema'])\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    update_ema(ema, model)\n",
        # Loading pretrained weights is not resuming: no optimizer state comes back.
        "import copy, torch\n"
        "ema = copy.deepcopy(model)\n"
        "model.load_state_dict(torch.load('pretrained.pt'))\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    update_ema(ema, model)\n",
    ]

    def _resumes(self, index: UnitIndex) -> list:
        """Where a run resumes: the optimizer state (or accelerate's whole state) is loaded."""
        resumes = [c for c in index.method_calls("load_state_dict") if has_role(index, c.receiver, "optimizer")]
        return resumes + index.calls_to("*.load_state")

    def applies(self, index: UnitIndex) -> bool:
        return EmaBug.applies(self, index) and bool(self._resumes(index))

    def functions(self, index: UnitIndex) -> list:
        return list(
            dict.fromkeys(
                [*(c.function for c in self._resumes(index)), *calls_in_functions_with(index, CHECKPOINT_READS)]
            )
        )

    def handled_elsewhere(self, index: UnitIndex, names: list[str]) -> bool:
        # improved-diffusion: ``self.ema_params = [self._load_ema_parameters(rate) ...]``
        loaders = [f for f in index.functions if "ema" in f.name.lower() and "load" in f.name.lower()]
        return _registered_for_checkpointing(index, names) or bool(loaders)


def _runs_a_network(index: UnitIndex, function) -> bool:
    """A "sampling" function that calls a network (or another sampler): ``_sample_from_latent(latent)``,
    which only draws ``mean + std * randn``, generates nothing with the weights."""
    return any(
        NETWORK_WORD.search(c.text) or SAMPLING_CALL.search(c.method or c.func_text) or c.method in SAMPLE_LOOPS
        for c in index.calls_in(function)
    )


class EmaNotUsedForSampling(EmaBug):
    code = "EMA008"
    severity = Severity.BUG
    title = "samples drawn with the EMA weights"
    message = "samples are generated with the live weights instead of the EMA, which wastes the EMA's quality gain"
    explain = """
    The point of the EMA is to sample from it: pass the EMA model to the sampler, or swap its weights in
    (`ema.apply_shadow()` / `ema_unet.store(...); ema_unet.copy_to(...)`) and restore them afterwards.
    Sampler primitives that receive the model as a parameter (`p_sample_loop(model, ...)`,
    `log_validation(unet, ...)`) are judged where they are called, not where they are defined.
    """
    INVALID = [
        "import copy, torch\n"
        "ema = copy.deepcopy(model)\n"
        "optimizer = torch.optim.AdamW(model.parameters())\n"
        "def generate_samples(n):\n"
        "    return sampler(model, n)\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    update_ema(ema, model)\n",
        "import copy, torch\n"
        "ema = copy.deepcopy(model)\n"
        "opt = torch.optim.AdamW(model.parameters())\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    opt.step()\n"
        "    update_ema(ema, model)\n"
        "samples = diffusion.p_sample_loop(model.forward_with_cfg, shape)\n",
    ]
    VALID = [
        "import copy\n"
        "ema = copy.deepcopy(model)\n"
        "def generate_samples(n):\n"
        "    return sampler(ema, n)\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    update_ema(ema, model)\n",
        "import copy\n"
        "ema = copy.deepcopy(model)\n"
        "def p_sample_loop(model, shape):\n"
        "    return model(shape)\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    opt.step()\n"
        "    update_ema(ema, model)\n"
        "samples = p_sample_loop(ema, shape)\n",
        "from ema_pytorch import EMA\n"
        "ema = EMA(model)\n"
        "class Diffusion:\n"
        "    def sample(self, n):\n"
        "        return self.model(n)\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    opt.step()\n"
        "    ema.update()\n"
        "images = ema.ema_model.sample(16)\n",
    ]

    def _sites(self, index: UnitIndex) -> list:
        """Sampling functions that use a fixed model, and sampler-loop calls outside them."""
        names = ema_facts(index).names
        pattern = re.compile("|".join(rf"(?<![\w.]){re.escape(n)}(?!\w)" for n in names))
        through_ema = [
            c
            for c in index.calls
            if (SAMPLING_CALL.search(c.method) or c.method in SAMPLE_LOOPS) and pattern.search(c.text)
        ]
        if through_ema:
            return []
        live_calls = _live_sampler_calls(index, names, pattern)
        swapped = [c for c in index.calls if c.method in SWAP_IN and c.receiver in names]
        # ``with self.ema:``, ``with ema.average_parameters():``, LDM's ``with self.ema_scope():``
        in_scope = [
            c for c in index.calls if any(pattern.search(w) or EMA_SCOPE.search(w) for w in _with_texts(index, c))
        ]
        if swapped or in_scope:
            return live_calls
        functions = [
            f
            for f in sampling_functions(index)
            if not any(MODEL_PARAMETER.match(p) for p in f.params)
            and _runs_a_network(index, f)
            and run_by_entry(index, f)  # a sampler factory the entry never calls samples nothing
        ]
        sampler_names = {f.name for f in functions}
        # validation_step -> self.sample(): the callee is where the model is chosen.
        delegating = {
            c.function
            for c in index.calls
            if c.method in sampler_names and c.function is not None and c.function.name != c.method
        }
        live = _live_model(index)
        sites = [
            f
            for f in functions
            if f not in delegating
            and not any(mentions(index, [f], n) for n in names)
            and not reads_an_ema(index, [f])
            and live(f, [c.text for c in _calls_within(index, f)])
        ]
        sites += [
            c
            for c in index.calls
            if c.method in SAMPLE_LOOPS
            and c.function not in functions
            and not (c.function and any(MODEL_PARAMETER.match(p) for p in c.function.params))
            and live(c.function, [c.text])
            and c not in live_calls
        ]
        return live_calls + sites

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and (
            bool(sampling_functions(index))
            or bool(index.method_calls(*SAMPLE_LOOPS))
            or any(is_sampler_call(c) for c in index.calls)
        )

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        # sampling that is part of the objective (reward fine-tuning backpropagates through the sampler:
        # VGen's InstructVideo) trains the live weights; it is no evaluation to draw from the EMA
        # and a sampler call in code the entry never runs, or in a function that loads the weights it samples
        # with from a checkpoint (an inference entrance: the EMA's file or not), proves nothing
        sites = [
            s
            for s in self._sites(index)
            if not _loads_its_weights(index, s.function if isinstance(s, CallSite) else s)
            and not (isinstance(s, CallSite) and (_feeds_the_loss(index, s) or not run_by_entry(index, s.function)))
        ]
        for site in sites[:1]:
            yield Hit.at(site) if isinstance(site, CallSite) else Hit(site.path, site.line, 1)


def _loads_its_weights(index: UnitIndex, function) -> bool:
    """The sampling function reads a checkpoint from disk (``torch.load``, ``load_from_checkpoint``):
    what it samples with is that file's weights (a swap of the EMA into the network and back,
    ``load_state_dict(ema.state_dict())``, is no such read)."""
    return function is not None and any(c.matches(CHECKPOINT_READS) for c in index.calls_in(function))


def _feeds_the_loss(index: UnitIndex, call: CallSite) -> bool:
    """The sampler's output reaches a loss or reward in the same function, directly or through one
    more assignment (``gen = sample_loop(...)``; ``loss = reward(denoised_x0=gen)``)."""
    produced = {a.target for a in index.assigns if a.call is not None and a.call.node is call.node}
    for _ in range(2):
        later = [
            a
            for a in index.assigns
            if a.function is call.function and a.line > call.line and produced & names_in(a.value)
        ]
        if any(LOSS_TARGET.search(a.target) for a in later):
            return True
        produced |= {a.target for a in later}
    return False


LOSS_TARGET = re.compile(r"(^|[._])(loss\w*|\w*_loss|reward\w*)$")


def _live_sampler_calls(index: UnitIndex, names: list[str], ema: re.Pattern) -> list[CallSite]:
    """Sampler calls that run the network the optimizer trains: called on it
    (``accelerator.unwrap_model(model).sample(noise)``) or handed it (``sample_N_images(64, model, ...)``),
    where the network is not a parameter of the calling function, once the EMA exists, and neither
    in an EMA scope nor between a swap of the averaged weights into the network and the swap back
    (a ``finally`` that restores the live weights before the sampler runs swaps nothing)."""
    trained = trained_model(index)
    if trained is None:
        return []
    model = trained.name
    owner = trained.step.function.class_name if trained.step.function else None
    # A class that keeps an EMA of its own (``self.ema_model = deepcopy(model)``) may sample with it
    # inside its sampler (abarankab's ``GaussianDiffusion.sample(..., use_ema=True)``): not provably live.
    keepers = {o.function.class_name for o in ema_facts(index).objects if o.function and o.target.startswith("self.")}
    own_samplers = {f.name for f in index.functions if f.class_name in keepers - {None}}
    found = []
    for call in index.calls:
        function = call.function
        if not is_sampler_call(call) or not SAMPLING_CALL.search(called_name(call)):
            continue  # ``validate(model, loader)`` may measure the live weights on purpose
        if called_name(call) in own_samplers:
            continue
        if model.startswith("self.") and (function is None or function.class_name != owner):
            continue
        if not model.startswith("self.") and function != trained.step.function and not _binds(index, call, model):
            continue  # a parameter or loop variable of that name (``sample_N_images(N, model)``'s own
            # ``model``, imagen's ``for unet in self.unets``) is whatever its caller hands it
        handed = any(dotted(a.value) == model or dotted(a.value).startswith(model + ".") for a in call.node.args)
        if not handed and network_receiver(call, model) is None:
            continue
        if _before_the_ema(index, call) or _inside_swap(index, call, names, model):
            continue
        if any(ema.search(w) or EMA_SCOPE.search(w) for w in _with_texts(index, call)):
            continue
        found.append(call)
    return found


def _binds(index: UnitIndex, call: CallSite, model: str) -> bool:
    """The network's name is assigned in the scope of ``call`` (its function, or the module): there
    it is the network the script built, not a parameter or loop variable that shares its name."""
    name = model.split(".")[0]
    return any(a.target == name and a.function == call.function and a.path == call.path for a in index.assigns)


def _before_the_ema(index: UnitIndex, call: CallSite) -> bool:
    """Every EMA is created later in the function that makes this call (a ``--sampling-only`` branch
    that samples a loaded checkpoint before training builds its EMA)."""
    objects = ema_facts(index).objects
    return bool(objects) and all(
        o.function == call.function and o.path == call.path and o.line > call.line for o in objects
    )


def _inside_swap(index: UnitIndex, call: CallSite, names: list[str], model: str) -> bool:
    """``call`` runs after the averaged weights were swapped into ``model`` (``ema.store(...);
    ema.copy_to(...)``, ``ema.apply_shadow()``, ``model.load_state_dict(ema.module.state_dict())``) and
    before they were swapped back, in the same function."""
    ema = re.compile("|".join(rf"(?<![\w.]){re.escape(n)}(?!\w)" for n in names))
    swapped = False
    earlier = [c for c in index.calls_in(call.function) if c.path == call.path and c.line < call.line]
    for c in sorted(earlier, key=lambda c: (c.line, c.col)):
        loads_model = c.method == "load_state_dict" and c.receiver == model and bool(c.node.args)
        if (c.method in SWAP_IN and c.receiver in names) or (loads_model and ema.search(code_of(c.node.args[0].value))):
            swapped = True
        elif (c.method == "restore" and c.receiver in names) or loads_model:
            swapped = False
    return swapped


def _calls_within(index: UnitIndex, function) -> list[CallSite]:
    """The calls of ``function`` and of the functions nested in it."""
    return [
        c
        for c in index.calls
        if c.function is not None and c.path == function.path and function.line <= c.function.line <= function.end_line
    ]


def _live_model(index: UnitIndex):
    """``live(function, texts)``: the code samples with the network the optimizer trains, spelled as
    the training step spells it (``model``; ``self.model`` within the trainer's own class). A
    sampler that runs ``self.net`` of a diffusion or policy object, or a model handed to it, runs
    weights chosen elsewhere: not proof that sampling skips the EMA."""
    trained = trained_model(index)
    if trained is None:
        return lambda function, texts: False
    pattern = re.compile(rf"(?<![\w.]){re.escape(trained.name)}(?!\w)")
    owner = trained.step.function.class_name if trained.step.function else None

    def live(function, texts: list[str]) -> bool:
        if trained.name.startswith("self.") and (function is None or function.class_name != owner):
            return False
        return any(pattern.search(text) for text in texts)

    return live


EMA_SCOPE = re.compile(
    r"(^|[._])ema_?scope\b|\bema\w*\.(average_parameters|swap|scope)\(|(^|[._])use_ema\w*\b(?!\s*=)", re.I
)


def _with_texts(index: UnitIndex, call: CallSite) -> list[str]:
    """The with-items around ``call``, and for ``with context():`` what ``context`` was assigned in
    that function (imagen: ``context = nullcontext if ... else self.use_ema_unets``)."""
    texts = list(call.with_items)
    for item in call.with_items:
        name = item.removesuffix("()").strip()
        if name.isidentifier():
            texts += [code_of(a.value) for a in assignments_of(index, name, call.function, call.line)]
    return texts


class EmaSwapNotRestoredOnError(EmaBug):
    code = "EMA009"
    severity = Severity.INFO
    title = "live weights restored after EMA sampling, even on error"
    message = (
        "EMA weights are swapped into the model for sampling without a try/finally restore, "
        "so an error while sampling leaves training on the averaged weights"
    )
    explain = """
    `ema.apply_shadow()` (or `store()` + `copy_to()`) replaces the live weights. Put the sampling in
    `try:` and `ema.restore()` in `finally:`; otherwise an exception during sampling (out of memory,
    a bad prompt) continues training from the EMA weights, or a missing restore never swaps back.
    """
    INVALID = [
        "from utils.ema import EMA\n"
        "ema = EMA(model)\n"
        "def generate_samples():\n"
        "    ema.apply_shadow()\n"
        "    out = sample(model)\n"
        "    ema.restore()\n"
        "    return out\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    ema.update()\n",
    ]
    VALID = [
        "from utils.ema import EMA\n"
        "ema = EMA(model)\n"
        "def generate_samples():\n"
        "    ema.apply_shadow()\n"
        "    try:\n"
        "        return sample(model)\n"
        "    finally:\n"
        "        ema.restore()\n"
        "for x in data:\n"
        "    loss(x).backward()\n"
        "    optimizer.step()\n"
        "    ema.update()\n",
    ]

    def applies(self, index: UnitIndex) -> bool:
        return super().applies(index) and bool(self._swaps(index))

    def _swaps(self, index: UnitIndex) -> list[CallSite]:
        names = set(ema_facts(index).names)
        return [c for c in index.calls if c.method in SWAP_IN and c.receiver in names]

    def check(self, index: UnitIndex) -> Iterable[Hit]:
        reported = set()
        for swap in self._swaps(index):
            restores = [
                c for c in index.calls_in(swap.function) if c.method == "restore" and c.receiver == swap.receiver
            ]
            # No restore at all is the end-of-training copy into the model to save it (diffusers).
            if restores and not all(r.in_finally for r in restores) and swap.function not in reported:
                reported.add(swap.function)
                yield Hit.at(swap)
