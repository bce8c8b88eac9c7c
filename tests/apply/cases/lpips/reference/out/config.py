"""Configuration of the reference trainer.

Defaults are the plan's "Current Settings". Values can come from a preset (``smoke``), a
YAML/TOML file with ``model``/``data``/``train`` sections, a Python file that is an edited copy
of this one (the plan's ``--config optimized_config.py``), and ``--set section.key=value``
overrides, applied in that order.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

import yaml

from reference_trainer.schedulers.ddim import BETA_SCHEDULES, PREDICTION_TYPES

MIXED_PRECISION = ("no", "bf16")


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the source and the key."""


@dataclass
class ModelConfig:
    preset: str = "default"  # t2s.models.UNet3DConfig.preset name: "default" (~42M params) or "tiny"
    model_channels: int = 96
    # Hub id or local path of the frozen backbone; "tiny" builds a random tiny DistilBERT (tests, smoke runs).
    text_encoder: str = "distilbert-base-uncased"
    text_embed_dim: int = 512


@dataclass
class DataConfig:
    data_dir: Optional[str] = None  # folder holding the manifest
    manifest: str = "manifest.jsonl"  # relative to data_dir unless absolute
    image_size: int = 64
    num_frames: int = 16
    num_workers: int = 4
    # > 0: without data_dir, generate this many synthetic clips into <output_dir>/data first.
    synthetic_samples: int = 0


@dataclass
class TrainConfig:
    learning_rate: float = 5e-5
    num_epochs: int = 150
    batch_size: int = 2
    gradient_accumulation_steps: int = 8
    warmup_steps: int = 500
    max_grad_norm: float = 1.0
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"
    num_train_timesteps: int = 100
    num_inference_steps: int = 50
    weight_decay: float = 0.01
    log_every: int = 10
    save_every_epochs: int = 10
    seed: int = 42
    output_dir: str = "outputs"
    mixed_precision: str = "bf16"  # bf16 autocast on CUDA; always full precision on CPU
    # CPU intra-op threads (torch.set_num_threads), 0 = PyTorch's default. Tiny models on a shared
    # CPU run several times faster on one thread than on contended ones.
    num_threads: int = 0
    lpips_weight: float = 0.1  # weight of the perceptual (LPIPS) term added to the diffusion loss
    lpips_net: str = "vgg"  # LPIPS backbone: "vgg", "alex" or "squeeze"
    lpips_frames: int = 4  # frames per clip (evenly spaced) the LPIPS term compares; 0 = every frame
    lpips_pretrained_backbone: bool = True  # False: random LPIPS backbone, no torchvision download (offline smoke runs only)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        return dataclasses.asdict(self)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def smoke_config() -> Config:
    """Tiny model, tiny text encoder, generated data, 2 epochs: a CPU run of well under a minute."""
    return Config(
        model=ModelConfig(preset="tiny", model_channels=16, text_encoder="tiny", text_embed_dim=32),
        data=DataConfig(image_size=16, num_frames=4, num_workers=0, synthetic_samples=64),
        train=TrainConfig(
            learning_rate=3e-3,  # 32 optimizer steps must visibly lower the loss
            num_epochs=2,
            batch_size=2,
            gradient_accumulation_steps=2,
            warmup_steps=3,  # under 10% of the 32 steps
            num_inference_steps=10,
            log_every=1,
            save_every_epochs=1,
            seed=0,
            output_dir="outputs/smoke",
            num_threads=1,
            lpips_pretrained_backbone=False,
        ),
    )


PRESETS = {"smoke": smoke_config}


# ---------------------------------------------------------------------------- loading


def load_config(
    path: Optional[str | Path] = None, overrides: Iterable[str] = (), preset: Optional[str] = None
) -> Config:
    """Preset (or defaults) <- file <- ``key=value`` overrides, then validated."""
    if preset is None:
        config = Config()
    elif preset in PRESETS:
        config = PRESETS[preset]()
    else:
        raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    if path is not None:
        apply_mapping(config, read_config_file(path), source=str(path))
    for item in overrides:
        apply_override(config, item)
    validate(config)
    return config


def config_from_dict(data: Mapping[str, Any], source: str = "checkpoint") -> Config:
    config = Config()
    apply_mapping(config, data, source=source)
    validate(config)
    return config


def read_config_file(path: str | Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(path.read_text()) or {}
        elif suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif suffix == ".py":
            return _read_python_config(path)
        else:
            raise ConfigError(f"{path}: unsupported config format {suffix!r}; use .yaml, .yml, .toml or .py")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}")
    return data


def _read_python_config(path: Path) -> Dict[str, Any]:
    """An edited copy of this module: the fields whose defaults differ from ours are the overrides."""
    module_name = f"_t2s_user_config_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(module_name, None)
    found = {}
    for section, cls in SECTIONS.items():
        user_cls = getattr(module, cls.__name__, None)
        if user_cls is None:
            continue
        ours = dataclasses.asdict(cls())
        found[section] = {k: v for k, v in dataclasses.asdict(user_cls()).items() if ours.get(k, object()) != v}
    if not found:
        raise ConfigError(f"{path}: defines none of {', '.join(c.__name__ for c in SECTIONS.values())}")
    return found


def apply_mapping(config: Config, data: Mapping[str, Any], source: str) -> None:
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {section!r}; expected one of {', '.join(SECTIONS)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of key: value")
        for key, value in values.items():
            _set_field(config, section, key, value, source)


def apply_override(config: Config, item: str) -> None:
    """``train.learning_rate=1e-4`` or, when the key exists in one section only, ``learning_rate=1e-4``."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-4")
    if "." in key:
        section, _, name = key.partition(".")
    else:
        owners = [s for s, cls in SECTIONS.items() if _has_field(cls, key)]
        if len(owners) != 1:
            known = ", ".join(f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls))
            raise ConfigError(f"--set {item!r}: unknown key {key!r}; known keys: {known}")
        section, name = owners[0], key
    _set_field(config, section, name, yaml.safe_load(raw) if raw.strip() else "", source="--set")


def _has_field(cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))


def _set_field(config: Config, section: str, name: str, value: Any, source: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"{source}: unknown section {section!r} in key {section}.{name}; "
                          f"expected one of {', '.join(SECTIONS)}")
    cls = SECTIONS[section]
    if not _has_field(cls, name):
        known = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"{source}: unknown key {section}.{name}; known keys in [{section}]: {known}")
    expected = typing.get_type_hints(cls)[name]
    setattr(getattr(config, section), name, _coerce(value, expected, f"{source}: {section}.{name}"))


def _coerce(value: Any, expected: Any, where: str) -> Any:
    optional = typing.get_origin(expected) is typing.Union and type(None) in typing.get_args(expected)
    if optional:
        if value is None:
            return None
        expected = next(a for a in typing.get_args(expected) if a is not type(None))
    if expected is bool and isinstance(value, bool):
        return value
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    if expected is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where}: expected {expected.__name__}{' or null' if optional else ''}, got {value!r}")


def validate(config: Config) -> None:
    t, d, m = config.train, config.data, config.model
    if t.beta_schedule not in BETA_SCHEDULES:
        raise ConfigError(f"train.beta_schedule={t.beta_schedule!r}; expected one of {', '.join(BETA_SCHEDULES)}")
    if t.prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"train.prediction_type={t.prediction_type!r}; expected one of {', '.join(PREDICTION_TYPES)}"
        )
    if t.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(
            f"train.mixed_precision={t.mixed_precision!r}; expected one of {', '.join(MIXED_PRECISION)}"
        )
    positive = {
        "train.learning_rate": t.learning_rate,
        "train.num_epochs": t.num_epochs,
        "train.batch_size": t.batch_size,
        "train.gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train.max_grad_norm": t.max_grad_norm,
        "train.num_train_timesteps": t.num_train_timesteps,
        "train.num_inference_steps": t.num_inference_steps,
        "train.log_every": t.log_every,
        "train.save_every_epochs": t.save_every_epochs,
        "data.image_size": d.image_size,
        "data.num_frames": d.num_frames,
        "model.model_channels": m.model_channels,
        "model.text_embed_dim": m.text_embed_dim,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    for key, value in {
        "train.warmup_steps": t.warmup_steps,
        "train.weight_decay": t.weight_decay,
        "data.num_workers": d.num_workers,
        "train.num_threads": t.num_threads,
        "data.synthetic_samples": d.synthetic_samples,
    }.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if t.num_inference_steps > t.num_train_timesteps:
        raise ConfigError(
            f"train.num_inference_steps={t.num_inference_steps} exceeds "
            f"train.num_train_timesteps={t.num_train_timesteps}"
        )
