"""t2s-opt: audit, fix and smoke-test diffusion training code."""

__version__ = "0.1.0"
