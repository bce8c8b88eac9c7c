"""The vpred codemod: one step per code."""

from __future__ import annotations

import libcst as cst

from optimizer_tool.contract import Applicability, CannotFix, Fix, FixContext
from optimizer_tool.edit.edits import replace
from optimizer_tool.edit.settings import manual_setting_patch, set_settings
from optimizer_tool.edit.templates import parse_statements, with_comment, with_keyword
from optimizer_tool.edit.tree import enclosing
from optimizer_tool.index import CallSite, UnitIndex, code_of, dotted, literal
from optimizer_tool.knowledge.configured import expression_nodes
from optimizer_tool.knowledge.diffusion import (
    DIFFUSERS_SCHEDULER,
    PREDICTION_FLAGS,
    diffusers_scheduler_class,
    prediction_family,
)
from optimizer_tool.knowledge.objective import configured_prediction, is_noise, local_assigns, losses_on_noise, operands
from optimizer_tool.knowledge.settings import spelling
from optimizer_tool.rules.vpred.facts import VELOCITY_FUNCTION, computes_velocity

# What "v" is called, per setting name; the first spelling the project's code accepts is used.
V_VALUES = {"objective": ("pred_v",), "parameterization": ("v",), "pred_objective": ("pred_v",)}
V_DEFAULT = ("v_prediction", "v", "pred_v", "velocity", "v-prediction")
TARGET_COMMENT = (
    "the loss target follows the prediction type: v = sqrt(a) * noise - sqrt(1 - a) * x0 (Salimans & Ho 2022)"
)
TARGET_PATCH = """\
if prediction_type == "v_prediction":
    target = noise_scheduler.get_velocity(x0, noise, timesteps)  # sqrt(a) * noise - sqrt(1 - a) * x0
else:
    target = noise
loss = F.mse_loss(model_output, target)
"""
SAMPLER_PATCH = """\
# the model output is v: x0 and the noise follow from it
x0 = alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * model_output
eps = alpha_bar.sqrt() * model_output + (1 - alpha_bar).sqrt() * x_t
"""


class VPredictionFix(Fix):
    """Train and sample with v-prediction, consistently.

    VPRED001: the prediction type becomes v where the trainer sets it (dataclass default, argparse
    default, scheduler keyword; added to diffusers schedulers that rely on their epsilon default),
    in the spelling the code accepts ("v_prediction", lucidrains "pred_v", LDM "v"). The change
    makes the vpred rules judge the loss target and the sampler, and apply runs this fix again on
    what they report; when they report nothing, the fix notes where the code already follows v.
    VPRED002: a loss against the sampled noise gets a target that branches on the scheduler's
    prediction type and uses its ``get_velocity`` (the ``add_noise(x0, noise, t)`` call of the
    same function names x0 and t); without such a scheduler the patch is printed instead.
    VPRED003: a diffusers sampling scheduler gets the trainer's ``prediction_type``; a
    hand-written epsilon sampler is refused with the v formulas.
    """

    applicability = Applicability.UNSAFE  # changes the training objective

    codes = ("VPRED001", "VPRED002", "VPRED003")

    def apply(self, ctx: FixContext, findings: list) -> None:
        index = ctx.index
        codes = {f.code for f in findings}
        edits: dict = {}
        if "VPRED001" in codes:
            _configure_v(ctx, index)
        for finding in findings:
            where = (finding.location.path, finding.location.line, finding.location.col)
            call = next((c for c in index.calls if (c.path, c.line, c.col) == where), None)
            if finding.code == "VPRED002":
                edits.setdefault(where[0], {}).update(_branch_target(ctx, index, call, finding))
            elif finding.code == "VPRED003":
                edits.setdefault(where[0], {}).update(_sampler_follows(ctx, index, call, finding))
        for path, changes in edits.items():
            ctx.update(path, replace(ctx.module(path), changes))


# --- VPRED001 -----------------------------------------------------------------------
def _configure_v(ctx: FixContext, index: UnitIndex) -> None:
    """Every setting that chooses epsilon now chooses v, in the spelling the code accepts."""
    by_value = configured_prediction(index).by_value
    if not by_value.get("epsilon") and by_value.get("x0"):
        setting = by_value["x0"][0]
        raise CannotFix(
            setting.path,
            setting.line,
            f"the model predicts x0 ({setting.name} = {setting.value!r}): switching to v changes the loss target"
            " and the sampler's formulas, which this fix only does for epsilon trainers",
            TARGET_PATCH,
        )
    changes = [_v_setting(index, setting) for setting in by_value.get("epsilon", [])]
    for line in set_settings(ctx, changes):
        ctx.note(f"{line} (retrain from scratch: the model learns another target)")
    if computes_velocity(index) and not losses_on_noise(index):
        site = next((c for c in index.calls if VELOCITY_FUNCTION.search(c.method or c.func_text or "")), None)
        where = f" (`{site.func_text}` in `{site.function.qualname}`)" if site is not None and site.function else ""
        ctx.note(f"verified: the loss target already follows the prediction type{where}")


def _v_setting(index: UnitIndex, setting) -> tuple:
    """``(setting, new value)`` for one setting that says epsilon; refuses what cannot say v."""
    if setting.kind == "code":
        raise CannotFix(
            setting.path,
            setting.line,
            "the loss is computed against the noise and no setting chooses the prediction type: add one and"
            " branch the target on it",
            TARGET_PATCH,
        )
    if setting.name in PREDICTION_FLAGS:
        if PREDICTION_FLAGS[setting.name] != "v":
            raise CannotFix(
                setting.path,
                setting.line,
                f"{setting.name} chooses between epsilon and x0 only: this code has no v-prediction to switch to",
                TARGET_PATCH,
            )
        return (setting, True)
    value = spelling(index, setting, V_VALUES.get(setting.name, V_DEFAULT), "v_prediction")
    if value is None or setting.kind == "config-file":
        raise CannotFix(
            setting.path,
            setting.line,
            f"cannot set {setting.name} to v-prediction here"
            + (
                " (a data file this fix does not edit)"
                if value
                else ": the project's code accepts no v-prediction value"
            ),
            manual_setting_patch(setting, value or "v_prediction"),
        )
    return (setting, value)


# --- VPRED002 -----------------------------------------------------------------------
def _branch_target(ctx: FixContext, index: UnitIndex, loss: CallSite | None, finding) -> dict:
    """The loss target becomes ``scheduler.get_velocity(x0, noise, t)`` under v-prediction, the noise
    otherwise: ``target = noise`` turns into the branch, or a new target is branched before the loss."""
    if loss is None or loss.function is None:
        raise CannotFix(
            finding.location.path, finding.location.line, "cannot find the loss this finding is about", TARGET_PATCH
        )
    fn = loss.function
    operand = next(name for name in operands(loss, index) if is_noise(index, fn, name))
    add_noise = next((c for c in index.calls_in(fn) if c.method == "add_noise" and len(c.args) >= 3), None)
    if add_noise is None:
        raise CannotFix(
            loss.path,
            loss.line,
            f"`{fn.qualname}` has no scheduler.add_noise(x0, noise, t) call that names x0 and the timesteps for"
            " the v target",
            TARGET_PATCH,
        )
    condition = _prediction_type_of(index, add_noise.receiver)
    if condition is None:
        raise CannotFix(
            loss.path,
            loss.line,
            f"{add_noise.receiver} has no get_velocity() and prediction_type to build the v target from",
            TARGET_PATCH,
        )
    module = ctx.module(loss.path)
    x0, noise, t = (code_of(a.value) for a in add_noise.args[:3])
    anchor, name, keep = _target_anchor(index, loss, operand)
    statement = enclosing(module, anchor, cst.SimpleStatementLine)
    if statement is None:
        raise CannotFix(loss.path, loss.line, "the loss is not a statement of its own line", TARGET_PATCH)
    branch = parse_statements(
        module,
        f'if {condition} == "v_prediction":\n'
        f"    {name} = {add_noise.receiver}.get_velocity({x0}, {noise}, {t})\n"
        "else:\n"
        f"    {name} = {noise}\n",
    )
    branch[0] = with_comment(branch[0].with_changes(leading_lines=statement.leading_lines), TARGET_COMMENT)
    ctx.note(
        f"`{fn.qualname}`: the loss target is {add_noise.receiver}.get_velocity(...) under v-prediction, the"
        " noise otherwise"
    )
    if keep is None:
        return {statement: lambda node: cst.FlattenSentinel(branch)}
    return {
        keep: lambda node: cst.Name(name),
        statement: lambda node: cst.FlattenSentinel([*branch, node.with_changes(leading_lines=[])]),
    }


def _target_anchor(index: UnitIndex, loss: CallSite, operand: str) -> tuple:
    """``(node whose statement the branch replaces or precedes, target name, noise operand to rename)``:
    the single ``target = noise`` alias is replaced (nothing renamed); otherwise a fresh name is
    branched before the loss and the loss's noise operand renamed to it."""
    fn = loss.function
    aliases = [a for a in local_assigns(index, fn, operand) if dotted(a.value) and dotted(a.value) != operand]
    if len(aliases) == 1:  # ``target = noise``: that assignment becomes the branch
        return aliases[0].value, operand, None
    used = {a.target for a in index.assigns if a.function == fn}
    name = next(n for n in ("target", "loss_target", "v_target") if n not in used)
    keep = next(
        n for n in expression_nodes(loss.node) if isinstance(n, (cst.Name, cst.Attribute)) and dotted(n) == operand
    )
    return loss.node, name, keep


# --- VPRED003 -----------------------------------------------------------------------
def _sampler_follows(ctx: FixContext, index: UnitIndex, call: CallSite | None, finding) -> dict:
    """A diffusers sampling scheduler gets the trainer's v prediction type; hand-written samplers are refused."""
    if call is None or diffusers_scheduler_class(call) is None:
        raise CannotFix(
            finding.location.path,
            finding.location.line,
            "the sampler reads the model output as epsilon in hand-written code; convert it as v",
            SAMPLER_PATCH,
        )
    trained = next(
        (
            c.kwarg("prediction_type")
            for c in index.calls
            if c is not call
            and diffusers_scheduler_class(c)
            and c.kwarg("prediction_type") is not None
            and prediction_family("prediction_type", literal(c.kwarg("prediction_type"))) != "epsilon"
        ),
        None,
    )
    value = trained if trained is not None else cst.SimpleString('"v_prediction"')
    ctx.note(
        f"{diffusers_scheduler_class(call)}(...) at line {call.line} now reads the model output as v"
        f" (prediction_type={code_of(value)})"
    )
    return {call.node: lambda node: with_keyword(node, "prediction_type", value)}


def _prediction_type_of(index: UnitIndex, scheduler: str) -> str | None:
    """The expression holding ``scheduler``'s prediction type, when it also has ``get_velocity``."""
    origins = index.origins(scheduler)
    if any(DIFFUSERS_SCHEDULER.match(o) for o in origins):
        return f"{scheduler}.config.prediction_type"
    classes = {o.rsplit(".", 1)[-1] for o in origins}
    own = {f.class_name for f in index.functions_named("get_velocity") if f.class_name in classes}
    if own and any(
        a.target == "self.prediction_type" and a.function and a.function.class_name in own for a in index.assigns
    ):
        return f"{scheduler}.prediction_type"
    return None
