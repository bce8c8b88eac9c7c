"""Whether the code under a condition runs with the trainer's defaults: ``if args.use_ema:``,
``if cfg.ema_decay is not None:``, ``if self.use_ema and step > 0:`` evaluated against the argparse,
dataclass, constructor and config defaults the index found. Unknown whenever a name has no single
known default: the caller then says nothing rather than guess."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from optimizer_tool.index import UNKNOWN, Setting, UnitIndex, code_of
from optimizer_tool.knowledge.configured import default_runs

# Settings that state a default (a call site's keyword says what one caller passes, not the default).
DEFAULT_KINDS = ("argparse", "class-default", "config-file", "param-default", "getattr-default", "dict")
# the defaults dict openai-style scripts turn into flags (``defaults = dict(lr=1e-4, ...)``,
# ``add_dict_to_argparser(parser, defaults)``): its keywords are the flags' defaults
DEFAULTS_DICT = ("dict", "builtins.dict")


NOT_NONE = ("exists", "is_not_none", "not_none", "notnone", "is_exist")


@dataclass(frozen=True)
class Switch:
    """A condition that is false by default, and the setting whose default makes it so."""

    condition: str
    setting: Setting

    def describe(self) -> str:
        where = f"{self.setting.path.name}:{self.setting.line}"
        return f"`{self.condition}` is false by default ({self.setting.name} = {self.setting.value!r} at {where})"


def default_of(index: UnitIndex, name: str) -> tuple[object, Setting | None]:
    """The one known default of setting ``name`` (UNKNOWN when absent or when defaults disagree)."""
    settings = [
        s
        for s in index.setting(name)
        if (s.kind in DEFAULT_KINDS or (s.kind == "kwarg" and s.owner in DEFAULTS_DICT))
        and s.known
        and default_runs(index, s)
    ]
    # ``--ema_decay 0`` and a YAML's ``ema_decay: 0.0`` agree (e3_diffusion_for_molecules)
    values = {
        float(s.value) if isinstance(s.value, (int, float)) and not isinstance(s.value, bool) else repr(s.value)
        for s in settings
    }
    if len(values) != 1:
        return UNKNOWN, None
    return settings[0].value, settings[0]


def _leaf(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value  # cfg["use_ema"]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
    ):
        return node.args[1].value
    return None


def _evaluate(index: UnitIndex, node: ast.expr, depth: int = 0) -> tuple[object, Setting | None]:
    """(value, the setting it came from) of a condition; UNKNOWN when not decidable."""
    if isinstance(node, ast.Constant):
        return node.value, None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        value, setting = _evaluate(index, node.operand, depth)
        return (UNKNOWN if value is UNKNOWN else not value), setting
    if isinstance(node, ast.BoolOp):
        return _bool_op(index, node, depth)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        return _compare(index, node, depth)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1:
        value, setting = _evaluate(index, node.args[0], depth)
        if value is UNKNOWN:
            return UNKNOWN, None
        if node.func.id in NOT_NONE:  # lucidrains' ``exists(self.max_grad_norm)``
            return value is not None, setting
        if node.func.id == "bool":
            return bool(value), setting
    name = _leaf(node)
    if name is None:
        return UNKNOWN, None
    found = default_of(index, name)
    if found[0] is UNKNOWN and isinstance(node, ast.Name) and depth < 3:
        return _local_flag(index, node.id, depth)
    return found


def _local_flag(index: UnitIndex, name: str, depth: int) -> tuple[object, Setting | None]:
    """A local flag the unit sets once from settings: EveryDream2's ``use_ema_dacay_training =
    (args.ema_decay_rate != None) or (args.ema_strength_target != None)``, then ``if
    use_ema_dacay_training:`` around the EMA."""
    assigns = index.assigns_to(name)
    if len(assigns) != 1:
        return UNKNOWN, None
    try:
        value = ast.parse(code_of(assigns[0].value).strip(), mode="eval").body
    except SyntaxError:
        return UNKNOWN, None
    if not isinstance(value, (ast.BoolOp, ast.Compare, ast.UnaryOp)):
        return UNKNOWN, None  # a flag computed by a call or copied from elsewhere: not followed
    return _evaluate(index, value, depth + 1)


def _bool_op(index: UnitIndex, node: ast.BoolOp, depth: int = 0) -> tuple[object, Setting | None]:
    results = [_evaluate(index, v, depth) for v in node.values]
    if isinstance(node.op, ast.And):
        falsy = next(((v, s) for v, s in results if v is not UNKNOWN and not v), None)
        if falsy is not None:
            return False, falsy[1]
    else:
        truthy = next(((v, s) for v, s in results if v is not UNKNOWN and v), None)
        if truthy is not None:
            return True, truthy[1]
    if any(v is UNKNOWN for v, _ in results):
        return UNKNOWN, None
    return (all(v for v, _ in results) if isinstance(node.op, ast.And) else any(v for v, _ in results)), next(
        (s for _, s in results if s is not None), None
    )


def _compare(index: UnitIndex, node: ast.Compare, depth: int = 0) -> tuple[object, Setting | None]:
    left, setting = _evaluate(index, node.left, depth)
    right, other = _evaluate(index, node.comparators[0], depth)
    if left is UNKNOWN or right is UNKNOWN or (setting is None and other is None):
        return UNKNOWN, None
    op = node.ops[0]
    try:
        if isinstance(op, ast.Is):
            result = left is right
        elif isinstance(op, ast.IsNot):
            result = left is not right
        elif isinstance(op, ast.Eq):
            result = left == right
        elif isinstance(op, ast.NotEq):
            result = left != right
        elif isinstance(op, ast.Gt):
            result = left > right
        elif isinstance(op, ast.GtE):
            result = left >= right
        elif isinstance(op, ast.Lt):
            result = left < right
        elif isinstance(op, ast.LtE):
            result = left <= right
        else:
            return UNKNOWN, None
    except TypeError:  # None > 0
        return UNKNOWN, None
    return result, setting or other


def switched_off(index: UnitIndex, guards: tuple[str, ...]) -> Switch | None:
    """The first of ``guards`` (enclosing conditions, outermost first) that is false with the
    trainer's defaults, or None when every one is true or undecidable."""
    for guard, node in _parsed(guards):
        value, setting = _evaluate(index, node)
        if value is not UNKNOWN and not value and setting is not None and not PROCESS_ROLE.match(setting.name):
            return Switch(guard, setting)
    return None


def holding(index: UnitIndex, guards: tuple[str, ...]) -> tuple[bool, Setting | None]:
    """Whether every one of ``guards`` is true with the trainer's defaults (CSDI's ``if
    config_diff["schedule"] == "quad":`` with ``schedule: "quad"`` in the config it reads by default),
    and the setting whose default makes them so (``schedule="linear"`` of the defaults dict for the
    ``else`` of ``if args.schedule == "cosine":``), evaluated once."""
    parsed = list(_parsed(guards))
    results = [_evaluate(index, node) for _, node in parsed]
    if len(parsed) != len(guards) or not all(v is not UNKNOWN and bool(v) for v, _ in results):
        return False, None
    return True, next((s for _, s in results if s is not None), None)


# Which process runs the code, not whether a feature is on: ``if local_rank == 0:`` around the EMA of
# a torchrun trainer whose --local_rank defaults to -1 (ddae) is the main process's job, not a switch.
PROCESS_ROLE = re.compile(r"^(local_?rank|global_?rank|rank|node_?rank|process_?index|is_main_process|is_master\w*)$")


def _parsed(guards: tuple[str, ...]):
    """(condition, its expression) for each guard that parses."""
    for guard in guards:
        try:
            yield guard.strip(), ast.parse(guard.strip(), mode="eval").body
        except SyntaxError:
            continue


CONFIG_OBJECT = re.compile(r"(^|[._])(cfg|conf|config|configs|opt|opts|hparams|hps)($|[._\[])", re.I)
# calls that return a config file's contents
CONFIG_LOADS = (
    "omegaconf.OmegaConf.load",
    "omegaconf.OmegaConf.merge",
    "yaml.load",
    "yaml.safe_load",
    "yaml.full_load",
    "json.load",
    "*.Config.fromfile",
    "*.load_config",
    "*.read_config",
)


def reads_config(index: UnitIndex, expression: str) -> bool:
    """``expression`` reads a config object: by its name (``cfg.lr_scheduler``) or because its root
    is what a config loader returned (x-flux's ``args = OmegaConf.load(parse_args())``)."""
    if CONFIG_OBJECT.search(expression):
        return True
    root = re.match(r"\w+", expression)
    if root is None:
        return False
    return any(a.call is not None and a.call.matches(CONFIG_LOADS) for a in index.assigns_to(root.group(0)))


def _tested_key(node: ast.expr) -> str | None:
    """``"key" in mapping``, ``hasattr(section, "key")`` or ``section.get("key")`` (a config section
    tested for a key), also as one operand of an ``and`` (``self.rank == 0 and
    hasattr(self.configs.train, 'ema_rate')``, ResShift): the key."""
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return next((key for value in node.values if (key := _tested_key(value)) is not None), None)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "hasattr"
        and len(node.args) == 2
        and CONFIG_OBJECT.search(ast.unparse(node.args[0]))  # a config section, not a model's method
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return node.args[1].value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and CONFIG_OBJECT.search(ast.unparse(node.func.value))
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value  # ``if cfg.training.get("grad_clip"):`` (mochi), no default given
    if (
        isinstance(node, ast.Compare)
        and isinstance(node.left, ast.Constant)
        and isinstance(node.left.value, str)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.In)
    ):
        return node.left.value
    return None


def chosen_at_run_time(index: UnitIndex, guards: tuple[str, ...]) -> tuple[str, Setting, list] | None:
    """The first of ``guards`` that reads a key only config files set, and more than one of them
    (``if self.config.model.ema:`` with ``configs/cifar10.yml``, ``configs/celeba.yml``...): the
    config is picked on the command line, so the code path is decided there, not by a default.
    Returns (condition, one of the settings, the config files that set it). Where the run names its
    config file, a key the guard tests for (``'max_grad_norm' in cfg['optimizer']``) is its too."""
    choice = index.unit.config_choice
    at_run_time = choice is not None and choice.at_run_time
    for guard, node in _parsed(guards):
        key = _tested_key(node)
        if at_run_time and key is not None:
            # ``if 'max_grad_norm' in config['optimizer']:``: whether the named config has the key
            return guard, Setting(key, UNKNOWN, "config-file", index.entry.path, 1, 1), []
        for part in ast.walk(node):
            name = _leaf(part) if isinstance(part, ast.expr) else None
            if name is None:
                continue
            settings = [s for s in index.setting(name) if s.kind in DEFAULT_KINDS]
            files = sorted({s.path for s in settings})
            # one shipped config is one the run may name, where the run names its config (MotionLCM's
            # required --cfg: ``if cfg.TRAIN.model_ema:``, false in the one YAML that sets it)
            if settings and (len(files) > 1 or at_run_time) and all(s.kind == "config-file" for s in settings):
                return guard, settings[0], files
    return None
