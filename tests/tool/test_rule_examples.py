"""Every rule's own VALID/INVALID examples, run through the real engine."""

import pytest

from optimizer_tool.registry import all_rules
from optimizer_tool.testing import findings_for

CASES = [
    (rule, kind, i, ex)
    for rule in all_rules()
    for kind in ("VALID", "INVALID")
    for i, ex in enumerate(getattr(rule, kind))
]


@pytest.mark.parametrize("rule,kind,i,example", CASES, ids=[f"{r.code}-{k}-{i}" for r, k, i, _ in CASES])
def test_rule_example(rule, kind, i, example, tmp_path):
    codes = [f.code for f in findings_for(example, tmp_path)]
    if kind == "INVALID":
        assert rule.code in codes, f"{rule.code} should fire on INVALID example {i}: got {codes}"
    else:
        assert rule.code not in codes, f"{rule.code} fired on VALID example {i}"


def test_every_rule_has_examples_and_docs():
    for rule in all_rules():
        assert rule.VALID and rule.INVALID, f"{rule.code} needs VALID and INVALID examples"
        assert rule.message and rule.explain.strip() and rule.title, rule.code


def test_codes_are_unique():
    codes = [r.code for r in all_rules()]
    assert len(codes) == len(set(codes))
