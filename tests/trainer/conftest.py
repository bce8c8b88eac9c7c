import pytest
import torch


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """Tiny models on the shared 2-core machine: one intra-op thread is several times faster than two
    contended ones. Restored afterwards so other test folders keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
