"""Loading trainer code: files, parse errors, local imports and training units.

A *unit* is one trainer as a user thinks of it: a file that trains (it calls
``backward`` / ``optimizer.step`` or defines ``training_step``) together with
the modules of the same project it imports (config, scheduler, EMA helper,
losses). Rules run once per unit, so a value set in ``config.py`` or a helper
in ``utils/ema.py`` counts for the trainer that imports them, while two
unrelated trainers in one folder are judged separately.
"""

from __future__ import annotations

import ast
import bisect
import io
import json
import os
import re
import tokenize
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import libcst as cst
import tomllib

from optimizer_tool.deep import TOO_DEEP, python_parse
from optimizer_tool.errors import UsageError
from optimizer_tool.findings import Finding, Location, Severity
from optimizer_tool.syntax import NEWLINE

SKIP_DIRS = {
    ".git",
    ".venv",
    "venv",
    "env",
    "__pycache__",
    "node_modules",
    "site-packages",
    ".tox",
    ".mypy_cache",
    "build",
    "dist",
}
# Libraries known by their qualified names (the rules' knowledge), never read as the project's own
# code even when their source sits in the repository (diffusers' examples import src/diffusers).
KNOWN_LIBRARIES = frozenset(
    {
        "torch",
        "torchvision",
        "diffusers",
        "transformers",
        "accelerate",
        "lightning",
        "pytorch_lightning",
        "timm",
        "deepspeed",
        "peft",
        "numpy",
        "lpips",
        "torchmetrics",
        "ema_pytorch",
        "huggingface_hub",
        "safetensors",
    }
)
CONFIG_SUFFIXES = {".yaml", ".yml", ".toml", ".json"}
MANIFESTS = ("requirements*.txt", "requirements/*.txt", "pyproject.toml", "setup.cfg", "setup.py", "environment.y*ml")
INPUT_ERROR_KEY = "input"
DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
QUOTED_DOTTED_NAME = re.compile(r"""['"][A-Za-z_]\w*(\.[A-Za-z_]\w*)+['"]""")
TRAINING_FUNCTIONS = {"training_step", "train_step", "run_step", "forward_backward"}
# Frameworks whose ``trainer.fit(model)`` runs a training step the launching script does not hold.
LAUNCHERS = ("lightning", "pytorch_lightning")
MODEL_CONFIG_GROUPS = {"model", "models"}  # Hydra config groups whose ``_target_`` is the trained model
MAX_CONFIGS = 2000  # YAML files read for model targets (a repository's configs; more is a dataset)
MAX_CONFIG_BYTES = 256 * 1024


@dataclass
class SourceFile:
    """One Python file: its text, and its libcst tree parsed on first use (``check .`` on a
    repository reads every file's imports with the stdlib parser, but only the files of a training
    unit are parsed with libcst, which costs ~20x more)."""

    path: Path
    text: str
    parsed: cst.Module | None = field(default=None, repr=False, compare=False)
    facts: object = field(default=None, repr=False, compare=False)  # index.FileFacts, built on first use
    encoding: str = "utf-8"  # as Python reads the file (PEP 263); "utf-8-sig" where it starts with a BOM

    @property
    def module(self) -> cst.Module:
        """The libcst tree; raises ``cst.ParserSyntaxError`` where only libcst cannot read the file
        (``parse_source`` already refused what Python itself cannot parse)."""
        if self.parsed is None:
            self.parsed = cst.parse_module(self.text)
        return self.parsed

    def libcst_error(self) -> Finding | None:
        """The input error of a file Python parses but libcst cannot, else None."""
        try:
            self.module
        except cst.ParserSyntaxError as exc:
            return input_error(
                self.path, exc.raw_line, exc.raw_column + 1, f"libcst cannot parse this file: {exc.message}", "E999"
            )
        return None

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def tree(self) -> ast.Module | None:
        """The stdlib AST: ~20x cheaper than a libcst walk for imports and quick questions."""
        try:
            return python_parse(self.text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None

    @cached_property
    def imports(self) -> list[ast.Import | ast.ImportFrom]:
        """Every import statement of the file, function-level ones included (only the top-level
        statements whose source mentions ``import`` are walked: a 50,000-line file has a few)."""
        return [
            node
            for statement in self.mentioning("import")
            for node in ast.walk(statement)
            if isinstance(node, (ast.Import, ast.ImportFrom))
        ]

    @cached_property
    def dotted_strings(self) -> list[str]:
        """String constants that are dotted names (``"training.loss.EDMLoss"``: a class named for
        dispatch), from the top-level statements whose source quotes one."""
        return [
            node.value
            for statement in self.mentioning(pattern=QUOTED_DOTTED_NAME)
            for node in ast.walk(statement)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED_NAME.match(node.value)
        ]

    @cached_property
    def discovers_modules(self) -> bool:
        """The module imports modules it finds on disk: ``importlib.import_module`` of a computed name
        next to a walk of its folder (``iterdir``, ``glob``, ``listdir``, ``pkgutil``)."""
        if not re.search(r"\b(iterdir|glob|listdir|walk_packages|iter_modules)\b", self.text):
            return False
        return any(
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and not isinstance(node.args[0], ast.Constant)
            for statement in self.mentioning("import_module")
            for node in ast.walk(statement)
        )

    def mentioning(self, *words: str, pattern: re.Pattern | None = None) -> list[ast.stmt]:
        """The top-level statements whose source mentions one of ``words`` (or matches ``pattern``):
        what is worth walking for them in a large file."""
        pattern = pattern or re.compile("|".join(map(re.escape, words)))
        statements = self.tree.body if self.tree else []
        if "_line_starts" not in self.__dict__:
            self.__dict__["_line_starts"] = [0, *(m.end() for m in NEWLINE.finditer(self.text))]
            self.__dict__["_statement_lines"] = [  # decorators first
                min([s.lineno, *(d.lineno for d in getattr(s, "decorator_list", ()))]) for s in statements
            ]
        starts, firsts = self.__dict__["_line_starts"], self.__dict__["_statement_lines"]
        found: dict[int, ast.stmt] = {}
        for match in pattern.finditer(self.text):
            line = bisect.bisect_right(starts, match.start())  # 1-based line of the match
            at = bisect.bisect_right(firsts, line) - 1  # the last statement starting at or before it
            if at >= 0 and statements[at].end_lineno >= line:
                found[at] = statements[at]
        return [found[i] for i in sorted(found)]

    @cached_property
    def path_roots(self) -> list[Path]:
        """Folders the file puts on ``sys.path`` with a literal (``sys.path.append("./stable_diffusion")``,
        ``sys.path.insert(0, os.path.join(os.path.dirname(__file__), "src"))``): import roots of its
        own, relative to its folder or to the working folder (the repository root, where it runs)."""
        found: list[Path] = []
        for statement in self.mentioning("sys.path"):
            for node in ast.walk(statement):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("append", "insert")
                    and ast.unparse(node.func.value) == "sys.path"
                    and node.args
                ):
                    continue
                literals = [
                    n.value for n in ast.walk(node.args[-1]) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                ]
                if len(literals) == 1 and literals[0].strip("./"):
                    found.append(Path(literals[0]))
        return found

    @cached_property
    def is_script(self) -> bool:
        """The file runs as a program (``if __name__ == "__main__":``): an entry point whose imports
        lead to the trainer (``main.py`` -> ``runners/diffusion.py``)."""
        for node in self.tree.body if self.tree else ():
            if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
                names = [node.test.left, *node.test.comparators]
                if any(isinstance(n, ast.Name) and n.id == "__name__" for n in names):
                    return True
        return False

    @cached_property
    def runs_code(self) -> bool:
        """The module does something when run, beyond defining and importing: a call statement or a
        loop at module level (a training script without a ``__main__`` guard: ``trainer.train()``),
        not a library module's definitions, constants and lazy-import tables."""
        for node in self.tree.body if self.tree else ():
            if isinstance(node, (ast.For, ast.While, ast.With)):
                return True
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                return True
        return False

    @cached_property
    def launches(self) -> bool:
        """The file hands training to a framework: it imports Lightning and calls ``.fit(...)``
        (``trainer.fit(model, data)``), the model built elsewhere (often from a config)."""
        if not any(
            name.split(".")[0] in LAUNCHERS
            for node in self.imports
            for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
        ):
            return False
        return any(
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "fit"
            for statement in self.mentioning(".fit(")
            for node in ast.walk(statement)
        )

    @cached_property
    def instantiates(self) -> tuple[str, ...]:
        """The config keys whose class or function the file builds by the name a config gives:
        ``get_obj_from_str(configs.trainer.target)(configs)`` -> ``trainer``,
        ``instantiate_from_config(config.model)`` -> ``model``, ``hydra.utils.instantiate(cfg.model)``."""
        keys: list[str] = []
        for statement in self.mentioning(pattern=INSTANTIATORS):
            for node in ast.walk(statement):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if not INSTANTIATORS.fullmatch(func):
                    continue
                chain = _key_chain(node.args[0])
                while chain and chain[-1] in ("target", "_target_", "params"):
                    chain.pop()
                if len(chain) >= 2 and chain[-1] not in keys:  # a key of a config object, not a bare name
                    keys.append(chain[-1])
        return tuple(keys)

    @cached_property
    def trains(self) -> bool:
        """The file trains: it calls backward() or defines a training step."""
        for node in (n for statement in self.mentioning("backward", *TRAINING_FUNCTIONS) for n in ast.walk(statement)):
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                if (name == "backward" or name.endswith("_backward")) and not _autograd_kernel(node.func, name):
                    return True
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in TRAINING_FUNCTIONS:
                return True
        return False


# Functions that build the class or function a config names (``target: trainer.TrainerDifIR``).
INSTANTIATORS = re.compile(r"get_obj_from_str|instantiate_from_config|instantiate|get_class_from_str")


def _key_chain(node: ast.expr) -> list[str]:
    """``configs.trainer.target`` -> ``["configs", "trainer", "target"]``; ``cfg["model"]`` too."""
    chain: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(getattr(node.slice, "value", None), str):
            chain.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Name):
            return [node.id, *reversed(chain)]
        else:
            return []


def _autograd_kernel(func: ast.expr, name: str) -> bool:
    """``ctx.save_for_backward(...)``, ``torch.ops.aten.*_backward(...)`` and private kernel
    wrappers (``_wrapped_flash_attn_backward``) belong to custom autograd functions, not to
    training: a library module holding one is no trainer, and treating diffusers'
    attention_dispatch.py as one pulled the whole package into every unit that imports it."""
    if name == "save_for_backward" or name.startswith("_"):
        return True
    chain = []
    while isinstance(func, ast.Attribute):
        chain.append(func.attr)
        func = func.value
    return isinstance(func, ast.Name) and func.id == "torch" and chain[-1:] == ["ops"]


@dataclass
class ConfigFile:
    """A YAML/TOML/JSON config next to a trainer, flattened to dotted keys."""

    path: Path
    values: dict[str, object]
    lines: dict[str, int] = field(default_factory=dict)


@dataclass
class Unit:
    entry: SourceFile
    files: list[SourceFile]
    configs: list[ConfigFile]
    # A launcher's models: the units of the training modules its configs may name (the run's config
    # picks one); the launcher's verdicts are theirs where they agree.
    delegates: list["Unit"] = field(default_factory=list)
    # the number of project files the entry reaches when more than the per-unit budget were (the
    # nearest ones are ``files``); 0 when every reached file was read
    reached: int = 0
    # how the entry picks its config file (optimizer_tool.config_choice.ConfigChoice), None: it names none
    config_choice: object = None
    # a library module checked on its own: the units of the project's scripts that import it (what
    # runs it), and what shows they all train something other than diffusion (None: they do not agree)
    callers: list["Unit"] = field(default_factory=list)
    callers_other_objective: str | None = None

    @cached_property
    def manifests(self) -> dict[Path, str]:
        """The dependency manifests of the trainer's project (what a fix may read about the library
        versions it pins), read on first use: only fixes ask."""
        return dependency_manifests(self.entry.path)


@dataclass
class LoadResult:
    files: dict[Path, SourceFile]
    errors: list[Finding]
    root: Path
    # launcher -> the files of the models its project's configs name (``launches``, ``model_files``)
    delegates: dict[Path, list[Path]] = field(default_factory=dict)
    # file -> the project files defining what it builds by a config's name (``instantiates``)
    named: dict[Path, list[Path]] = field(default_factory=dict)

    def imports(self, source: SourceFile) -> list[Path]:
        """What running ``source`` brings in: its local imports, then the modules its configs name."""
        return [*local_imports(source, self.root), *self.named.get(source.path, [])]


def input_error(path: Path, line: int, col: int, message: str, code: str = "E902") -> Finding:
    return Finding(code, INPUT_ERROR_KEY, Severity.BUG, message, Location(path, line, col), is_error=True)


def discover(paths: list[Path]) -> tuple[list[Path], list[Finding]]:
    """Expand files and folders into Python files, with clear errors for the rest."""
    found: list[Path] = []
    errors: list[Finding] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if path.is_dir():
            py = sorted(p for p in path.rglob("*.py") if not (set(p.relative_to(path).parts[:-1]) & SKIP_DIRS))
            if not py:
                raise UsageError(f"{path}: folder contains no Python files to check")
            found.extend(py)
        elif path.suffix == ".py":
            found.append(path)
        else:
            raise UsageError(f"{path}: not a Python file (expected a .py file or a folder of them)")
    return list(dict.fromkeys(p.resolve() for p in found)), errors


MAX_IMPORTER_SCAN = 3000  # files of a repository searched for the scripts importing a module
MAX_IMPORTERS = 3


def importers(module: Path, root: Path) -> list[Path]:
    """The project's runnable files (a ``__main__`` script, module-level code) that import ``module``:
    what runs a library module checked on its own (DETR's ``main.py`` for ``engine.py``), nearest
    folder first, at most ``MAX_IMPORTERS``. Files are read only where their text names the module."""
    # the module, and the package ``__init__.py`` that re-exports it (ncsnv2's ``from runners import *``
    # with ``runners/__init__.py`` doing ``from runners.ncsn_runner import *``)
    targets = {module}
    init = module.parent / "__init__.py"
    if init != module and init.is_file():
        parsed = parse_source(init.resolve())
        if not isinstance(parsed, Finding) and module in local_imports(parsed, root):
            targets.add(init.resolve())
    names = {t.parent.name if t.name == "__init__.py" else t.stem for t in targets}
    word = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(names)) + r")\b")
    found: list[Path] = []
    candidates = sorted(
        (p for p in root.rglob("*.py") if not (set(p.relative_to(root).parts[:-1]) & SKIP_DIRS)),
        key=lambda p: (len(p.relative_to(root).parts), str(p)),
    )
    for path in candidates[:MAX_IMPORTER_SCAN]:
        path = path.resolve()
        if path in targets:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "import" not in text or not word.search(text):
            continue
        source = parse_source(path, text)
        if isinstance(source, Finding) or not (source.is_script or source.runs_code):
            continue
        if targets & set(local_imports(source, root)):
            found.append(path)
            if len(found) == MAX_IMPORTERS:
                break
    return found


def parse_source(path: Path, text: str | None = None, encoding: str = "utf-8") -> SourceFile | Finding:
    """Parse one file; a problem comes back as an input-error finding, never an exception."""
    if text is None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return input_error(path, 1, 1, f"cannot read file: {exc.strerror}")
        decoded = decode_source(path, raw)
        if isinstance(decoded, Finding):
            return decoded
        text, encoding = decoded
    # Python's own message and position are what users know from their editor; the libcst tree
    # is built when a unit needs it (SourceFile.module).
    try:
        tree = python_parse(text)  # decode_source already dropped a UTF-8 byte-order mark (utf-8-sig)
    except (SyntaxError, ValueError) as py:
        line, col = (py.lineno or 1, py.offset or 1) if isinstance(py, SyntaxError) else (1, 1)
        message = py.msg if isinstance(py, SyntaxError) else str(py)
        return input_error(path, line, col, f"syntax error: {message}; fix it so the file can be checked", code="E999")
    except (RecursionError, MemoryError):
        return input_error(
            path,
            1,
            1,
            f"{TOO_DEEP}: Python itself cannot compile this file (maximum recursion depth exceeded during "
            "compilation); split the deepest expression or if/elif chain",
            code="E999",
        )
    source = SourceFile(path, text, encoding=encoding)
    source.__dict__["tree"] = tree  # the cached_property, filled
    return source


def decode_source(path: Path, raw: bytes) -> tuple[str, str] | Finding:
    """The text of a Python file and its encoding as Python reads it (PEP 263: a UTF-8 byte-order
    mark, a ``coding:`` cookie, else UTF-8); apply writes the file back in the same encoding."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    except SyntaxError as exc:
        return input_error(path, 1, 1, f"{exc.msg}; fix the coding declaration (PEP 263) or re-save the file as UTF-8")
    try:
        return raw.decode(encoding), encoding
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        name = "UTF-8" if encoding.startswith("utf-8") else encoding
        return input_error(path, line, 1, f"not valid {name} (byte {exc.start}); re-save the file as {name}")


def keep_final_newline(before: str, after: str) -> str:
    """libcst prints a file whose lines end in a bare CR without its last one: put it back."""
    ending = next((e for e in ("\r\n", "\r", "\n") if before.endswith(e)), "")
    return after + ending if ending and not after.endswith(("\n", "\r")) else after


def load(paths: list[Path], overrides: dict[Path, str] | None = None, parse_many=None) -> LoadResult:
    """Parse the given files, then the local modules that trainers import (transitively).

    Imports are followed from training files only: library code in a folder under audit
    has nothing for the rules, and following its imports would pull in a whole package.
    ``parse_many(paths, texts)`` parses the given files instead of ``parse_source`` one by one
    (``check --jobs`` does it in worker processes)."""
    targets, errors = discover(paths)
    overrides = overrides or {}
    root = project_root(targets)
    files: dict[Path, SourceFile] = {}

    def parse(path: Path) -> SourceFile | None:
        parsed = parse_source(path, overrides.get(path))
        if isinstance(parsed, Finding):
            errors.append(parsed)
            return None
        files[path] = parsed
        return parsed

    if parse_many is None:
        for path in targets:
            parse(path)
    else:
        for path, parsed in zip(targets, parse_many(targets, [overrides.get(p) for p in targets])):
            if isinstance(parsed, Finding):
                errors.append(parsed)
            else:
                files[path] = parsed
    named = {Path(p).resolve() for p in paths if Path(p).is_file()}
    queue = [source for source in files.values() if source.trains or source.path in named or source.is_script]
    seen = {source.path for source in queue} | {e.location.path for e in errors}  # an error is reported once
    delegates: dict[Path, list[Path]] = {}
    by_name: dict[Path, list[Path]] = {}
    while queue:
        source = queue.pop(0)
        launcher = source.launches and (source.is_script or source.path in named)
        models = model_files(root, tuple(_path_roots(source, root))) if launcher else []
        if models:
            delegates[source.path] = models
        # the class a config names for a script to build and run is code the script runs (ResShift's
        # ``get_obj_from_str(configs.trainer.target)(configs).train()``); a framework's launcher keeps
        # its delegation, and a library module building its parts from config stays as it is
        entry = (source.is_script or source.path in named) and not source.launches
        built = named_targets(root, source, source.instantiates) if entry and source.instantiates else []
        # only a class that trains (a trainer, not the policy or network a workspace builds by name)
        built = [p for p in built if (files.get(p) or parse(p)) is not None and files[p].trains]
        if built:
            by_name[source.path] = built
        for path in [*local_imports(source, root), *models, *built]:
            if path in seen:
                continue
            seen.add(path)
            imported = files.get(path) or parse(path)
            if imported is not None:
                queue.append(imported)
    return LoadResult(files, errors, root, delegates, by_name)


def model_files(root: Path, roots: tuple[Path, ...] = ()) -> list[Path]:
    """The project's files that define the models its YAML configs name for a framework to build:
    ``model.target`` (LDM/taming ``instantiate_from_config``), ``model._target_``, or a top-level
    ``_target_`` of a Hydra ``model/`` config group. Nested targets (a frozen autoencoder inside
    the model's params) are parts, not the trained model. Read with ``yaml.safe_load`` only.
    ``roots``: more import roots (the launcher's ``sys.path`` additions)."""
    return _model_files(root.resolve(), roots)


def named_targets(root: Path, source: SourceFile, keys: tuple[str, ...]) -> list[Path]:
    """The project files defining the classes the YAML configs name under ``keys`` (``trainer:
    target: trainer.TrainerDifIR``) for ``source`` to build by name."""
    return _model_files(root.resolve(), tuple(_path_roots(source, root)), keys, groups=False)


@lru_cache(maxsize=64)
def _model_files(
    root: Path, roots: tuple[Path, ...] = (), keys: tuple[str, ...] = ("model",), groups: bool = True
) -> list[Path]:
    found: list[Path] = []
    for folder, sections, target in _config_targets(root):
        names = [name for key in keys for name in sections.get(key, ())]
        if groups and folder in MODEL_CONFIG_GROUPS and target:
            names.append(target)
        for name in names:
            if DOTTED_NAME.match(name) and name.split(".")[0] not in KNOWN_LIBRARIES:
                module = name.rsplit(".", 1)[0]
                for base in (root, root / "src", *roots):
                    cand = next((c for c in _module_candidates(module, base) if c.is_file()), None)
                    if cand is not None:
                        found.append(cand.resolve())
                        break
    return list(dict.fromkeys(found))


@lru_cache(maxsize=4)
def _config_targets(root: Path) -> tuple[tuple[str, dict[str, tuple[str, ...]], str], ...]:
    """Every YAML config of the project read once (``yaml.safe_load`` only): its folder's name, the
    classes its top-level sections name (``trainer: {target: trainer.TrainerDifIR}`` -> ``{"trainer":
    ("trainer.TrainerDifIR",)}``) and its own ``_target_`` (a Hydra config group's file)."""
    import yaml

    found = []
    for count, path in enumerate(_config_paths(root)):
        if count >= MAX_CONFIGS:
            break
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                continue
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - a broken data file must not stop the audit
            continue
        if not isinstance(data, dict):
            continue
        sections = {
            str(key): tuple(v for k in ("target", "_target_") if isinstance(v := section.get(k), str))
            for key, section in data.items()
            if isinstance(section, dict)
        }
        target = data.get("_target_")
        found.append(
            (path.parent.name, {k: v for k, v in sections.items() if v}, target if isinstance(target, str) else "")
        )
    return tuple(found)


def _config_paths(root: Path) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(names):
            if name.endswith((".yaml", ".yml")):
                yield Path(folder) / name


ROOT_MARKERS = ("pyproject.toml", ".git", "setup.py", "setup.cfg")


def project_root(paths: list[Path]) -> Path:
    """The nearest folder above the inputs holding pyproject.toml, .git, setup.py or setup.cfg (a
    repository's root, where ``scripts/train.py`` imports its package from), else their common folder."""
    start = Path(_common(paths))
    for folder in [start, *start.parents]:
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return start


def _common(paths: list[Path]) -> Path:
    import os

    folders = [str(p if p.is_dir() else p.parent) for p in paths] or [str(Path.cwd())]
    return Path(os.path.commonpath(folders))


def _module_candidates(dotted: str, base: Path) -> list[Path]:
    rel = Path(*dotted.split("."))
    return [base / rel.with_suffix(".py"), base / rel / "__init__.py"]


def _path_roots(source: SourceFile, root: Path) -> list[Path]:
    """The existing folders inside ``root`` that ``source`` adds to ``sys.path``."""
    found = []
    for relative in source.path_roots:
        for base in (source.path.parent, root):
            folder = (base / relative).resolve()
            if folder.is_dir() and root in (folder, *folder.parents) and folder not in found:
                found.append(folder)
    return found


def unresolved_imports(source: SourceFile, root: Path) -> list[str]:
    """Absolute imports of the project's own packages that name no module of it (FiT's ``from
    fit.schedulers.improved_diffusion import create_diffusion`` where the package has
    ``fit/scheduler/``): the code they would bring in is not seen, and the script fails there."""
    missing = []
    for node in source.imports:
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module or "." not in node.module:
            continue
        top = node.module.split(".")[0]
        bases = [b for b in (root, root / "src", source.path.parent) if (b / top).is_dir()]
        if bases and not any(
            candidate.exists() for base in bases for candidate in _module_candidates(node.module, base)
        ):
            missing.append(node.module)
    return missing


def local_imports(source: SourceFile, root: Path) -> list[Path]:
    """Files of this project that ``source`` imports: relative imports, and absolute ones found
    next to the file or under the project root (the plan's ``from utils.ema import EMA``)."""
    here = source.path.parent
    bases = [here, *[p for p in here.parents if root in (p, *p.parents)]]
    if (root / "src").is_dir():
        bases.append(root / "src")  # a src/ layout: the package lives in root/src
    bases += [b for b in _path_roots(source, root) if b not in bases]
    boundary = _package_boundary(source.path, root)
    out: list[Path] = []

    def resolve(dotted: str, level: int, names: list[str]) -> None:
        if level:
            base = here
            for _ in range(level - 1):
                base = base.parent
            search = [base]
        else:
            search = bases
        for base in search:
            for stem in [f"{dotted}.{n}" if dotted else n for n in names] + ([dotted] if dotted else []):
                for cand in _module_candidates(stem, base):
                    if cand.exists() and boundary in cand.resolve().parents:
                        out.append(cand.resolve())
                        # Python runs the __init__.py of every package on the way; one that imports
                        # the modules it finds on disk (CogVideo's finetune/models/__init__.py: every
                        # model's trainer) brings them in. Others are not followed: the siblings they
                        # import are not code this import runs
                        folder = cand.parent
                        while folder != base and base in folder.parents:
                            init = folder / "__init__.py"
                            if cand != init and init.is_file() and _discovering(init):
                                out.append(init.resolve())
                            folder = folder.parent
                        return

    for node in source.imports:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in KNOWN_LIBRARIES:
                    resolve(alias.name, 0, [])
        elif isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").split(".")[0] not in KNOWN_LIBRARIES
        ):
            resolve(node.module or "", node.level, [a.name for a in node.names if a.name != "*"])
    for name in source.dotted_strings:
        # dispatch by name: ``construct_class_by_name(class_name="training.loss.EDMLoss")`` imports
        # training/loss.py as surely as an import statement (the longest module prefix, two parts or more)
        parts = name.split(".")
        if parts[0] not in KNOWN_LIBRARIES:
            for cut in range(len(parts), 1, -1):
                found = len(out)
                resolve(".".join(parts[:cut]), 0, [])
                if len(out) > found:
                    break
    if source.path.name == "__init__.py" and source.discovers_modules:
        out += _discovered(source.path.parent, boundary)
    return [p for p in dict.fromkeys(out) if p != source.path]


def _discovering(init: Path) -> bool:
    """The package ``__init__.py`` imports the modules it finds on disk (read once per version)."""
    return _discovering_at(init, init.stat().st_mtime_ns)


@lru_cache(maxsize=1024)
def _discovering_at(init: Path, _version: int) -> bool:
    try:
        if "import_module" not in init.read_text(encoding="utf-8", errors="replace"):
            return False
    except OSError:
        return False
    parsed = parse_source(init)
    return isinstance(parsed, SourceFile) and parsed.discovers_modules


def _discovered(package: Path, boundary: Path) -> list[Path]:
    """The modules a package's ``__init__.py`` imports by walking its own folder (its sub-packages'
    modules, one level down: ``importlib.import_module(f".{subdir.name}.{stem}", package=__name__)``)."""
    found = []
    for folder in sorted([package, *(d for d in package.iterdir() if d.is_dir() and d.name not in SKIP_DIRS)]):
        if folder.name.startswith((".", "_")) and folder != package:
            continue
        found += [p.resolve() for p in sorted(folder.glob("*.py")) if boundary in p.resolve().parents]
    return found[:MAX_DISCOVERED]


MAX_DISCOVERED = 50  # modules one discovering __init__.py brings in


def package_files(files: Iterable[Path], root: Path) -> list[Path]:
    """The ``__init__.py`` of every package below ``root`` (``root`` included) that ``files`` live in,
    and the project modules those import (``from .version import __version__``), transitively: a copy
    of ``files`` imports as the real packages, not as namespace packages without their ``__init__``."""
    root = root.resolve()
    given = {p.resolve() for p in files}
    found: set[Path] = set()
    queue = deque(given)

    def add(path: Path) -> None:
        if path not in found and path not in given:
            found.add(path)
            queue.append(path)

    while queue:
        path = queue.popleft()
        if path not in given:
            source = parse_source(path)
            for imported in local_imports(source, root) if isinstance(source, SourceFile) else ():
                add(imported)
        for folder in path.parents:
            if folder != root and root not in folder.parents:
                break
            if (folder / "__init__.py").is_file():
                add(folder / "__init__.py")
            if folder == root:
                break
    return sorted(found)


def dependency_manifests(entry: Path) -> dict[Path, str]:
    """``requirements*.txt``, ``pyproject.toml``, ``setup.cfg``, ``setup.py`` and ``environment.yml``
    in the trainer's folder and the folders above it up to its project root, nearest first;
    unreadable ones are skipped."""
    root = project_root([entry])
    found: dict[Path, str] = {}
    for folder in [entry.parent, *entry.parent.parents]:
        for pattern in MANIFESTS:
            for path in sorted(folder.glob(pattern)):
                try:
                    found[path] = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
        if folder == root or root not in folder.parents:
            break
    return found


def _package_boundary(path: Path, root: Path) -> Path:
    """The folder that imports from ``path`` may resolve into: the project root, or for a file of
    an installed package (under site-packages, a virtual environment...) that package's folder.
    Without it, ``import torch`` in a site-packages module inside the project's .venv would pull
    in the whole of torch as "local" code."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return root
    skipped = [i for i, part in enumerate(parts[:-1]) if part in SKIP_DIRS]
    return root.joinpath(*parts[: skipped[-1] + 2]) if skipped else root


def load_configs(folder: Path) -> list[ConfigFile]:
    """Config files beside a trainer and in its ``configs/`` folder; unreadable ones are skipped
    (they are data, not code under audit)."""
    out: list[ConfigFile] = []
    for cand in sorted([*folder.glob("*"), *folder.glob("configs/*"), *folder.glob("config/*")]):
        if cand.suffix not in CONFIG_SUFFIXES or cand.name in {"pyproject.toml"} or not cand.is_file():
            continue
        config = read_config(cand)
        if config is not None:
            out.append(config)
    return out


def read_config(path: Path) -> ConfigFile | None:
    """One YAML/TOML/JSON config flattened to dotted keys; None when it does not parse to a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - a broken data file must not stop the audit
        return None
    if not isinstance(data, dict):
        return None
    flat = _flatten(data)
    return ConfigFile(path, flat, _key_lines(text, flat))


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _key_lines(text: str, flat: dict[str, object]) -> dict[str, int]:
    lines = text.splitlines()
    result: dict[str, int] = {}
    for key in flat:
        leaf = key.rsplit(".", 1)[-1]
        for number, line in enumerate(lines, 1):
            stripped = line.lstrip().lstrip('"')
            if stripped.startswith(leaf) and stripped[len(leaf) :].lstrip('"').lstrip()[:1] in {":", "="}:
                result[key] = number
                break
    return result
