import os

import keras
import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--run-large", action="store_true", help="run tests marked `large`")


# `backend_agnostic` tests (data, reports, notebooks, README text, ...) compute nothing with Keras'
# backend: .ci/test runs one pytest process per backend side by side, and these run in this one.
# `runs_on(backend, ...)` marks a run whose backend-dependent parts other tests check on every
# backend (exact-step references, save/load, compiled mode): it runs only in the processes named,
# chosen so that the three processes finish together.
AGNOSTIC_BACKEND = "tensorflow"


def pytest_collection_modifyitems(config, items):
    skip_large = pytest.mark.skip(reason="large: pass --run-large to run")
    skip_agnostic = pytest.mark.skip(
        reason=f"backend_agnostic: runs once, with KERAS_BACKEND={AGNOSTIC_BACKEND}"
    )
    run_large = config.getoption("--run-large")
    run_agnostic = keras.backend.backend() == AGNOSTIC_BACKEND
    for item in items:
        if "large" in item.keywords and not run_large:
            item.add_marker(skip_large)
        if "backend_agnostic" in item.keywords and not run_agnostic:
            item.add_marker(skip_agnostic)
        runs_on = item.get_closest_marker("runs_on")
        if runs_on and keras.backend.backend() not in runs_on.args:
            item.add_marker(pytest.mark.skip(
                reason=f"runs only with KERAS_BACKEND in {runs_on.args}"))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Every test starts from the same seed, float32 policy and a clean name scope."""
    # Without the full garbage collection `clear_session()` runs by default (about 0.3 s a test,
    # minutes over the suite): Python's own collector still frees the old models.
    keras.utils.clear_session(free_memory=False)
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Runs each test with one torch intra-op thread, then restores the setting.

    CI runs the three backends side by side on two cores: torch's OpenMP workers then spin
    against the other processes, and a tiny MatTA step (four small forward passes) slows down
    about 20x (a learning test: ~6 s with one thread, ~150 s with two under that load).
    """
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def backend():
    return os.environ.get("KERAS_BACKEND", keras.backend.backend())
