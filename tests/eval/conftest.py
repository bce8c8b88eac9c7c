"""A tiny gloss recogniser (16x16 pixels, 4 frames; a few seconds on one thread) shared by this folder."""

from pathlib import Path

import pytest
import torch

from t2s.eval import TrainSettings, save_recogniser, train_recogniser
from t2s.eval.training import TrainedRecogniser

TINY = TrainSettings(num_frames=4, image_size=16, train_per_gloss=12, test_per_gloss=4, epochs=8)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny convolutions on the shared 2-core machine run several times faster on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny() -> TrainedRecogniser:
    return train_recogniser(TINY)


@pytest.fixture(scope="session")
def tiny_path(tiny: TrainedRecogniser, tmp_path_factory) -> Path:
    return save_recogniser(tiny.model, tmp_path_factory.mktemp("recogniser") / "tiny.pt", tiny.metadata)
