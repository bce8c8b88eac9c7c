"""The commands of `python -m t2s.eval` (in-process): evaluate a checkpoint, reference points, training."""

import json
from pathlib import Path

import pytest

from reference_trainer.config import smoke_config
from reference_trainer.trainer import Trainer
from t2s.data import GLOSSES
from t2s.eval import load_recogniser
from t2s.eval.cli import main as eval_main

METRICS = {"back_translation", "frechet_distance", "trajectory_error_px", "trajectory_error_norm"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained smoke-sized model (16x16 pixels, 4 frames, as the tiny recogniser) saved as a checkpoint."""
    config = smoke_config()
    config.train.output_dir = str(tmp_path_factory.mktemp("run"))
    return Trainer(config, device="cpu").save_checkpoint(Path(config.train.output_dir) / "checkpoints" / "latest.pt")


def _check_report(report: dict, num_clips: int) -> None:
    assert set(report["metrics"]) == METRICS
    for estimate in report["metrics"].values():
        assert estimate["lo"] <= estimate["mean"] <= estimate["hi"]
    assert report["num_clips"] == num_clips and set(report["per_gloss_accuracy"]) == set(GLOSSES)


def test_evaluate_samples_every_gloss_and_writes_the_report(checkpoint, tiny_path, tmp_path, capsys):
    out = tmp_path / "report.json"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--recogniser", str(tiny_path), "--num-per-gloss", "2"]
    args += [
        "--steps",
        "2",
        "--resamples",
        "50",
        "--out",
        str(out),
        "--samples",
        str(tmp_path / "gifs"),
        "--device",
        "cpu",
    ]
    assert eval_main(args) == 0
    table = capsys.readouterr().out
    assert "back_translation" in table and "frechet_distance" in table and f"report: {out}" in table
    report = json.loads(out.read_text())
    _check_report(report, 2 * len(GLOSSES))
    assert report["clip_shape"] == [4, 16, 16]
    assert report["recogniser"]["path"] == str(tiny_path) and report["checkpoint"] == str(checkpoint)
    assert len(list((tmp_path / "gifs").glob("*.gif"))) == 2 * len(GLOSSES)
    # An untrained generator draws no signer: nothing is read back right, the hands are not where they belong.
    assert report["metrics"]["back_translation"]["mean"] < 0.3
    assert report["metrics"]["trajectory_error_norm"]["mean"] > 0.1


def test_evaluate_names_a_missing_recogniser(checkpoint, tmp_path, capsys):
    missing = tmp_path / "none.pt"
    assert eval_main(["evaluate", "--checkpoint", str(checkpoint), "--recogniser", str(missing)]) == 2
    assert f"recogniser checkpoint not found: {missing}" in capsys.readouterr().err


def test_reference_scores_real_clips_above_noise(tiny_path, tmp_path, capsys):
    reports = {}
    for kind in ("real", "noise"):
        out = tmp_path / f"{kind}.json"
        args = ["reference", "--kind", kind, "--per-gloss", "1", "--size", "16", "--frames", "4"]
        assert eval_main(args + ["--recogniser", str(tiny_path), "--resamples", "50", "--out", str(out)]) == 0
        reports[kind] = json.loads(out.read_text())["metrics"]
        _check_report(json.loads(out.read_text()), len(GLOSSES))
    assert reports["real"]["back_translation"]["mean"] > reports["noise"]["back_translation"]["mean"] + 0.5
    # One clip per gloss: both distances carry a large small-sample bias, the gap still shows.
    assert reports["real"]["frechet_distance"]["mean"] < reports["noise"]["frechet_distance"]["mean"] / 4


def test_train_recogniser_writes_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "r.pt"
    args = ["train-recogniser", "--out", str(out), "--size", "16", "--frames", "4", "--epochs", "1"]
    assert eval_main(args + ["--train-per-gloss", "1", "--test-per-gloss", "1"]) == 0
    assert f"saved {out}" in capsys.readouterr().out
    model, metadata = load_recogniser(out)
    assert model.config.image_size == 16 and metadata["held_out_clips"] == len(GLOSSES)
