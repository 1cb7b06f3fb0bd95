"""What the Shampoo and SOAP tests share: the float64 NumPy references' blocks and statistics,
the step-by-step comparison against them, and the config and argument checks.

Like `keras_matta/optimizers/kronecker.py` for the optimizers, this holds the parts that are
the same for both; each test file keeps its own update rule, written from its docstring.
"""

import keras
import numpy as np
import pytest
from helpers import to_numpy

# The tests reuse SHAPE and BLOCK_SIZE: eager JAX compiles each op once per shape.
SHAPE, BLOCK_SIZE = (10, 7), 4
# (name, shape): a matrix cut into 3x2 ragged blocks; a rank-3 kernel viewed as (6, 5) with 4x1
# and 2x1 edge blocks; a bias; an embedding table (excluded by its path).
VARIABLES = [("kernel", SHAPE), ("attention", (2, 3, 5)), ("bias", (7,)), ("embeddings", SHAPE)]


def numpy_matrix_shape(shape, vectors=False):
    """Drop size-1 axes; split once, in order, where the smaller side is largest. With
    `vectors`, one axis left is the column `(n, 1)`."""
    dims = [d for d in shape if d != 1]
    if vectors and len(dims) == 1:
        return (dims[0], 1)
    if len(dims) < 2:
        return None
    best = None
    for split in range(1, len(dims)):
        rows, cols = int(np.prod(dims[:split])), int(np.prod(dims[split:]))
        if best is None or min(rows, cols) > min(best) or (
            min(rows, cols) == min(best) and max(rows, cols) < max(best)
        ):
            best = (rows, cols)
    return best


def ragged_slices(size, block_size):
    return [slice(start, min(start + block_size, size)) for start in range(0, size, block_size)]


class NumpyKroneckerReference:
    """One variable's state: momentum, second moment and, if preconditioned, explicit ragged
    blocks with their statistics `left`, `right` and factors `left_factor`, `right_factor`
    (identity at first). A subclass writes `step(weight, gradient, t, lr)`."""

    def __init__(self, shape, preconditioned=True, **hyper):
        self.h = hyper
        self.shape = shape
        self.momentum = np.zeros(shape)
        self.second_moment = np.zeros(shape)
        vectors = hyper.get("precondition_vectors", False)
        self.matrix_shape = numpy_matrix_shape(shape, vectors) if preconditioned else None
        if self.matrix_shape is not None:
            rows, cols = self.matrix_shape
            self.blocks = [
                (r, c)
                for r in ragged_slices(rows, hyper["block_size"])
                for c in ragged_slices(cols, hyper["block_size"])
            ]
            self.left = [np.zeros((r.stop - r.start,) * 2) for r, _ in self.blocks]
            self.right = [np.zeros((c.stop - c.start,) * 2) for _, c in self.blocks]
            self.left_factor = [np.eye(len(s)) for s in self.left]
            self.right_factor = [np.eye(len(s)) for s in self.right]

    def update_statistics(self, i, block_gradient, beta):
        """`S <- beta S + (1 - beta) gram` for block `i` (`beta = 1`: plain sums)."""
        weight_new = 1.0 if beta == 1 else 1 - beta
        self.left[i] = beta * self.left[i] + weight_new * block_gradient @ block_gradient.T
        self.right[i] = beta * self.right[i] + weight_new * block_gradient.T @ block_gradient

    def refreshes(self, t):
        """Whether step `t` recomputes the factors."""
        start, frequency = self.h["start_preconditioning_step"], self.h["precondition_frequency"]
        return t >= start and (t - start) % frequency == 0


def run_against_reference(
    optimizer_class, reference_class, hyper, steps, learning_rate, named_shapes
):
    """`steps` steps of random gradients through the optimizer and the reference, comparing
    every variable after every step; returns (optimizer, variables, initial values)."""
    rng = np.random.default_rng(0)
    initial = [rng.standard_normal(shape) for _, shape in named_shapes]
    gradients = [[rng.standard_normal(shape) for _, shape in named_shapes] for _ in range(steps)]
    variables = [
        keras.Variable(w.astype("float32"), name=name)
        for (name, _), w in zip(named_shapes, initial)
    ]
    optimizer = optimizer_class(learning_rate=learning_rate, **hyper)
    references = [
        reference_class(shape, preconditioned=(name != "embeddings"), **hyper)
        for name, shape in named_shapes
    ]
    expected = list(initial)
    for t, step_gradients in enumerate(gradients, start=1):
        optimizer.apply([g.astype("float32") for g in step_gradients], variables)
        expected = [
            ref.step(w, g, t, learning_rate)
            for ref, w, g in zip(references, expected, step_gradients)
        ]
        for variable, value in zip(variables, expected):
            np.testing.assert_allclose(
                to_numpy(variable), value, rtol=2e-4, atol=2e-5, err_msg=f"step {t}"
            )
    return optimizer, variables, initial


def assert_config_round_trip_and_registration(optimizer):
    """`from_config` and Keras (de)serialization give back the same config and class, which is
    registered as `keras_matta>ClassName`."""
    optimizer_class = type(optimizer)
    config = optimizer.get_config()
    assert optimizer_class.from_config(config).get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, optimizer_class) and restored.get_config() == config
    registered_name = f"keras_matta>{optimizer_class.__name__}"
    assert keras.saving.get_registered_name(optimizer_class) == registered_name


def assert_invalid_arguments_raise(optimizer_class, invalid_values, invalid_types):
    """Each `(kwargs, message)` raises a ValueError (`invalid_values`) or a TypeError
    (`invalid_types`) whose message matches."""
    for kwargs, message in invalid_values:
        with pytest.raises(ValueError, match=message):
            optimizer_class(**kwargs)
    for kwargs, message in invalid_types:
        with pytest.raises(TypeError, match=message):
            optimizer_class(**kwargs)
