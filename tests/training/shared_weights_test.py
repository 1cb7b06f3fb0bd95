"""`detach_shared`: only the TA's terms train the weights no width slices."""

import keras
import numpy as np
import pytest
from helpers import to_numpy

import keras_matta
from keras_matta.training import MatTA
from keras_matta.training import shared_variables


def ta_model(dropout=0.0):
    """`embed` (stock) -> `hidden` (nested) -> [dropout] -> `head` (Mat, slices its input rows)
    -> `out` (stock): the shared weights are `embed`'s and `out`'s."""
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="tanh", name="embed")(inputs)
    x = keras_matta.MatDense(12, activation="relu", name="hidden")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=3, name="dropout")(x)
    x = keras_matta.MatDense(5, activation="tanh", nested=False, name="head")(x)
    outputs = keras.layers.Dense(4, name="out")(x)
    return keras.Model(inputs, outputs)


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 6)).astype("float32"), rng.integers(0, 4, size=(16,))


def one_sgd_step(model, detach_shared=None):
    """`model`'s weights after one SGD step: as a MatTA (Student at 0.5) or, with
    `detach_shared=None`, trained alone on the task loss (the reference)."""
    x, y = data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    trainer = model if detach_shared is None else MatTA(
        model, [0.5], detach_shared=detach_shared, num_sampled_widths=1, seed=0)
    trainer.compile(keras.optimizers.SGD(0.5), loss)
    trainer.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return {v.path: to_numpy(v) for v in model.trainable_variables}


def test_shared_variables_are_the_weights_outside_every_mat_layer():
    assert [v.path for v in shared_variables(ta_model())] == [
        "embed/kernel", "embed/bias", "out/kernel", "out/bias"]


def test_shared_weights_take_exactly_the_tas_gradient():
    # Reference: the TA alone on its task loss, which is MatTA's TA term (`beta=1`). With SGD
    # the step is `-lr * gradient`, so equal shared weights mean equal gradients: the Student's
    # and the drawn sub-network's terms reach none of them, and still train the Mat layer.
    model = ta_model()
    initial = model.get_weights()
    alone = one_sgd_step(model)
    model.set_weights(initial)
    detached = one_sgd_step(model, detach_shared=True)
    model.set_weights(initial)
    summed = one_sgd_step(model, detach_shared=False)

    for path in ("embed/kernel", "embed/bias", "out/kernel", "out/bias"):
        np.testing.assert_allclose(detached[path], alone[path], rtol=1e-5, atol=1e-6)
        assert not np.allclose(summed[path], alone[path], rtol=1e-5, atol=1e-6)
    for path in ("hidden/kernel", "head/kernel"):  # the Mat layers' gradients are unchanged
        np.testing.assert_allclose(detached[path], summed[path], rtol=1e-5, atol=1e-6)
        assert not np.allclose(detached[path], alone[path], atol=1e-6)


def test_random_state_advances_as_without_detaching():
    # The narrower passes run in a stateless scope: a dropout seed drawn there is written back,
    # so the next step draws a fresh mask exactly as it would without `detach_shared`.
    states = {}
    for detach in (False, True):
        model = ta_model(dropout=0.5)
        one_sgd_step(model, detach_shared=detach)
        states[detach] = to_numpy(model.get_layer("dropout").seed_generator.state)
    np.testing.assert_array_equal(states[True], states[False])


def test_config_round_trip_and_bad_value():
    mat_ta = MatTA(ta_model(), [0.5], detach_shared=True)
    assert MatTA.from_config(mat_ta.get_config()).detach_shared is True
    with pytest.raises(TypeError, match="`detach_shared` must be a bool; got 'yes'"):
        MatTA(ta_model(), [0.5], detach_shared="yes")
