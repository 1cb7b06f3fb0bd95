"""Shampoo: steps against an independent NumPy implementation, state, failures, arguments."""

import keras
import numpy as np
import pytest
from helpers import to_numpy
from optimizers.kronecker_reference import BLOCK_SIZE
from optimizers.kronecker_reference import SHAPE
from optimizers.kronecker_reference import VARIABLES
from optimizers.kronecker_reference import NumpyKroneckerReference
from optimizers.kronecker_reference import assert_config_round_trip_and_registration
from optimizers.kronecker_reference import assert_invalid_arguments_raise
from optimizers.kronecker_reference import numpy_matrix_shape
from optimizers.kronecker_reference import run_against_reference

from keras_matta.optimizers import Shampoo
from keras_matta.optimizers import shampoo as shampoo_module
from keras_matta.optimizers.blocking import matrix_shape_for

# === An independent float64 NumPy Shampoo, written from the docstring ===


def numpy_inverse_root(statistics, epsilon, root):
    eigenvalues, eigenvectors = np.linalg.eigh(statistics)
    damped = np.maximum(eigenvalues, 0.0) + epsilon * eigenvalues.max()
    return (eigenvectors * damped ** (-1.0 / root)) @ eigenvectors.T


class NumpyShampoo(NumpyKroneckerReference):
    """One variable's Shampoo state; explicit ragged blocks in Python loops, float64 roots."""

    def step(self, weight, gradient, t, lr):
        h = self.h
        b1, b2, gb2 = h["beta1"], h["beta2"], h["grafting_beta2"]
        if h["weight_decay"]:
            weight = weight - lr * h["weight_decay"] * weight
        self.momentum = b1 * self.momentum + (1 - b1) * gradient
        if h["nesterov"]:
            m_hat = b1 * self.momentum / (1 - b1 ** (t + 1)) + (1 - b1) * gradient / (1 - b1**t)
        else:
            m_hat = self.momentum / (1 - b1**t)
        grafting = h["grafting"]
        if grafting == "adagrad":
            self.second_moment = self.second_moment + gradient**2
        else:
            self.second_moment = gb2 * self.second_moment + (1 - gb2) * gradient**2
        if grafting == "adam":
            graft = m_hat / (np.sqrt(self.second_moment / (1 - gb2**t)) + h["grafting_epsilon"])
        elif grafting in ("rmsprop", "adagrad"):
            graft = m_hat / (np.sqrt(self.second_moment) + h["grafting_epsilon"])
        else:
            graft = m_hat
        if self.matrix_shape is None:
            return weight - lr * graft

        g, m, a = (x.reshape(self.matrix_shape) for x in (gradient, m_hat, graft))
        update = np.zeros(self.matrix_shape)
        # An order-k tensor's factors take the exponent -1/(2k): a matrix's -1/4 on each side,
        # a vector's -1/2 on its one factor.
        vector = self.matrix_shape[1] == 1  # a matrix view has no size-1 side
        for i, block in enumerate(self.blocks):
            self.update_statistics(i, g[block], b2)
            if self.refreshes(t):
                correction = 1 - b2**t if b2 < 1 else 1.0
                for statistics, roots in ((self.left, self.left_factor),
                                          (self.right, self.right_factor)):
                    roots[i] = numpy_inverse_root(
                        statistics[i] / correction, h["epsilon"], 2 if vector else 4)
            if vector:
                direction = self.left_factor[i] @ m[block]
            else:
                direction = self.left_factor[i] @ m[block] @ self.right_factor[i]
            if grafting != "none":
                direction *= np.linalg.norm(a[block]) / np.linalg.norm(direction)
            update[block] = direction if t >= h["start_preconditioning_step"] else a[block]
        return weight - lr * update.reshape(self.shape)


HYPER = dict(
    beta1=0.9,
    beta2=0.99,
    epsilon=1e-4,
    block_size=4,
    precondition_frequency=2,
    start_preconditioning_step=3,
    grafting="adam",
    grafting_beta2=0.95,
    grafting_epsilon=1e-8,
    nesterov=False,
    weight_decay=None,
)


def run_both(steps=7, learning_rate=0.01, named_shapes=VARIABLES, **overrides):
    return run_against_reference(
        Shampoo, NumpyShampoo, dict(HYPER, **overrides), steps, learning_rate, named_shapes
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"nesterov": True, "weight_decay": 0.1},
        {"grafting": "sgd", "beta2": 1.0},
        {"grafting": "adagrad", "beta1": 0.0},
        {"grafting": "rmsprop", "precondition_frequency": 1},
        {"grafting": "none", "start_preconditioning_step": 1},
        {"precondition_vectors": True},
        {"precondition_vectors": True, "grafting": "none"},
    ],
    ids=["adam", "nesterov-decay", "sgd-sums", "adagrad-no-momentum", "rmsprop-every-step", "none",
         "vectors", "vectors-ungrafted"],
)
def test_steps_match_numpy_reference(overrides):
    optimizer, variables, initial = run_both(**overrides)
    # The comparison is not vacuous: every variable moved, and Shampoo is not the graft alone.
    for variable, start in zip(variables, initial):
        assert np.abs(to_numpy(variable) - start).max() > 1e-3
    layouts = [layout is not None for layout in optimizer._layouts]
    # The bias (7,) is preconditioned as the column (7, 1) only with precondition_vectors.
    assert layouts == [True, True, overrides.get("precondition_vectors", False), False]


@pytest.mark.parametrize("root_method", ["eigh", "newton"])
@pytest.mark.parametrize("epsilon", [1e-4, 0.0])
def test_blocks_of_different_sides_match_numpy_reference(root_method, epsilon):
    """Sides 4, 3 and 2: eigh pads them into one call (PyTorch: one per side), Newton makes one
    call per side."""
    shapes = [("kernel", (8, 4)), ("small", (3, 2)), ("bias", (7,))]
    _, variables, initial = run_both(
        named_shapes=shapes, root_method=root_method, epsilon=epsilon, grafting="none"
    )
    for variable, start in zip(variables, initial):
        assert np.abs(to_numpy(variable) - start).max() > 1e-3


@pytest.mark.parametrize("root_method", ["eigh", "newton"])
def test_roots_of_a_refresh_take_one_eigh_call(monkeypatch, root_method):
    """Concurrent LAPACK eighs deadlock XLA on CPU: eigh pads every side into one call there.
    PyTorch solves one call after another, one per side (padding costs the largest side's
    solve per matrix)."""
    sides = []
    original_root = shampoo_module.matrix_inverse_root

    def recording_root(matrix, root, **kwargs):
        sides.append(tuple(matrix.shape))
        return original_root(matrix, root, **kwargs)

    monkeypatch.setattr(shampoo_module, "matrix_inverse_root", recording_root)
    run_both(
        steps=3, named_shapes=[("kernel", (8, 4)), ("small", (3, 2))], root_method=root_method
    )
    # One refresh (step 3); the kernel has two 4x4 blocks, each with a left and a right root.
    padded = root_method == "eigh" and keras.backend.backend() != "torch"
    expected = [(6, 4, 4)] if padded else [(4, 4, 4), (1, 3, 3), (1, 2, 2)]
    assert sorted(sides) == sorted(expected)


def test_shampoo_is_not_the_graft_and_the_start_step_matters():
    """Guard against a reference that agrees because both ignore the preconditioner."""
    _, shampoo_vars, _ = run_both(start_preconditioning_step=3)
    _, graft_vars, _ = run_both(start_preconditioning_step=100)
    kernel_difference = np.abs(to_numpy(shampoo_vars[0]) - to_numpy(graft_vars[0])).max()
    bias_difference = np.abs(to_numpy(shampoo_vars[2]) - to_numpy(graft_vars[2])).max()
    assert kernel_difference > 1e-3 and bias_difference == 0.0


def test_before_the_start_step_it_is_keras_adam():
    rng = np.random.default_rng(1)
    start = rng.standard_normal(SHAPE).astype("float32")
    shampoo_var, adam_var = keras.Variable(start), keras.Variable(start)
    # Keras adds epsilon outside the bias correction, Shampoo inside; with a negligible
    # epsilon the two updates are the same formula.
    shampoo = Shampoo(
        learning_rate=0.01,
        nesterov=False,
        start_preconditioning_step=100,
        grafting_epsilon=1e-12,
        block_size=BLOCK_SIZE,
    )
    adam = keras.optimizers.Adam(learning_rate=0.01, epsilon=1e-12)
    for _ in range(5):
        gradient = keras.ops.convert_to_tensor(rng.standard_normal(SHAPE).astype("float32"))
        shampoo.apply([gradient], [shampoo_var])
        adam.apply([gradient], [adam_var])
    np.testing.assert_allclose(to_numpy(shampoo_var), to_numpy(adam_var), rtol=1e-5, atol=1e-6)
    assert np.abs(to_numpy(shampoo_var) - start).max() > 0.01


def test_matrix_shape_rule():
    cases = {
        (20, 30): (20, 30),
        (3, 3, 16, 32): (144, 32),  # conv kernel: (kh kw c_in) x c_out
        (64, 4, 16): (64, 64),  # EinsumDense query kernel (d, heads, head_dim)
        (4, 16, 64): (64, 64),  # EinsumDense output kernel (heads, head_dim, d)
        (1, 8, 1, 5): (8, 5),
        (7,): None,
        (7, 1): None,
        (): None,
    }
    for shape, matrix in cases.items():
        assert matrix_shape_for(shape) == matrix == numpy_matrix_shape(shape), shape
    # precondition_vectors: one axis left is a column; matrices and scalars are unchanged.
    vector_cases = {**cases, (7,): (7, 1), (7, 1): (7, 1), (1, 1, 9): (9, 1), (1,): None}
    for shape, matrix in vector_cases.items():
        assert matrix_shape_for(shape, vectors=True) == matrix, shape
        assert numpy_matrix_shape(shape, vectors=True) == matrix, shape


def test_which_variables_are_preconditioned():
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(50, 32, name="tokens")(inputs)
    x = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.Dense(65, name="vocab")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    optimizer = Shampoo(block_size=16, max_preconditioner_dim=64, exclude_layers=["head"])
    optimizer.build(model.trainable_variables)
    layouts = {v.path: layout for v, layout in zip(model.trainable_variables, optimizer._layouts)}

    assert layouts["tokens/embeddings"] is None
    assert layouts["norm/gamma"] is None
    # Attention's per-head biases (heads, head_dim) are matrices, preconditioned as such.
    assert layouts["attention/query/bias"].matrix_shape == (4, 8)
    assert layouts["vocab/kernel"] is None  # 65 > max_preconditioner_dim
    assert layouts["head/kernel"] is None  # exclude_layers
    query, output = layouts["attention/query/kernel"], layouts["attention/attention_output/kernel"]
    assert query.matrix_shape == output.matrix_shape == (32, 32)
    assert query.block_shape == (16, 16) and query.num_blocks == 4
    query_index = [v.path for v in model.trainable_variables].index("attention/query/kernel")
    statistics = optimizer._left_statistics[query_index]
    assert tuple(statistics.shape) == (4, 16, 16) and statistics.dtype == "float32"


def test_precondition_vectors_cuts_an_n_by_1_kernel_into_column_blocks_and_skips_scalars():
    inputs = keras.Input((40,))
    model = keras.Model(inputs, keras.layers.LayerNormalization(name="norm")(
        keras.layers.Dense(1, name="column")(inputs)))
    optimizer = Shampoo(block_size=16, precondition_vectors=True)
    optimizer.build(model.trainable_variables)
    layouts = {v.path: layout for v, layout in zip(model.trainable_variables, optimizer._layouts)}
    kernel = layouts["column/kernel"]  # (40, 1): three blocks of 16, 16 and 8 (padded) rows
    assert kernel.is_vector and kernel.matrix_shape == (40, 1)
    assert kernel.block_shape == (16, 1) and kernel.num_blocks == 3 and kernel.is_padded
    assert layouts["column/bias"] is None  # (1,): a scalar
    assert layouts["norm/gamma"] is None and layouts["norm/beta"] is None  # (1,) too
    index = [v.path for v in model.trainable_variables].index("column/kernel")
    assert tuple(optimizer._left_statistics[index].shape) == (3, 16, 16)
    assert tuple(optimizer._right_statistics[index].shape) == (3, 1, 1)


def test_root_recomputation_schedule():
    """Roots change exactly at start, start + f, start + 2f: stale in between."""
    variable = keras.Variable(np.ones(SHAPE, "float32"))
    optimizer = Shampoo(
        start_preconditioning_step=3, precondition_frequency=2, block_size=BLOCK_SIZE
    )
    rng = np.random.default_rng(2)
    previous = None
    changed = []
    for t in range(1, 9):
        optimizer.apply([rng.standard_normal(SHAPE).astype("float32")], [variable])
        root = to_numpy(optimizer._left_factors[0])
        if previous is not None and not np.array_equal(root, previous):
            changed.append(t)
        previous = root
    assert changed == [3, 5, 7]


def test_nan_in_a_statistic_does_not_reach_the_weights():
    variable = keras.Variable(np.ones(SHAPE, "float32"))
    optimizer = Shampoo(
        learning_rate=0.01,
        start_preconditioning_step=2,
        precondition_frequency=2,
        block_size=BLOCK_SIZE,
    )
    rng = np.random.default_rng(3)
    gradients = [rng.standard_normal(SHAPE).astype("float32") for _ in range(8)]
    for gradient in gradients[:3]:
        optimizer.apply([gradient], [variable])
    root_before = to_numpy(optimizer._left_factors[0])
    poisoned = to_numpy(optimizer._left_statistics[0])
    poisoned[0, 1, 1] = np.nan
    optimizer._left_statistics[0].assign(poisoned)

    optimizer.apply([gradients[3]], [variable])  # step 4 recomputes the roots
    assert np.isfinite(to_numpy(variable)).all()
    assert np.isfinite(to_numpy(optimizer._left_factors[0])).all()
    # The statistic restarted from the current gradient, so the root was recomputed from it
    # rather than kept: training goes on with a fresh preconditioner.
    assert np.isfinite(to_numpy(optimizer._left_statistics[0])).all()
    assert not np.array_equal(to_numpy(optimizer._left_factors[0]), root_before)
    for gradient in gradients[4:]:
        optimizer.apply([gradient], [variable])
    assert np.isfinite(to_numpy(variable)).all()


def test_failed_root_keeps_the_previous_preconditioner(monkeypatch):
    variable = keras.Variable(np.ones(SHAPE, "float32"))
    optimizer = Shampoo(
        start_preconditioning_step=2, precondition_frequency=2, block_size=BLOCK_SIZE
    )
    rng = np.random.default_rng(4)
    gradients = [rng.standard_normal(SHAPE).astype("float32") for _ in range(6)]
    for gradient in gradients[:2]:  # roots computed at step 2
        optimizer.apply([gradient], [variable])
    roots_at_step_2 = to_numpy(optimizer._left_factors[0]), to_numpy(optimizer._right_factors[0])
    assert not np.array_equal(roots_at_step_2[0][0], np.eye(BLOCK_SIZE))

    # A root routine that fails (as a non-converged Newton iteration or NaN statistics would)
    # at the step-4 refresh: matrix_inverse_root reports failure as NaN.
    def failing_root(matrix, *args, **kwargs):
        return keras.ops.full_like(matrix, float("nan"))

    monkeypatch.setattr(shampoo_module, "matrix_inverse_root", failing_root)
    for gradient in gradients[2:4]:
        optimizer.apply([gradient], [variable])
    np.testing.assert_array_equal(to_numpy(optimizer._left_factors[0]), roots_at_step_2[0])
    np.testing.assert_array_equal(to_numpy(optimizer._right_factors[0]), roots_at_step_2[1])
    assert np.isfinite(to_numpy(variable)).all()

    monkeypatch.undo()
    for gradient in gradients[4:]:  # step 6 refreshes again
        optimizer.apply([gradient], [variable])
    assert not np.array_equal(to_numpy(optimizer._left_factors[0]), roots_at_step_2[0])
    assert np.isfinite(to_numpy(variable)).all()


def test_gradient_accumulation_averages_before_the_step():
    rng = np.random.default_rng(5)
    start = rng.standard_normal(SHAPE).astype("float32")
    accumulated, direct = keras.Variable(start), keras.Variable(start)
    hyper = dict(
        learning_rate=0.01,
        start_preconditioning_step=2,
        precondition_frequency=1,
        block_size=BLOCK_SIZE,
    )
    accumulating = Shampoo(gradient_accumulation_steps=2, **hyper)
    plain = Shampoo(**hyper)
    for _ in range(3):
        first, second = (rng.standard_normal(SHAPE).astype("float32") for _ in range(2))
        accumulating.apply([first], [accumulated])
        accumulating.apply([second], [accumulated])
        plain.apply([(first + second) / 2], [direct])
    np.testing.assert_allclose(to_numpy(accumulated), to_numpy(direct), rtol=1e-5, atol=1e-6)


def test_loss_scale_factor_unscales_gradients():
    rng = np.random.default_rng(6)
    start = rng.standard_normal(SHAPE).astype("float32")
    scaled_var, plain_var = keras.Variable(start), keras.Variable(start)
    hyper = dict(start_preconditioning_step=1, block_size=BLOCK_SIZE)
    scaled = Shampoo(loss_scale_factor=1024.0, **hyper)
    plain = Shampoo(**hyper)
    for _ in range(3):
        gradient = rng.standard_normal(SHAPE).astype("float32")
        scaled.apply([gradient * 1024.0], [scaled_var])
        plain.apply([gradient], [plain_var])
    np.testing.assert_allclose(to_numpy(scaled_var), to_numpy(plain_var), rtol=1e-5, atol=1e-6)


def test_get_config_round_trip_and_registration():
    optimizer = Shampoo(
        learning_rate=0.02,
        beta1=0.8,
        beta2=1.0,
        epsilon=1e-5,
        block_size=64,
        precondition_frequency=5,
        start_preconditioning_step=3,
        grafting="rmsprop",
        grafting_beta2=0.99,
        grafting_epsilon=1e-6,
        nesterov=False,
        max_preconditioner_dim=2048,
        root_method="newton",
        exclude_embeddings=False,
        exclude_layers=["head"],
        weight_decay=0.01,
        global_clipnorm=1.0,
        use_ema=True,
        gradient_accumulation_steps=2,
    )
    assert_config_round_trip_and_registration(optimizer)


INVALID_VALUES = [
    ({"grafting": "lamb"}, "`grafting` must be one of .* got grafting='lamb'"),
    ({"block_size": 0}, "`block_size` must be an integer >= 1; got block_size=0"),
    ({"block_size": 2.5}, "block_size=2.5"),
    ({"beta2": 0.0}, r"`beta2` must be a number in \(0, 1\]; got beta2=0.0"),
    ({"beta2": 1.5}, "beta2=1.5"),
    ({"beta1": 1.0}, r"`beta1` must be a number in \[0, 1\); got beta1=1.0"),
    ({"epsilon": -1e-6}, r"`epsilon` must be a number in \[0, inf\); got epsilon=-1e-06"),
    ({"epsilon": float("nan")}, "got epsilon=nan"),
    ({"weight_decay": -0.1}, r"`weight_decay` must be a number in \[0, inf\)"),
    ({"precondition_frequency": 0}, "`precondition_frequency` must be an integer >= 1"),
    ({"start_preconditioning_step": 0}, "`start_preconditioning_step` must be an integer"),
    ({"max_preconditioner_dim": -5}, "max_preconditioner_dim=-5"),
    ({"root_method": "svd"}, "`root_method` must be one of .* got root_method='svd'"),
    ({"grafting_beta2": 1.0}, r"`grafting_beta2` must be a number in \(0, 1\)"),
    ({"grafting_epsilon": 0.0}, r"`grafting_epsilon` must be a number in \(0, inf\)"),
]
INVALID_TYPES = [
    ({"nesterov": "yes"}, "`nesterov` must be a bool"),
    ({"exclude_embeddings": 1}, "`exclude_embeddings` must be a bool"),
    ({"precondition_vectors": "yes"}, "`precondition_vectors` must be a bool; got "
                                      "precondition_vectors='yes'"),
    ({"exclude_layers": "head"}, "`exclude_layers` must be a list"),
]


def test_invalid_arguments_raise_naming_argument_and_value():
    assert_invalid_arguments_raise(Shampoo, INVALID_VALUES, INVALID_TYPES)
