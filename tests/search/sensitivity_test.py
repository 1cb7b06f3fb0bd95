"""`proxy="sensitivity"`: per-layer sensitivities rank, exact evaluations confirm the front."""

import keras
import numpy as np
import pytest
from helpers import to_numpy

import keras_matta
from keras_matta.search.sensitivity import AdditiveSensitivity
from keras_matta.search.sensitivity import best_per_cost_bucket

CHOICES = [0.25, 0.375, 0.5, 0.75, 1.0]  # 5 x 5 = 25 candidates


def mlp():
    keras.utils.set_random_seed(2)
    return keras.Sequential([keras.Input((6,)),
                             keras_matta.MatDense(16, activation="relu", name="hidden_1",
                                                  bias_initializer="random_normal"),
                             keras_matta.MatDense(8, activation="relu", name="hidden_2",
                                                  bias_initializer="random_normal"),
                             keras_matta.MatDense(3, nested=False, name="logits")])


def data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def numpy_loss(model, x, y):
    """Mean cross-entropy of the logits in float64 NumPy: an oracle apart from the search."""
    logits = to_numpy(model(x)).astype("float64")
    logits -= logits.max(1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


def counted_loss(calls):
    def loss(model, data):
        calls.append(1)
        return numpy_loss(model, *data[:2])

    return loss


def test_the_prediction_is_exact_for_one_layer_narrowings_only():
    # Quality 10 - 2 c_0 - c_1 - c_2, plus 1 wherever layers 0 and 1 are both narrowed.
    def quality(c):
        return 10.0 - 2 * c[0] - c[1] - c[2] + (c[0] < 2 and c[1] < 1)

    sizes = [3, 2, 2]
    proxy = AdditiveSensitivity(sizes, quality)
    assert proxy.evaluations == 1 + 2 + 1 + 1
    for candidate in np.ndindex(*sizes):
        narrowed = sum(i != n - 1 for i, n in zip(candidate, sizes))
        error = proxy.predict(candidate) - quality(candidate)
        assert error == (-1.0 if candidate[0] < 2 and candidate[1] == 0 else 0.0), candidate
        assert narrowed >= 2 or error == 0.0
    # A narrowing that is not a model (the only block dropped) is never evaluated.
    probes = []
    AdditiveSensitivity([2, 2], lambda c: probes.append(c) or 0.0, lambda c: c[0] != 0)
    assert probes == [(1, 1), (1, 0)]


def test_best_per_cost_bucket_spreads_the_confirmations_over_the_cost_range():
    candidates = [(i,) for i in range(10)]
    chosen = best_per_cost_bucket(candidates, lambda c: c[0], lambda c: c[0] % 3, 3, 2)
    # Groups (0, 1, 2), (3, 4, 5), (6, 7, 8, 9): the two best scores (c mod 3) of each.
    assert chosen == [(2,), (1,), (5,), (4,), (8,), (7,)]
    assert len(best_per_cost_bucket(candidates[:2], lambda c: c[0], lambda c: 0, 8, 2)) == 2


def test_the_front_is_exact_and_the_exact_evaluations_are_bounded():
    model, (x, y) = mlp(), data()
    calls = []
    result = keras_matta.search(model, (x, y), objective=counted_loss(calls), maximize=False,
                                choices=CHOICES, proxy="sensitivity", proxy_buckets=2,
                                proxy_top=2, batch_size=16, verbose=0)
    assert result.proxy == "sensitivity" and len(result.measured) == 25
    assert not any(p.exact for p in result.measured)
    # The documented bound: calibration 1 + 4 + 4, then 2 x 2 confirmed and 5 uniform models.
    assert len(calls) <= 9 + 2 * 2 + 5 < 25
    for point in result.front + result.uniform:
        assert point.exact
        np.testing.assert_allclose(
            point.quality, numpy_loss(keras_matta.extract(model, point.widths), x, y),
            rtol=1e-5)
    # Calibrated on all the data: a one-layer narrowing is predicted at its exact loss.
    full = {"hidden_1": {"units": 16}, "hidden_2": {"units": 8}}
    for point in result.measured:
        narrowed = [name for name in full if point.widths[name] != full[name]]
        if len(narrowed) <= 1:
            exact = numpy_loss(keras_matta.extract(model, point.widths), x, y)
            np.testing.assert_allclose(point.quality, exact, rtol=1e-5)


def test_calibration_on_a_subset_and_a_budget():
    model, (x, y) = mlp(), data()
    budget = keras_matta.cost(model, 0.5)["params"]
    result = keras_matta.search(model, (x, y), objective=counted_loss([]), maximize=False,
                                choices=CHOICES, proxy="sensitivity", proxy_steps=1,
                                batch_size=16, budget={"params": budget}, verbose=0)
    assert result.front and all(p.costs["params"] <= budget for p in result.front)
    one_layer = next(p for p in result.measured
                     if p.widths == {"hidden_1": {"units": 4}, "hidden_2": {"units": 8}})
    np.testing.assert_allclose(  # predicted from the first batch of 16 examples
        one_layer.quality,
        numpy_loss(keras_matta.extract(model, one_layer.widths), x[:16], y[:16]), rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(proxy="oracle"), r"`proxy` must be None or one of \('subset', 'sensitivity'\); "
                           r"got 'oracle'"),
    (dict(proxy="subset"), r"`proxy='subset'` ranks .* give `proxy_steps`"),
    (dict(proxy="sensitivity", proxy_top=0), "`proxy_top` must be a positive int; got 0"),
    (dict(proxy="sensitivity", proxy_buckets=2.5), "`proxy_buckets` must be a positive int"),
])
def test_bad_proxy_arguments_fail_before_any_evaluation(kwargs, match):
    calls = []
    with pytest.raises(ValueError, match=match):
        keras_matta.search(mlp(), data(), objective=counted_loss(calls), maximize=False,
                           verbose=0, **kwargs)
    assert not calls
