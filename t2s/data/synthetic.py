"""A procedural signer: glossed clips of moving hand shapes, written as a real dataset.

Every gloss is a fixed motion of the two hands over a simple body (head, neck,
torso, arms) on a plain background. The dominant hand (the signer's right, on the
image's left) and the non-dominant hand each follow a path and take an ``open``
shape (palm disc with fingers) or a ``fist`` shape (square), possibly changing
shape during the gloss. A sentence is 1-3 glosses sharing the clip's frames.
Everything is drawn with numpy over all frames at once and depends only on the
seed, so the same seed gives the same clips and files.

CLI: ``python -m t2s.data.synthetic OUT_DIR --num-samples 64 --size 64 --frames 16``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .video_io import write_frames

__all__ = [
    "GLOSSES",
    "SKIN_TONES",
    "Signer",
    "generate_synthetic_dataset",
    "hand_positions",
    "render_sentence",
    "skin_template",
]

FORMATS = {"mp4": ".mp4", "gif": ".gif", "frames": ""}
MAX_GLOSSES_PER_SENTENCE = 3


# Paths map the gloss's progress u in (0, 1) (one value per frame) to hand centres in
# image-relative coordinates: x to the right, y down, both in [0, 1].
@dataclass(frozen=True)
class Hold:
    x: float
    y: float

    def __call__(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.full_like(u, self.x), np.full_like(u, self.y)


@dataclass(frozen=True)
class Line:
    x0: float
    y0: float
    x1: float
    y1: float
    repeats: int = 1  # > 1: the stroke restarts, like repeated movements in signing

    def __call__(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = (u * self.repeats) % 1.0
        return self.x0 + s * (self.x1 - self.x0), self.y0 + s * (self.y1 - self.y0)


@dataclass(frozen=True)
class Circle:
    x: float
    y: float
    radius: float
    turns: float = 1.0  # negative turns go the other way (mirrored two-handed signs)
    phase: float = 0.0

    def __call__(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        angle = 2 * np.pi * (self.turns * u + self.phase)
        return self.x + self.radius * np.cos(angle), self.y + self.radius * np.sin(angle)


@dataclass(frozen=True)
class Wave:
    x: float
    y: float
    dx: float  # horizontal amplitude
    dy: float  # vertical amplitude
    cycles: float = 2.0
    phase: float = 0.0

    def __call__(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        swing = np.sin(2 * np.pi * (self.cycles * u + self.phase))
        return self.x + self.dx * swing, self.y + self.dy * swing


MotionPath = Hold | Line | Circle | Wave


OPEN, FIST = ("open",), ("fist",)


@dataclass(frozen=True)
class Hand:
    path: MotionPath
    shapes: tuple[str, ...] = OPEN  # "open"/"fist", in equal shares of the gloss


@dataclass(frozen=True)
class Gloss:
    dominant: Hand
    passive: Hand = Hand(Hold(0.68, 0.9), FIST)  # resting low on the signer's left


def _both(path_dominant: MotionPath, path_passive: MotionPath, shapes: tuple[str, ...] = OPEN) -> Gloss:
    """A two-handed gloss: both hands take the same shapes."""
    return Gloss(Hand(path_dominant, shapes), Hand(path_passive, shapes))


# Motions loosely inspired by the signs; what matters is that each gloss has its own
# place, movement and hand shapes, so a model must read the text to draw the clip.
_GLOSS_TABLE: dict[str, Gloss] = {
    "HELLO": Gloss(Hand(Wave(0.24, 0.2, 0.06, 0.0, 2), OPEN)),
    "THANK-YOU": Gloss(Hand(Line(0.44, 0.33, 0.28, 0.62), OPEN)),
    "WEATHER": _both(Wave(0.35, 0.5, 0.0, 0.05, 2), Wave(0.65, 0.5, 0.0, 0.05, 2, 0.5)),
    "RAIN": _both(Line(0.3, 0.1, 0.3, 0.55, 2), Line(0.7, 0.1, 0.7, 0.55, 2)),
    "SUN": Gloss(Hand(Circle(0.26, 0.1, 0.06), ("fist", "open"))),
    "TOMORROW": Gloss(Hand(Line(0.4, 0.24, 0.2, 0.32), FIST)),
    "TODAY": _both(Wave(0.4, 0.66, 0.0, 0.04, 2), Wave(0.6, 0.66, 0.0, 0.04, 2), FIST),
    "YESTERDAY": Gloss(Hand(Line(0.36, 0.3, 0.3, 0.08), OPEN)),
    "WIND": _both(Wave(0.3, 0.36, 0.08, 0.0, 2), Wave(0.7, 0.36, 0.08, 0.0, 2)),
    "SNOW": _both(Line(0.22, 0.2, 0.22, 0.7), Line(0.78, 0.2, 0.78, 0.7), ("open", "fist")),
    "CLOUD": _both(Circle(0.36, 0.1, 0.07), Circle(0.64, 0.1, 0.07, -1.0, 0.5)),
    "COLD": _both(Wave(0.4, 0.45, 0.03, 0.0, 4), Wave(0.6, 0.45, 0.03, 0.0, 4, 0.5), FIST),
    "WARM": Gloss(Hand(Circle(0.5, 0.36, 0.05), OPEN)),
    "NORTH": Gloss(Hand(Line(0.3, 0.62, 0.3, 0.14), FIST)),
    "SOUTH": Gloss(Hand(Line(0.16, 0.3, 0.16, 0.76), OPEN)),
    "EAST": Gloss(Hand(Line(0.42, 0.42, 0.8, 0.42), FIST)),
    "WEST": Gloss(Hand(Line(0.46, 0.76, 0.1, 0.76), OPEN)),
    "MORNING": Gloss(Hand(Line(0.28, 0.74, 0.4, 0.4), OPEN), Hand(Hold(0.62, 0.64), OPEN)),
    "EVENING": Gloss(Hand(Line(0.5, 0.3, 0.42, 0.6), FIST), Hand(Hold(0.7, 0.56), FIST)),
    "NIGHT": Gloss(Hand(Hold(0.44, 0.46), ("fist", "open", "fist", "open")), Hand(Hold(0.62, 0.5), FIST)),
    "STORM": _both(Circle(0.3, 0.42, 0.1, 2.0), Circle(0.7, 0.42, 0.1, -2.0, 0.5)),
    "GOOD": Gloss(Hand(Line(0.5, 0.34, 0.56, 0.64), OPEN), Hand(Hold(0.58, 0.7), OPEN)),
    "PLEASE": Gloss(Hand(Circle(0.42, 0.58, 0.06, 2.0), OPEN)),
    "YES": Gloss(Hand(Wave(0.7, 0.24, 0.0, 0.05, 3), FIST)),
    "NO": Gloss(Hand(Hold(0.22, 0.28), ("open", "fist", "open", "fist"))),
    "TEMPERATURE": _both(Line(0.4, 0.3, 0.4, 0.6, 2), Hold(0.52, 0.45), FIST),
}
GLOSSES: tuple[str, ...] = tuple(_GLOSS_TABLE)

# The palettes random signers are drawn from (RGB 0-255). Hands are drawn in the skin tone,
# which is how an evaluator finds them in a clip (t2s.eval.hands).
BACKGROUNDS = ((214, 222, 230), (232, 228, 214), (200, 214, 200), (226, 214, 226))
SKIN_TONES = ((236, 188, 150), (198, 140, 100), (140, 96, 66), (250, 214, 180))
SHIRTS = ((40, 70, 140), (30, 30, 36), (120, 40, 40), (40, 100, 70), (90, 60, 120))
HAIR_COLOURS = ((60, 40, 30), (20, 20, 20), (150, 110, 60), (120, 120, 120))

_DOMINANT_SHOULDER = (0.3, 0.5)
_PASSIVE_SHOULDER = (0.7, 0.5)


@dataclass(frozen=True)
class Signer:
    """Appearance of one clip (colours in RGB 0-255, sizes relative to the image)."""

    background: tuple[int, int, int] = (214, 222, 230)
    skin: tuple[int, int, int] = (236, 188, 150)
    shirt: tuple[int, int, int] = (40, 70, 140)
    hair: tuple[int, int, int] = (60, 40, 30)
    shift_x: float = 0.0  # whole signer moved sideways
    hand_scale: float = 1.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Signer":
        """A plausible variation: colours from small palettes, a small shift and hand size."""

        def pick(palette: tuple[tuple[int, int, int], ...]) -> tuple[int, int, int]:
            return palette[rng.integers(len(palette))]

        return cls(
            background=pick(BACKGROUNDS),
            skin=pick(SKIN_TONES),
            shirt=pick(SHIRTS),
            hair=pick(HAIR_COLOURS),
            shift_x=float(rng.uniform(-0.04, 0.04)),
            hand_scale=float(rng.uniform(0.9, 1.1)),
        )


def _fill(distance: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, positive inside) -> coverage with a one-pixel soft edge."""
    return np.clip(distance + 0.5, 0.0, 1.0)


def _disc(X, Y, cx, cy, r):
    return _fill(r - np.hypot(X - cx, Y - cy))


def _box(X, Y, cx, cy, half):
    return _fill(half - np.maximum(np.abs(X - cx), np.abs(Y - cy)))


def _capsule(X, Y, ax, ay, bx, by, r):
    """A thick segment from a to b (arms and fingers)."""
    vx, vy = bx - ax, by - ay
    t = np.clip(((X - ax) * vx + (Y - ay) * vy) / np.maximum(vx * vx + vy * vy, 1e-9), 0.0, 1.0)
    return _fill(r - np.hypot(X - (ax + t * vx), Y - (ay + t * vy)))


def _paint(canvas: np.ndarray, alpha: np.ndarray, color) -> None:
    canvas += alpha[..., None] * (np.asarray(color, np.float32) - canvas)


def _hand_alpha(X, Y, cx, cy, is_open, size) -> np.ndarray:
    """Coverage of a hand per frame: open = palm + three fingers + thumb, fist = square."""
    palm = 0.6 * size
    finger_r = 0.17 * size
    open_hand = _disc(X, Y, cx, cy, palm)
    for angle in (-0.45, 0.0, 0.45):  # fingers fan out upwards, so their tips separate
        tip_x, tip_y = cx + 1.35 * size * np.sin(angle), cy - 1.35 * size * np.cos(angle)
        open_hand = np.maximum(open_hand, _capsule(X, Y, cx, cy, tip_x, tip_y, finger_r))
    open_hand = np.maximum(open_hand, _capsule(X, Y, cx, cy, cx + 1.0 * size, cy - 0.2 * size, finger_r))
    fist = _box(X, Y, cx, cy, 0.6 * size)
    return np.where(is_open[:, None, None], open_hand, fist)


def _body(X: np.ndarray, Y: np.ndarray, signer: Signer, s: float) -> np.ndarray:
    """The static part of the picture, ``[H, W, 3]`` float."""
    cx = (0.5 + signer.shift_x) * s
    canvas = np.empty((*np.broadcast_shapes(X.shape, Y.shape), 3), np.float32)
    canvas[:] = signer.background
    shoulders = np.maximum(_disc(X, Y, cx, 0.62 * s, 0.24 * s), _box(X, Y, cx, 0.88 * s, 0.24 * s))
    _paint(canvas, np.maximum(shoulders, _box(X, Y, cx, 1.0 * s, 0.26 * s)) * (Y > 0.44 * s), signer.shirt)
    _paint(canvas, _box(X, Y, cx, 0.38 * s, 0.05 * s), signer.skin)  # neck
    _paint(canvas, _disc(X, Y, cx, 0.24 * s, 0.11 * s), signer.skin)  # head
    _paint(canvas, _disc(X, Y, cx, 0.22 * s, 0.115 * s) * (Y < 0.18 * s), signer.hair)
    for side in (-1, 1):  # eyes
        _paint(canvas, _disc(X, Y, cx + side * 0.04 * s, 0.24 * s, 0.015 * s), (30, 30, 30))
    return canvas


def _hand_tracks(glosses: Sequence[str], num_frames: int) -> dict[str, np.ndarray]:
    """Per-frame centres and shapes of both hands for a sentence."""
    bounds = np.rint(np.linspace(0, num_frames, len(glosses) + 1)).astype(int)
    tracks: dict[str, list[np.ndarray]] = {key: [] for key in ("dx", "dy", "dopen", "px", "py", "popen")}
    for gloss, start, stop in zip(glosses, bounds[:-1], bounds[1:]):
        spec = _GLOSS_TABLE[gloss]
        u = (np.arange(stop - start) + 0.5) / (stop - start)
        for prefix, hand in (("d", spec.dominant), ("p", spec.passive)):
            x, y = hand.path(u)
            shape = np.asarray(hand.shapes)[np.minimum((u * len(hand.shapes)).astype(int), len(hand.shapes) - 1)]
            # float32: float64 positions would promote every full-frame array drawn from them.
            tracks[prefix + "x"].append(x.astype(np.float32))
            tracks[prefix + "y"].append(y.astype(np.float32))
            tracks[prefix + "open"].append(shape == "open")
    return {key: np.concatenate(parts) for key, parts in tracks.items()}


def _pixel_grid(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``X [1, 1, W]`` and ``Y [1, H, 1]``, broadcasting against ``[T, 1, 1]``."""
    coords = np.arange(image_size, dtype=np.float32) + 0.5
    return coords[None, None, :], coords[None, :, None]


def hand_positions(
    glosses: Sequence[str], num_frames: int = 16, image_size: int = 64, signer: Signer = Signer()
) -> np.ndarray:
    """Where :func:`render_sentence` puts the hands' centres: float ``[T, 2, 2]`` in pixels.

    Axis 1 is the hand (0: dominant, 1: non-dominant), axis 2 is ``(x, y)``, with pixel
    ``(i, j)`` covering ``[j, j + 1] x [i, i + 1]`` (its centre is ``(j + 0.5, i + 0.5)``).
    """
    _check_glosses(glosses, num_frames)
    tracks = _hand_tracks(glosses, num_frames)
    hands = [np.stack([(tracks[p + "x"] + signer.shift_x), tracks[p + "y"]], axis=-1) for p in ("d", "p")]
    return np.stack(hands, axis=1).astype(np.float64) * image_size


def skin_template(image_size: int = 64, shift_x: float = 0.0, hair: bool = False) -> np.ndarray:
    """Coverage in ``[0, 1]`` (``[H, W]``) of the still body's skin, the face and neck, for a signer
    moved by ``shift_x``: the places where a hand, drawn in the same colour, cannot be told apart.
    ``hair=True`` covers the hair too (the whole head)."""
    head = (255, 255, 255) if hair else (0, 0, 0)
    marker = Signer(background=(0, 0, 0), skin=(255, 255, 255), shirt=(0, 0, 0), hair=head, shift_x=shift_x)
    X, Y = _pixel_grid(image_size)
    return _body(X[0], Y[0], marker, float(image_size))[..., 0] / 255.0


def _check_glosses(glosses: Sequence[str], num_frames: int) -> None:
    unknown = [g for g in glosses if g not in _GLOSS_TABLE]
    if unknown:
        raise ValueError(f"unknown glosses {unknown}; the vocabulary is {', '.join(GLOSSES)}")
    if not 1 <= len(glosses) <= num_frames:
        raise ValueError(f"need 1 to num_frames={num_frames} glosses, got {len(glosses)}")


def render_sentence(
    glosses: Sequence[str], num_frames: int = 16, image_size: int = 64, signer: Signer = Signer()
) -> np.ndarray:
    """Draw a signed sentence as uint8 frames ``[T, H, W, 3]``.

    The glosses share the frames in order, as evenly as possible; each needs at
    least one frame.
    """
    _check_glosses(glosses, num_frames)
    s = float(image_size)
    X, Y = _pixel_grid(image_size)
    tracks = _hand_tracks(glosses, num_frames)
    canvas = np.broadcast_to(_body(X[0], Y[0], signer, s), (num_frames, image_size, image_size, 3)).copy()
    hand_size = 0.075 * s * signer.hand_scale
    sleeve = 0.75 * np.asarray(signer.shirt, np.float32)  # darker, so an arm shows in front of the torso
    # The non-dominant side is painted first, so the dominant hand passes in front.
    for prefix, shoulder in (("p", _PASSIVE_SHOULDER), ("d", _DOMINANT_SHOULDER)):
        hx = ((tracks[prefix + "x"] + signer.shift_x) * s)[:, None, None]
        hy = (tracks[prefix + "y"] * s)[:, None, None]
        sx, sy = (shoulder[0] + signer.shift_x) * s, shoulder[1] * s
        _paint(canvas, _capsule(X, Y, sx, sy, hx, hy, 0.045 * s), sleeve)
        _paint(canvas, _hand_alpha(X, Y, hx, hy, tracks[prefix + "open"], hand_size), signer.skin)
    return np.rint(canvas).astype(np.uint8)


def generate_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_samples: int = 32,
    num_frames: int = 16,
    image_size: int = 64,
    seed: int = 0,
    fmt: str = "mp4",
    fps: float = 8,
    vary_signer: bool = True,
) -> Path:
    """Write ``num_samples`` signed sentences and their ``manifest.jsonl``; return its path.

    Clips go to ``out_dir/videos/`` as ``.mp4`` (default), ``.gif`` or, with
    ``fmt="frames"``, folders of PNG frames. Manifest rows are
    ``{"video": "videos/00000.mp4", "text": "HELLO RAIN", "glosses": ["HELLO", "RAIN"]}``.
    ``vary_signer=False`` draws every clip with the same default appearance.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if num_samples < 1 or num_frames < 1 or image_size < 8:
        raise ValueError(
            f"need num_samples >= 1, num_frames >= 1 and image_size >= 8, got {num_samples}, {num_frames}, {image_size}"
        )
    if fmt == "mp4" and image_size % 2:
        raise ValueError(f"mp4 needs an even image_size, got {image_size}; use fmt='gif' or 'frames'")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    # Separate streams, so a seed gives the same sentences with or without vary_signer.
    sentence_rng, signer_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    rows = []
    for i in range(num_samples):
        count = int(sentence_rng.integers(1, min(MAX_GLOSSES_PER_SENTENCE, num_frames) + 1))
        glosses = [GLOSSES[j] for j in sentence_rng.choice(len(GLOSSES), size=count, replace=False)]
        signer = Signer.random(signer_rng) if vary_signer else Signer()
        relative = f"videos/{i:05d}{FORMATS[fmt]}"
        if fmt == "frames":
            shutil.rmtree(out_dir / relative, ignore_errors=True)  # our own folder from an earlier run
        write_frames(out_dir / relative, render_sentence(glosses, num_frames, image_size, signer), fps)
        rows.append({"video": relative, "text": " ".join(glosses), "glosses": glosses})
    # The manifest is written last and atomically: it never lists a clip that is not on disk.
    manifest = out_dir / "manifest.jsonl"
    partial = out_dir / ".manifest.jsonl.partial"
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    os.replace(partial, manifest)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m t2s.data.synthetic",
        description="Write a synthetic sign-language dataset (clips + manifest.jsonl).",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write videos/ and manifest.jsonl into")
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=list(FORMATS), default="mp4")
    parser.add_argument("--fps", type=float, default=8)
    parser.add_argument("--same-signer", action="store_true", help="draw every clip with the same appearance")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        manifest = generate_synthetic_dataset(
            args.out_dir,
            args.num_samples,
            args.frames,
            args.size,
            args.seed,
            args.format,
            args.fps,
            vary_signer=not args.same_signer,
        )
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {args.num_samples} clips in {time.perf_counter() - start:.1f}s; manifest: {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
