"""lucidrains/video-diffusion-pytorch: the README's Trainer recipe, small, on random GIFs.
The package is imported from the copy (cwd).
Usage: python lucidrains_video.py OUT STEPS
Unet3D(dim=16, dim_mults=(1, 2)), GaussianDiffusion(image_size=32, num_frames=4, timesteps=20),
Trainer(folder of 8 random 4-frame 32x32 GIFs, batch 2, gradient_accumulate_every=1,
train_num_steps=STEPS, save_and_sample_every=STEPS//2, num_sample_rows=1)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _harness import cwd_on_path, seed  # noqa: E402
from PIL import Image  # noqa: E402

out, steps = sys.argv[1], int(sys.argv[2])
seed()
cwd_on_path()
os.makedirs("fake_gifs", exist_ok=True)
rng = np.random.default_rng(0)
for i in range(8):
    frames = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    frames[0].save(f"fake_gifs/{i}.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
# its Trainer and sampler call .cuda() unconditionally: on this CPU box that is the identity
torch.nn.Module.cuda = lambda self, *a, **k: self
torch.Tensor.cuda = lambda self, *a, **k: self
import video_diffusion_pytorch as pkg  # noqa: E402
from video_diffusion_pytorch import GaussianDiffusion, Trainer, Unet3D  # noqa: E402

assert os.path.abspath(pkg.__file__).startswith(os.getcwd()), pkg.__file__
model = Unet3D(dim=16, dim_mults=(1, 2))
diffusion = GaussianDiffusion(model, image_size=32, num_frames=4, timesteps=20)
trainer = Trainer(
    diffusion,
    "fake_gifs",
    train_batch_size=2,
    train_lr=1e-4,
    train_num_steps=steps,
    gradient_accumulate_every=1,
    ema_decay=0.995,
    amp=False,
    num_frames=4,
    save_and_sample_every=max(1, steps // 2),
    num_sample_rows=1,
    step_start_ema=2,
    update_ema_every=1,
    results_folder=os.path.join(out, "results"),
)
trainer.train()
