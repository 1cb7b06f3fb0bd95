"""Shampoo and SOAP inside model.fit: compiled train functions, mixed precision, Keras optimizer
options, and the convergence claim on an ill-conditioned least-squares problem."""

import keras
import numpy as np
import pytest
from helpers import to_numpy

from keras_matta.optimizers import SOAP
from keras_matta.optimizers import Shampoo

_RNG = np.random.default_rng(0)
_TOKENS = _RNG.standard_normal((64, 4, 8)).astype("float32")
_TARGETS = np.tanh(_TOKENS.sum(axis=1) @ _RNG.standard_normal((8, 2))).astype("float32")
_TOKEN_IDS = _RNG.integers(0, 20, (64, 4)).astype("int32")
_ID_TARGETS = np.tanh(_RNG.standard_normal((20, 2))[_TOKEN_IDS].sum(axis=1)).astype("float32")


def attention_model():
    """An embedding (sparse IndexedSlices gradients on TensorFlow, grafted only), attention
    (3-D EinsumDense kernels, 2-D per-head biases) and a 32x12 Dense kernel that block_size=8
    cuts into a 4x2 grid with a padded edge."""
    inputs = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="tokens")(inputs)
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attention")(x, x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(12, activation="tanh", name="hidden")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def mlp_model():
    """An 8x12 kernel (a 1x2 grid of 8x8 blocks with block_size=8), a 12x2 kernel, biases."""
    return keras.Sequential(
        [
            keras.Input((4, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(12, activation="tanh"),
            keras.layers.Dense(2),
        ]
    )


def shampoo_for_tests(optimizer_class=Shampoo, **kwargs):
    defaults = dict(
        learning_rate=0.01, block_size=8, start_preconditioning_step=2, precondition_frequency=3
    )
    return optimizer_class(**{**defaults, **kwargs})


# Both Kronecker-factored optimizers (they share blocks, statistics and refreshes).
OPTIMIZER_CLASSES = pytest.mark.parametrize(
    "optimizer_class", [Shampoo, SOAP], ids=["shampoo", "soap"]
)


def assert_preconditioner_in_use(optimizer):
    """Factors (roots, eigenbases) were computed (no longer the identity they start as) and
    are finite."""
    refreshed = 0
    for root in optimizer._left_factors + optimizer._right_factors:
        if root is None:
            continue
        value = to_numpy(root)
        assert np.isfinite(value).all()
        refreshed += not np.allclose(value, np.eye(value.shape[-1]))
    assert refreshed > 0


@OPTIMIZER_CLASSES
@pytest.mark.parametrize("jit_compile", ["auto", True])
def test_compiled_fit(jit_compile, optimizer_class):
    backend = keras.backend.backend()
    if jit_compile is True and backend == "jax":
        pytest.skip("on JAX 'auto' already is jit_compile=True")
    if jit_compile is True and backend == "torch":
        pytest.skip(
            "torch.compile (jit_compile=True) trains but takes minutes on CPU: dynamo recompiles "
            "around keras internals; torch's default train function is eager"
        )
    model = attention_model()
    optimizer = shampoo_for_tests(optimizer_class)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    history = model.fit(_TOKEN_IDS, _ID_TARGETS, batch_size=16, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    assert_preconditioner_in_use(optimizer)
    kernel_layouts = {
        v.path: layout for v, layout in zip(model.trainable_variables, optimizer._layouts)
    }
    assert kernel_layouts["tokens/embeddings"] is None
    assert kernel_layouts["hidden/kernel"].grid == (4, 2)
    assert kernel_layouts["attention/query/kernel"].matrix_shape == (8, 8)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: shampoo_for_tests(root_method="eigh"),
        lambda: shampoo_for_tests(root_method="newton"),
        # From step 4: the statistics of the 8 x 2 blocks gain rank 2 per step, and before
        # they are full rank the basis of their null space is arbitrary (set by rounding),
        # and so is Adam's diagonal step in it.
        # The refresh at 7 is a power step and a QR (`ops.cond` on the first refresh); the
        # first step starts only the statistics (`schedule.t > 1`, staged).
        lambda: shampoo_for_tests(SOAP, start_preconditioning_step=4, basis_refresh="power_qr",
                                  skip_first_update=True),
    ],
    ids=["shampoo-eigh", "shampoo-newton", "soap-power-qr-skip-first"],
)
def test_compiled_steps_equal_eager_steps(make_optimizer):
    """Eagerly, the start step, the refreshes and the restart of non-finite statistics are
    Python branches; compiled, they are staged (`ops.cond`, `ops.where`): same weights.

    Eight steps, preconditioning from step 2, refreshes at 2, 5 and 8 (SOAP: from step 4,
    refreshes at 4 and 7, each basis used from the step after)."""
    if keras.backend.backend() == "torch":
        pytest.skip("torch's default train function is the eager one")

    def weight_changes(run_eagerly):
        keras.utils.set_random_seed(0)
        model = mlp_model()
        initial = [to_numpy(v) for v in model.trainable_variables]
        optimizer = make_optimizer()
        model.compile(optimizer=optimizer, loss="mse", run_eagerly=run_eagerly)
        model.fit(_TOKENS, _TARGETS, batch_size=8, epochs=1, shuffle=False, verbose=0)
        assert_preconditioner_in_use(optimizer)
        return [to_numpy(v) - w for v, w in zip(model.trainable_variables, initial)]

    for eager, compiled in zip(weight_changes(True), weight_changes(False)):
        # Compiled kernels (the model's too) round differently, and the roots (Newton's
        # iteration count among them) amplify it to ~0.5 % of a step; staging a wrong branch
        # (a missed refresh or start step) is off by tens of percent.
        np.testing.assert_allclose(compiled, eager, atol=0.02 * np.abs(eager).max())


@OPTIMIZER_CLASSES
def test_mixed_bfloat16_fit(optimizer_class):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = mlp_model()
    optimizer = shampoo_for_tests(optimizer_class)
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(_TOKENS, _TARGETS, batch_size=16, epochs=3, verbose=0)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert all(v.dtype == "float32" for v in optimizer.variables if v.name != "iteration")
    assert_preconditioner_in_use(optimizer)


def test_bfloat16_variables_keep_float32_state():
    """With bfloat16 *variables* (not just compute), statistics and roots stay float32."""
    rng = np.random.default_rng(1)
    variable = keras.Variable(rng.standard_normal((10, 7)), dtype="bfloat16")
    optimizer = shampoo_for_tests(block_size=4)
    for _ in range(4):
        gradient = keras.ops.cast(rng.standard_normal((10, 7)), "bfloat16")
        optimizer.apply([gradient], [variable])
    assert variable.dtype == "bfloat16"
    assert optimizer._left_statistics[0].dtype == "float32"
    assert optimizer._left_factors[0].dtype == "float32"
    assert_preconditioner_in_use(optimizer)
    assert np.isfinite(to_numpy(keras.ops.cast(variable, "float32"))).all()


def test_standard_optimizer_arguments_in_compiled_fit():
    optimizer = shampoo_for_tests(
        weight_decay=0.01,
        global_clipnorm=1.0,
        use_ema=True,
        ema_momentum=0.9,
        gradient_accumulation_steps=2,
        loss_scale_factor=128.0,
    )
    model = mlp_model()
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(_TOKENS, _TARGETS, batch_size=8, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert int(to_numpy(optimizer.iterations)) == 3 * 8 // 2  # accumulated steps
    assert_preconditioner_in_use(optimizer)
    # fit() ends by writing the EMA of the weights into the model.
    for variable, average in zip(
        model.trainable_variables, optimizer._model_variables_moving_average
    ):
        np.testing.assert_array_equal(to_numpy(variable), to_numpy(average))


# === Convergence ===


def ill_conditioned_least_squares(condition=1e4, samples=64, features=16, outputs=16):
    """Y = X W* with cond(X^T X) = `condition`, rotated so no coordinate axis is special
    (a diagonal method like Adam cannot undo the rotation; Shampoo's L^(-1/4) can)."""
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.standard_normal((features, features)))
    scales = np.logspace(0, -0.5 * np.log10(condition), features)
    orthonormal, _ = np.linalg.qr(rng.standard_normal((samples, features)))
    x = (np.sqrt(samples) * orthonormal * scales) @ rotation.T
    y = x @ rng.standard_normal((features, outputs))
    return x.astype("float32"), y.astype("float32")


def steps_to_target(optimizer, learning_rates, x, y, relative_target, max_steps):
    """Full-batch steps until the loss is `relative_target` times its initial value, per
    learning rate (None if never). One compiled train function serves the whole sweep: the
    optimizer state, weights and learning rate are reset between runs."""
    model = keras.Sequential(
        [keras.Input((x.shape[1],)), keras.layers.Dense(y.shape[1], use_bias=False)]
    )
    model.compile(optimizer=optimizer, loss="mse")
    optimizer.build(model.trainable_variables)
    initial_state = [to_numpy(v) for v in optimizer.variables]
    zeros = np.zeros(model.trainable_variables[0].shape, "float32")
    results = {}
    for learning_rate in learning_rates:
        for variable, value in zip(optimizer.variables, initial_state):
            variable.assign(value)
        optimizer.learning_rate = learning_rate
        model.trainable_variables[0].assign(zeros)
        initial_loss = None
        results[learning_rate] = None
        for step in range(max_steps + 1):
            loss = float(model.train_on_batch(x, y))  # the loss before this step's update
            initial_loss = initial_loss or loss
            if loss <= relative_target * initial_loss:
                results[learning_rate] = step
                break
    return results


@pytest.mark.slow
def test_shampoo_needs_at_most_half_the_steps_of_adam():
    """Each optimizer at its best learning rate from the same grid; the best must be inside
    the grid for both, or the comparison would depend on where the grid stops."""
    x, y = ill_conditioned_least_squares()
    grid = [0.3, 1.0, 3.0]
    adam = steps_to_target(keras.optimizers.Adam(), grid, x, y, 1e-4, max_steps=400)
    shampoo = steps_to_target(
        Shampoo(start_preconditioning_step=5, precondition_frequency=5), grid, x, y, 1e-4, 400
    )
    best_adam = min((s, lr) for lr, s in adam.items() if s is not None)
    best_shampoo = min((s, lr) for lr, s in shampoo.items() if s is not None)
    interior = grid[1:-1]
    assert best_adam[1] in interior and best_shampoo[1] in interior, (adam, shampoo)
    assert best_shampoo[0] <= 0.5 * best_adam[0], (adam, shampoo)
