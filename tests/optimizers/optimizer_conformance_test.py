"""Every optimizer the library ships, through the same checks (the optax test-matrix idea).

A new optimizer adds one line to OPTIMIZER_FACTORIES: a name and a function returning a fresh
instance configured to make visible progress in a few dozen steps on these small problems.
"""

import os

import keras
import numpy as np
import pytest
from helpers import to_numpy

from keras_matta.optimizers import SOAP
from keras_matta.optimizers import Shampoo

OPTIMIZER_FACTORIES = [
    pytest.param(
        lambda: Shampoo(learning_rate=0.05, start_preconditioning_step=3, precondition_frequency=2),
        id="shampoo-adam-eigh",
    ),
    pytest.param(
        lambda: Shampoo(
            learning_rate=0.2,
            grafting="sgd",
            root_method="newton",
            start_preconditioning_step=3,
            precondition_frequency=5,
            block_size=8,
            precondition_vectors=True,  # the biases too: blocks of (8, 1) and (4, 1)
        ),
        id="shampoo-sgd-newton-blocked-vectors",
    ),
    pytest.param(
        lambda: SOAP(learning_rate=0.1, beta2=0.99, precondition_frequency=2),
        id="soap",
    ),
    pytest.param(
        lambda: SOAP(
            learning_rate=0.1, beta2=0.99, precondition_frequency=5, block_size=4,
            precondition_vectors=True, basis_refresh="power_qr", skip_first_update=True,
        ),
        id="soap-blocked-vectors-power-qr-skip-first",
    ),
]

_RNG = np.random.default_rng(0)
_X = _RNG.standard_normal((64, 10)).astype("float32")
_Y = (np.tanh(_X @ _RNG.standard_normal((10, 12))) @ _RNG.standard_normal((12, 3))).astype(
    "float32"
)


def small_regression_model():
    return keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(12, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )


@pytest.mark.parametrize("make_optimizer", OPTIMIZER_FACTORIES)
def test_get_config_round_trip(make_optimizer):
    optimizer = make_optimizer()
    config = optimizer.get_config()
    restored = type(optimizer).from_config(config)
    assert type(restored) is type(optimizer)
    assert restored.get_config() == config
    serialized = keras.optimizers.serialize(optimizer)
    assert keras.optimizers.deserialize(serialized).get_config() == config


@pytest.mark.parametrize("make_optimizer", OPTIMIZER_FACTORIES)
def test_compiled_fit_lowers_the_loss_and_state_survives_save_load(make_optimizer, tmp_path):
    """model.fit in the backend's default compiled mode, then `.keras` save/load: the loaded
    optimizer state equals the saved one and the resumed next steps equal the uninterrupted
    run's (steps 9 and 10, a root refresh for the first factory)."""
    model = small_regression_model()
    model.compile(optimizer=make_optimizer(), loss="mse")
    history = model.fit(_X, _Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]

    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    saved_state = [to_numpy(v) for v in model.optimizer.variables]
    loaded_state = [to_numpy(v) for v in loaded.optimizer.variables]
    assert len(saved_state) == len(loaded_state)
    for saved, restored in zip(saved_state, loaded_state):
        np.testing.assert_array_equal(saved, restored)

    kernel_at_save = to_numpy(model.trainable_variables[0])
    for batch in (slice(0, 16), slice(16, 32)):
        model.train_on_batch(_X[batch], _Y[batch])
        loaded.train_on_batch(_X[batch], _Y[batch])
    for original, resumed in zip(model.trainable_variables, loaded.trainable_variables):
        np.testing.assert_allclose(to_numpy(original), to_numpy(resumed), rtol=1e-6, atol=1e-6)
    # The comparison is not vacuous: the resumed steps moved the weights.
    assert not np.allclose(to_numpy(model.trainable_variables[0]), kernel_at_save)


@pytest.mark.parametrize("make_optimizer", OPTIMIZER_FACTORIES)
def test_converges_on_a_small_quadratic(make_optimizer):
    """f(W) = 0.5 ||A W - B||^2 with a moderately ill-conditioned A, gradients in NumPy."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    a = (q * np.logspace(0, -1, 8)) @ q.T
    b = a @ rng.standard_normal((8, 5))
    weights = keras.Variable(np.zeros((8, 5), "float32"))
    optimizer = make_optimizer()

    def loss(w):
        return 0.5 * np.sum((a @ w - b) ** 2)

    initial_loss = loss(np.zeros((8, 5)))
    for _ in range(60):
        w = to_numpy(weights).astype("float64")
        gradient = a.T @ (a @ w - b)
        optimizer.apply([gradient.astype("float32")], [weights])
    assert loss(to_numpy(weights).astype("float64")) < 1e-2 * initial_loss
