import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread_deterministic_torch():
    # The CI box is a shared 2-core machine: with other jobs running, OpenMP
    # worker threads spin against each other and make tiny models 5x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
