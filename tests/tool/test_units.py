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
