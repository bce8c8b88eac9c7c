import pytest
import torch

from t2s.eval import RecogniserError, load_recogniser, render_real_clips
from t2s.eval.clips import REFERENCE_SEED
from t2s.eval.training import accuracy


def test_held_out_signers_are_recognised(tiny):
    assert tiny.metadata["train_seed"] != tiny.metadata["held_out_seed"]
    assert tiny.held_out_accuracy >= 0.85
    unseen = render_real_clips(2, tiny.model.config.num_frames, tiny.model.config.image_size, seed=REFERENCE_SEED)
    assert accuracy(tiny.model, unseen) >= 0.85


def test_noise_is_not_recognised(tiny):
    real = render_real_clips(2, tiny.model.config.num_frames, tiny.model.config.image_size, seed=REFERENCE_SEED)
    noise = torch.rand(real.clips.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    _, predicted = tiny.model.embed_and_predict(noise)
    assert sum(p == g for p, g in zip(predicted, real.glosses)) / len(predicted) <= 0.2


def test_larger_clips_are_resized_to_the_recogniser(tiny):
    larger = render_real_clips(
        1, 2 * tiny.model.config.num_frames, 2 * tiny.model.config.image_size, seed=REFERENCE_SEED
    )
    features, _ = tiny.model.embed_and_predict(larger.clips)
    assert features.shape == (len(larger.glosses), 64)
    assert accuracy(tiny.model, larger) >= 0.7


def test_a_saved_recogniser_predicts_the_same(tiny, tiny_path):
    loaded, metadata = load_recogniser(tiny_path)
    clips = render_real_clips(1, tiny.model.config.num_frames, tiny.model.config.image_size, seed=REFERENCE_SEED).clips
    assert metadata["held_out_accuracy"] == tiny.held_out_accuracy
    assert torch.equal(loaded.embed_and_predict(clips)[0], tiny.model.embed_and_predict(clips)[0])


def test_unusable_checkpoints_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "none.pt"
    with pytest.raises(RecogniserError, match=rf"not found: {missing}.*train-recogniser --out"):
        load_recogniser(missing)
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    with pytest.raises(RecogniserError, match=rf"{other}: field 'format' is 'something else'"):
        load_recogniser(other)
