import keras
import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Runs each MatTA test with one torch intra-op thread, then restores the setting.

    CI runs the three backends side by side on two cores: torch's OpenMP workers then spin
    against the other processes, and a tiny MatTA step (four small forward passes) slows down
    about 20x (the learning test: ~6 s with one thread, ~150 s with two under that load).
    """
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
