"""The case loader: patches round-trip exactly, and a case whose source moved on fails by name."""

from __future__ import annotations

import pytest
from casefiles import CaseError, apply_patch, discover, make_patch, unread_files, write_expected, write_tree


@pytest.mark.parametrize(
    "old,new",
    [
        ({"a.py": "x\ny\nz\n"}, {"a.py": "x\nY\nz\n"}),
        ({"a.py": "x\ny"}, {"a.py": "x\ny\n"}),  # no newline at the end, before or after
        ({"a.py": "x\n"}, {"a.py": "x\n", "b/c.py": "new\n"}),  # a new file
        ({"a.py": "x\n", "b.py": "gone\n"}, {"a.py": "x\n"}),  # a deleted file
        ({"a.py": "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n\n"}, {"a.py": "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n\n"}),
    ],
)
def test_a_patch_turns_old_into_new(old, new):
    assert apply_patch(old, make_patch(old, new), "test") == new


def cases(tmp_path, files: dict[str, str]):
    """A cases folder holding ``files`` (paths under ``cases/ema/``); returns it."""
    return write_tree(files, tmp_path / "cases" / "ema").parent


def test_a_patch_whose_lines_moved_fails_naming_the_case(tmp_path):
    patch = make_patch({"train.py": "a = 1\nb = 2\nc = 3\n"}, {"train.py": "a = 1\n"})
    recipe = 'from = "case:ema/base"\npatch = "variant.in.patch"\n'
    folder = cases(
        tmp_path, {"base.in.py": "a = 1\nb = 2\nc = 3\n", "variant.in.toml": recipe, "variant.in.patch": patch}
    )
    assert discover(folder)[1].inputs == {"train.py": "a = 1\n"}
    assert unread_files(folder) == []

    (folder / "ema" / "base.in.py").write_text("import os\na = 1\nb = 2\nc = 3\n")  # the source moved on
    with pytest.raises(CaseError, match=r"case ema/variant \(variant.in.patch\): train.py: hunk @@ -1,3 \+1 @@"):
        discover(folder)


def test_a_file_no_case_reads_is_reported(tmp_path):
    folder = cases(tmp_path, {"base.in.py": "a = 1\n", "base.in.patch": ""})  # no recipe names the patch
    assert unread_files(folder) == [folder / "ema" / "base.in.patch"]


def test_regenerating_rewrites_an_out_patch_that_no_longer_applies(tmp_path):
    patch = make_patch({"train.py": "a = 1\n"}, {"train.py": "a = 2\n"})
    folder = cases(tmp_path, {"base.in.py": "a = 1\n", "x.in.toml": 'from = "case:ema/base"\n', "x.out.patch": patch})
    assert discover(folder)[1].expected == {"train.py": "a = 2\n"}

    (folder / "ema" / "base.in.py").write_text("b = 1\n")
    with pytest.raises(CaseError, match=r"case ema/x \(x.out.patch\)"):
        discover(folder)
    stale = discover(folder, stale_out_ok=True)[1]
    assert stale.expected == {}
    write_expected(stale, {"train.py": "b = 2\n"})
    assert discover(folder)[1].expected == {"train.py": "b = 2\n"}
