"""What the clipping rules and fix know about a unit: the clipping calls (and the ones that only
measure the norm), the thresholds handed to something that clips, and defaults that turn it off."""

from __future__ import annotations

import re
from dataclasses import dataclass

import libcst as cst

from optimizer_tool.index import CallSite, Setting, UnitIndex, code_of, literal
from optimizer_tool.knowledge.training import ROLE_CONSTRUCTORS, clip_calls, names_in

# Keywords that hand a clipping threshold to something that clips (Lightning Trainer, timm/MAE scalers,
# DeepSpeed, a project's optimize() helper).
CLIP_KWARGS = {
    "gradient_clip_val",
    "clip_grad",
    "max_grad_norm",
    "grad_clip",
    "grad_clip_norm",
    "clip_grad_norm",
    "gradient_clipping",
    "clip_norm",
    "grad_norm_clip",
    "max_norm_grad",
}
CONFIG_CALLEE = re.compile(
    r"(Config|Configs|Args|Arguments|Options|Opts|Params|Hparams|HParams|Namespace|Settings|Cfg)$"
    r"|^(dict|OmegaConf\.create|SimpleNamespace|EasyDict|edict|add_argument)$"
)
CLIP_SETTING = re.compile(r"clip|grad_norm|max_norm", re.I)
DISABLED = (None, 0, 0.0, False)


@dataclass
class ClipFacts:
    calls: list[CallSite]  # clipping calls
    handed: list[CallSite]  # calls that receive a clipping threshold (Trainer(gradient_clip_val=...), scalers)
    configured: list[Setting]  # config files that set a Lightning / DeepSpeed clipping value

    @property
    def present(self) -> bool:
        return bool(self.calls or self.handed or self.configured)


def clip_facts(index: UnitIndex) -> ClipFacts:
    handed = []
    class_names = {s.owner for s in index.settings if s.kind == "class-default" and s.owner}
    for call in index.calls:
        leaf = call.method or call.func_text
        if not leaf or CONFIG_CALLEE.search(call.func_text or leaf) or leaf in class_names:
            continue
        if any(a.keyword is not None and a.keyword.value in CLIP_KWARGS for a in call.node.args):
            handed.append(call)
    configured = [
        s
        for s in index.setting("gradient_clip_val", "gradient_clipping", "clip_grad", "grad_clip")
        if s.kind == "config-file"
    ]
    return ClipFacts([c for c in clip_calls(index) if not measures_only(c)], handed, configured)


def measures_only(call: CallSite) -> bool:
    """``clip_grad_norm_(params, float("inf"))``: computes the norm, clips nothing."""
    threshold = threshold_node(call)
    return threshold is not None and no_limit(threshold)


def no_limit(threshold: cst.BaseExpression) -> bool:
    """A threshold no gradient norm reaches: ``float("inf")``, ``1e9``."""
    text = code_of(threshold).replace(" ", "").lower()
    return text in (
        'float("inf")',
        "float('inf')",
        "math.inf",
        "torch.inf",
        "np.inf",
        "numpy.inf",
        "inf",
        "1e9",
        "1e10",
        "1e12",
    )


def threshold_node(call: CallSite) -> cst.BaseExpression | None:
    if call.method in ("clip_grad_value_",) or "value" in call.method:
        return call.arg(1, "clip_value")
    if call.method in ("clip_gradients",):
        return call.kwarg("gradient_clip_val")
    return call.arg(1, "max_norm")


def disabled_setting(index: UnitIndex, name: str) -> Setting | None:
    """The default that turns clipping off: ``max_grad_norm: float = None``, ``--clip_grad 0``, a YAML
    ``gradient_clip_val: null`` — when every default of ``name`` that the run starts from says so."""
    leaf = name.rsplit(".", 1)[-1]
    found = [
        s
        for s in index.setting(leaf)
        if s.kind in ("config-file", "argparse", "class-default", "param-default", "getattr-default", "dict", "kwarg")
    ]
    if not found:
        return None
    ranked = sorted(
        found,
        key=lambda s: (
            "config-file",
            "argparse",
            "class-default",
            "dict",
            "getattr-default",
            "param-default",
            "kwarg",  # a hyper-parameter object built in code: diffwave's ``AttrDict(max_grad_norm=None)``
        ).index(s.kind),
    )
    best = [s for s in ranked if s.kind == ranked[0].kind]
    if all(s.known and s.value in DISABLED and not isinstance(s.value, str) for s in best):
        return best[0]
    return None


def guard_names(call: CallSite) -> set[str]:
    names: set[str] = set()
    for guard in call.guards:
        try:
            names |= names_in(cst.parse_expression(guard))
        except cst.ParserSyntaxError:
            continue
    return names


def scalers(index: UnitIndex) -> list[str]:
    pats = ROLE_CONSTRUCTORS["scaler"]
    found = []
    for assign in index.assigns:
        if assign.call is not None and assign.call.matches(pats):
            enabled = assign.call.kwarg("enabled")
            if enabled is not None and literal(enabled) is False:
                continue
            found.append(assign.target)
    return found
