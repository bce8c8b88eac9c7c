"""improved-diffusion's TrainLoop: a linear anneal written by hand, no warm-up."""
import torch

defaults = dict(lr=1e-4, lr_anneal_steps=300000)


class TrainLoop:
    def __init__(self, model, lr, lr_anneal_steps=0):
        self.model = model
        self.lr = lr
        self.lr_anneal_steps = lr_anneal_steps
        self.step = 0
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def _anneal_lr(self):
        if not self.lr_anneal_steps:
            return
        frac_done = self.step / self.lr_anneal_steps
        lr = self.lr * (1 - frac_done)
        for param_group in self.opt.param_groups:
            param_group["lr"] = lr

    def run_step(self, batch):
        loss = self.model(batch)
        loss.backward()
        self._anneal_lr()
        self.opt.step()
        self.opt.zero_grad()
        self.step += 1
