"""`reorder` and `importance`: scores against NumPy, the full-width function kept, prefixes."""

import keras
import numpy as np
import pytest
from helpers import to_numpy

import keras_matta

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 6)).astype("float32")
Y = RNG.integers(0, 3, size=(40,))
CROSS_ENTROPY = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp(majority=1):
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6,)),
        keras_matta.MatDense(8, activation="relu", name="h1", majority=majority,
                             bias_initializer="random_normal"),
        keras.layers.Dropout(0.5),
        keras_matta.MatDense(5, name="h2", bias_initializer="random_normal"),
        keras.layers.Activation("tanh"),
        keras_matta.MatDense(3, nested=False, name="logits"),
    ])


def _block():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((5, 8))
    hidden = keras_matta.MatTransformerBlock(12, 4, nested_heads=True, causal=True,
                                             bias_initializer="random_normal", name="b")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def _weights(model):
    return [to_numpy(w).copy() for w in model.weights]


# === Scores, against NumPy ===


def _numpy_mlp(model, x):
    """Hidden activations of `_mlp` in inference mode, in float64."""
    w = {layer.name: [np.float64(to_numpy(v)) for v in layer.get_weights()]
         for layer in model.layers if layer.weights}
    h1 = np.maximum(x @ w["h1"][0] + w["h1"][1], 0)
    h2 = np.tanh(h1 @ w["h2"][0] + w["h2"][1])
    return h1, h2, h2 @ w["logits"][0] + w["logits"][1]


def test_activation_scores_are_mean_absolute_activations():
    model = _mlp()
    h1, h2, _ = _numpy_mlp(model, np.float64(X))
    result = keras_matta.reorder(model, X, batch_size=16, verbose=0)
    # h2's units are read after tanh: its consumer sees tanh(h2), which `_numpy_mlp` returns.
    np.testing.assert_allclose(result.scores["h1"]["units"], np.abs(h1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(result.scores["h2"]["units"], np.abs(h2).mean(0), rtol=1e-5)


def test_taylor_scores_are_weight_times_gradient_of_every_declared_axis():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((6,)),
        keras_matta.MatDense(7, activation="relu", name="hidden", bias_initializer="ones"),
        keras_matta.MatDense(3, nested=False, name="logits"),
    ])
    w1, b1, w2, b2 = (np.float64(to_numpy(v)) for v in model.weights)
    x = np.float64(X)
    # Hand-derived float64 gradients of the mean cross-entropy, summed over the two batches.
    grads = [np.zeros_like(w) for w in (w1, b1, w2)]
    for rows in (slice(0, 20), slice(20, 40)):
        pre = x[rows] @ w1 + b1
        hidden = np.maximum(pre, 0)
        logits = hidden @ w2 + b2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d_logits = (p - np.eye(3)[Y[rows]]) / len(p)
        d_pre = (d_logits @ w2.T) * (pre > 0)
        grads[0] += x[rows].T @ d_pre
        grads[1] += d_pre.sum(0)
        grads[2] += hidden.T @ d_logits
    expected = (np.abs(w1 * grads[0]).sum(0) + np.abs(b1 * grads[1])
                + np.abs(w2 * grads[2]).sum(1))
    result = keras_matta.reorder(model, (X, Y), method="taylor", loss=CROSS_ENTROPY,
                                 batch_size=20, verbose=0)
    np.testing.assert_allclose(result.scores["hidden"]["units"], expected, rtol=1e-4)


# === Permutation ===


@pytest.mark.parametrize("method", ["activation", "taylor"])
@pytest.mark.parametrize("build", [_mlp, lambda: _mlp(majority=3), _block],
                         ids=["mlp", "mlp_majority", "transformer_block"])
def test_full_width_outputs_are_unchanged(build, method):
    model = build()
    x = X if model.input_shape[-1] == 6 else RNG.normal(size=(6, 5, 8)).astype("float32")
    y = Y if x is X else RNG.integers(0, 3, size=(6, 5))
    before = to_numpy(model(x))
    result = keras_matta.reorder(model, (x, y), method=method, loss=CROSS_ENTROPY, verbose=0)
    np.testing.assert_allclose(to_numpy(model(x)), before, rtol=1e-4, atol=1e-5)
    assert any(not np.array_equal(o, np.arange(len(o)))
               for orders in result.orders.values() for o in orders.values())


def test_each_prefix_is_the_network_of_the_highest_scored_units():
    model = _mlp()
    original = _weights(model)
    result = keras_matta.reorder(model, X, verbose=0)
    keep = np.sort(result.orders["h1"]["units"][:3])  # the 3 best hidden units of h1
    w1, b1 = original[0][:, keep], original[1][keep]
    h1 = np.maximum(np.float64(X) @ w1 + b1, 0)
    w2, b2 = original[2][keep], original[3]
    expected = np.tanh(h1 @ w2 + b2) @ original[4] + original[5]
    with keras_matta.WidthScope(model, {"h1": 3}):
        np.testing.assert_allclose(to_numpy(model(X)), expected, rtol=1e-4, atol=1e-5)


def test_reordering_twice_changes_nothing_more():
    model = _block()
    x = RNG.normal(size=(6, 5, 8)).astype("float32")
    first = keras_matta.reorder(model, x, verbose=0)
    second = keras_matta.reorder(model, x, verbose=0)
    for dimension, order in second.orders["b"].items():
        np.testing.assert_array_equal(order, np.arange(len(order)))
        np.testing.assert_allclose(second.scores["b"][dimension],
                                   np.sort(first.scores["b"][dimension])[::-1], rtol=1e-4)


def test_layers_whose_output_leaves_the_mat_graph_are_skipped():
    keras.utils.set_random_seed(6)
    inputs = keras.Input((6,))
    hidden = keras_matta.MatDense(8, activation="relu", name="to_stock")(inputs)
    outputs = keras_matta.MatDense(4, name="to_output")(keras.layers.Dense(5)(hidden))
    model = keras.Model(inputs, outputs)
    weights = _weights(model)
    with pytest.raises(ValueError, match="no nested dimension to reorder"):
        keras_matta.reorder(model, X, verbose=0)
    for before, after in zip(weights, _weights(model)):
        np.testing.assert_array_equal(before, after)


# === Bad input: a clear error, the model untouched ===


@pytest.mark.parametrize("kwargs, error, match", [
    ({"data": X, "method": "magnitude"}, ValueError, "`method` must be one of"),
    ({"data": X[:0]}, ValueError, "holds no calibration batch"),
    ({"data": []}, ValueError, "holds no calibration batch"),
    ({"data": X[:, :4]}, ValueError, r"has shape \(None, 6\); got \(32, 4\)"),
    ({"data": {"x": X}}, ValueError, "does not match the inputs"),
    ({"data": 3}, TypeError, "`data` must be arrays"),
    ({"data": X, "method": "taylor", "loss": CROSS_ENTROPY}, ValueError, "needs targets"),
    ({"data": (X, Y), "method": "taylor"}, ValueError, "needs a loss"),
    ({"data": X, "batch_size": 0}, ValueError, "`batch_size` must be a positive integer"),
    ({"data": X, "verbose": 2}, ValueError, "`verbose` must be"),
])
def test_bad_input_raises_before_any_change(kwargs, error, match):
    model = _mlp()
    weights = _weights(model)
    with pytest.raises(error, match=match):
        keras_matta.reorder(model, **kwargs)
    for before, after in zip(weights, _weights(model)):
        np.testing.assert_array_equal(before, after)


def test_token_ids_outside_the_vocabulary_are_refused():
    inputs = keras.Input((4,), dtype="int32")
    hidden = keras.layers.Embedding(10, 8)(inputs)
    hidden = keras_matta.MatTransformerBlock(16, 2, name="b")(hidden)
    model = keras.Model(inputs, hidden)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 10\)"):
        keras_matta.reorder(model, np.full((2, 4), 10, "int32"), verbose=0)
    with pytest.raises(TypeError, match="token ids must be integers"):
        keras_matta.reorder(model, np.zeros((2, 4), "float32"), verbose=0)
