"""The element-wise passes against NumPy, for every implementation the backend can run."""

import keras
import numpy as np
import pytest
from helpers import to_numpy
from keras import ops

from keras_matta.optimizers import elementwise

SHAPES = [(3, 4), (5,), (2, 3, 2)]


def implementations():
    """The backend's own implementation, and the `keras.ops` reference where they differ."""
    found = [elementwise.KerasElementwise]
    if keras.backend.backend() == "torch":
        found.append(elementwise.TorchElementwise)
    return found


def arrays(seed, dtype="float32"):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def make(optimizer_cls):
    optimizer = keras.optimizers.SGD()
    return optimizer, optimizer_cls(optimizer)


@pytest.mark.parametrize("implementation", implementations(), ids=lambda c: c.__name__)
@pytest.mark.parametrize("decay, square", [(0.9, False), (0.95, True), (1.0, False), (1.0, True)])
def test_ema_assigns_and_returns_the_new_state(implementation, decay, square):
    _, ops_impl = make(implementation)
    states_np, values_np = arrays(0), arrays(1)
    states = [keras.Variable(s) for s in states_np]
    returned = ops_impl.ema(states, [ops.convert_to_tensor(v) for v in values_np], decay, square)

    for state, new, s, v in zip(states, returned, states_np, values_np):
        v = v**2 if square else v
        expected = s + v if decay == 1.0 else decay * s + (1 - decay) * v
        np.testing.assert_allclose(to_numpy(state), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(to_numpy(new), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("implementation", implementations(), ids=lambda c: c.__name__)
@pytest.mark.parametrize("scalar", [float, ops.convert_to_tensor], ids=["float", "tensor"])
def test_linear_and_adam_step(implementation, scalar):
    _, ops_impl = make(implementation)
    xs, ys, second = arrays(2), arrays(3), [np.abs(a) for a in arrays(4)]
    tensors = lambda values: [ops.convert_to_tensor(v) for v in values]  # noqa: E731

    scaled = ops_impl.linear(tensors(xs), scalar(0.5))
    combined = ops_impl.linear(tensors(xs), scalar(0.5), tensors(ys), scalar(-2.0))
    steps = ops_impl.divide_by_root(tensors(xs), tensors(second), scalar(3.0), 1e-3)
    unscaled = ops_impl.divide_by_root(tensors(xs), tensors(second), 1.0, 1e-3)

    for k, (x, y, v) in enumerate(zip(xs, ys, second)):
        np.testing.assert_allclose(to_numpy(scaled[k]), 0.5 * x, rtol=1e-6)
        np.testing.assert_allclose(to_numpy(combined[k]), 0.5 * x - 2.0 * y, rtol=1e-6)
        np.testing.assert_allclose(to_numpy(steps[k]), x / (np.sqrt(3 * v) + 1e-3), rtol=1e-5)
        np.testing.assert_allclose(to_numpy(unscaled[k]), x / (np.sqrt(v) + 1e-3), rtol=1e-5)


@pytest.mark.parametrize("implementation", implementations(), ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_subtract_in_the_variables_dtype(implementation, dtype):
    _, ops_impl = make(implementation)
    weights_np, updates_np = arrays(5), arrays(6)
    variables = [keras.Variable(w, dtype=dtype) for w in weights_np]
    before = [to_numpy(ops.cast(v, "float32")) for v in variables]
    ops_impl.subtract(
        variables, [ops.convert_to_tensor(u) for u in updates_np], ops.convert_to_tensor(0.1)
    )

    for variable, w, u in zip(variables, before, updates_np):
        assert keras.backend.standardize_dtype(variable.dtype) == dtype
        tolerance = 1e-6 if dtype == "float32" else 2e-2
        np.testing.assert_allclose(
            to_numpy(ops.cast(variable, "float32")), w - 0.1 * u, rtol=tolerance, atol=tolerance
        )


def test_for_backend_fuses_on_torch_only():
    chosen = elementwise.for_backend(keras.optimizers.SGD())
    fused = keras.backend.backend() == "torch"
    assert isinstance(chosen, elementwise.TorchElementwise) == fused
