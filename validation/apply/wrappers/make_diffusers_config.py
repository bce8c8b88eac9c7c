"""Prepare step of the diffusers recipe: a tiny UNet2DModel config (for --model_config_name_or_path,
instead of the 6-level 128..512 default) and a folder of random PNGs (--train_data_dir).
Usage: python make_diffusers_config.py CONFIG_DIR IMAGE_DIR"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import image_folder  # noqa: E402

cfg_dir, img_dir = sys.argv[1], sys.argv[2]
os.makedirs(cfg_dir, exist_ok=True)
config = {
    "_class_name": "UNet2DModel",
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 1,
    "block_out_channels": [16, 32],
    "norm_num_groups": 8,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
}
with open(os.path.join(cfg_dir, "config.json"), "w") as fh:
    json.dump(config, fh, indent=1)
image_folder(img_dir, n=16, size=32)
