"""Which config file a training entry reads when it runs with its defaults.

A script that takes ``--config configs/train.yaml`` is judged by that file, not by every YAML
beside it; a script whose config must be named on the command line (``--config`` without a
default, a positional ``config``, Lightning's ``--base`` list, a default file that is not in the
repository) leaves every value its configs set to the run: the verdicts that rest on them say
``decided-elsewhere`` and name the choice.

Read from the entry file's own syntax: argparse ``add_argument``, click ``@click.option``, absl/ml_collections
``DEFINE_string``/``DEFINE_config_file``, Hydra's ``@hydra.main(config_path=, config_name=)`` and a
literal ``OmegaConf.load("...")``/``yaml.safe_load(open("..."))``. A config's Hydra ``defaults``
list pulls in the files it names.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, replace
from pathlib import Path

from optimizer_tool.project import CONFIG_SUFFIXES, ConfigFile, SourceFile, read_config

# the flags that name a config file (``--config``, ``--cfg``, ``-c/--config_file``, LDM's ``--base``);
# any other flag counts only with a config file as its default (``--unet_config_path configs/unet.yaml``)
CONFIG_FLAG = re.compile(
    r"^(config|configs|cfg|cfgs|conf|config_?file|config_?files|config_?path|config_?paths|cfg_?file|cfg_?path|"
    r"cfg_?dir|config_?dir|base)$",
    re.I,
)
NAMED_CONFIG_FLAG = re.compile(r"config|cfg|conf|yaml|opt", re.I)
FILE_LOADERS = re.compile(r"(^|\.)(load|safe_load|full_load|fromfile|from_file|read_config|load_config|open)$")
NUMERIC_TYPES = ("float", "int", "bool")
CONFIG_FOLDERS = ("config", "configs", "cfg", "cfgs", "conf")
# configs of other jobs beside the training ones (Latte's ``configs/t2x/t2v_sample.yaml``)
NOT_TRAINING = re.compile(r"sampl|infer|eval|test|demo|generat", re.I)


@dataclass(frozen=True)
class ConfigChoice:
    """How the entry picks its config: ``default`` is the file it reads by default (in the
    repository), None when the run names it (``written``: the default as written, when that file
    is missing)."""

    how: str  # "--config", "config (positional)", "@hydra.main", "OmegaConf.load"
    path: Path  # the entry
    line: int
    default: Path | None = None
    written: str | None = None
    others: tuple[Path, ...] = ()  # further config files other flags read by default

    @property
    def at_run_time(self) -> bool:
        return self.default is None

    def describe(self) -> str:
        where = f"{self.path.name}:{self.line}"
        if self.default is not None:
            return f"{self.how} reads {self.default.name} by default ({where})"
        if self.written:
            return f"{self.how} defaults to {self.written!r}, which is not in the repository ({where})"
        return f"{self.how} has no default: the config is named on the command line ({where})"


def config_choice(entry: SourceFile, root: Path, imported: list[SourceFile] = ()) -> ConfigChoice | None:
    """The entry's config choice, or None where it names no config file (its configs beside it
    then count as they are). The parser may live in a module the entry imports (VGen's
    ``utils/config.py``); one config named at run time makes the whole choice the run's; several
    config flags with default files read them all."""
    for source in (entry, *imported):
        found = _choices(source, root)
        if found:
            run_time = [c for c in found if c.at_run_time]
            if run_time:
                return min(run_time, key=lambda c: c.line)
            first, *others = sorted(found, key=lambda c: c.line)
            return replace(first, others=tuple(c.default for c in others if c.default is not None))
    return _handed_config(entry)


def _handed_config(entry: SourceFile) -> ConfigChoice | None:
    """A trainer module that loads the config file its caller names: ``def train_stage2(cfg_file,
    ckpt): cfg = load_config(cfg_file)`` (Sign-D2C, run from ``__main__.py`` with a positional
    config), the parameter without a default. Not a loader helper itself (``def load_config(path)``)."""
    tree = entry.tree
    for node in ast.walk(tree) if tree is not None else ():
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or FILE_LOADERS.search(node.name):
            continue
        args = node.args
        required = [a.arg for a in (*args.posonlyargs, *args.args)][
            : len(args.posonlyargs) + len(args.args) - len(args.defaults)
        ]
        calls = [c for c in ast.walk(node) if isinstance(c, ast.Call) and c.args]
        loads = [c for c in calls if CONFIG_LOADER.search(ast.unparse(c.func))]
        # ``load_config(cfg_file)``, or ``yaml.safe_load(f)`` of ``with open(cfg_file) as f``
        opened = [c for c in calls if ast.unparse(c.func) == "open"] if loads else []
        for call in [*loads, *opened]:
            first = call.args[0]
            if isinstance(first, ast.Name) and first.id in required:
                return ConfigChoice(f"{first.id} (parameter of {node.name})", entry.path, call.lineno)
    return None


CONFIG_LOADER = re.compile(
    r"(yaml|omegaconf|config)\w*\.(load|safe_load|full_load|fromfile|from_file)$|(^|\.)(load|read)_config$", re.I
)


def _choices(source: SourceFile, root: Path) -> list[ConfigChoice]:
    """The config choices the file declares, computed once per file version and root (``check .``
    asks again for every entry that imports the module holding the parser)."""
    cache = source.__dict__.setdefault("_config_choices", {})
    if root not in cache:
        tree = source.tree
        nodes = ast.walk(tree) if tree is not None else ()
        cache[root] = [c for node in nodes if (c := _choice(node, source.path, root)) is not None]
    return cache[root]


def chosen_configs(choice: ConfigChoice, beside: list[ConfigFile], root: Path) -> list[ConfigFile]:
    """The configs a unit reads: the default file and the files its Hydra ``defaults`` list names;
    when the config is chosen at run time, those the run may pick: ``beside`` and the configs in
    the folder of a missing default and its sub-folders (``configs/unet.yaml`` missing, the
    shipped ones in ``configs/unet/``)."""
    if choice.default is None:
        # the folder of the missing default, else the repository's configs/ (LDM-style ``--base``)
        folder = (root / choice.written).parent if choice.written else root / "configs"
        known = {c.path for c in beside}
        shipped = sorted(
            p
            for p in [*folder.glob("*"), *folder.glob("*/*")]
            if p.suffix in CONFIG_SUFFIXES and not NOT_TRAINING.search(p.stem)
        )
        more = [c for p in shipped if p.resolve() not in known and (c := read_config(p.resolve())) is not None]
        return beside + more
    out: list[ConfigFile] = []
    todo, seen = [choice.default, *choice.others], set()
    while todo:
        path = todo.pop(0)
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        config = read_config(path)
        if config is None:
            continue
        out.append(config)
        todo += _hydra_defaults(config)
    return out


def _hydra_defaults(config: ConfigFile) -> list[Path]:
    """``defaults: [base, {model: unet}, _self_]``: base.yaml beside it, model/unet.yaml below it."""
    entries = config.values.get("defaults")
    if not isinstance(entries, list):
        return []
    folder, suffix = config.path.parent, config.path.suffix
    found = []
    for item in entries:
        if isinstance(item, str) and item != "_self_":
            found.append(folder / f"{item.lstrip('/')}{suffix}")
        elif isinstance(item, dict):
            for group, name in item.items():
                if isinstance(group, str) and isinstance(name, str) and not group.startswith("override "):
                    found.append(folder / group.lstrip("/") / f"{name}{suffix}")
    return found


def _choice(node: ast.AST, entry: Path, root: Path) -> ConfigChoice | None:
    if isinstance(node, ast.Call):
        name = ast.unparse(node.func)
        if name.endswith("add_argument"):
            return _argparse(node, entry, root)
        if name.endswith(("DEFINE_string", "DEFINE_config_file")) and node.args:
            flag = _constant(node.args[0])
            default = node.args[1] if len(node.args) > 1 else _keyword(node, "default")
            if isinstance(flag, str) and CONFIG_FLAG.match(flag):
                return _from_default(f"--{flag}", _constant(default), node, entry, root)
        if FILE_LOADERS.search(name) and node.args and ("yaml" in name or "OmegaConf" in name or "Config" in name):
            first = node.args[0]
            if isinstance(first, ast.Call) and ast.unparse(first.func) == "open" and first.args:
                first = first.args[0]  # ``yaml.safe_load(open("configs/train.yaml"))``
            written = _constant(first)
            if isinstance(written, str) and Path(written).suffix in CONFIG_SUFFIXES:
                return _from_default(name, written, node, entry, root)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("click.option"):
                found = _click(decorator, entry, root)
                if found is not None:
                    return found
                continue
            if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("hydra.main"):
                folder = _constant(_keyword(decorator, "config_path"))
                name = _constant(_keyword(decorator, "config_name"))
                if not isinstance(name, str):
                    return ConfigChoice("@hydra.main", entry, decorator.lineno)
                written = f"{folder.rstrip('/')}/{name}" if isinstance(folder, str) else name
                written += "" if Path(written).suffix else ".yaml"
                return _from_default("@hydra.main", written, decorator, entry, root)
    return None


def _click(node: ast.Call, entry: Path, root: Path) -> ConfigChoice | None:
    """``@click.option("--config-path", type=click.Path(exists=True), required=True)`` (mochi's fine-tuner)."""
    flags = [f for a in node.args if isinstance(f := _constant(a), str) and f.startswith("-")]
    longest = max(flags, key=len, default="")
    if not CONFIG_FLAG.match(longest.lstrip("-").replace("-", "_")):
        return None
    default = _keyword(node, "default")
    return _from_default(longest, _constant(default) if default is not None else None, node, entry, root)


def _argparse(node: ast.Call, entry: Path, root: Path) -> ConfigChoice | None:
    flags = [f for a in node.args if isinstance(f := _constant(a), str)]
    if not flags:
        return None
    longest = max(flags, key=len)
    dest = _constant(_keyword(node, "dest")) or longest
    if not isinstance(dest, str):
        return None
    dest = dest.lstrip("-").replace("-", "_")
    if not CONFIG_FLAG.match(dest):
        written = _constant(_keyword(node, "default"))
        if NAMED_CONFIG_FLAG.search(dest) and isinstance(written, str) and Path(written).suffix in CONFIG_SUFFIXES:
            return _from_default(longest, written, node, entry, root)
        return None
    kind = _keyword(node, "type")
    if isinstance(kind, ast.Name) and kind.id in NUMERIC_TYPES:
        return None  # ``--cfg 4.0``: a guidance scale, not a file
    action = _constant(_keyword(node, "action"))
    if isinstance(action, str) and action.startswith("store_"):
        return None
    how = longest if longest.startswith("-") else f"{longest} (positional)"
    default = _keyword(node, "default")
    return _from_default(how, _constant(default) if default is not None else None, node, entry, root)


def _from_default(how: str, written: object, node: ast.AST, entry: Path, root: Path) -> ConfigChoice | None:
    line = getattr(node, "lineno", 1)
    if written is None or written == [] or written == "":
        return ConfigChoice(how, entry, line)
    if isinstance(written, list) and all(isinstance(w, str) for w in written) and len(written) == 1:
        written = written[0]
    if not isinstance(written, str) or Path(written).suffix not in CONFIG_SUFFIXES | {".py"}:
        return None  # a default that names no config file: not a config flag after all
    # beside the repository or the script, else in its config folder: CSDI's ``--config base.yaml`` read
    # as ``"config/" + args.config``
    bare = [] if "/" in written else [root / d / written for d in CONFIG_FOLDERS]
    for candidate in [(base / written).resolve() for base in (root, entry.parent)] + bare:
        if candidate.is_file():
            # an mmcv-style ``.py`` config is code, not read as a config file: nothing to narrow
            return ConfigChoice(how, entry, line, default=candidate) if candidate.suffix != ".py" else None
    return ConfigChoice(how, entry, line, written=written)


def _keyword(node: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def _constant(node: ast.AST | None) -> object:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return None
