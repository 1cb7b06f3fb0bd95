"""Sub-networks at drawn widths: their loss and gradient, the draws, and save/load."""

import keras
import numpy as np
import pytest
from keras import ops
from training import numpy_reference as ref
from training.matta_models import batch
from training.matta_models import mlp
from training.matta_models import mlp_params
from training.matta_models import sparse_ce
from training.matta_models import weights_of

import keras_matta
from keras_matta.training import MatTA
from keras_matta.training import WidthDraws
from keras_matta.training import sampled_widths as sampled_lib

STUDENTS = [2, 4]  # hidden units of the Students; the TA has 8


def test_one_sgd_step_with_drawn_widths_matches_numpy(monkeypatch):
    """Each draw adds a Student term of weight 1 at the drawn width (here forced to 3, then 7)."""
    drawn = iter([3, 7])

    monkeypatch.setattr(sampled_lib.keras.random, "randint",
                        lambda *args, **kwargs: ops.convert_to_tensor(next(drawn), "int32"))
    params = mlp_params()
    x, labels, _ = batch()
    mat_ta = MatTA(mlp(params=params), STUDENTS, num_sampled_widths=2, gamma=0.8, alpha=0.6,
                   seed=0)
    mat_ta.compile(keras.optimizers.SGD(0.1), sparse_ce(), run_eagerly=True)
    logs = mat_ta.train_on_batch(x, labels, return_dict=True)
    total, terms, grads = ref.matta_step(
        params, x.astype("float64"), labels, None, STUDENTS + [3, 7], beta=1.0, alpha=0.6,
        gamma_t=0.8, beta_teacher=0.0, alpha_teacher=0.0, tau=1.0,
        student_weights=[1.0] * 4, detach_ta=True,
    )
    np.testing.assert_allclose(logs["loss"], total, rtol=1e-4)
    for term in ("task", "kd_ta"):
        mean = (terms[f"student_3_{term}_loss"] + terms[f"student_7_{term}_loss"]) / 2
        np.testing.assert_allclose(logs[f"sampled_{term}_loss"], mean, rtol=1e-4)
    expected = [p - 0.1 * g for p, g in zip(params, grads)]
    for got, want in zip(weights_of(mat_ta.model), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def _counts(draws, seed_generator, count):
    out = []
    for _ in range(count):
        with draws.scope(seed_generator) as selection:
            out.append([int(ops.convert_to_numpy(w.count)) for widths in
                        selection.values() for w in widths.values()])
    return np.array(out)


def _two_layers():
    return keras.Sequential([
        keras.Input((4,)), keras_matta.MatDense(8, name="a"), keras_matta.MatDense(6, name="b"),
        keras_matta.MatDense(2, nested=False, name="head"),
    ])


def test_draws_cover_each_range_uniformly_and_repeat_with_the_seed():
    model = _two_layers()
    draws = WidthDraws(model, [{"a": 2}, {"a": 5, "b": 3}])
    assert draws.ranges == {"a": {"units": (2, 8)}, "b": {"units": (3, 6)}}
    counts = _counts(draws, keras.random.SeedGenerator(7), 400)
    a, b = counts[:, 0], counts[:, 1]
    assert sorted(set(a)) == list(range(2, 9)) and sorted(set(b)) == list(range(3, 7))
    # Uniform: each of 7 values about 400 / 7 = 57 times (a loose 4-sigma band).
    assert all(25 < np.sum(a == v) < 90 for v in range(2, 9))
    # Independent per layer: not always the same fraction.
    assert np.mean(a / 8 == b / 6) < 0.5
    np.testing.assert_array_equal(counts, _counts(draws, keras.random.SeedGenerator(7), 400))
    # The scope restores the selection it found.
    assert all(layer.selected_width is None for layer in keras_matta.widths.mat_layers(model))


def test_granularity_draws_are_the_trained_widths_each_equally_often():
    draws = WidthDraws(_two_layers(), [{"a": 2}, {"a": 5, "b": 3}], "granularities")
    assert draws.granularities == {"a": {"units": (2, 5, 8)}, "b": {"units": (3, 6)}}
    counts = _counts(draws, keras.random.SeedGenerator(1), 600)
    a, b = counts[:, 0], counts[:, 1]
    assert sorted(set(a)) == [2, 5, 8] and sorted(set(b)) == [3, 6]
    # About 200 of each of a's three widths and 300 of each of b's two (4-sigma bands).
    assert all(155 < np.sum(a == v) < 245 for v in (2, 5, 8))
    assert all(250 < np.sum(b == v) < 350 for v in (3, 6))
    # Per layer: all six (a, b) mixes of trained widths occur.
    assert len(set(map(tuple, counts))) == 6


def test_either_draws_half_granularities_half_the_range():
    draws = WidthDraws(_two_layers(), [{"a": 2}, {"a": 5, "b": 3}], "either")
    a = _counts(draws, keras.random.SeedGenerator(2), 1400)[:, 0]
    assert sorted(set(a)) == list(range(2, 9))
    # Each trained width: 1/2 * 1/3 + 1/2 * 1/7 of the draws (0.238); each other one 1/14.
    for value in range(2, 9):
        expected = 1400 * (0.5 / 3 + 0.5 / 7 if value in (2, 5, 8) else 0.5 / 7)
        assert abs(np.sum(a == value) - expected) < 4 * np.sqrt(expected)


def test_an_unknown_distribution_is_refused_by_name():
    with pytest.raises(ValueError, match="sampled_width_distribution.*'uniform'"):
        MatTA(mlp(), STUDENTS, sampled_width_distribution="uniform")


def test_fit_save_and_load_keep_the_setting(tmp_path):
    x, labels, _ = batch(n=32)
    mat_ta = MatTA(mlp(), STUDENTS, num_sampled_widths=1, sampled_width_distribution="either",
                   seed=3)
    mat_ta.compile("adam", sparse_ce())
    history = mat_ta.fit(x, labels, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["sampled_task_loss"]).all()
    assert "sampled_task_loss" not in mat_ta.evaluate(x, labels, return_dict=True, verbose=0)
    path = str(tmp_path / "matta.keras")
    mat_ta.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.num_sampled_widths == 1
    assert loaded.sampled_width_distribution == "either"
    # The draw stream is saved (Keras saves no SeedGenerator state by itself).
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded._width_seeds.state),
                                  ops.convert_to_numpy(mat_ta._width_seeds.state))
    assert ops.convert_to_numpy(mat_ta._width_seeds.state).any()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), mat_ta.predict(x, verbose=0),
                               rtol=1e-6)
