"""Load the apply cases under ``tests/apply/cases/`` (the format is in ``test_fix_cases.py``).

A case side is either stored as files or made at load time: ``in.toml`` names the tree the input
starts from (``reference_trainer``, a fixture, a file, another case) and a patch to apply to it;
``out.patch`` is the expected change, a unified diff against the input. Patches are applied
strictly (every hunk at the line it names, its context and removed lines exactly as they are), so
a case whose source has moved on fails loudly, naming the case, instead of going stale.

    python tests/apply/casefiles.py show KEY/NAME DIR      # write a case's input to DIR/in, its output to DIR/out
    python tests/apply/casefiles.py rediff KEY/NAME DIR    # rewrite the case's input patch so that it makes DIR
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
CASES_DIR = Path(__file__).resolve().parent / "cases"
RECIPE_KEYS = {"from", "files", "patch"}
_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_NO_EOL = "\\ No newline at end of file\n"


class CaseError(Exception):
    """A case that cannot be made: a patch that no longer applies, a missing source, a bad recipe."""


@dataclass(frozen=True)
class Case:
    key: str
    name: str
    inputs: dict[str, str]  # relative path -> source
    expected: dict[str, str] | None  # relative path -> source of the changed files; None: must refuse
    refusal: str = ""
    out_path: Path | None = None  # where the expected output is stored: out/, <name>.out.py or a .patch

    @property
    def id(self) -> str:
        return f"{self.key}/{self.name}"


def read_tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def write_tree(files: dict[str, str], folder: Path) -> Path:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def _lines(text: str) -> list[str]:
    """Lines with their ``\\n`` (only ``\\n`` ends a line, unlike ``str.splitlines``)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def make_patch(old: dict[str, str], new: dict[str, str]) -> str:
    """A unified diff (3 lines of context) that turns the files ``old`` into ``new``."""
    out = []
    for rel in sorted(old.keys() | new.keys()):
        a, b = old.get(rel), new.get(rel)
        if a == b:
            continue
        if not a and not b:
            raise CaseError(f"{rel}: a patch cannot create or delete an empty file")
        names = ("/dev/null" if a is None else f"a/{rel}", "/dev/null" if b is None else f"b/{rel}")
        for line in difflib.unified_diff(_lines(a or ""), _lines(b or ""), *names):
            out.append(line if line.endswith("\n") else line + "\n" + _NO_EOL)
    return "".join(out)


def apply_patch(files: dict[str, str], patch: str, where: str) -> dict[str, str]:
    """``files`` with ``patch`` applied. Text before the first ``---`` line is a free description."""
    result = dict(files)
    lines = _lines(patch)
    i = next((n for n, line in enumerate(lines) if line.startswith("--- ")), len(lines))
    done: set[str] = set()
    while i < len(lines):
        if i + 1 >= len(lines) or not lines[i].startswith("--- ") or not lines[i + 1].startswith("+++ "):
            raise CaseError(f"{where}: line {i + 1}: expected a '--- a/PATH' and '+++ b/PATH' header")
        old_name, new_name = lines[i][4:].rstrip("\n").split("\t")[0], lines[i + 1][4:].rstrip("\n").split("\t")[0]
        rel = (new_name if new_name != "/dev/null" else old_name)[2:]
        if (old_name, new_name) not in ((f"a/{rel}", f"b/{rel}"), ("/dev/null", f"b/{rel}"), (f"a/{rel}", "/dev/null")):
            raise CaseError(f"{where}: line {i + 1}: a patch may not rename ({old_name} -> {new_name})")
        if rel in done:
            raise CaseError(f"{where}: {rel} is patched twice")
        done.add(rel)
        if (old_name == "/dev/null") == (rel in result):
            raise CaseError(f"{where}: {rel}: " + ("already exists" if rel in result else "no such file to patch"))
        src, out, pos = _lines(result.get(rel, "")), [], 0
        i += 2
        if i >= len(lines) or not lines[i].startswith("@@"):
            raise CaseError(f"{where}: {rel}: no hunk")
        while i < len(lines) and lines[i].startswith("@@"):
            m = _HUNK.match(lines[i])
            if not m:
                raise CaseError(f"{where}: line {i + 1}: bad hunk header {lines[i]!r}")
            header = lines[i].rstrip("\n")
            old_start, old_len, new_start, new_len = (int(g) if g is not None else 1 for g in m.groups())
            old, new, i = _hunk_body(lines, i + 1, old_len, new_len, f"{where}: {rel}: {header}")
            start = old_start if old_len == 0 else old_start - 1
            if start < pos or src[start : start + old_len] != old:
                found = "".join(src[start : start + old_len])
                raise CaseError(
                    f"{where}: {rel}: hunk {header} does not apply: the source changed since the case was written, "
                    f"update the case (see `casefiles.py rediff`)\n--- at line {old_start} the hunk wants:\n"
                    f"{''.join(old)}--- the source has:\n{found}"
                )
            out += src[pos:start]
            if new_start != len(out) + (1 if new_len else 0):
                raise CaseError(f"{where}: {rel}: hunk {header}: the new line number does not add up")
            out += new
            pos = start + old_len
        out += src[pos:]
        if new_name == "/dev/null":
            if out:
                raise CaseError(f"{where}: {rel}: a deleting patch must remove every line")
            del result[rel]
        else:
            result[rel] = "".join(out)
    return result


def _hunk_body(lines: list[str], i: int, old_len: int, new_len: int, where: str):
    old: list[str] = []
    new: list[str] = []
    last: list[list[str]] = []
    while len(old) < old_len or len(new) < new_len or (i < len(lines) and lines[i] == _NO_EOL):
        if i >= len(lines):
            raise CaseError(f"{where}: the hunk is cut short")
        line = lines[i]
        tag, body = line[0], line[1:]
        if line == "\n":  # an empty context line whose space an editor removed
            body = line
        if line == _NO_EOL:
            for side in last:
                side[-1] = side[-1].removesuffix("\n")
        elif tag in " \n":
            old.append(body)
            new.append(body)
            last = [old, new]
        elif tag == "-":
            old.append(body)
            last = [old]
        elif tag == "+":
            new.append(body)
            last = [new]
        else:
            raise CaseError(f"{where}: line {i + 1}: not a hunk line: {line!r}")
        i += 1
    if len(old) != old_len or len(new) != new_len:
        raise CaseError(f"{where}: the hunk has more lines than its header says")
    return old, new, i


class _Loader:
    def __init__(self, cases_dir: Path, stale_out_ok: bool = False) -> None:
        self.cases_dir = cases_dir
        self.stale_out_ok = stale_out_ok
        self.cases: dict[str, Case] = {}
        self.loading: list[str] = []
        self.read: set[Path] = set()

    def _text(self, path: Path) -> str:
        self.read.add(path)
        return path.read_text(encoding="utf-8")

    def _tree(self, folder: Path) -> dict[str, str]:
        self.read.update(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        return read_tree(folder)

    def names(self) -> list[tuple[str, str]]:
        found = []
        for key_dir in sorted(p for p in self.cases_dir.iterdir() if p.is_dir()) if self.cases_dir.exists() else []:
            singles = {p.name[: -len(".in.py")] for p in key_dir.glob("*.in.py")}
            singles |= {p.name[: -len(".in.toml")] for p in key_dir.glob("*.in.toml")}
            found += [(key_dir.name, name) for name in sorted(singles, key=lambda n: f"{n}.in.py")]
            folders = (p for p in key_dir.iterdir() if (p / "in").is_dir() or (p / "in.toml").is_file())
            found += [(key_dir.name, p.name) for p in sorted(folders)]
        return found

    def case(self, key: str, name: str) -> Case:
        case_id = f"{key}/{name}"
        if case_id not in self.cases:
            if case_id in self.loading:
                raise CaseError(f"case {case_id}: cases refer to each other: {' -> '.join(self.loading)}")
            self.loading.append(case_id)
            try:
                self.cases[case_id] = self._load(key, name)
            finally:
                self.loading.pop()
        return self.cases[case_id]

    def _load(self, key: str, name: str) -> Case:
        key_dir, where = self.cases_dir / key, f"case {key}/{name}"
        single = (key_dir / f"{name}.in.py").is_file() or (key_dir / f"{name}.in.toml").is_file()
        if single:
            stored, recipe, refused = key_dir / f"{name}.in.py", key_dir / f"{name}.in.toml", None
            out_files, out_patch = key_dir / f"{name}.out.py", key_dir / f"{name}.out.patch"
        else:
            folder = key_dir / name
            stored, recipe, refused = folder / "in", folder / "in.toml", folder / "refused.txt"
            out_files, out_patch = folder / "out", folder / "out.patch"
        inputs = self._side(stored, recipe, where, single)
        if refused is not None and refused.is_file():
            return Case(key, name, inputs, None, self._text(refused).strip())
        if out_files.exists() and out_patch.exists():
            raise CaseError(f"{where}: both {out_files.name} and {out_patch.name}")
        if out_files.exists():
            expected = {"train.py": self._text(out_files)} if single else self._tree(out_files)
            return Case(key, name, inputs, expected, out_path=out_files)
        out_path = out_patch if recipe.exists() or out_patch.exists() else out_files  # for T2S_UPDATE_EXPECTED
        return Case(key, name, inputs, self._expected(inputs, out_patch, where), out_path=out_path)

    def _side(self, stored: Path, recipe: Path, where: str, single: bool) -> dict[str, str]:
        if stored.exists() == recipe.exists():
            which = "both" if stored.exists() else "neither"
            raise CaseError(f"{where}: {which} {stored.name} and {recipe.name}")
        if not recipe.exists():
            return {"train.py": self._text(stored)} if single else self._tree(stored)
        spec, files = self.base(recipe, where, single)
        if "patch" in spec:
            patch = recipe.parent / spec["patch"]
            files = apply_patch(files, self._text(patch), f"{where} ({patch.name})")
        return files

    def base(self, recipe: Path, where: str, single: bool) -> tuple[dict, dict[str, str]]:
        """The recipe and the files its patch applies to."""
        spec = tomllib.loads(self._text(recipe))
        if set(spec) - RECIPE_KEYS or "from" not in spec:
            raise CaseError(f"{where}: {recipe.name} takes 'from' and optionally {sorted(RECIPE_KEYS - {'from'})}")
        files = self._source(spec["from"], where)
        if "files" in spec:
            missing = [rel for rel in spec["files"] if rel not in files]
            if missing:
                raise CaseError(f"{where}: {spec['from']} has no {', '.join(missing)}")
            files = {rel: files[rel] for rel in spec["files"]}
        if single and list(files) != ["train.py"]:
            raise CaseError(f"{where}: a single-file case is made from one train.py, not {sorted(files)}")
        return spec, files

    def _source(self, source: str, where: str) -> dict[str, str]:
        """``case:KEY/NAME`` (that case's input), ``case:KEY/NAME/out`` (its input with its expected
        output laid over it), a folder of the repository (all its files) or a file (as ``train.py``)."""
        if source.startswith("case:"):
            key, _, rest = source[len("case:") :].partition("/")
            name, _, side = rest.partition("/")
            if side not in ("", "out") or (key, name) not in self.names():
                raise CaseError(f"{where}: from {source!r}: no such case (case:KEY/NAME or case:KEY/NAME/out)")
            other = self.case(key, name)
            if not side:
                return dict(other.inputs)
            if not other.expected:
                raise CaseError(f"{where}: from {source!r}: that case has no expected output")
            return {**other.inputs, **other.expected}
        path = (ROOT / source).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            raise CaseError(f"{where}: from {source!r}: no such file or folder in the repository")
        return {"train.py": path.read_text(encoding="utf-8")} if path.is_file() else read_tree(path)

    def _expected(self, inputs: dict[str, str], out_patch: Path, where: str) -> dict[str, str]:
        if not out_patch.exists():
            return {}
        try:
            after = apply_patch(inputs, self._text(out_patch), f"{where} ({out_patch.name})")
        except CaseError:
            if self.stale_out_ok:  # regenerating: the fix writes the patch again
                return {}
            raise
        if set(after) != set(inputs):
            raise CaseError(f"{where}: {out_patch.name} may only change files of the input")
        return {rel: text for rel, text in after.items() if text != inputs[rel]}


def discover(cases_dir: Path = CASES_DIR, stale_out_ok: bool = False) -> list[Case]:
    """Every case. ``stale_out_ok``: an ``out.patch`` that no longer applies to its (changed) input
    reads as no expected output, for ``T2S_UPDATE_EXPECTED=1`` to write it again."""
    loader = _Loader(cases_dir, stale_out_ok)
    return [loader.case(key, name) for key, name in loader.names()]


def case(case_id: str, cases_dir: Path = CASES_DIR) -> Case:
    """One case by ``KEY/NAME`` (for tests that start from a case's input)."""
    key, name = case_id.split("/")
    return _Loader(cases_dir).case(key, name)


def unread_files(cases_dir: Path = CASES_DIR) -> list[Path]:
    """Files under ``cases_dir`` that no case reads (a renamed case, a patch no recipe names)."""
    loader = _Loader(cases_dir)
    for key, name in loader.names():
        loader.case(key, name)
    every = (p for p in cases_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return sorted(p for p in every if p not in loader.read)


def write_expected(case: Case, changed: dict[str, str]) -> None:
    """Store what the fix produced as the case's expected output (``T2S_UPDATE_EXPECTED=1``)."""
    if case.out_path is None:
        return
    if case.out_path.suffix == ".patch":  # like out/: a file the fix no longer changes keeps its expected text
        after = {**case.inputs, **(case.expected or {}), **changed}
        case.out_path.write_text(make_patch(case.inputs, after), encoding="utf-8")
    elif case.out_path.name.endswith(".out.py"):
        if "train.py" in changed:
            case.out_path.write_text(changed["train.py"], encoding="utf-8")
    else:
        write_tree(changed, case.out_path)


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("show", "rediff"):
        print(__doc__)
        return 2
    command, case_id, folder = argv[0], argv[1], Path(argv[2])
    if command == "show":
        found = case(case_id)
        write_tree(found.inputs, folder / "in")
        write_tree(found.expected or {}, folder / "out")
        return 0
    key, name = case_id.split("/")
    single = (CASES_DIR / key / f"{name}.in.toml").is_file()
    recipe = CASES_DIR / key / (f"{name}.in.toml" if single else f"{name}/in.toml")
    spec, base = _Loader(CASES_DIR).base(recipe, f"case {case_id}", single)
    wanted = {"train.py": (folder / "train.py").read_text(encoding="utf-8")} if single else read_tree(folder)
    patch = make_patch(base, wanted)
    if not patch:
        print(f"{case_id}: {spec['from']} is already that input: it needs no patch")
        return 1
    if "patch" not in spec:
        print(f'{recipe} names no patch: add  patch = "in.patch"  and write it with this diff:\n{patch}')
        return 1
    (recipe.parent / spec["patch"]).write_text(patch, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
