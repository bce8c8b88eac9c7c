import numpy as np
import pytest

from t2s.data.synthetic import GLOSSES, Signer, hand_positions, render_sentence, skin_template
from t2s.eval.clips import render_real_clips, to_uint8_frames
from t2s.eval.hands import locate_hands
from t2s.eval.trajectory import chamfer, trajectory_error


def test_hands_are_found_where_the_signer_drew_them():
    signer = Signer(skin=(140, 96, 66), hair=(150, 110, 60), shift_x=0.03)  # hair close to this skin tone
    frames = render_sentence(["EAST"], 16, 64, signer)
    track = locate_hands(frames)
    assert track.skin == signer.skin
    assert track.shift_x == pytest.approx(0.03, abs=0.006)
    truth = hand_positions(["EAST"], 16, 64, signer)
    for found, true in zip(track.points, truth):
        assert len(found) == 2  # EAST keeps both hands apart and away from the face
        assert chamfer(found, true, true, miss_cost=99.0) < 1.5


def test_real_clips_score_low_and_noise_scores_high():
    real = render_real_clips(1, 16, 64, seed=5)
    frames = to_uint8_frames(real.clips)
    errors = np.array([trajectory_error(clip, gloss) for clip, gloss in zip(frames, real.glosses)])
    noise = np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8)
    noise_errors = np.array([trajectory_error(clip, gloss) for clip, gloss in zip(noise, real.glosses)])
    assert errors.mean() < 1.5 and errors.max() < 4.0, dict(zip(real.glosses, errors.round(2)))
    assert noise_errors.min() > 3 * errors.max()
    assert noise_errors.mean() > 15.0


def test_the_wrong_gloss_scores_high():
    frames = render_sentence(["NORTH"], 16, 64)
    assert trajectory_error(frames, "SOUTH") > 5 * trajectory_error(frames, "NORTH")


def test_a_clip_without_hands_costs_the_miss_cost():
    signer = Signer()
    still = np.empty((16, 64, 64, 3), np.uint8)
    still[:] = signer.background
    still[:, skin_template(64) > 0.5] = signer.skin  # a face and neck, and no hands anywhere
    assert locate_hands(still).points[0].shape == (0, 2)
    assert trajectory_error(still, "HELLO", miss_cost=50.0) == pytest.approx(50.0)


def test_chamfer_cases():
    a = np.array([[0.0, 0.0], [10.0, 0.0]])
    assert chamfer(a, a, a, 9.0) == 0.0
    merged = np.array([[5.0, 0.0]])  # one blob for two overlapping hands
    assert chamfer(merged, a, a, 9.0) == pytest.approx(5.0)
    assert chamfer(np.zeros((0, 2)), a, a, 9.0) == 9.0
    assert chamfer(np.zeros((0, 2)), a[:0], a, 9.0) == 0.0  # nothing visible, nothing found
    assert chamfer(merged, a[:0], a, 9.0) == pytest.approx(5.0)  # a hidden hand may explain a found one


def test_every_gloss_has_a_true_path():
    for gloss in GLOSSES:
        assert hand_positions([gloss], 8, 32).shape == (8, 2, 2)
