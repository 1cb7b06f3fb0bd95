import keras
import numpy as np
import pytest
from distillation_reference import bernoulli_kl
from distillation_reference import log_softmax
from distillation_reference import softmax_kl
from helpers import to_numpy

from keras_matta import losses


def logits(*shape, seed=0):
    return (np.random.RandomState(seed).randn(*shape) * 2).astype("float32")


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_kl_distillation_matches_numpy(tau):
    t, s = logits(4, 7, seed=0), logits(4, 7, seed=1)
    np.testing.assert_allclose(to_numpy(losses.kl_distillation(t, s, tau)),
                               softmax_kl(t, s, tau), rtol=1e-5)
    loss = losses.KLDistillation(temperature=tau)
    np.testing.assert_allclose(to_numpy(loss(t, s)), softmax_kl(t, s, tau).mean(), rtol=1e-5)


def test_kl_accepts_probabilities_for_teacher_and_student():
    t, s = logits(4, 5, seed=0), logits(4, 5, seed=1)
    p_t, p_s = np.exp(log_softmax(t)), np.exp(log_softmax(s))
    expected = softmax_kl(t, s, 2.0)
    mixed = losses.kl_distillation(p_t, s, 2.0, from_logits=True, teacher_from_logits=False)
    both = losses.kl_distillation(p_t, p_s, 2.0, from_logits=False)
    np.testing.assert_allclose(to_numpy(mixed), expected, rtol=1e-4)
    np.testing.assert_allclose(to_numpy(both), expected, rtol=1e-4)


def test_kl_is_zero_for_identical_outputs_and_positive_otherwise():
    t = logits(3, 6)
    np.testing.assert_allclose(to_numpy(losses.kl_distillation(t, t, 3.0)), 0.0, atol=1e-6)
    assert np.all(to_numpy(losses.kl_distillation(t, t[::-1], 3.0)) >= 0)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_bernoulli_kl_matches_numpy(tau):
    t, s = logits(5, 2, seed=3), logits(5, 2, seed=4)
    np.testing.assert_allclose(to_numpy(losses.bernoulli_kl_distillation(t, s, tau)),
                               bernoulli_kl(t, s, tau), rtol=1e-4)
    probabilities = 1 / (1 + np.exp(-t))
    from_probs = losses.BernoulliKLDistillation(tau, teacher_from_logits=False)(probabilities, s)
    np.testing.assert_allclose(to_numpy(from_probs), bernoulli_kl(t, s, tau).mean(),
                               rtol=1e-4)


def test_bernoulli_kl_is_finite_for_saturated_logits():
    t = np.array([[60.0], [-60.0]], "float32")
    s = np.array([[-60.0], [60.0]], "float32")
    assert np.all(np.isfinite(to_numpy(losses.bernoulli_kl_distillation(t, s))))


def test_mse_distillation():
    t, s = logits(4, 3, seed=5), logits(4, 3, seed=6)
    np.testing.assert_allclose(to_numpy(losses.MSEDistillation()(t, s)),
                               ((t - s) ** 2).mean(), rtol=1e-5)


@pytest.mark.parametrize("loss", [losses.KLDistillation(2.0), losses.BernoulliKLDistillation(),
                                  losses.MSEDistillation()])
def test_masked_positions_contribute_nothing(loss):
    t, s = logits(2, 5, 4, seed=7), logits(2, 5, 4, seed=8)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], "float32")
    changed_t, changed_s = t.copy(), s.copy()
    changed_t[mask == 0] += 5.0
    changed_s[mask == 0] -= 3.0
    np.testing.assert_allclose(to_numpy(loss(t, s, sample_weight=mask)),
                               to_numpy(loss(changed_t, changed_s, sample_weight=mask)),
                               rtol=1e-6)


@pytest.mark.parametrize("loss", [losses.KLDistillation(temperature=3.0, teacher_from_logits=False),
                                  losses.BernoulliKLDistillation(temperature=0.5),
                                  losses.MSEDistillation(reduction="sum")])
def test_config_round_trip_and_registered(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    assert keras.saving.get_registered_name(type(loss)).startswith("keras_matta>")


def test_usable_as_a_compiled_loss():
    """A student matching a teacher's logits with `model.compile(loss=KLDistillation())`."""
    x = logits(32, 4, seed=9)
    teacher_logits = x @ logits(4, 3, seed=10)
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student.compile(keras.optimizers.Adam(0.05), loss=losses.KLDistillation(temperature=2.0))
    history = student.fit(x, teacher_logits, epochs=30, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        losses.kl_distillation(logits(2, 3), logits(2, 4))
    with pytest.raises(ValueError, match="same shape"):
        losses.MSEDistillation()(logits(2, 3), logits(2, 1))
    with pytest.raises(ValueError, match="temperature"):
        losses.KLDistillation(temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        losses.BernoulliKLDistillation(temperature=-1.0)
    with pytest.raises(TypeError, match="temperature"):
        losses.KLDistillation(temperature="hot")
    with pytest.raises(TypeError, match="from_logits"):
        losses.KLDistillation(from_logits="yes")


def test_distillation_for_task_losses():
    cases = [
        (keras.losses.SparseCategoricalCrossentropy(from_logits=True), ("kl", True)),
        (keras.losses.CategoricalCrossentropy(), ("kl", False)),
        (keras.losses.BinaryCrossentropy(from_logits=True), ("bernoulli_kl", True)),
        (keras.losses.MeanSquaredError(), ("mse", True)),
        (keras.losses.Huber(), ("mse", True)),
    ]
    for task_loss, expected in cases:
        assert losses.distillation_for(task_loss) == expected
    assert losses.distillation_for(keras.losses.Huber(), "kl") == ("kl", True)
    with pytest.raises(ValueError, match="distillation"):
        losses.distillation_for(keras.losses.Hinge())
    with pytest.raises(ValueError, match="distillation"):
        losses.distillation_for(keras.losses.MeanSquaredError(), "l1")
