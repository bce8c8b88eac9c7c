"""Files beside a trainer's own checkpoint files: a trainer that saves bare state dicts
(``torch.save(model.state_dict(), "ckpt.pt")``) has no checkpoint dict to put new training state in,
so that state goes to a file of its own next to the one it belongs with (``ckpt_ema.pt``), written
right after it and read back right after it is read."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.index import dotted

JOINS = ("os.path.join", "osp.join", "path.join", "join")


def sidecar_path(node: cst.BaseExpression, tag: str, os_name: str | None) -> cst.BaseExpression | None:
    """The path expression of the file beside ``node``'s: ``_tag`` before the extension of a literal
    last component (``"ckpt.pt"`` -> ``"ckpt_tag.pt"``, ``f"model_{ep}.pth"`` -> ``f"model_{ep}_tag.pth"``,
    through ``+``, ``/`` and ``os.path.join``); for a path held in a variable, ``os.path.splitext`` at
    run time when ``os_name`` (the file's name for ``os``) is given, else None."""
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        if not isinstance(value, str) or "\\" in node.value or "b" in node.prefix.lower():
            return None
        body = node.value[len(node.prefix) + len(node.quote) : -len(node.quote)]
        return node.with_changes(value=f"{node.prefix}{node.quote}{_tagged(body, tag)}{node.quote}")
    if isinstance(node, cst.FormattedString):
        parts = list(node.parts)
        if parts and isinstance(parts[-1], cst.FormattedStringText):
            parts[-1] = parts[-1].with_changes(value=_tagged(parts[-1].value, tag))
        else:
            parts.append(cst.FormattedStringText(f"_{tag}"))
        return node.with_changes(parts=parts)
    if isinstance(node, cst.ConcatenatedString):
        right = sidecar_path(node.right, tag, None)
        return node.with_changes(right=right) if isinstance(right, cst.BaseString) else None
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, (cst.Add, cst.Divide)):
        right = sidecar_path(node.right, tag, None)
        return node.with_changes(right=right) if right is not None else _at_run_time(node, tag, os_name)
    if isinstance(node, cst.Call) and dotted(node.func) in JOINS and node.args and not node.args[-1].star:
        last = sidecar_path(node.args[-1].value, tag, None)
        if last is not None:
            return node.with_changes(args=[*node.args[:-1], node.args[-1].with_changes(value=last)])
    return _at_run_time(node, tag, os_name)


def _tagged(text: str, tag: str) -> str:
    """``_tag`` before the extension of the text's last path component, else at its end."""
    head, _, leaf = text.rpartition("/")
    stem, dot, extension = leaf.rpartition(".")
    leaf = f"{stem}_{tag}.{extension}" if dot else f"{leaf}_{tag}"
    return f"{head}/{leaf}" if head or text.startswith("/") else leaf


def _at_run_time(node: cst.BaseExpression, tag: str, os_name: str | None) -> cst.BaseExpression | None:
    if os_name is None:
        return None
    return cst.parse_expression(f'"{{}}_{tag}{{}}".format(*{os_name}.path.splitext({_code(node)}))')


def _code(node: cst.BaseExpression) -> str:
    return cst.Module(body=[]).code_for_node(node)
