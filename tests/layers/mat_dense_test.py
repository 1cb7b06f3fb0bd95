import keras
import numpy as np
import pytest
from helpers import to_numpy

import keras_matta
from keras_matta import MatDense


def numpy_dense(x, kernel, bias, in_width, out_width, activation=lambda v: v):
    return activation(x @ kernel[:in_width, :out_width] + bias[:out_width])


def relu(v):
    return np.maximum(v, 0.0)


@pytest.mark.parametrize("out_width", [1, 5, 16])
@pytest.mark.parametrize("in_width", [3, 8])
def test_matches_numpy_at_every_width_and_input_width(in_width, out_width):
    layer = MatDense(16, activation="relu", bias_initializer="random_normal")
    layer.build((None, 8))
    kernel, bias = (to_numpy(w) for w in layer.weights)
    x = np.random.randn(4, in_width).astype("float32")

    y = to_numpy(layer(x, width=out_width))

    np.testing.assert_allclose(
        y, numpy_dense(x, kernel, bias, in_width, out_width, relu), atol=1e-6
    )


def test_stacked_layers_nest_and_head_keeps_full_units():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            MatDense(10, activation="relu", bias_initializer="random_normal", name="hidden"),
            MatDense(4, nested=False, bias_initializer="random_normal", name="head"),
        ]
    )
    (k1, b1), (k2, b2) = [[to_numpy(w) for w in layer.weights] for layer in model.layers]
    x = np.random.randn(3, 6).astype("float32")

    with keras_matta.WidthScope(model, 0.3):
        y = to_numpy(model(x))

    hidden = numpy_dense(x, k1, b1, 6, 3, relu)  # round(0.3 * 10) = 3 units
    np.testing.assert_allclose(y, numpy_dense(hidden, k2, b2, 3, 4), atol=1e-6)


def test_explicit_width_argument_overrides_scope():
    layer = MatDense(8)
    model = keras.Sequential([keras.Input((4,)), layer])
    x = np.ones((2, 4), "float32")
    with keras_matta.WidthScope(model, 0.5):
        assert layer(x).shape == (2, 4)
        assert layer(x, width=2).shape == (2, 2)
        assert layer(x, width={"units": 8}).shape == (2, 8)
    assert layer(x).shape == (2, 8)


def test_input_wider_than_built_dimension_is_rejected():
    layer = MatDense(4, name="narrow")
    layer.build((None, 3))
    with pytest.raises(ValueError, match="'narrow' was built for 3 input features; got .* 5"):
        layer(np.ones((1, 5), "float32"))


@pytest.mark.parametrize(
    "width, error, message",
    [
        (0, ValueError, r"'units' of layer 'd' must be in \[1, 8\]; got 0"),
        (9, ValueError, r"'units' of layer 'd' must be in \[1, 8\]; got 9"),
        (1.5, ValueError, r"must be in \(0, 1\]; got 1.5"),
        (0.0, ValueError, r"must be in \(0, 1\]; got 0.0"),
        ("half", TypeError, "must be a float in"),
        ({"heads": 2}, ValueError, r"Unknown nested dimension\(s\) \['heads'\]"),
    ],
)
def test_bad_widths_raise_before_any_work(width, error, message):
    layer = MatDense(8, name="d")
    layer.build((None, 4))
    with pytest.raises(error, match=message):
        layer(np.ones((1, 4), "float32"), width=width)


def test_rejects_quantization():
    layer = MatDense(4)
    layer.build((None, 2))
    with pytest.raises(NotImplementedError, match="extract"):
        layer.quantize("int8")
    with pytest.raises(ValueError, match="quantization_config"):
        MatDense(4, quantization_config=object())


def test_lora_slices_the_effective_kernel():
    layer = MatDense(6, lora_rank=2, bias_initializer="random_normal")
    layer.build((None, 5))
    layer.lora_kernel_b.assign(np.random.randn(2, 6).astype("float32"))
    effective = to_numpy(layer.kernel)
    bias = to_numpy(layer.bias)
    x = np.random.randn(2, 5).astype("float32")

    np.testing.assert_allclose(
        to_numpy(layer(x, width=3)), numpy_dense(x, effective, bias, 5, 3), atol=1e-5
    )
    assert len(layer.trainable_weights) == 3  # bias + the two LoRA factors


def test_width_selection_is_not_reused_across_compiled_calls():
    model = keras.Sequential([keras.Input((4,)), MatDense(8, name="d")])
    model.compile(jit_compile=True)
    x = np.random.randn(5, 4).astype("float32")
    full = model.predict(x, verbose=0)
    with keras_matta.WidthScope(model, 0.25):
        small = model.predict(x, verbose=0)
    again = model.predict(x, verbose=0)

    assert full.shape == (5, 8) and small.shape == (5, 2) and again.shape == (5, 8)
    np.testing.assert_allclose(small, full[:, :2], atol=1e-6)
    np.testing.assert_allclose(again, full, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch.compile's graph capture")
def test_sliced_call_is_one_torch_compile_graph():
    # `fullgraph=True` raises on any graph break: slicing must not read a Keras variable's
    # attributes or `super()` properties, which dynamo cannot trace (each broke the graph and
    # fell back to eager for the rest of the layer).
    import torch

    layer = MatDense(16, activation="relu", bias_initializer="random_normal")
    layer.build((None, 8))
    kernel, bias = (to_numpy(w) for w in layer.weights)
    x = np.random.randn(4, 3).astype("float32")
    call = torch.compile(lambda inputs: layer.call(inputs, width=5), fullgraph=True)

    y = to_numpy(call(torch.as_tensor(x)))

    np.testing.assert_allclose(y, numpy_dense(x, kernel, bias, 3, 5, relu), atol=1e-6)
