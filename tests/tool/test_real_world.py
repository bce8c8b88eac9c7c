"""Patterns met in public trainers (diffusers examples, DiT, improved-diffusion, lucidrains,
k-diffusion, nanoGPT, latent-diffusion, Lightning modules), condensed into short snippets written
for these tests: each pins one finding that was wrong (or missing) on a real trainer."""

from optimizer_tool.testing import findings_for


def codes(example, tmp_path) -> set[str]:
    return {f.code for f in findings_for(example, tmp_path)}


# --- EMA ------------------------------------------------------------------------------------
def test_ema_wrapped_in_a_denoiser_is_still_the_ema(tmp_path):
    """k-diffusion style: the EMA copy is wrapped (``model_ema = Wrapper(inner_ema)``) and the
    sampling function draws from the wrapper: samples come from the EMA weights."""
    src = """\
    import copy, torch
    inner = build()
    inner_ema = copy.deepcopy(inner)
    net = Denoiser(inner)
    net_ema = Denoiser(inner_ema)
    opt = torch.optim.AdamW(inner.parameters(), lr=1e-4)

    @torch.no_grad()
    def evaluate():
        return sample_heun(net_ema, torch.randn(4, 3, 64, 64))

    for x in loader:
        net.loss(x).mean().backward()
        opt.step()
        opt.zero_grad()
        ema_update(net, net_ema, 0.999)
        evaluate()
    """
    found = codes(src, tmp_path)
    assert "EMA008" not in found
    assert "EMA001" not in found


def test_live_model_sampling_is_still_reported(tmp_path):
    src = """\
    import copy, torch
    inner = build()
    inner_ema = copy.deepcopy(inner)
    net_ema = Denoiser(inner_ema)
    opt = torch.optim.AdamW(inner.parameters(), lr=1e-4)

    @torch.no_grad()
    def evaluate():
        return sample_heun(inner, torch.randn(4, 3, 64, 64))

    for x in loader:
        inner(x).mean().backward()
        opt.step()
        ema_update(inner, inner_ema, 0.999)
        evaluate()
    """
    assert "EMA008" in codes(src, tmp_path)


def test_ema_handed_to_a_trainer_class_is_an_ema(tmp_path):
    """The script builds the EMA copy and passes it in; the class keeps ``self.ema_model = ema_model``,
    updates it once per step after a micro-batch loop, and has a latent-sampling helper that runs no network."""
    src = """\
    import torch
    from torch.cuda.amp import GradScaler

    def blend(src, dst, decay):
        with torch.no_grad():
            for a, b in zip(dst.parameters(), src.parameters()):
                a.mul_(decay).add_(b, alpha=1 - decay)

    class Runner:
        def __init__(self, net, ema_model, optimizer, lr_scheduler, accum):
            self.net = net
            self.ema_model = ema_model
            self.optimizer = optimizer
            self.lr_scheduler = lr_scheduler
            self.accum = accum
            self.scaler = GradScaler()

        def _sample_latent(self, moments):
            mean, std = torch.chunk(moments, 2, dim=1)
            return mean + std * torch.randn_like(mean)

        def _update_ema(self):
            blend(self.net, self.ema_model, 0.999)

        def train_step(self, batches):
            for k in range(self.accum):
                loss = self.net(self._sample_latent(batches[k])).mean() / self.accum
                self.scaler.scale(loss).backward()
                if (k + 1) % self.accum == 0:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad()
            self.lr_scheduler.step()
            self._update_ema()
    """
    found = codes(src, tmp_path)
    assert "EMA001" not in found
    assert "EMA003" not in found
    assert "EMA008" not in found
    assert "CLIP002" not in found


def test_ema_update_inside_the_micro_batch_loop_is_still_reported(tmp_path):
    src = """\
    import copy, torch
    ema = copy.deepcopy(net)
    for k, x in enumerate(loader):
        net(x).mean().backward()
        if (k + 1) % 4 == 0:
            opt.step()
            opt.zero_grad()
        update_ema(ema, net)
    """
    assert "EMA003" in codes(src, tmp_path)


# --- lr-schedule ----------------------------------------------------------------------------
def test_capped_ramp_in_a_named_function_is_a_warmup_without_decay(tmp_path):
    """A LambdaLR whose function only ramps up to a cap (``min(i / n, 1.0)``), whatever the
    function is called: the rate warms up and then stays constant."""
    src = """\
    import torch
    from torch.optim.lr_scheduler import LambdaLR
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4)
    def ramp(i):
        return min((i + 1) / 2500, 1.0)
    sched = LambdaLR(opt, lr_lambda=ramp)
    for x in loader:
        net(x).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    """
    found = codes(src, tmp_path)
    assert "LR002" in found
    assert "LR001" not in found and "LR007" not in found


def test_capped_ramp_times_a_decay_is_not_flagged(tmp_path):
    src = """\
    import math, torch
    from torch.optim.lr_scheduler import LambdaLR
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4)
    def ramp(i):
        return min((i + 1) / 2500, 1.0) * 0.5 * (1 + math.cos(math.pi * i / total_steps))
    sched = LambdaLR(opt, lr_lambda=ramp)
    for x in loader:
        net(x).mean().backward()
        opt.step()
        sched.step()
    """
    assert "LR002" not in codes(src, tmp_path)
