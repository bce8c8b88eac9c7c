"""Code from templates and literals in the target file's own style: statements and expressions
parsed with the module's indentation and newlines, keyword arguments and parameters added in the
call's or signature's own layout, comments and dict elements inserted in place."""

from __future__ import annotations

from typing import Iterable

import libcst as cst
from libcst.helpers import parse_template_expression, parse_template_module, parse_template_statement

from optimizer_tool.index import (
    code_of,
)


def snippet(module: cst.Module, source: str) -> list[cst.BaseStatement]:
    """Statements from plain source, parsed with the target's config; the comment lines above the
    first statement stay with it (``parse_module`` would file them as the module header)."""
    parsed = cst.parse_module(source, config=module.config_for_parsing)
    body = list(parsed.body)
    body[0] = body[0].with_changes(leading_lines=[*parsed.header, *body[0].leading_lines])
    return body


def statement(module: cst.Module, template: str, **values: cst.CSTNode) -> cst.BaseStatement:
    """One statement from a template (``{name}`` placeholders take nodes), parsed with the target's config."""
    return parse_template_statement(template, config=module.config_for_parsing, **values)


def expression(module: cst.Module, template: str, **values: cst.CSTNode) -> cst.BaseExpression:
    return parse_template_expression(template, config=module.config_for_parsing, **values)


def code(node: cst.CSTNode) -> str:
    return code_of(node).strip()


def guarded(
    before: list[cst.BaseStatement], body: Iterable[cst.BaseStatement], after: list[cst.BaseStatement]
) -> list[cst.BaseStatement]:
    """``before`` then ``try: body`` ``finally: after``: ``after`` runs even when ``body`` raises.
    Blank lines and comments leading ``body`` move in front of ``before``."""
    first, *rest = list(body)
    leading = list(first.leading_lines)
    attempt = cst.Try(
        body=cst.IndentedBlock(body=[first.with_changes(leading_lines=[]), *rest]),
        finalbody=cst.Finally(body=cst.IndentedBlock(body=after)),
    )
    if before:
        return [before[0].with_changes(leading_lines=[*leading, *before[0].leading_lines]), *before[1:], attempt]
    return [attempt.with_changes(leading_lines=leading)]


def parse_expression(module: cst.Module, code: str) -> cst.BaseExpression:
    """Plain code (no ``{holes}``: dict and set literals stay literal) as an expression."""
    return cst.parse_expression(code, config=module.config_for_parsing)


def all_of(conditions) -> str:
    """``conditions`` (code) joined with ``and``, each in parentheses when there are several."""
    return " and ".join(f"({c})" if len(conditions) > 1 else c for c in conditions)


def under(module: cst.Module, conditions, statements: list) -> list[cst.BaseStatement]:
    """``statements`` in one ``if`` on all of ``conditions``."""
    return [cst.If(test=parse_expression(module, all_of(conditions)), body=cst.IndentedBlock(body=statements))]


def parse_statements(module: cst.Module, code: str) -> list[cst.BaseStatement]:
    """Plain code parsed with the module's indentation and newline style (leading comment lines
    are dropped; ``snippet`` keeps them)."""
    return list(cst.parse_module(code, config=module.config_for_parsing).body)


def value_like(value: object, old: cst.BaseExpression | None, module: cst.Module) -> cst.BaseExpression:
    """``value`` as a literal, in the quote style of the literal it replaces."""
    if isinstance(value, str) and isinstance(old, cst.SimpleString) and not old.prefix.strip("rRuU"):
        quote = old.quote
        if quote not in value and "\\" not in value:
            return cst.SimpleString(f"{old.prefix}{quote}{value}{quote}")
    return parse_expression(module, repr(value))


def keyword(name: str, value: cst.BaseExpression) -> cst.Arg:
    return cst.Arg(
        value=value, keyword=cst.Name(name), equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))
    )


def with_keyword(call: cst.Call, name: str, value: cst.BaseExpression) -> cst.Call:
    """``call`` with ``name=value``: replaced when present, else added last (before ``**kwargs``),
    following the call's one-argument-per-line layout when it has one."""
    args = list(call.args)
    for i, arg in enumerate(args):
        if arg.keyword is not None and arg.keyword.value == name:
            args[i] = arg.with_changes(value=value)
            return call.with_changes(args=args)
    new = keyword(name, value)
    position = next((i for i, a in enumerate(args) if a.star == "**"), len(args))
    if args:
        separator = _separator(call, args, position)
        if position == len(args):
            # the new last argument takes over the old one's trailing comma and closing line break
            last = args[-1]
            new = new.with_changes(comma=last.comma, whitespace_after_arg=last.whitespace_after_arg)
            args[-1] = last.with_changes(comma=separator, whitespace_after_arg=cst.SimpleWhitespace(""))
        else:
            new = new.with_changes(comma=separator)
    args.insert(position, new)
    return call.with_changes(args=args)


def without_comment(call: cst.Call, name: str) -> cst.Call:
    """``call`` without the end-of-line comment after its ``name=`` argument (it described the
    value a fix just replaced)."""
    args = list(call.args)
    for i, arg in enumerate(args):
        comma = arg.comma
        if (
            arg.keyword is not None
            and arg.keyword.value == name
            and isinstance(comma, cst.Comma)
            and isinstance(comma.whitespace_after, cst.ParenthesizedWhitespace)
        ):
            after = comma.whitespace_after.with_changes(
                first_line=cst.TrailingWhitespace(newline=comma.whitespace_after.first_line.newline)
            )
            args[i] = arg.with_changes(comma=comma.with_changes(whitespace_after=after))
    return call.with_changes(args=args)


def _separator(call: cst.Call, args: list[cst.Arg], position: int) -> cst.Comma:
    """The comma and whitespace between two arguments of this call (one per line stays so)."""
    if position >= 2 and isinstance(args[position - 2].comma, cst.Comma):
        return args[position - 2].comma
    if isinstance(call.whitespace_before_args, cst.ParenthesizedWhitespace):
        return cst.Comma(whitespace_after=call.whitespace_before_args)
    return cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))


def with_param(
    function: cst.FunctionDef, name: str, default: cst.BaseExpression, annotation: str | None
) -> cst.FunctionDef:
    """``function`` with a new last keyword parameter ``name`` (annotated when the signature is and an
    ``annotation`` is given)."""
    params = function.params
    annotated = annotation is not None and any(
        p.annotation is not None for p in [*params.params, *params.kwonly_params]
    )
    spaced = cst.AssignEqual(cst.SimpleWhitespace(" "), cst.SimpleWhitespace(" "))
    tight = cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace(""))
    new = cst.Param(
        cst.Name(name),
        annotation=cst.Annotation(cst.parse_expression(annotation)) if annotated else None,
        default=default,
        equal=spaced if annotated else tight,
    )
    field_name = "kwonly_params" if isinstance(params.star_arg, cst.Param) or params.kwonly_params else "params"
    existing = list(getattr(params, field_name))
    if existing:
        last = existing[-1]
        if len(existing) >= 2 and isinstance(existing[-2].comma, cst.Comma):
            separator = existing[-2].comma
        else:
            separator = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        new = new.with_changes(comma=last.comma, whitespace_after_param=last.whitespace_after_param)
        existing[-1] = last.with_changes(comma=separator, whitespace_after_param=cst.SimpleWhitespace(""))
    existing.append(new)
    return function.with_changes(params=params.with_changes(**{field_name: existing}))


def template_statements(
    module: cst.Module, template: str, **values: str | cst.BaseExpression
) -> list[cst.BaseStatement]:
    """Statements from a template whose ``{name}`` holes take expressions (values it does not use
    are ignored), parsed with the module's own indentation and line endings."""
    used = {
        k: parse_expression(module, v) if isinstance(v, str) else v for k, v in values.items() if f"{{{k}}}" in template
    }
    return list(parse_template_module(template, config=module.config_for_parsing, **used).body)


def template_expression(module: cst.Module, template: str, **values: str | cst.BaseExpression) -> cst.BaseExpression:
    used = {
        k: parse_expression(module, v) if isinstance(v, str) else v for k, v in values.items() if f"{{{k}}}" in template
    }
    return parse_template_expression(template, config=module.config_for_parsing, **used)


def with_comment(statement: cst.BaseStatement, comment: str) -> cst.BaseStatement:
    """``statement`` preceded by a ``# comment`` line (why the inserted code is there)."""
    return statement.with_changes(
        leading_lines=[*statement.leading_lines, cst.EmptyLine(comment=cst.Comment(f"# {comment}"))]
    )


def string_literal(text: str, like: cst.BaseExpression | None = None) -> str:
    """``text`` as a string literal in the quote style of ``like`` (double quotes by default)."""
    quote = like.quote if isinstance(like, cst.SimpleString) and like.quote in ("'", '"') else '"'
    return f"{quote}{text}{quote}"


def insert_dict_element(node: cst.Dict, after: int, key: cst.BaseExpression, value: cst.BaseExpression) -> cst.Dict:
    """``node`` with ``key: value`` inserted after element number ``after``, in the dict's own
    layout: the new element takes the comma (and line break) that followed its predecessor."""
    elements = list(node.elements)
    new = cst.DictElement(key, value)
    if not elements:
        return node.with_changes(elements=[new])
    anchor = elements[after]
    if after < len(elements) - 1:
        elements.insert(after + 1, new.with_changes(comma=anchor.comma))
        return node.with_changes(elements=elements)
    # Appending: the old last element needs a separator like the others (", " or a line break).
    separator = elements[after - 1].comma if after > 0 else cst.MaybeSentinel.DEFAULT
    if not isinstance(separator, cst.Comma):
        separator = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
    elements[after] = anchor.with_changes(comma=separator)
    elements.append(new.with_changes(comma=anchor.comma))
    return node.with_changes(elements=elements)
