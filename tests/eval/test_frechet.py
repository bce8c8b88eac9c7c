import numpy as np
import pytest
import torch

from t2s.eval import frechet_distance, load_i3d, render_real_clips
from t2s.eval.clips import HELD_OUT_SEED, REFERENCE_SEED


def test_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shifted = frechet_distance(a, rng.normal(size=(4000, 3)) + np.array([2.0, 0.0, 0.0]))
    assert shifted == pytest.approx(4.0, abs=0.3)  # |mu_a - mu_b|^2 with equal covariances
    wider = frechet_distance(a, 2.0 * rng.normal(size=(4000, 3)))
    assert wider == pytest.approx(3 * (1 - 2) ** 2, abs=0.3)  # tr(S_a + S_b - 2 (S_a S_b)^(1/2))


def test_real_clips_are_near_real_clips_and_far_from_noise(tiny):
    size = (tiny.model.config.num_frames, tiny.model.config.image_size)
    first = render_real_clips(3, *size, seed=HELD_OUT_SEED).clips
    second = render_real_clips(3, *size, seed=REFERENCE_SEED).clips
    noise = torch.rand(second.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = {
        name: tiny.model.embed_and_predict(clips)[0].numpy()
        for name, clips in (("first", first), ("second", second), ("noise", noise))
    }
    real_real = frechet_distance(features["first"], features["second"])
    real_noise = frechet_distance(features["first"], features["noise"])
    assert real_noise > 10 * real_real


def test_too_few_features_are_refused():
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.ones((1, 4)), np.ones((5, 4)))


class _StandIn(torch.nn.Module):
    """The signature of the TorchScript I3D: it sees 224x224 frames and returns one feature row per video."""

    def forward(self, videos: torch.Tensor, rescale: bool, resize: bool, return_features: bool) -> torch.Tensor:
        return torch.stack(
            [videos.mean(dim=(1, 2, 3, 4)), torch.tensor(float(videos.shape[-1])).expand(len(videos))], 1
        )


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # the I3D file is TorchScript
def test_i3d_features_come_from_a_local_torchscript_file(tmp_path):
    missing = tmp_path / "i3d_torchscript.pt"
    with pytest.raises(FileNotFoundError, match=rf"I3D weights not found: {missing}; nothing is downloaded"):
        load_i3d(missing)
    torch.jit.script(_StandIn()).save(str(missing))
    features = load_i3d(missing)(torch.zeros(3, 3, 4, 16, 16))
    assert features.shape == (3, 2) and features[0, 1] == 224
    not_torchscript = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, not_torchscript)
    with pytest.raises(ValueError, match=f"{not_torchscript}: not a TorchScript file"):
        load_i3d(not_torchscript)
