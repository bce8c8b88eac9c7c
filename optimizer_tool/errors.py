"""Errors every layer may raise; the CLI turns them into exit code 2 with their message."""

from __future__ import annotations


class UsageError(Exception):
    """Bad command-line input or configuration: exit code 2 with this message, which names the
    file, flag or field at fault and what to do."""
