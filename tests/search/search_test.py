"""`keras_matta.search` against a brute-force reference over extracted stock models."""

import json

import keras
import numpy as np
import pytest
from helpers import to_numpy

import keras_matta
from keras_matta.search import SearchSpace

CHOICES = [0.25, 0.5, 1.0]
# The three searches that measure every candidate run on one backend each: the search is Python
# over extract, cost and evaluate, which their own tests check on every backend, and the smaller
# searches below run on all three.


def mlp(compiled=True):
    model = keras.Sequential([keras.Input((6,)),
                              keras_matta.MatDense(16, activation="relu", name="hidden_1"),
                              keras_matta.MatDense(8, activation="relu", name="hidden_2"),
                              keras_matta.MatDense(3, nested=False, name="logits")])
    if compiled:
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    return model


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def numpy_loss(model, x, y):
    """Mean sparse cross-entropy of the model's logits, computed in float64 NumPy."""
    logits = to_numpy(model(x)).astype("float64")
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1,
                                keepdims=True)) - logits.max(1, keepdims=True)
    return float(-log_probs[np.arange(len(y)), y].mean())


def reference_front(model, x, y, budget):
    """Every spec extracted as a stock model, scored in NumPy; the non-dominated ones."""
    points = []
    for w1 in CHOICES:
        for w2 in CHOICES:
            student = keras_matta.extract(model, {"hidden_1": w1, "hidden_2": w2})
            params = student.count_params()
            if params <= budget:
                points.append((params, numpy_loss(student, x, y)))
    return sorted({(c, q) for c, q in points
                   if not any(c2 <= c and q2 <= q and (c2, q2) != (c, q) for c2, q2 in points)})


def fidelity(model, x):
    """A cheap objective for strategy tests: closeness of the logits to fixed targets."""
    targets = np.linspace(-1, 1, 3, dtype="float32")
    return -float(np.mean((to_numpy(model(x)) - targets) ** 2))


@pytest.mark.runs_on("tensorflow")
def test_exhaustive_front_equals_brute_force_over_extracted_models():
    model, (x, y) = mlp(), data()
    result = keras_matta.search(model, (x, y), budget={"params": 300}, objective="loss",
                                choices=CHOICES, batch_size=48, verbose=0)
    assert result.strategy == "exhaustive" and not result.maximize and result.cost == "params"
    found = [(p.costs["params"], p.quality) for p in result.front]
    expected = reference_front(model, x, y, 300)
    assert [c for c, _ in found] == [c for c, _ in expected]
    np.testing.assert_allclose([q for _, q in found], [q for _, q in expected], rtol=1e-5)
    # Every point's spec extracts to a model of its counted cost.
    for point in result.front:
        student = keras_matta.extract(model, point.widths)
        assert student.count_params() == point.costs["params"]
        assert keras_matta.cost(student)["flops"] == point.costs["flops"]
    # The uniform models are all measured, the best one within the budget is reported.
    assert [p.uniform for p in result.uniform] == [0.25, 0.5, 1.0]
    fits = [p for p in result.uniform if p.costs["params"] <= 300]
    assert result.best_uniform() == min(fits, key=lambda p: p.quality)
    json.dumps(result.to_dict())  # JSON as it is


def test_evolutionary_is_seeded_and_respects_the_evaluation_limit():
    model, (x, _) = mlp(compiled=False), data()
    run = lambda seed: keras_matta.search(  # noqa: E731
        model, (x, x[:, 0]), objective=lambda m, d: fidelity(m, d[0]), maximize=True,
        choices=[0.25, 0.5, 0.75, 1.0], strategy="evolutionary", max_evaluations=8,
        population=4, seed=seed, verbose=0)
    first, again = run(0), run(0)
    assert len(first.measured) == 8 and first.to_dict() == again.to_dict()
    assert first.strategy == "evolutionary"


@pytest.mark.runs_on("torch")
def test_proxy_ranks_on_a_subset_and_the_front_is_confirmed_on_all_data():
    model, (x, y) = mlp(), data(64)
    result = keras_matta.search(model, (x, y), objective="loss", choices=CHOICES,
                                batch_size=16, proxy_steps=1, verbose=0)
    assert not any(p.exact for p in result.measured)
    assert all(p.exact for p in result.front + result.uniform)
    for point in result.front:
        np.testing.assert_allclose(
            point.quality, numpy_loss(keras_matta.extract(model, point.widths), x, y),
            rtol=1e-5)
        proxy = next(p for p in result.measured if p.widths == point.widths).quality
        np.testing.assert_allclose(
            proxy, numpy_loss(keras_matta.extract(model, point.widths), x[:16], y[:16]),
            rtol=1e-5)


def test_an_interrupted_search_resumes_without_measuring_anything_twice(tmp_path):
    model, (x, _) = mlp(compiled=False), data()
    calls = []

    def objective(m, d):
        if len(calls) == 4 and interrupt:
            raise KeyboardInterrupt
        calls.append(1)
        return fidelity(m, d[0])

    kwargs = dict(objective=objective, maximize=True, choices=CHOICES, verbose=0,
                  cache=tmp_path / "search.jsonl")
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        keras_matta.search(model, (x, x[:, 0]), **kwargs)
    assert len(calls) == 4
    interrupt = False
    resumed = keras_matta.search(model, (x, x[:, 0]), **kwargs)
    assert len(calls) == 9  # 4 before the interruption, the 5 others after it
    fresh = keras_matta.search(model, (x, x[:, 0]), **{**kwargs, "cache": None})
    assert resumed.to_dict() == fresh.to_dict()


def test_latency_is_measured_on_the_extracted_model_and_cached(tmp_path):
    model, (x, y) = mlp(), data()
    result = keras_matta.search(model, (x, y), budget={"latency_ms": 1e6}, objective="accuracy",
                                choices=[0.5, 1.0], latency_repeats=2, batch_size=16,
                                cache=tmp_path / "c.jsonl", verbose=0)
    assert result.cost == "latency_ms" and result.maximize
    assert all(p.costs["latency_ms"] > 0 for p in result.measured) and len(result.measured) == 4
    kinds = [json.loads(line).get("kind") for line in open(tmp_path / "c.jsonl")]
    assert kinds.count("latency_ms") == 4 and kinds.count("quality") == 4


def never_called(model, data):
    raise AssertionError("the objective ran before the error")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(budget={"params": 10}), ValueError, "No width spec fits the budget params <= 10"),
    (dict(budget={"memory": 10}), ValueError, "Unknown cost 'memory'"),
    (dict(budget={"params": -1}), ValueError, "positive number"),
    (dict(budget=100), TypeError, "dict with one cost"),
    (dict(cost="energy"), ValueError, "Unknown cost 'energy'"),
    (dict(strategy="annealing"), ValueError, "`strategy` must be one of"),
    (dict(objective="f1_score"), ValueError, "Unknown objective 'f1_score'.*accuracy"),
    (dict(objective=never_called), ValueError, "`maximize` is required"),
    (dict(objective=3), TypeError, "metric name or a function"),
    (dict(max_evaluations=0), ValueError, "`max_evaluations` must be a positive int"),
    (dict(choices=[0.5, 2.0]), ValueError, r"must be in \(0, 1\]"),
    (dict(drop_blocks=1), TypeError, "`drop_blocks` must be True or False; got 1"),
    (dict(drop_blocks=True), ValueError, "`drop_blocks=True`, but model .* no droppable block"),
])
def test_bad_arguments_fail_before_any_measurement(kwargs, error, match):
    model, (x, y) = mlp(), data()
    with pytest.raises(error, match=match):
        keras_matta.search(model, (x, y), verbose=0, **kwargs)


def test_data_that_does_not_fit_the_model_is_named():
    model, (x, y) = mlp(), data()
    with pytest.raises(ValueError, match=r"takes inputs of shape \(None, 6\).*\(5,\)"):
        keras_matta.search(model, (x[:, :5], y), verbose=0)
    with pytest.raises(ValueError, match="arrays differ in length"):
        keras_matta.search(model, (x, y[:3]), verbose=0)
    with pytest.raises(TypeError, match="`data` must be"):
        keras_matta.search(model, "validation.npz", verbose=0)
    with pytest.raises(ValueError, match="does not match the model"):
        keras_matta.search(model, (x, np.full((48, 7), 9, "int32")), verbose=0)


def test_an_uncompiled_model_needs_a_function_objective():
    with pytest.raises(ValueError, match="is not compiled"):
        keras_matta.search(mlp(compiled=False), data(), objective="accuracy", verbose=0)


# === Elastic depth: drop_blocks ===

def two_blocks():
    """Two transformer blocks (intermediate_dim 12) and a fixed head, compiled."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4, 8))
    x = keras_matta.MatTransformerBlock(12, 2, name="b0", bias_initializer="random_normal")(
        inputs)
    x = keras_matta.MatTransformerBlock(12, 2, name="b1", bias_initializer="random_normal")(x)
    model = keras.Model(inputs, keras_matta.MatDense(3, nested=False, name="head")(x))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def sequences(n=8):
    rng = np.random.default_rng(1)
    return (rng.normal(size=(n, 4, 8)).astype("float32"),
            rng.integers(0, 3, (n, 4)).astype("int32"))


def test_a_dropped_spec_extracts_to_the_mat_model_at_that_spec_and_its_cost():
    model, (x, _) = two_blocks(), sequences()
    space = SearchSpace(model, [0.5, 1.0], drop_blocks=True)
    for candidate, dropped in [((0, 1), "b0"), ((2, 0), "b1")]:
        spec = space.spec(candidate)
        assert spec[dropped] == {"depth": 0}
        stock = keras_matta.extract(model, spec)
        assert not any(layer.name.startswith(dropped) for layer in stock.layers)
        with keras_matta.WidthScope(model, spec):
            np.testing.assert_allclose(to_numpy(stock(x)), to_numpy(model(x)), atol=1e-5)
        assert stock.count_params() == keras_matta.cost(model, spec)["params"]


@pytest.mark.runs_on("jax")
def test_exhaustive_search_drops_blocks_under_a_budget_no_full_depth_model_meets():
    model, (x, y) = two_blocks(), sequences()
    both_half = keras_matta.cost(model, {"b0": 0.5, "b1": 0.5})["params"]
    one_full = keras_matta.cost(model, {"b0": {"depth": 0}})["params"]
    assert one_full < both_half  # so a budget of both_half - 1 fits one block at any width
    budget = {"params": both_half - 1}
    with pytest.raises(ValueError, match="No width spec fits the budget"):
        keras_matta.search(model, (x, y), budget=budget, choices=[0.5, 1.0], verbose=0)
    result = keras_matta.search(model, (x, y), budget=budget, choices=[0.5, 1.0],
                                strategy="exhaustive", drop_blocks=True, batch_size=8,
                                verbose=0)
    # The candidates within the budget: one block dropped, the other at 0.5 or 1.0.
    dropped, half, full = {"depth": 0}, {"intermediate_dim": 6}, {"intermediate_dim": 12}
    assert [p.widths for p in result.measured] == [
        {"b0": dropped, "b1": half}, {"b0": dropped, "b1": full},
        {"b0": half, "b1": dropped}, {"b0": full, "b1": dropped}]
    assert result.front and all(dropped in p.widths.values() for p in result.front)
    for point in result.front:  # each extracts to a stock model of its cost and quality
        student = keras_matta.extract(model, point.widths)
        assert student.count_params() == point.costs["params"] <= budget["params"]
        student.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loss = student.evaluate(x, y, batch_size=8, verbose=0)
        np.testing.assert_allclose(point.quality, loss, rtol=1e-5)
        assert "dropped" in point.label
    # The uniform models are the full-depth ones (over the budget, so none is best).
    assert [p.uniform for p in result.uniform] == [0.5, 1.0]
    assert result.best_uniform() is None
    json.dumps(result.to_dict())


def test_evolutionary_search_never_measures_a_model_without_blocks():
    model, (x, y) = two_blocks(), sequences()
    result = keras_matta.search(
        model, (x, y), objective=lambda m, d: fidelity(m, d[0]), maximize=True,
        choices=[0.25, 0.5, 1.0], strategy="evolutionary", max_evaluations=10, population=4,
        drop_blocks=True, batch_size=8, verbose=0)
    specs = [p.widths for p in result.measured]
    assert len(specs) == 10 and any({"depth": 0} in s.values() for s in specs)
    assert all(list(s.values()) != [{"depth": 0}] * 2 for s in specs)
