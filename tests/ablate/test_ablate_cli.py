"""Usage errors of ``t2s-opt ablate`` name the option or file at fault and what to do; nothing runs."""

from ablate_helpers import REFERENCE, run_ablate


def test_unknown_key_and_foreign_out_folder(tmp_path):
    done = run_ablate(
        str(REFERENCE), "--keys", "ema,emaa", "--budget-steps", "4", "--out", str(tmp_path / "a"), cache=tmp_path
    )
    assert done.returncode == 2 and "--keys: unknown optimization(s) emaa; choose from ema," in done.stderr
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    done = run_ablate(
        str(REFERENCE), "--keys", "ema", "--budget-steps", "4", "--out", str(tmp_path / "b"), cache=tmp_path
    )
    assert done.returncode == 2 and "holds no ablation (ablation.json missing); choose another --out" in done.stderr
    assert not (tmp_path / "a").exists() and sorted(p.name for p in (tmp_path / "b").iterdir()) == ["notes.txt"]


def test_a_folder_without_the_trainer(tmp_path):
    done = run_ablate(
        str(tmp_path), "--keys", "ema", "--budget-steps", "4", "--out", str(tmp_path / "out"), cache=tmp_path
    )
    assert done.returncode == 2 and "no reference_trainer package here" in done.stderr
