import itertools
import json

import numpy as np
import pytest
import torch

from t2s.data import GLOSSES, ManifestDataset, generate_synthetic_dataset, read_video
from t2s.data.synthetic import Signer, main, render_sentence


def read_manifest(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_vocabulary():
    assert len(GLOSSES) >= 20 and len(set(GLOSSES)) == len(GLOSSES)
    assert {"HELLO", "THANK-YOU", "WEATHER", "RAIN", "SUN", "TOMORROW"} <= set(GLOSSES)
    assert all(g == g.upper() and " " not in g for g in GLOSSES)


def test_every_pair_of_glosses_is_distinguishable():
    means = {g: render_sentence([g], 16, 64).astype(np.float32).mean(axis=0) for g in GLOSSES}
    for a, b in itertools.combinations(GLOSSES, 2):
        difference = np.abs(means[a] - means[b]).max(axis=-1)
        # Hands are small, so compare where they are: the time-averaged pictures of two
        # glosses differ by more than 20 levels on at least 2% of the pixels (~80 pixels).
        assert (difference > 20).mean() > 0.02, (a, b)


def test_every_gloss_moves():
    for gloss in GLOSSES:
        frames = render_sentence([gloss], 8, 32).astype(np.int16)
        assert np.abs(np.diff(frames, axis=0)).max() > 50, gloss


def test_sentence_frames_follow_the_glosses():
    frames = render_sentence(["HELLO", "RAIN"], 8, 32)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[:4], render_sentence(["HELLO"], 4, 32))
    assert np.array_equal(frames[4:], render_sentence(["RAIN"], 4, 32))


def test_render_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown glosses \\['HELO'\\]"):
        render_sentence(["HELO"])
    with pytest.raises(ValueError, match="need 1 to num_frames=2 glosses"):
        render_sentence(["HELLO", "RAIN", "SUN"], num_frames=2)


def test_same_seed_gives_identical_files(tmp_path):
    first = generate_synthetic_dataset(tmp_path / "a", num_samples=6, num_frames=8, image_size=32, seed=7)
    second = generate_synthetic_dataset(tmp_path / "b", num_samples=6, num_frames=8, image_size=32, seed=7)
    assert first.read_bytes() == second.read_bytes()
    for row in read_manifest(first):
        assert (first.parent / row["video"]).read_bytes() == (second.parent / row["video"]).read_bytes()
    texts = [r["text"] for r in read_manifest(first)]
    other = generate_synthetic_dataset(tmp_path / "c", num_samples=6, num_frames=8, image_size=32, seed=8)
    assert [r["text"] for r in read_manifest(other)] != texts
    same_signer = generate_synthetic_dataset(tmp_path / "d", 6, 8, 32, seed=7, vary_signer=False)
    assert [r["text"] for r in read_manifest(same_signer)] == texts
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(
        render_sentence(["SUN"], 4, 32, Signer.random(rng_a)), render_sentence(["SUN"], 4, 32, Signer.random(rng_b))
    )


def test_manifest_rows_match_the_videos(tmp_path):
    manifest = generate_synthetic_dataset(
        tmp_path, num_samples=8, num_frames=8, image_size=32, seed=1, vary_signer=False
    )
    assert manifest == tmp_path / "manifest.jsonl"
    rows = read_manifest(manifest)
    assert len(rows) == 8 and not list(tmp_path.glob(".*partial*"))
    for row in rows:
        assert 1 <= len(row["glosses"]) <= 3 and set(row["glosses"]) <= set(GLOSSES)
        assert row["text"] == " ".join(row["glosses"])
        drawn = torch.from_numpy(render_sentence(row["glosses"], 8, 32)).permute(3, 0, 1, 2).float() / 127.5 - 1
        assert (read_video(tmp_path / row["video"], 8, 32) - drawn).abs().mean() < 0.03
    ds = ManifestDataset(manifest, num_frames=8, image_size=32)
    assert len(ds) == 8 and ds[3]["video"].shape == (3, 8, 32, 32) and ds[3]["text"] == rows[3]["text"]


@pytest.mark.parametrize("fmt", ["frames", "gif"])
def test_other_formats(tmp_path, fmt):
    manifest = generate_synthetic_dataset(tmp_path, num_samples=2, num_frames=4, image_size=24, fmt=fmt, seed=2)
    ds = ManifestDataset(manifest, num_frames=4, image_size=24)
    assert [ds[i]["video"].shape for i in range(2)] == [(3, 4, 24, 24)] * 2
    # Regenerating into the same folder replaces the clips instead of failing or mixing frames.
    assert generate_synthetic_dataset(tmp_path, num_samples=2, num_frames=4, image_size=24, fmt=fmt, seed=2)


def test_short_clips_get_at_most_one_gloss_per_frame(tmp_path):
    manifest = generate_synthetic_dataset(tmp_path, num_samples=10, num_frames=2, image_size=16, seed=0)
    assert max(len(r["glosses"]) for r in read_manifest(manifest)) <= 2


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="fmt must be one of"):
        generate_synthetic_dataset(tmp_path, fmt="avi")
    with pytest.raises(ValueError, match="mp4 needs an even image_size"):
        generate_synthetic_dataset(tmp_path, image_size=33)


def test_cli(tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main([str(out), "--num-samples", "3", "--size", "16", "--frames", "4", "--seed", "5"]) == 0
    assert len(read_manifest(out / "manifest.jsonl")) == 3
    assert str(out / "manifest.jsonl") in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(out), "--size", "15"])
    assert "even image_size" in capsys.readouterr().err
