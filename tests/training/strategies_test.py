import keras
import numpy as np
import pytest
from training.matta_models import batch
from training.matta_models import mlp
from training.matta_models import mlp_params
from training.matta_models import sparse_ce
from training.matta_models import weights_of

from keras_matta.training import MatTA
from keras_matta.training import WidthSampler


def test_all_runs_every_student():
    sampler = WidthSampler("all", [0.1, 0.5, 0.3])
    assert sampler.configurations() == [(0, 1, 2)]
    assert sampler.sample(7) == (0, 1, 2)


def test_sandwich_keeps_largest_and_smallest():
    sampler = WidthSampler("sandwich", [0.5, 0.125, 0.75, 0.25, 0.375], seed=3)
    draws = {sampler.sample(step) for step in range(200)}
    assert draws == set(sampler.configurations())
    assert len(draws) == 3  # one of the three middle widths
    assert all({1, 2} <= set(d) and len(d) == 3 for d in draws)
    two_extra = WidthSampler("sandwich", [0.5, 0.125, 0.75, 0.25], num_random_widths=2)
    assert two_extra.configurations() == [(0, 1, 2, 3)]


def test_random_draws_one_width_reproducibly():
    sampler = WidthSampler("random", [0.25, 0.5, 0.75], seed=11)
    draws = [sampler.sample(step) for step in range(60)]
    assert draws == [WidthSampler("random", [0.25, 0.5, 0.75], seed=11).sample(s)
                     for s in range(60)]
    assert draws != [WidthSampler("random", [0.25, 0.5, 0.75], seed=12).sample(s)
                     for s in range(60)]
    assert {len(d) for d in draws} == {1} and set(draws) == {(0,), (1,), (2,)}


def test_sampler_bad_arguments():
    with pytest.raises(ValueError, match="strategy.*'biggest'"):
        WidthSampler("biggest", [0.5])
    with pytest.raises(ValueError, match=r"num_random_widths.*\[1, 2\]"):
        WidthSampler("random", [0.5, 0.25], num_random_widths=3)
    with pytest.raises(ValueError, match=r"num_random_widths.*\[0, 1\]"):
        WidthSampler("sandwich", [0.5, 0.25, 0.75], num_random_widths=2)
    with pytest.raises(TypeError, match="seed"):
        WidthSampler("random", [0.5], seed=1.5)


class CountingMatTA(MatTA):
    """Counts training traces of `compute_loss` per Student configuration."""

    def compute_loss(self, *args, training=True, **kwargs):
        if training:
            key = self._state.students
            self.traces[key] = self.traces.get(key, 0) + 1
        return super().compute_loss(*args, training=training, **kwargs)


def fit_random(seed, steps=12, **kwargs):
    x, labels, _ = batch(n=8 * steps)
    mat_ta = CountingMatTA(mlp(params=mlp_params()), [0.25, 0.5, 0.75], strategy="random",
                           seed=seed, **kwargs)
    mat_ta.traces = {}
    mat_ta.compile(keras.optimizers.SGD(0.1), sparse_ce(), metrics=["accuracy"])
    mat_ta.fit(x, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return mat_ta


def test_random_strategy_compiles_one_function_per_configuration_and_reproduces():
    mat_ta = fit_random(seed=5)
    drawn = {mat_ta._sampler.sample(step) for step in range(12)}
    assert set(mat_ta._state.train_functions) == {(0,), (1,), (2,)}
    if keras.backend.backend() in ("jax", "tensorflow"):
        # Compiled: one trace per configuration, however many steps used it.
        assert mat_ta.traces == {students: 1 for students in drawn}
    else:
        assert sum(mat_ta.traces.values()) == 12  # eager: one call per step
    again = fit_random(seed=5)
    for a, b in zip(weights_of(mat_ta.model), weights_of(again.model)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_only_sampled_students_train():
    """With one random Student per step, a width not drawn leaves its private slice alone."""
    x, labels, _ = batch(n=8)
    mat_ta = MatTA(mlp(), [2, 6], strategy="random", seed=0, beta=0.0, gamma=0.0)
    mat_ta.compile(keras.optimizers.SGD(1.0), sparse_ce())
    student = mat_ta._sampler.sample(0)[0]
    before = weights_of(mat_ta.model)
    mat_ta.train_on_batch(x, labels)
    w1 = weights_of(mat_ta.model)[0]
    # Units 2..5 belong to the width-6 Student only.
    moved = not np.array_equal(w1[:, 2:6], before[0][:, 2:6])
    assert moved == (student == 1)
