import pytest
import torch

from reference_trainer.schedulers.ddim import DDIMScheduler


def _x0(shape=(2, 3, 4, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 1.8 - 0.9  # inside the clip range


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_x0_and_eps_recovery_is_exact(prediction_type, beta_schedule):
    s = DDIMScheduler(num_train_timesteps=100, beta_schedule=beta_schedule, prediction_type=prediction_type)
    x0 = _x0()
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    # the last cosine step has a_t ~ 0, where dividing by sqrt(a_t) amplifies rounding without bound
    t = torch.tensor([3, 90])
    x_t = s.add_noise(x0, eps, t)
    model_output = {"epsilon": eps, "v_prediction": s.get_velocity(x0, eps, t), "sample": x0}[prediction_type]
    torch.testing.assert_close(s.predict_x0(model_output, x_t, t), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s.predict_epsilon(model_output, x_t, t), eps, atol=1e-4, rtol=1e-4)


def test_velocity_definition():
    s = DDIMScheduler()
    x0, eps = _x0(), torch.randn(2, 3, 4, 8, 8)
    t = torch.tensor([10, 60])
    a = s.alphas_cumprod[t].view(2, 1, 1, 1, 1)
    torch.testing.assert_close(s.get_velocity(x0, eps, t), a.sqrt() * eps - (1 - a).sqrt() * x0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_perfect_model_sampling_recovers_x0(prediction_type, eta):
    s = DDIMScheduler(prediction_type=prediction_type)
    x0 = _x0()
    s.set_timesteps(20)
    g = torch.Generator().manual_seed(3)
    sample = torch.randn(x0.shape, generator=g)
    for t in s.timesteps:
        a = s.alphas_cumprod[t]
        eps = (sample - a.sqrt() * x0) / (1 - a).sqrt()  # the noise that makes `sample` from x0
        output = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}
        sample = s.step(output[prediction_type], t, sample, eta=eta, generator=g).prev_sample
    torch.testing.assert_close(sample, x0, atol=1e-4, rtol=1e-4)


def test_set_timesteps_spacing_and_bounds():
    s = DDIMScheduler(num_train_timesteps=100)
    s.set_timesteps(50)
    assert s.timesteps[0] == 98 and s.timesteps[-1] == 0 and len(s.timesteps) == 50
    with pytest.raises(ValueError, match="between 1 and num_train_timesteps=100"):
        s.set_timesteps(101)


def test_step_requires_set_timesteps():
    with pytest.raises(RuntimeError, match="set_timesteps"):
        DDIMScheduler().step(torch.zeros(1), 5, torch.zeros(1))


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_schedules_are_monotone_and_in_range(beta_schedule):
    s = DDIMScheduler(beta_schedule=beta_schedule)
    a = s.alphas_cumprod
    assert a.shape == (100,)
    assert torch.all(a[1:] < a[:-1])
    assert 0 < a[-1] < 1e-3 and a[0] > 0.99
    assert torch.all((s.betas >= 1e-4) & (s.betas <= 0.9999))


def test_cosine_has_no_offset():
    """Without s=0.008 the first cosine beta is sin^2(pi / 2T), the plan's starting point."""
    s = DDIMScheduler(beta_schedule="cosine")
    expected = torch.sin(torch.tensor(torch.pi / 200)) ** 2
    torch.testing.assert_close(s.betas[0], expected, atol=1e-6, rtol=1e-3)
    assert s.betas[-1] == pytest.approx(0.9999)


def test_cosine_keeps_more_signal_than_linear_mid_schedule():
    lin, cos = DDIMScheduler(beta_schedule="linear"), DDIMScheduler(beta_schedule="cosine")
    assert cos.alphas_cumprod[50] > lin.alphas_cumprod[50]


def test_unknown_names_are_reported_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'quadratic'.*linear, cosine"):
        DDIMScheduler(beta_schedule="quadratic")
    with pytest.raises(ValueError, match=r"'velocity'.*epsilon, v_prediction, sample"):
        DDIMScheduler(prediction_type="velocity")
