"""``t2s-opt``: the command line. Each command lives in its own module of this package."""

from __future__ import annotations

import typer

from optimizer_tool.cli.ablate import ablate_command
from optimizer_tool.cli.apply import apply_command
from optimizer_tool.cli.check import check, explain, list_rules
from optimizer_tool.cli.smoke import smoke_test

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Audit, fix and smoke-test diffusion training code.")
app.command()(check)
app.command()(explain)
app.command("rules")(list_rules)
app.command("apply")(apply_command)
app.command("smoke-test")(smoke_test)
app.command("ablate")(ablate_command)


def main() -> None:
    app()
