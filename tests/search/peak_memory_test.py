"""`peak_memory_mb` as a search's budget and as its cost axis."""

import keras
import numpy as np
import pytest

import keras_matta

MB = 2**20


def mlp():
    model = keras.Sequential([keras.Input((6,)),
                              keras_matta.MatDense(16, activation="relu", name="hidden_1"),
                              keras_matta.MatDense(8, activation="relu", name="hidden_2"),
                              keras_matta.MatDense(3, nested=False, name="logits")])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def served_mb(model, widths, batch_size):
    """What the extracted stock model needs: the cost the search must report."""
    return keras_matta.peak_memory(keras_matta.extract(model, widths),
                                   batch_size=batch_size)["peak_bytes"] / MB


def test_a_peak_memory_budget_bounds_the_front_at_the_search_batch_size():
    model, (x, y) = mlp(), data()
    sizes = {w: served_mb(model, w, 16) for w in (0.25, 0.5, 1.0)}
    bound = (sizes[0.5] + sizes[1.0]) / 2  # the full model does not fit, half width does
    result = keras_matta.search(model, (x, y), budget={"peak_memory_mb": bound},
                                choices=[0.25, 0.5, 1.0], batch_size=16, verbose=0)
    assert result.cost == "peak_memory_mb"
    assert result.front and all(p.costs["peak_memory_mb"] <= bound for p in result.front)
    assert len(result.measured) < 9  # candidates over the budget are never evaluated
    for point in result.measured:
        assert point.costs["peak_memory_mb"] == served_mb(model, point.widths, 16)
    with pytest.raises(ValueError, match="No width spec fits the budget peak_memory_mb <= "):
        keras_matta.search(model, (x, y), budget={"peak_memory_mb": sizes[0.25] / 2},
                           choices=[0.25, 1.0], verbose=0)


def test_peak_memory_is_an_objective_axis_without_a_budget():
    model, (x, y) = mlp(), data()
    result = keras_matta.search(model, (x, y), cost="peak_memory_mb", choices=[0.5, 1.0],
                                batch_size=8, verbose=0)
    costs = [p.costs["peak_memory_mb"] for p in result.front]
    assert costs == sorted(costs) and "params" in result.front[0].costs
    assert [p.costs["peak_memory_mb"] for p in result.uniform] == [
        served_mb(model, 0.5, 8), served_mb(model, 1.0, 8)]
