"""``t2s-opt apply`` through its command line: what it writes, what it refuses, its exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from casefiles import case, write_tree
from typer.testing import CliRunner

from optimizer_tool.apply import select
from optimizer_tool.cli import app
from optimizer_tool.quick_optimizations import default_path
from optimizer_tool.quick_optimizations import main as quick_optimizations

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trainers"


def run(*args: str):
    return CliRunner().invoke(app, ["apply", *args])


def snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".git" not in p.parts
    }


@pytest.fixture
def project(tmp_path) -> Path:
    """A reference-style trainer: dataclass config (linear, epsilon, 64x64), scheduler module with an
    s-less cosine option, trainer whose target branches on the prediction type."""
    folder = tmp_path / "project"
    return write_tree(case("cosine/reference").inputs, folder)


def test_diff_prints_a_unified_diff_writes_nothing_and_exits_1(project):
    before = snapshot(project)
    result = run("--only", "cosine", "--diff", str(project))
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith("--- a/")
    assert '-    beta_schedule: str = "linear"\n+    beta_schedule: str = "cosine"' in result.stdout
    assert "nothing written" in result.stderr
    assert snapshot(project) == before


def test_diff_without_changes_exits_0(project):
    assert run("--only", "cosine", str(project)).exit_code == 0
    result = run("--only", "cosine", "--diff", str(project))
    assert result.exit_code == 0 and result.stdout == ""


def test_out_writes_a_patched_copy_and_leaves_the_original(project, tmp_path):
    before = snapshot(project)
    out = tmp_path / "patched"
    result = run("--only", "cosine", "--out", str(out), str(project))
    assert result.exit_code == 0, result.output
    assert snapshot(project) == before
    after = snapshot(out)
    assert set(after) == set(before)
    assert 'beta_schedule: str = "cosine"' in after["config.py"]
    assert after["trainer.py"] == before["trainer.py"]
    assert "wrote 2 file(s)" in result.stdout


def test_out_of_one_file_copies_the_packages_it_imports_whole(tmp_path):
    """atong01/conditional-flow-matching: ``apply --out DIR examples/train.py`` copied
    ``torchcfm/conditional_flow_matching.py`` but not ``torchcfm/__init__.py`` nor the ``version.py``
    it imports; the copy only ran because Python fell back to namespace packages (no ``__version__``,
    no alias set by the ``__init__``)."""
    project = write_tree(
        {
            "pyproject.toml": "[project]\nname = 'pkg'\n",
            "pkg/__init__.py": "from .version import __version__\nfrom .models import Net as Model\n",
            "pkg/version.py": "__version__ = '1.2.3'\n",
            "pkg/models/__init__.py": "from .nets import Net\n",
            "pkg/models/nets.py": "import torch\n\n\nclass Net(torch.nn.Linear):\n    pass\n",
            "pkg/unrelated.py": "raise SystemExit('never imported')\n",
            "examples/train.py": (
                "import torch\n"
                "from pkg.models.nets import Net\n"
                "\n"
                "model = Net(4, 4)\n"
                "optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
                "for step in range(3):\n"
                "    loss = model(torch.randn(2, 4)).pow(2).mean()\n"
                "    optimizer.zero_grad()\n"
                "    loss.backward()\n"
                "    optimizer.step()\n"
            ),
        },
        tmp_path / "project",
    )
    out = tmp_path / "patched"
    result = run("--only", "clipping", "--out", str(out), str(project / "examples" / "train.py"))
    assert result.exit_code == 0, result.output
    copied = set(snapshot(out))
    assert {"pkg/__init__.py", "pkg/version.py", "pkg/models/__init__.py", "pkg/models/nets.py"} <= copied
    assert "pkg/unrelated.py" not in copied
    probe = "import pkg, pkg.models; print(pkg.__version__, pkg.Model.__name__, pkg.__file__)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=out, capture_output=True, text=True, check=True)
    version, alias, where = done.stdout.split()
    assert (version, alias) == ("1.2.3", "Net") and Path(where).parent == (out / "pkg").resolve()


def test_out_refuses_a_folder_that_is_not_empty(project, tmp_path):
    out = tmp_path / "patched"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run("--only", "cosine", "--out", str(out), str(project))
    assert result.exit_code == 2
    assert "not an empty folder" in result.stderr
    assert snapshot(out) == {"keep.txt": "mine"}


def test_a_failed_write_restores_every_file(project, monkeypatch):
    before = snapshot(project)
    real_replace = os.replace
    moved: list[str] = []

    def replace_then_fail(src, dst):
        if moved and Path(dst).name == "ddim.py":  # the second file of the apply
            raise OSError(28, "No space left on device", str(dst))
        moved.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)  # also in optimizer_tool.transaction
    result = run("--only", "cosine", str(project))
    monkeypatch.setattr(os, "replace", real_replace)
    assert result.exit_code == 2
    assert "no file was changed" in result.stderr
    assert moved, "the first file should have been replaced before the failure"
    assert snapshot(project) == before  # restored, and no temporary files left behind


@pytest.fixture
def refusing_project(tmp_path) -> Path:
    """Cosine is fixable; v-prediction is not (a hand-written q_sample names no scheduler with get_velocity)."""
    folder = tmp_path / "refusing"
    write_tree(case("vpred/hand_written_q_sample").inputs, folder)
    train = folder / "train.py"
    train.write_text(
        train.read_text().replace(
            'parser.add_argument("--prediction_type"',
            'parser.add_argument("--beta_schedule", default="linear", choices=["linear", "cosine"])\n'
            'parser.add_argument("--prediction_type"',
        )
    )
    return folder


def test_a_fix_that_cannot_anchor_is_held_back_and_the_others_are_written(refusing_project, tmp_path):
    """ruff-style: one fix that cannot place its change does not block the others."""
    pristine = tmp_path / "pristine"
    shutil.copytree(refusing_project, pristine)
    result = run("--only", "cosine,vpred", str(refusing_project))
    assert result.exit_code == 1  # written, but something selected is left
    assert "not applied: the vpred fix cannot place its change" in result.stderr
    assert "suggested manual patch:" in result.stderr
    assert "get_velocity(x0, noise, timesteps)" in result.stderr
    assert "--skip vpred" in result.stderr
    assert "fixed COS001" in result.stdout and "wrote 1 file(s)" in result.stdout
    assert 'default="cosine"' in (refusing_project / "train.py").read_text()
    # the refused fix alone: nothing to write, nothing written, exit 2 as before
    alone = run("--only", "vpred", str(pristine))
    assert alone.exit_code == 2 and "nothing was written" in alone.stderr
    assert run("--only", "cosine,vpred", "--skip", "vpred", str(pristine)).exit_code == 0


def test_a_syntax_error_is_refused_with_its_location(project):
    (project / "broken.py").write_text("import torch\n\ndef f(:\n    pass\n")
    before = snapshot(project)
    result = run("--only", "cosine", str(project))
    assert result.exit_code == 2
    assert "broken.py:3:" in result.stderr and "E999" in result.stderr
    assert snapshot(project) == before


def git(folder: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=folder,
        check=True,
        capture_output=True,
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_uncommitted_changes_in_a_touched_file_need_force(project):
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "trainer")
    config = project / "config.py"
    config.write_text(config.read_text().replace("learning_rate: float = 5e-5", "learning_rate: float = 1e-4"))
    before = snapshot(project)
    result = run("--only", "cosine", str(project))
    assert result.exit_code == 2
    assert "uncommitted changes" in result.stderr and "config.py" in result.stderr and "--force" in result.stderr
    assert snapshot(project) == before
    forced = run("--only", "cosine", "--force", str(project))
    assert forced.exit_code == 0, forced.output
    assert 'beta_schedule: str = "cosine"' in config.read_text()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_clean_checkout_is_changed_in_place(project):
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "trainer")
    assert run("--only", "cosine", str(project)).exit_code == 0


def test_objective_changing_fixes_need_unsafe_or_only(project):
    safe = {o.key for o in select(None, None, unsafe=False)}
    assert {"cosine", "offset", "zero-snr", "vpred", "resolution"}.isdisjoint(safe)
    assert {"cosine", "vpred"} <= {o.key for o in select(None, None, unsafe=True)}
    assert [o.key for o in select(["vpred"], None, unsafe=False)] == ["vpred"]
    before = snapshot(project)
    run("--skip", "ema,lr-schedule,clipping,monitoring", str(project))
    assert snapshot(project) == before
    assert run("--unsafe", "--skip", "ema,lr-schedule,clipping,monitoring,lpips", str(project)).exit_code == 0
    assert 'prediction_type: str = "v_prediction"' in (project / "config.py").read_text()


def test_resolution_only_when_named(project):
    assert "resolution" not in {o.key for o in select(None, None, unsafe=True, everything=True)}
    assert "resolution" not in {o.key for o in select(None, None, unsafe=True)}
    assert [o.key for o in select(["resolution"], None, unsafe=False)] == ["resolution"]
    result = run("--only", "resolution", str(project))
    assert result.exit_code == 0, result.output
    config = (project / "config.py").read_text()
    assert "image_size: int = 96" in config and "model_channels: int = 80" in config


def test_applying_twice_changes_nothing(project):
    assert run("--only", "cosine,offset,vpred,zero-snr,resolution", str(project)).exit_code == 0
    after = snapshot(project)
    again = run("--only", "cosine,offset,vpred,zero-snr,resolution", str(project))
    assert again.exit_code == 0
    assert "nothing to fix" in again.stdout
    assert snapshot(project) == after


def test_a_new_bug_another_fix_resolves_is_fixed_too(project):
    """Switching to the project's s-less cosine makes OFF001 (missing) an OFF003 (bug): the offset comes along."""
    result = run("--only", "cosine", str(project))
    assert result.exit_code == 0, result.output
    assert "offset (required by cosine):" in result.stdout
    assert "s: float = 0.008" in (project / "schedulers" / "ddim.py").read_text()


def test_a_new_bug_nobody_may_fix_aborts(project):
    before = snapshot(project)
    result = run("--only", "cosine", "--skip", "offset", str(project))
    assert result.exit_code == 1
    assert "would introduce" in result.stderr and "OFF003" in result.stderr
    assert snapshot(project) == before


def test_new_missing_findings_are_advice(project):
    """v-prediction makes zero-terminal-SNR rescaling recommended; it is reported, not applied."""
    result = run("--only", "vpred", str(project))
    assert result.exit_code == 0, result.output
    assert "now recommended (not applied):" in result.stdout and "ZSNR001" in result.stdout
    assert "apply with: t2s-opt apply --only zero-snr" in result.stdout
    assert "rescale_betas_zero_snr" not in (project / "config.py").read_text()
    assert run("--only", "zero-snr", str(project)).exit_code == 0
    assert "rescale_betas_zero_snr: bool = True" in (project / "config.py").read_text()


@pytest.mark.parametrize(
    "args", [["--only", "cosine", "--all"], ["--only", "nosuchthing"], ["--diff", "--out", "x", "--only", "cosine"]]
)
def test_usage_errors_exit_2(project, args):
    result = run(*args, str(project))
    assert result.exit_code == 2
    assert "t2s-opt: error:" in result.stderr


def test_quick_optimizations_maps_onto_check_and_apply(project, tmp_path, monkeypatch):
    assert quick_optimizations(["--check", str(project)]) == 1
    optimized = tmp_path / "fully_optimized"
    shutil.copytree(FIXTURES / "fully_optimized", optimized)
    monkeypatch.chdir(tmp_path)
    assert default_path() == Path(".")
    (tmp_path / "reference_trainer").mkdir()
    assert default_path() == Path("reference_trainer")
    assert quick_optimizations(["--check", str(optimized)]) == 0
    before = snapshot(optimized)
    assert quick_optimizations(["--apply", str(optimized)]) == 0
    assert snapshot(optimized) == before


def test_files_outside_the_given_folder_are_never_changed(tmp_path):
    """The trainer imports its config from a sibling folder of the project: pointed at the trainer's
    folder, apply refuses to change the config there (as it never edits an imported library)."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "settings").mkdir()
    (tmp_path / "settings" / "config.py").write_text(case("cosine/reference").inputs["config.py"])
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "train.py").write_text(
        "import torch\nfrom settings.config import TrainConfig\n\n"
        "BETA_SCHEDULES = ('linear', 'cosine')\ncfg = TrainConfig()\n"
        "for x in loader:\n    loss = model(x).mean()\n    loss.backward()\n    optimizer.step()\n"
    )
    before = snapshot(tmp_path)
    result = run("--only", "cosine", str(app_dir))
    assert result.exit_code == 2
    assert "outside" in result.stderr and "config.py" in result.stderr
    assert snapshot(tmp_path) == before
    assert run("--only", "cosine", str(tmp_path)).exit_code == 0
