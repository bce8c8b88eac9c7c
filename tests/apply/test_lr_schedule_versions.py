"""The lr-schedule fix is hermetic: whether it writes transformers'
``get_cosine_with_min_lr_schedule_with_warmup`` depends on the target project (the transformers
its requirements admit, else whether its code imports transformers), never on the transformers
installed where the tool runs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from casefiles import case, write_tree

from optimizer_tool.apply import plan, select
from optimizer_tool.rules.lr_schedule.fix import versions
from optimizer_tool.settings import Settings

FIX_DIR = Path(versions.__file__).resolve().parent
HELPER = "get_cosine_with_min_lr_schedule_with_warmup("


@pytest.mark.parametrize(
    "clauses,expected",
    [
        ([">=4.40"], True),
        ([">=4.40.0", "<5"], True),
        (["~=4.41"], True),
        (["==4.44.2"], True),
        ([], True),  # a bare requirement: no floor, the newest release installs
        (["<5"], True),
        ([">=4.25.1"], False),  # diffusers' examples: promises to run on a version without the helper
        ([">4.39"], False),
        (["==4.39.3"], False),
        (["<4.40"], False),
        ([">=4.41", "<=4.39"], False),
        (["@ git+https://github.com/huggingface/transformers"], True),
    ],
)
def test_admitted_versions(clauses, expected):
    assert versions.admits_only_newer(clauses, versions.HELPER_SINCE) is expected


def test_requirements_in_every_manifest_format():
    manifests = {
        Path("requirements.txt"): "-r base.txt\ntorch>=2.0  # cuda\nTransformers[torch] >= 4.41 ; python_version>'3.8'",
        Path("pyproject.toml"): '[tool.poetry.dependencies]\ntransformers = "^4.44"\n',
        Path("setup.cfg"): "[options]\ninstall_requires =\n    transformers<5\n",
        Path("setup.py"): "from setuptools import setup\nsetup(install_requires=['transformers!=4.42.0'])\n",
        Path("environment.yml"): "dependencies:\n  - conda-forge::transformers=4.43\n  - pip:\n    - diffusers\n",
    }
    assert versions.declared(manifests, "transformers") == [">= 4.41", ">=4.44", "<5", "!=4.42.0", "==4.43"]
    assert versions.declared(manifests, "accelerate") is None
    assert versions.declared({Path("requirements.txt"): "transformers\n"}, "transformers") == []


def test_the_fix_never_asks_this_machine():
    """No module of the fix imports transformers or looks packages up (importlib, find_spec)."""
    for path in FIX_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("transformers", "importlib") for n in names), path
            if isinstance(node, ast.Attribute):
                assert node.attr != "find_spec", path


def _fixed(files: dict[str, str], folder: Path) -> str:
    write_tree(files, folder)
    result = plan([folder / "train.py"], select(["lr-schedule"], None, unsafe=False), Settings())
    assert not result.refused and result.ok
    return result.changed[(folder / "train.py").resolve()]


@pytest.mark.parametrize("installed", [True, False], ids=["transformers-installed", "transformers-missing"])
def test_the_projects_requirements_decide(installed, tmp_path, monkeypatch):
    if not installed:
        monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    trainer = case("lr-schedule/diffusers_unconditional").inputs  # diffusers only: no transformers import
    plain = _fixed(trainer, tmp_path / "plain")
    assert HELPER not in plain and "CosineAnnealingLR(optimizer" in plain
    pinned = _fixed({**trainer, "requirements.txt": "diffusers>=0.30\ntransformers>=4.41\n"}, tmp_path / "pinned")
    assert HELPER in pinned and "CosineAnnealingLR" not in pinned
