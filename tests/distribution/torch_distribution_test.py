"""PyTorch: data-parallel `fit` on two gloo processes (`synchronize_gradients`) = one process."""

import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from distribution import scenarios

from keras_matta import distribution as distribution_lib

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="torch.distributed is PyTorch's")
HERE = os.path.dirname(os.path.abspath(__file__))
WORLD_SIZE = 2

RANK_SCRIPT = """
import os, sys
sys.path.insert(0, {here!r})
import torch
torch.set_num_threads(1)
import torch.distributed as dist
import keras, numpy as np
import keras_matta
from scenarios import BATCH, build_matta, make_data, save_result

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dist.init_process_group("gloo", rank=rank, world_size=world)
x, y = make_data()
# Different initial weights (and teacher) on each rank: the broadcast must make them equal.
mat_ta = build_matta(seed=rank)
mat_ta(x[:1])
# Rank r trains on rows r, r + world, ... of each global batch of BATCH examples.
rows = np.concatenate([np.arange(b, b + BATCH)[rank::world] for b in range(0, len(x), BATCH)])
with keras_matta.distribution.synchronize_gradients(mat_ta):
    history = mat_ta.fit(x[rows], y[rows], batch_size=BATCH // world, epochs=1, shuffle=False,
                         verbose=0)
save_result(os.path.join({out!r}, f"rank{{rank}}.npz"), mat_ta, history.history)
dist.destroy_process_group()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, one_torch_thread):
    """8 MatTA steps (random Student per step, teacher in the step, Shampoo) on 2 x 4 examples
    per step equal 8 steps on the 8-example batches in one process."""
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE=str(WORLD_SIZE), OMP_NUM_THREADS="1")
    code = textwrap.dedent(RANK_SCRIPT.format(here=HERE, out=str(tmp_path)))
    ranks = [subprocess.Popen([sys.executable, "-c", code], env=dict(env, RANK=str(rank)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(WORLD_SIZE)]
    try:
        outputs = [rank.communicate(timeout=300)[0] for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    for rank, output in zip(ranks, outputs):
        assert rank.returncode == 0, output[-3000:]

    x, y = scenarios.make_data()
    reference = scenarios.build_matta()
    expected = reference.fit(x, y, batch_size=scenarios.BATCH, epochs=1, shuffle=False,
                             verbose=0).history
    expected_weights = scenarios.ta_weights(reference)
    results = [scenarios.load_result(tmp_path / f"rank{r}.npz") for r in range(WORLD_SIZE)]
    for weights, _, _ in results:
        for got, want in zip(weights, results[0][0]):
            np.testing.assert_array_equal(got, want)  # the processes stay identical
        for got, want in zip(weights, expected_weights):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Each process logs the mean over its own shard; their mean is the one-process log.
    for key, values in expected.items():
        mean = np.mean([history[key] for _, history, _ in results], axis=0)
        np.testing.assert_allclose(mean, values, rtol=1e-5, err_msg=key)


def test_synchronize_gradients_checks_its_arguments():
    with pytest.raises(TypeError, match="model"):
        distribution_lib.synchronize_gradients("model")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="init_process_group"):
        distribution_lib.synchronize_gradients(model)
