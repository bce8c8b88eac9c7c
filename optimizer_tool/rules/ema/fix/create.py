"""EMA001: add an EMA of the trained network right after the network is built: the project's own EMA
helper when it has one beside the trainer, diffusers ``EMAModel`` in a diffusers script, else
``AveragedModel`` with ``get_ema_multi_avg_fn``; registered for accelerate's checkpoints."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Mapping

from optimizer_tool.contract import CannotFix
from optimizer_tool.edit.ema import EmaTarget
from optimizer_tool.edit.templates import with_comment
from optimizer_tool.knowledge.ema import (
    AVERAGED_MODEL,
    DIFFUSERS_EMA,
    EmaApi,
    EmaHelper,
    ema_class_defs,
    helper_from_class,
)
from optimizer_tool.knowledge.training import module_imports
from optimizer_tool.project import SKIP_DIRS
from optimizer_tool.rules.ema.fix.common import EMA_PATCH, EmaEdit


def create_ema(fix: EmaEdit) -> EmaTarget:
    """Build the EMA after the model (or, when the model arrives as a parameter, the optimizer)."""
    trained, index = fix.trained, fix.index
    anchor_fact = trained.assignment or trained.optimizer
    path = anchor_fact.path
    tree = fix.edits.tree(path)
    anchor = tree.top_statement(anchor_fact.value)
    step = trained.step
    if step.path == path and tree.function(step.node) is tree.function(anchor_fact.value):
        anchor = tree.statement_beside(anchor_fact.value, step.node)  # not after a whole `if __name__` block
    leaf = trained.name.rsplit(".", 1)[-1]
    name = "self.ema" if trained.name.startswith("self.") else ("ema_model" if leaf == "model" else f"ema_{leaf}")
    if index.assigns_to(name):
        raise CannotFix(
            path,
            anchor_fact.line,
            f"`{name}` is already used for something that is not an EMA; add the EMA by hand",
            EMA_PATCH,
        )
    decay = fix.decay_expression()
    api, template = _constructor(fix, path)
    target = EmaTarget(name, api, trained.name, anchor_fact.function, path, line=anchor_fact.line)
    created = fix.statements(path, template, target, decay=decay)
    accelerator = fix.accelerator()
    if accelerator is not None:
        created += fix.statements(path, f"{accelerator}.register_for_checkpointing({{ema}})", target)
        fix.ctx.note(
            f"`{accelerator}.load_state` now expects the EMA in every checkpoint folder: folders saved before "
            "this change cannot be resumed by it (accelerate: 'Found checkpoints: 0, Registered objects: 1'); "
            "start from them with the model weights only"
        )
    fix.created = (path, anchor, created)  # inserted by ``place_created`` once the comment is known
    return target


def place_created(fix: EmaEdit, saved: bool, sampled: bool) -> None:
    """Insert the new EMA with a comment that says only what the fix made true."""
    path, anchor, created = fix.created
    why = ", ".join(
        ["EMA of the weights: updated once per optimizer step"]
        + (["saved with the checkpoints"] if saved else [])
        + (["used for sampling"] if sampled else [])
    )
    fix.edits.insert_after(path, anchor, [with_comment(created[0], why), *created[1:]])


def _constructor(fix: EmaEdit, path: Path) -> tuple[EmaApi, str]:
    """The kind of EMA to build in ``path`` and its constructor template (imports added)."""
    source = next(s for s in fix.index.files if s.path == path)
    helper = project_helper(path, source.tree, fix.ctx.project_files)
    if helper is not None:
        fix.edits.add_import(path, helper.module, helper.name, relative=helper.relative)
        return helper.api, helper.constructor("{decay}")
    if module_imports(fix.index, "diffusers"):
        fix.edits.add_import(path, "diffusers.training_utils", "EMAModel")
        return DIFFUSERS_EMA, "{ema} = EMAModel({model}.parameters(), decay={decay})"
    fix.edits.add_import(path, "torch.optim.swa_utils", "AveragedModel")
    fix.edits.add_import(path, "torch.optim.swa_utils", "get_ema_multi_avg_fn")
    return (
        AVERAGED_MODEL,
        "{ema} = AveragedModel({model}, multi_avg_fn=get_ema_multi_avg_fn({decay}), use_buffers=True)\n"
        "{ema}.eval()  # only sampled from: dropout off, batch norm on its averaged statistics\n",
    )


def project_helper(trainer: Path, tree: ast.Module | None, project_files: Mapping[Path, str]) -> EmaHelper | None:
    """An EMA class of the trainer's own project that the trainer does not import yet: a module with
    "ema" in its name beside the trainer or one folder down (``utils/ema.py``), with update,
    state_dict/load_state_dict and apply_shadow/restore. Read from ``project_files``, not the disk."""
    folder = trainer.parent
    relative = int(any(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(tree))) if tree else 0
    nearby = [p for p in project_files if folder in (p.parent, p.parent.parent)]
    for path in sorted(nearby):
        if "ema" not in path.stem.lower() or path == trainer or set(path.relative_to(folder).parts) & SKIP_DIRS:
            continue
        text = project_files.get(path)
        try:
            helper_tree = ast.parse(text) if text is not None else None
        except SyntaxError:
            continue
        module = ".".join(path.relative_to(folder).with_suffix("").parts)
        for node in ema_class_defs(helper_tree):
            helper = helper_from_class(node, module, relative)
            if helper.usable:
                return helper
    return None
