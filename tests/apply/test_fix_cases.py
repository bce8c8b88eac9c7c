"""Every fix's before/after pairs (TorchFix ``x.in.py``/``x.out.py`` style), run through the real
apply engine, and each one applied again to its own output (idempotence).

A case lives under ``tests/apply/cases/<key>/`` (``<key>`` is the optimization that ``--only``
selects) in one of two shapes:

- ``<name>.in.py`` + ``<name>.out.py``: a single-file trainer (checked as ``train.py``);
- ``<name>/in/`` + ``<name>/out/``: a small project; ``out/`` holds the files the fix changes,
  a file of ``in/`` missing from ``out/`` must stay as it is.

A case whose fix must refuse has ``<name>/refused.txt`` (a phrase the CannotFix message contains)
instead of ``out/``: nothing may change.

Either side may be made instead of stored (``casefiles.py`` loads them), so that a case never
copies a trainer kept elsewhere:

- the input: ``<name>.in.toml`` instead of ``<name>.in.py``, ``<name>/in.toml`` instead of
  ``<name>/in/``, saying where it comes from::

      from = "reference_trainer"             # where the files come from
      files = ["config.py", "trainer.py"]    # only these of them (optional; default: all)
      patch = "in.patch"                     # a unified diff applied to them (optional)

  ``from`` is a folder of the repository (``"fixtures/trainers/dit_style"``), a file, read as
  ``train.py`` (``"fixtures/trainers/plain_amp_loop/train.py"``), another case's input
  (``"case:cosine/reference"``) or that case's fixed project: its input with its expected files
  laid over it (``"case:ema/reference/out"``). A single-file case must come out as one ``train.py``;
- the expected output: ``<name>.out.patch`` instead of ``<name>.out.py``, ``<name>/out.patch``
  instead of ``<name>/out/``: a unified diff from the input to the expected files, which are the
  files it changes.

Patches have ``a/``/``b/`` paths (text before the first ``---`` line is a comment) and are applied
strictly: a hunk whose lines are not exactly at the line it names fails the case by name, so a case
whose source moved on is noticed instead of going stale. To update such a case, rebuild its input
(``python tests/apply/casefiles.py show KEY/NAME DIR`` writes a case out; after a source change,
apply the old patch to a copy of the source with ``patch -p1``) and store it with
``python tests/apply/casefiles.py rediff KEY/NAME DIR/in``, which rewrites the input patch. A file
under ``cases/`` that no case reads fails ``test_no_stray_case_files``.

Regenerate the expected outputs after an intended change with
``T2S_UPDATE_EXPECTED=1 pytest tests/apply/test_fix_cases.py`` and review the diff: it rewrites each
case's ``.out.py``, ``out/`` files or out patch (an out patch that no longer applies is written
again); a new case without an expected output gets an out patch if its input is made from an
``in.toml``, else ``.out.py`` or ``out/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from casefiles import CASES_DIR, Case, discover, unread_files, write_expected, write_tree

from optimizer_tool.apply import plan, select
from optimizer_tool.settings import Settings

CASES = discover(stale_out_ok=bool(os.environ.get("T2S_UPDATE_EXPECTED")))


def _changed(folder: Path, key: str):
    result = plan([folder], select([key], None, unsafe=False), Settings())
    root = folder.resolve()
    return result, {p.relative_to(root).as_posix(): text for p, text in result.changed.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fix_turns_in_into_out(case: Case, tmp_path):
    result, changed = _changed(write_tree(case.inputs, tmp_path / "in"), case.key)
    if case.expected is None:
        assert result.refused, f"the {case.key} fix should refuse this input, it changed {sorted(changed)}"
        assert any(case.refusal in exc.message for exc in result.refused), [exc.message for exc in result.refused]
        assert all(exc.patch.strip() for exc in result.refused), "a refusal must suggest a manual patch"
        return
    assert not result.refused, [str(exc) for exc in result.refused]
    if os.environ.get("T2S_UPDATE_EXPECTED"):
        write_expected(case, changed)
        return
    assert changed, f"the {case.key} fix changed nothing"
    assert result.ok, f"re-check failed: unfixed {result.unfixed}, new {result.blocking}"
    for rel, text in changed.items():
        assert rel in case.expected, f"{rel} changed but the case has no expected output for it"
        assert text == case.expected[rel], f"{rel} differs from the expected output"
    for rel in case.expected:
        assert rel in changed, f"{rel} was expected to change but did not"


@pytest.mark.parametrize("case", [c for c in CASES if c.expected], ids=[c.id for c in CASES if c.expected])
def test_fix_applied_twice_changes_nothing(case: Case, tmp_path):
    after = {**case.inputs, **case.expected}
    result, changed = _changed(write_tree(after, tmp_path / "out"), case.key)
    assert not result.refused, [str(exc) for exc in result.refused]
    assert changed == {}, f"applying the {case.key} fix to its own output changed {sorted(changed)}"


def test_no_stray_case_files():
    """A file no case reads (a ``.out.py`` whose ``.in.py`` was renamed, a patch no ``in.toml``
    names, a folder without ``in/``) would silently never run."""
    assert unread_files() == []
    assert CASES_DIR.is_dir()
