import time

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextModel

from t2s.models import TextEncoder, TextEncoderConfig, TextEncoderLoadError, TextEncoderOutput, count_parameters

PROMPTS = ["HELLO, thank you", "weather tomorrow: rain in the north, sun in the south", "Straße 42"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.tiny(embed_dim=64, seed=0)


def test_tiny_output_shapes_and_padding_mask(encoder):
    out = encoder(PROMPTS)
    assert isinstance(out, TextEncoderOutput)
    B, L = len(PROMPTS), out.mask.shape[1]
    assert out.tokens.shape == (B, L, 64) and out.pooled.shape == (B, 64)
    assert out.mask.dtype == torch.bool
    reference = encoder.tokenizer(PROMPTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    assert torch.equal(out.mask, reference["attention_mask"].bool())
    assert not out.mask.all(), "prompts of different length must produce padding"
    assert not out.tokens[~out.mask].any(), "padded positions carry nothing"


def test_shipped_vocabulary_covers_glosses_and_any_word(encoder):
    glosses = (
        "hello thank you weather rain sun tomorrow today north south wind cloud snow "
        "good bad morning evening please yes no"
    )
    ids = encoder.tokenizer(glosses, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(glosses.split()), "each gloss is one token of the shipped vocabulary"
    unk = encoder.tokenizer.unk_token_id
    assert unk not in ids
    unknown_words = encoder.tokenizer("Zyxomorphic QWERTY 1234 x-ray!")["input_ids"]
    assert unk not in unknown_words, "letter pieces spell words outside the vocabulary"


def test_backbone_frozen_projection_trainable(encoder):
    encoder.train()
    assert not encoder.backbone.training, "frozen backbone stays in eval mode (no dropout)"
    assert not any(p.requires_grad for p in encoder.backbone.parameters())
    encoder.zero_grad()
    out = encoder(PROMPTS)
    (out.tokens.square().mean() + out.pooled.square().mean()).backward()
    assert all(p.grad is None for p in encoder.backbone.parameters())
    projections = list(encoder.token_proj.parameters()) + list(encoder.pooled_proj.parameters())
    assert all(p.grad is not None and p.grad.any() for p in projections)
    assert count_parameters(encoder, trainable_only=True) == sum(p.numel() for p in projections)


def test_tiny_is_deterministic_and_rebuilds_from_its_config_dict(encoder):
    state = torch.random.get_rng_state()
    again = TextEncoder.tiny(embed_dim=64, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state), "building must not consume the global RNG"
    rebuilt = TextEncoder.from_config_dict(encoder.config_dict())
    rebuilt.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        ref = encoder(PROMPTS).tokens
        assert torch.equal(again(PROMPTS).tokens, ref)
        assert torch.equal(rebuilt(PROMPTS).tokens, ref)


def test_offline_unknown_hub_id_names_it_and_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(TextEncoderLoadError) as err:
        TextEncoder.from_pretrained(TextEncoderConfig(backbone="no-such-org/no-such-encoder", local_files_only=True))
    assert time.perf_counter() - start < 5, "must fail fast, without network retries"
    message = str(err.value)
    assert "'no-such-org/no-such-encoder'" in message
    assert "--text-encoder /path/to/" in message and "huggingface-cli download no-such-org/no-such-encoder" in message
    assert "HF_HOME" in message


def test_missing_local_folder_is_reported(tmp_path):
    missing = tmp_path / "distilbert"
    with pytest.raises(TextEncoderLoadError, match="does not exist"):
        TextEncoder.from_pretrained(TextEncoderConfig(backbone=str(missing)))


def test_loads_a_local_folder_like_a_downloaded_checkpoint(encoder, tmp_path):
    encoder.backbone.save_pretrained(tmp_path)
    encoder.tokenizer.save_pretrained(tmp_path)
    loaded = TextEncoder.from_pretrained(TextEncoderConfig(backbone=str(tmp_path), embed_dim=64, local_files_only=True))
    assert torch.equal(
        loaded.backbone.embeddings.word_embeddings.weight, encoder.backbone.embeddings.word_embeddings.weight
    )
    assert loaded.config_dict()["source"] == "pretrained"
    assert loaded(PROMPTS).tokens.shape == encoder(PROMPTS).tokens.shape


def test_full_clip_checkpoint_loads_its_text_tower(encoder, tmp_path):
    tok = encoder.tokenizer
    text = dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=64, pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )  # fmt: skip
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16
    )
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    clip = TextEncoder.from_pretrained(
        TextEncoderConfig(backbone=str(tmp_path), embed_dim=64, pooling="pooler", local_files_only=True)
    )
    assert isinstance(clip.backbone, CLIPTextModel)
    out = clip(PROMPTS)
    assert out.tokens.shape[-1] == 64 and out.pooled.shape == (len(PROMPTS), 64)


def test_input_and_config_errors(encoder):
    with pytest.raises(TypeError, match="list of strings"):
        encoder("HELLO")
    with pytest.raises(ValueError, match="pooling"):
        TextEncoderConfig(pooling="max")
