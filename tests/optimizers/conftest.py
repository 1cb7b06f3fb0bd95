import keras
import pytest


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_torch():
    """Optimizer tests use matrices of a few dozen rows, where torch's intra-op threads only add
    synchronization; on a loaded 2-core machine they made a 64x64 batched matmul take 3 ms
    instead of 8 us. Restored after each module."""
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
