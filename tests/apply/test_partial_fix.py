"""A fix of several parts places the parts it can: the monitoring fix logs the gradient norm even
when the EMA drift cannot be logged where the metrics are (an EMA that exists only under
``if args.use_ema:`` and a JSON line written from one dict literal). It used to hold the whole
optimization back ("ema_model only exists when args.use_ema"). A metrics dict built by name before
the sink (the diffusers example scripts) gets the drift as a conditional entry."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from optimizer_tool.cli import app

TRAIN = """\
import argparse

import torch
from accelerate import Accelerator

parser = argparse.ArgumentParser()
parser.add_argument("--use_ema", action="store_true")
args = parser.parse_args()
accelerator = Accelerator()
model = torch.nn.Linear(4, 4)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
if args.use_ema:
    ema_model = torch.optim.swa_utils.AveragedModel(model)
global_step = 0
for x in [torch.randn(2, 4)] * 3:
    noise = torch.randn_like(x)
    loss = torch.nn.functional.mse_loss(model(x + noise), noise)
    accelerator.backward(loss)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    if args.use_ema:
        ema_model.update_parameters(model)
    global_step += 1
    logs = {"step_loss": loss.detach().item(), "lr": optimizer.param_groups[0]["lr"]}
    accelerator.log(logs, step=global_step)
    print(logs)
"""


def test_a_named_metrics_dict_gets_the_conditional_ema_drift(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(TRAIN)
    out = tmp_path / "patched"
    result = CliRunner().invoke(app, ["apply", "--only", "monitoring", "--out", str(out), str(tmp_path / "src")])
    assert result.exit_code == 0, result.output
    assert "fixed MON001" in result.output and "fixed MON003" in result.output
    patched = (out / "train.py").read_text()
    assert "if args.use_ema:\n        ema_drift = " in patched and 'logs["ema_drift"] = float(ema_drift)' in patched
    for flags in ([], ["--use_ema"]):
        done = subprocess.run(
            [sys.executable, "train.py", *flags], cwd=out, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert ("'ema_drift':" in done.stdout) == bool(flags), done.stdout


def test_the_gradient_norm_is_logged_and_the_ema_drift_left_with_its_reason(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(
        TRAIN.replace(
            '    logs = {"step_loss": loss.detach().item(), "lr": optimizer.param_groups[0]["lr"]}\n'
            "    accelerator.log(logs, step=global_step)\n"
            "    print(logs)\n",
            '    print(json.dumps({"step_loss": loss.detach().item(), "lr": optimizer.param_groups[0]["lr"]}))\n',
        ).replace("import argparse\n", "import argparse\nimport json\n")
    )
    out = tmp_path / "patched"
    result = CliRunner().invoke(app, ["apply", "--only", "monitoring", "--out", str(out), str(tmp_path / "src")])
    assert result.exit_code == 1, result.output  # applied; MON003 still reported
    assert "fixed MON001" in result.output
    assert "MON003 left as it is" in result.output and "only exists when `args.use_ema`" in result.output
    patched = (out / "train.py").read_text()
    assert '"grad_norm": float(grad_norm)' in patched
    done = subprocess.run([sys.executable, "train.py"], cwd=out, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert '"grad_norm":' in done.stdout


def test_the_ema_drift_is_computed_before_a_metrics_dict_built_ahead_of_its_sink(tmp_path):
    """``logs = {...}`` several lines before ``accelerator.log(logs)``: the drift's computation goes before
    the dict (it went before the sink: the dict read an unbound ``ema_drift``, refused by the def-use
    check, as on uyo9ko/flow-matching-deepspeed)."""
    text = (
        TRAIN.replace("if args.use_ema:\n    ema_model = ", "ema_model = ")
        .replace(
            "    if args.use_ema:\n        ema_model.update_parameters(model)\n",
            "    ema_model.update_parameters(model)\n",
        )
        .replace(
            "    accelerator.log(logs, step=global_step)\n",
            "    global_step += 0\n    accelerator.log(logs, step=global_step)\n",
        )
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(text)
    out = tmp_path / "patched"
    result = CliRunner().invoke(app, ["apply", "--only", "monitoring", "--out", str(out), str(tmp_path / "src")])
    assert "fixed MON003" in result.output, result.output
    patched = (out / "train.py").read_text()
    assert patched.index("ema_drift = torch.stack") < patched.index("    logs = {")
    done = subprocess.run([sys.executable, "train.py"], cwd=out, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "'ema_drift':" in done.stdout
