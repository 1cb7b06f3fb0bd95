"""Elastic depth: `{"depth": 0}` drops a residual block in call, MatTA, extract and cost."""

import keras
import numpy as np
import pytest
from helpers import to_numpy

import keras_matta

X = np.random.default_rng(0).normal(size=(4, 5, 8)).astype("float32")


def _model():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((5, 8))
    x = inputs
    for i in range(3):
        x = keras_matta.MatTransformerBlock(12, 2, causal=True, name=f"b{i}",
                                            bias_initializer="random_normal")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_a_dropped_block_passes_the_residual_stream_through():
    model = _model()
    blocks = [model.get_layer(f"b{i}") for i in range(3)]
    expected = model.get_layer("head")(blocks[2](blocks[0](X)))  # b1 removed by hand
    with keras_matta.WidthScope(model, {"b1": {"depth": 0}}):
        np.testing.assert_allclose(to_numpy(model(X)), to_numpy(expected), atol=1e-5)
    spec = {"b1": {"depth": 0, "intermediate_dim": 6}, "b2": {"depth": 1}}
    expected = model.get_layer("head")(blocks[2](blocks[0](X)))
    with keras_matta.WidthScope(model, spec):
        np.testing.assert_allclose(to_numpy(model(X)), to_numpy(expected), atol=1e-5)


def test_extract_removes_the_block_and_cost_counts_without_it():
    model = _model()
    spec = {"b0": {"depth": 0}, "b2": 6}
    stock = keras_matta.extract(model, spec)
    assert not any(layer.name.startswith("b0") for layer in stock.layers)
    with keras_matta.WidthScope(model, spec):
        np.testing.assert_allclose(to_numpy(stock(X)), to_numpy(model(X)), atol=1e-5)
    cost = keras_matta.cost(model, spec)
    assert cost["params"] == stock.count_params()
    full, block = keras_matta.cost(model), model.get_layer("b0").count_params()
    assert keras_matta.cost(model, {"b0": {"depth": 0}})["params"] == full["params"] - block


def test_matta_trains_a_student_without_a_block():
    model = _model()
    student = {"b1": {"depth": 0}, "b2": {"depth": 0}}
    mat_ta = keras_matta.MatTA(model, [student], num_sampled_widths=0)
    mat_ta.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = np.random.default_rng(1).integers(0, 3, size=(4, 5))
    history = mat_ta.fit(X, y, epochs=2, batch_size=2, verbose=0).history
    student_losses = [key for key in history if key.startswith("student_")]
    assert student_losses and all(np.isfinite(history[key]).all() for key in student_losses)
    with keras_matta.WidthScope(model, student):
        logits = to_numpy(model(X))
    expected = model.get_layer("head")(model.get_layer("b0")(X))
    np.testing.assert_allclose(logits, to_numpy(expected), atol=1e-5)


@pytest.mark.parametrize("spec, error, match", [
    ({"b0": {"depth": 0}, "b1": {"depth": 0}, "b2": {"depth": 0}}, ValueError,
     "drops every block"),
    ({"b0": {"depth": 2}}, ValueError, r"must be 0 \(drop the block\) or 1"),
    ({"b0": {"depth": 0.5}}, ValueError, r"must be 0 \(drop the block\) or 1"),
])
def test_bad_depth_specs_are_refused(spec, error, match):
    with pytest.raises(error, match=match):
        keras_matta.resolve_widths(_model(), spec)


def test_only_residual_blocks_can_be_dropped():
    model = keras.Sequential([keras.Input((4,)), keras_matta.MatDense(8, name="hidden")])
    with pytest.raises(ValueError, match="is not a residual block"):
        keras_matta.resolve_widths(model, {"hidden": {"depth": 0}})


def test_block_importance_is_one_minus_the_cosine_of_input_and_output():
    model = _model()
    scores = keras_matta.block_importance(model, X, batch_size=2)
    x = X
    for i in range(3):
        y = to_numpy(model.get_layer(f"b{i}")(x))
        a, b = np.float64(x).reshape(-1, 8), np.float64(y).reshape(-1, 8)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        np.testing.assert_allclose(scores[f"b{i}"], np.mean(1 - cosine), rtol=1e-5)
        x = y
    with pytest.raises(ValueError, match="no droppable block"):
        keras_matta.block_importance(keras.Sequential([keras.Input((4,)),
                                                       keras_matta.MatDense(8)]),
                                     np.zeros((2, 4), "float32"))
