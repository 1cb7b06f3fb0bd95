"""A SampledWidth (a mask) computes exactly what the sliced layer computes, values and gradients."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_matta
from keras_matta.layers.sampled_width import SampledWidth
from keras_matta.widths import WidthScope


def _mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((12,)),
        keras_matta.MatDense(16, activation="gelu", bias_initializer="random_normal",
                             name="hidden_1"),
        keras_matta.MatDense(8, activation="relu", bias_initializer="random_normal",
                             name="hidden_2"),
        keras_matta.MatDense(5, nested=False, name="logits"),
    ])


def _block_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 8))
    x = keras_matta.MatTransformerBlock(24, 4, nested_heads=True, causal=True,
                                        activation="gelu", name="block_1")(inputs)
    x = keras_matta.MatTransformerBlock(16, 4, nested_heads=True, name="block_2")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


class _Sampled:
    """Selects `SampledWidth`s as MatTA does: on the layers, for the duration of a block."""

    def __init__(self, model, counts):
        self.selection = {
            layer: {dim: SampledWidth(ops.convert_to_tensor(count, "int32"))
                    for dim, count in counts[layer.name].items()}
            for layer in keras_matta.widths.mat_layers(model) if layer.name in counts
        }

    def __enter__(self):
        for layer, width in self.selection.items():
            layer._select_width(width)

    def __exit__(self, *exc):
        for layer in self.selection:
            layer._select_width(None)


def _value_and_gradients(model, x, scope):
    """The summed squared output and its gradients, computed in NumPy from the backend."""
    variables = model.trainable_variables
    with scope:
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                value = ops.sum(ops.square(model(x)))
            grads = tape.gradient(value, variables)
        elif keras.backend.backend() == "torch":
            value = ops.sum(ops.square(model(x)))
            for v in variables:
                v.value.grad = None
            value.backward()
            grads = [v.value.grad for v in variables]
        else:
            import jax

            values = [v.value for v in variables]

            def loss(values):
                mapping = list(zip(variables, values))
                with keras.StatelessScope(state_mapping=mapping):
                    return ops.sum(ops.square(model(x)))

            value, grads = jax.jit(jax.value_and_grad(loss))(values)
    to_numpy = lambda t: np.zeros(v.shape) if t is None else ops.convert_to_numpy(t)  # noqa: E731
    return float(ops.convert_to_numpy(value)), [
        to_numpy(g) for g, v in zip(grads, variables)
    ]


@pytest.mark.parametrize("build, counts, spec", [
    (_mlp, {"hidden_1": {"units": 5}, "hidden_2": {"units": 3}},
     {"hidden_1": 5, "hidden_2": 3}),
    (_mlp, {"hidden_1": {"units": 16}, "hidden_2": {"units": 1}},
     {"hidden_1": 16, "hidden_2": 1}),
    (_block_model,
     {"block_1": {"intermediate_dim": 7, "num_heads": 1},
      "block_2": {"intermediate_dim": 16, "num_heads": 3}},
     {"block_1": {"intermediate_dim": 7, "num_heads": 1},
      "block_2": {"intermediate_dim": 16, "num_heads": 3}}),
])
def test_sampled_width_equals_the_sliced_width(build, counts, spec):
    model = build()
    shape = (3,) + tuple(model.input_shape[1:])
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    with WidthScope(model, spec):
        expected = ops.convert_to_numpy(model(x))
    with _Sampled(model, counts):
        got = ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    value, grads = _value_and_gradients(model, x, _Sampled(model, counts))
    expected_value, expected_grads = _value_and_gradients(model, x, WidthScope(model, spec))
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    for variable, g, e in zip(model.trainable_variables, grads, expected_grads):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=variable.path)


def test_mask_is_a_prefix_of_ones():
    mask = SampledWidth(ops.convert_to_tensor(3, "int32")).mask(5, "float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(mask), [1, 1, 1, 0, 0])
