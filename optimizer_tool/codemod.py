"""Transitional re-exports: the content moved to ``optimizer_tool.edit`` and ``optimizer_tool.knowledge``."""

# ruff: noqa: F401
from __future__ import annotations

from optimizer_tool.edit.edits import (
    Replacement,
    _FileEdits,
    _Apply,
    Edits,
)
from optimizer_tool.edit.tree import (
    Body,
    _ParentRecorder,
    Tree,
    is_call_statement,
    names_in_node,
    DOCSTRING,
    split_docstring,
)
from optimizer_tool.edit.templates import (
    snippet,
    statement,
    expression,
    code,
    guarded,
)
from optimizer_tool.knowledge.settings import (
    TRAINING_FIELDS,
    SettingsHome,
    _dataclass_fields,
    _flags,
    _argparse_flags,
    _names_read,
    _scope,
    _visible_roots,
    settings_home,
    _dashed,
    DOTTED,
    SMALL_PRESET,
    setting_value,
)
from optimizer_tool.edit.settings import (
    _class_node,
    _argument_call,
    ensure_setting,
    ensure_flag,
    set_default,
    set_in_presets,
    module_name,
)
from optimizer_tool.knowledge.optimizers import (
    OPTIMIZER_CONSTRUCTORS,
    optimizer_construction,
    optimizer_parameters,
    accelerator_of,
)
