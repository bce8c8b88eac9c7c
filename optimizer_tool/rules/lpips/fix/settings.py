"""The settings the new perceptual term reads, added to the trainer's config or argparse when absent."""

from __future__ import annotations

from optimizer_tool.contract import FixContext
from optimizer_tool.edit.edits import Edits
from optimizer_tool.edit.settings import ensure_flag, ensure_setting, set_in_presets
from optimizer_tool.index import UnitIndex

LPIPS_WHY = {
    "lpips_weight": "weight of the perceptual (LPIPS) term added to the diffusion loss",
    "lpips_net": 'LPIPS backbone: "vgg", "alex" or "squeeze"',
    "lpips_frames": "frames per clip (evenly spaced) the LPIPS term compares; 0 = every frame",
    "lpips_pretrained_backbone": "False: random LPIPS backbone, no torchvision download (offline smoke runs only)",
    "lpips_random_backbone": "random LPIPS backbone, no torchvision download (offline smoke runs only)",
}


def lpips_settings(ctx: FixContext, edits: Edits, index: UnitIndex, home, video: bool, new_term: bool = True) -> dict:
    """The settings the new code reads (added to the trainer's config or argparse when absent): the
    frame count for videos, and for a new term its weight and how the LPIPS network is built."""
    out: dict = {"video": video}
    if home is None:
        out.update(lpips_weight="0.1", lpips_net='"vgg"', lpips_frames="4", pnet_rand="False")
        return out
    if new_term:
        out["lpips_weight"] = ensure_setting(
            edits, index, home, "lpips_weight", "float", "0.1", LPIPS_WHY["lpips_weight"]
        )
        out["lpips_net"] = ensure_setting(edits, index, home, "lpips_net", "str", '"vgg"', LPIPS_WHY["lpips_net"])
    if video:
        out["lpips_frames"] = ensure_setting(edits, index, home, "lpips_frames", "int", "4", LPIPS_WHY["lpips_frames"])
    if not new_term:
        return out
    out["pnet_rand"] = _random_backbone(ctx, edits, index, home)
    return out


def _random_backbone(ctx: FixContext, edits: Edits, index: UnitIndex, home) -> str:
    """The code for ``pnet_rand``: a config's ``not lpips_pretrained_backbone`` (False in the small
    presets, so they run offline) or an argparse ``--lpips-random-backbone`` flag."""
    if home.kind == "dataclass":
        pretrained = ensure_setting(
            edits, index, home, "lpips_pretrained_backbone", "bool", "True", LPIPS_WHY["lpips_pretrained_backbone"]
        )
        if set_in_presets(edits, index, home, "lpips_pretrained_backbone", "False"):
            ctx.note(
                "the smoke preset builds LPIPS with a random backbone (lpips_pretrained_backbone=False): it runs"
                " offline, its perceptual term is not meaningful"
            )
        return f"not {pretrained}"
    return ensure_flag(edits, index, home, "lpips_random_backbone", LPIPS_WHY["lpips_random_backbone"])
