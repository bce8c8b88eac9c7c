"""Frozen `transformers` text backbone + trainable CLIP-style projection.

The backbone (DistilBERT by default; any hub id or local folder, CLIP text
towers included) turns prompts into hidden states; a trainable Linear +
LayerNorm maps them to the diffusion model's context width. A second
projection gives one pooled vector per prompt.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    CLIPTextModel,
    DistilBertConfig,
    DistilBertModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

ASSETS_DIR = Path(__file__).parent / "assets"  # vocab.txt + tokenizer_config.json of the tiny encoder
POOLING = ("mean", "cls", "pooler")
PADDING = ("longest", "max_length")


class TextEncoderLoadError(RuntimeError):
    """The backbone or its tokenizer could not be loaded (offline, wrong id or path)."""


@dataclass
class TextEncoderConfig:
    backbone: str = "distilbert-base-uncased"  # hub id or local folder
    embed_dim: int = 512
    max_length: int = 32
    freeze_backbone: bool = True
    # "mean": masked mean of the token states; "cls": first token;
    # "pooler": the backbone's pooler_output (CLIP: the EOS token state).
    pooling: str = "mean"
    # "max_length" gives fixed-shape batches (for caching or compiled models).
    padding: str = "longest"
    # True never touches the network (fails fast instead of retrying).
    local_files_only: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in POOLING:
            raise ValueError(f"TextEncoderConfig.pooling must be one of {POOLING}, got {self.pooling!r}")
        if self.padding not in PADDING:
            raise ValueError(f"TextEncoderConfig.padding must be one of {PADDING}, got {self.padding!r}")
        if self.embed_dim <= 0 or self.max_length <= 0:
            raise ValueError("TextEncoderConfig.embed_dim and max_length must be positive")


class TextEncoderOutput(NamedTuple):
    tokens: torch.Tensor  # [B, L, D], zero at padded positions
    mask: torch.Tensor  # [B, L] bool, True = real token
    pooled: torch.Tensor  # [B, D]


class TextEncoder(nn.Module):
    def __init__(
        self,
        cfg: TextEncoderConfig,
        tokenizer: PreTrainedTokenizerBase,
        backbone: PreTrainedModel,
        tiny_config: dict | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.backbone = backbone
        self._tiny_config = tiny_config  # set only for TextEncoder.tiny, to rebuild it from a checkpoint
        hidden = backbone.config.hidden_size
        self.token_proj = nn.Sequential(nn.Linear(hidden, cfg.embed_dim), nn.LayerNorm(cfg.embed_dim))
        self.pooled_proj = nn.Sequential(nn.Linear(hidden, cfg.embed_dim), nn.LayerNorm(cfg.embed_dim))
        if cfg.freeze_backbone:
            self.backbone.requires_grad_(False)
        self.train()

    # ------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, cfg: TextEncoderConfig | None = None) -> "TextEncoder":
        """Load tokenizer and backbone with `transformers` (hub id or local folder)."""
        cfg = cfg or TextEncoderConfig()
        name = cfg.backbone
        local = os.path.expanduser(name)
        if _looks_like_path(name) and not os.path.isdir(local):
            raise TextEncoderLoadError(_load_help(name, f"local folder {local!r} does not exist"))
        source = local if os.path.isdir(local) else name
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=cfg.local_files_only)
            backbone = _load_backbone(source, cfg.local_files_only)
        except (OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TextEncoderLoadError(_load_help(name, reason)) from err
        return cls(cfg, tokenizer, backbone)

    @classmethod
    def tiny(cls, embed_dim: int = 64, seed: int = 0, max_length: int = 32) -> "TextEncoder":
        """Random 2-layer DistilBERT with the shipped vocabulary: no download, deterministic in seed."""
        tokenizer = _tiny_tokenizer()
        backbone_cfg = DistilBertConfig(
            vocab_size=len(tokenizer),
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=max(64, max_length),
            pad_token_id=tokenizer.pad_token_id,
        )
        cfg = TextEncoderConfig(backbone="tiny-distilbert", embed_dim=embed_dim, max_length=max_length)
        return cls._build_tiny(cfg, backbone_cfg.to_dict(), seed)

    @classmethod
    def _build_tiny(cls, cfg: TextEncoderConfig, backbone_cfg: dict, seed: int) -> "TextEncoder":
        tokenizer = _tiny_tokenizer()
        # Seed a forked RNG so building the encoder does not shift the caller's random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = DistilBertModel(DistilBertConfig.from_dict(backbone_cfg))
            tiny_config = {"backbone_config": backbone_cfg, "seed": seed, "vocab_sha256": _vocab_sha256()}
            return cls(cfg, tokenizer, backbone, tiny_config=tiny_config)

    def config_dict(self) -> dict:
        """JSON-able description to store in a checkpoint; rebuild with `from_config_dict`,
        then `load_state_dict` (the state dict holds projection and backbone weights)."""
        if self._tiny_config is not None:
            return {"source": "tiny", "config": asdict(self.cfg), **self._tiny_config}
        return {"source": "pretrained", "config": asdict(self.cfg)}

    @classmethod
    def from_config_dict(cls, data: dict) -> "TextEncoder":
        known = {f.name for f in fields(TextEncoderConfig)}
        cfg = TextEncoderConfig(**{k: v for k, v in data["config"].items() if k in known})
        if data["source"] == "pretrained":
            return cls.from_pretrained(cfg)
        if data["source"] != "tiny":
            raise ValueError(f"unknown text encoder source {data['source']!r} (expected 'tiny' or 'pretrained')")
        if data["vocab_sha256"] != _vocab_sha256():
            raise ValueError(
                "this checkpoint's tiny text encoder was built with a different vocabulary than "
                f"{ASSETS_DIR / 'vocab.txt'}; its token ids would not match"
            )
        return cls._build_tiny(cfg, data["backbone_config"], data["seed"])

    # ------------------------------------------------------------ use

    @property
    def device(self) -> torch.device:
        return self.token_proj[0].weight.device

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.cfg.freeze_backbone:
            self.backbone.eval()  # a frozen backbone never runs dropout
        return self

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("TextEncoder expects a list of strings (one prompt per sample)")
        if len(texts) == 0:
            raise ValueError("TextEncoder got an empty list of prompts")
        batch = self.tokenizer(
            list(texts),
            padding=self.cfg.padding,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def forward(self, texts: Sequence[str]) -> TextEncoderOutput:
        batch = {k: v.to(self.device) for k, v in self.tokenize(texts).items()}
        mask = batch["attention_mask"].bool()
        with torch.no_grad() if self.cfg.freeze_backbone else nullcontext():
            out = self.backbone(**batch)
        hidden = out.last_hidden_state
        if self.cfg.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        elif self.cfg.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ValueError(
                    f"pooling='pooler' but backbone {self.cfg.backbone!r} has no pooler_output; use 'mean' or 'cls'"
                )
        tokens = self.token_proj(hidden) * mask.unsqueeze(-1).to(hidden.dtype)
        return TextEncoderOutput(tokens=tokens, mask=mask, pooled=self.pooled_proj(pooled))


# ---------------------------------------------------------------- helpers


def _load_backbone(name: str, local_files_only: bool) -> PreTrainedModel:
    config = AutoConfig.from_pretrained(name, local_files_only=local_files_only)
    if config.model_type == "clip":  # a full CLIP checkpoint: keep only the text tower
        return CLIPTextModel.from_pretrained(name, local_files_only=local_files_only)
    return AutoModel.from_pretrained(name, local_files_only=local_files_only)


def _looks_like_path(name: str) -> bool:
    return os.path.isabs(name) or name.startswith((".", "~")) or os.path.isdir(name)


def _load_help(name: str, reason: str) -> str:
    if _looks_like_path(name):
        how = (
            "The folder needs config.json, the tokenizer files and the weights, e.g. from "
            f"`huggingface-cli download distilbert-base-uncased --local-dir {name}` on a machine with network."
        )
    else:
        how = (
            "Without network access the backbone must already be on disk. Point at a local copy, e.g. "
            "`--text-encoder /path/to/distilbert-base-uncased` (a folder with config.json, tokenizer files "
            f"and weights), or download it once where there is network with `huggingface-cli download {name}` "
            "and make that cache visible here through HF_HOME (set HF_HUB_OFFLINE=1 so loading does not "
            "wait on network retries)."
        )
    return f"could not load text encoder backbone {name!r}: {reason}\n{how}"


def _tiny_tokenizer() -> PreTrainedTokenizerBase:
    # Loading from the folder (not BertTokenizerFast(vocab_file=...)) works across
    # transformers 4.x and 5.x; 5.x silently ignores vocab_file and maps all to [UNK].
    return AutoTokenizer.from_pretrained(str(ASSETS_DIR))


def _vocab_sha256() -> str:
    return hashlib.sha256((ASSETS_DIR / "vocab.txt").read_bytes()).hexdigest()
