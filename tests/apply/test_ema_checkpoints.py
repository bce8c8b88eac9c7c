"""The EMA fix adds the EMA to the checkpoints of the model it averages, not to every
``torch.save`` of a dict in the unit: an evaluator in the same package that saves its own
classifier (the reference trainer's ``t2s.eval`` recogniser) made the whole fix refuse
("saving the checkpoint happens in `save_recogniser`, which cannot reach `self.ema`")."""

from __future__ import annotations

from optimizer_tool.testing import fixed_sources

PROJECT = {
    "train.py": """\
import torch
from recogniser import train_recogniser


class Trainer:
    def __init__(self):
        self.model = torch.nn.Linear(2, 2)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)

    def save(self, path):
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}, path)

    def train(self):
        for step in range(3):
            loss = self.model(torch.randn(2, 2)).pow(2).mean()
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.save("last.pt")


if __name__ == "__main__":
    Trainer().train()
    train_recogniser("recogniser.pt")
""",
    "recogniser.py": """\
import torch


def save_recogniser(model, path):
    torch.save({"model": model.state_dict(), "classes": 10}, path)


def train_recogniser(path):
    model = torch.nn.Linear(2, 10)
    save_recogniser(model, path)
""",
}


def test_the_ema_goes_into_the_trainers_checkpoint_only(tmp_path):
    result, changed = fixed_sources(PROJECT, tmp_path, ["ema"])
    assert not result.refused, result.refused
    assert "ema" in changed["train.py"] and 'torch.save({"model": self.model.state_dict()' in changed["train.py"]
    saved = next(line for line in changed["train.py"].splitlines() if "torch.save(" in line)
    assert "ema" in saved, saved
    assert "recogniser.py" not in changed
