"""A tiny gloss recogniser shared by the ablation tests."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_recogniser(tmp_path_factory) -> Path:
    """A recogniser for 16x16x4 clips trained on a few clips for one epoch (seconds): the ablation needs one
    to score with, not a good one."""
    import torch

    from t2s.eval import TrainSettings, save_recogniser, train_recogniser

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings = TrainSettings(num_frames=4, image_size=16, train_per_gloss=2, test_per_gloss=1, epochs=1)
        trained = train_recogniser(settings)
    finally:
        torch.set_num_threads(threads)
    return save_recogniser(trained.model, tmp_path_factory.mktemp("recogniser") / "tiny.pt", trained.metadata)
