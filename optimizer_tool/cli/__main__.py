"""``python -m optimizer_tool.cli``: the same as the ``t2s-opt`` script."""

from optimizer_tool.cli import main

main()
