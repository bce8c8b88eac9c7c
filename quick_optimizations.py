"""The plan's ``python quick_optimizations.py --check|--apply``, run from the repository root;
see ``optimizer_tool.quick_optimizations``."""

import sys

from optimizer_tool.quick_optimizations import main

if __name__ == "__main__":
    sys.exit(main())
