"""lucidrains/denoising-diffusion-pytorch: the README's Trainer recipe, small, on a folder of random PNGs.
The package is imported from the copy (cwd), not from site-packages.
Usage: python lucidrains_ddpm.py OUT STEPS
Unet(dim=16, dim_mults=(1, 2)), GaussianDiffusion(image_size=32, timesteps=100, sampling_timesteps=10),
Trainer(folder of 100 PNGs, batch 16 (its minimums), train_num_steps=STEPS,
save_and_sample_every=STEPS//2, num_samples=4, calculate_fid=False, amp=False)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import cwd_on_path, image_folder, seed  # noqa: E402

out, steps = sys.argv[1], int(sys.argv[2])
seed()
cwd_on_path()
image_folder("fake_images", n=100, size=32)  # its Trainer asserts >= 100 images and batch >= 16
import denoising_diffusion_pytorch as pkg  # noqa: E402
from denoising_diffusion_pytorch import GaussianDiffusion, Trainer, Unet  # noqa: E402

assert os.path.abspath(pkg.__file__).startswith(os.getcwd()), pkg.__file__
os.makedirs(out, exist_ok=True)  # its Trainer makes results_folder without parents
model = Unet(dim=16, dim_mults=(1, 2), flash_attn=False)
diffusion = GaussianDiffusion(model, image_size=32, timesteps=100, sampling_timesteps=10)
trainer = Trainer(
    diffusion,
    "fake_images",
    train_batch_size=16,
    train_lr=8e-5,
    train_num_steps=steps,
    gradient_accumulate_every=1,
    ema_decay=0.995,
    amp=False,
    calculate_fid=False,
    save_and_sample_every=max(1, steps // 2),
    num_samples=4,
    results_folder=os.path.join(out, "results"),
)
trainer.train()
