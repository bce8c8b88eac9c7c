"""What makes a unit: which files train, and which imports count as the project's own code."""

from pathlib import Path

from optimizer_tool.engine import build_units
from optimizer_tool.project import load


def _write(root: Path, files: dict[str, str]) -> None:
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_custom_autograd_function_is_not_a_trainer(tmp_path):
    """Attention kernels (diffusers' attention_dispatch.py) call save_for_backward and aten
    *_backward ops; a real trainer calls loss.backward() or manual_backward()."""
    _write(
        tmp_path,
        {
            "kernels.py": (
                "import torch\n"
                "class F(torch.autograd.Function):\n"
                "    @staticmethod\n"
                "    def forward(ctx, q):\n"
                "        ctx.save_for_backward(q)\n        return q\n    @staticmethod\n    def backward(ctx, g):\n"
                "        return torch.ops.aten._flash_attention_backward(g), _wrapped_flash_attn_backward(g)\n"
            ),
            "lit.py": "class M:\n    def training_step_(self, loss):\n        self.manual_backward(loss)\n",
            "train.py": "loss.backward()\n",
        },
    )
    loaded = load([tmp_path])
    assert {p.name for p, s in loaded.files.items() if s.trains} == {"lit.py", "train.py"}


def test_imports_from_an_installed_package_stay_in_that_package(tmp_path):
    """A module under the project's .venv that imports torch must not pull torch in as local code."""
    site = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages"
    _write(
        tmp_path,
        {
            ".venv/lib/python3.11/site-packages/torch/__init__.py": "x = 1\n",
            ".venv/lib/python3.11/site-packages/pkg/__init__.py": "",
            ".venv/lib/python3.11/site-packages/pkg/util.py": "y = 2\n",
            ".venv/lib/python3.11/site-packages/pkg/train.py": "import torch\nfrom pkg import util\nloss.backward()\n",
        },
    )
    target = site / "pkg" / "train.py"
    loaded = load([target])
    units = build_units(loaded, [target.resolve()])
    assert [sorted(p.path.name for p in u.files) for u in units] == [["train.py", "util.py"]]


TRAIN_LOOP = (
    "import torch\n"
    "from mypkg import helpers\n"
    "model = torch.nn.Linear(4, 4)\n"
    "opt = torch.optim.AdamW(model.parameters())\n"
    "for x in [torch.randn(2, 4)]:\n"
    "    loss = (model(x) - x).pow(2).mean()\n"
    "    loss.backward()\n"
    "    opt.step()\n"
)


def test_check_dot_makes_units_of_entry_points_not_of_library_modules_or_tests(tmp_path):
    """diffusers: ``src/diffusers/__init__.py`` reaches 1000 files and the training code among them;
    it is a library module, not something a user runs to train (390 units became 111)."""
    _write(
        tmp_path,
        {
            "mypkg/__init__.py": "from .helpers import *\nfrom .trainer import Trainer\n",
            "mypkg/helpers.py": "def double(x):\n    return 2 * x\n",
            "mypkg/trainer.py": (
                "class Trainer:\n    def step(self, loss, opt):\n        loss.backward()\n        opt.step()\n"
            ),
            "tests/test_trainer.py": "from mypkg.trainer import Trainer\n\ndef test_step():\n    Trainer()\n",
            "scripts/train.py": "from mypkg.trainer import Trainer\n\nif __name__ == '__main__':\n    Trainer()\n",
        },
    )
    entries = {u.entry.path.relative_to(tmp_path).as_posix() for u in build_units(load([tmp_path]), [tmp_path])}
    assert entries == {"scripts/train.py"}


def test_a_unit_reaching_more_files_than_its_budget_says_unknown_not_missing(tmp_path):
    from optimizer_tool.engine import MAX_UNIT_FILES, run_check
    from optimizer_tool.settings import Settings

    modules = {f"mypkg/m{i}.py": f"VALUE_{i} = {i}\n" for i in range(MAX_UNIT_FILES + 5)}
    imports = "".join(f"from . import m{i}\n" for i in range(MAX_UNIT_FILES + 5))
    _write(tmp_path, {"mypkg/__init__.py": "", "mypkg/helpers.py": imports, **modules, "train.py": TRAIN_LOOP})
    result, _ = run_check([tmp_path / "train.py"], Settings())
    (facts,) = result.facts
    assert facts.verdicts["ema"].state.value == "unknown"
    assert "more than the" in facts.verdicts["ema"].reason
    assert not [f for f in result.findings if f.code == "EMA001"]
