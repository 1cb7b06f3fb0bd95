"""Cloned initializers: the same configuration, each clone with its own draw unless seeded."""

import keras
import numpy as np
from keras import ops

from keras_matta._initializers import clone_initializer


def _draw(initializer, shape=(6, 5)):
    return ops.convert_to_numpy(initializer(shape))


def test_unseeded_clones_draw_different_values_from_one_configuration():
    original = keras.initializers.GlorotUniform()
    first, second = clone_initializer(original), clone_initializer(original)
    assert first is not original and type(first) is type(original)
    assert first.get_config() == original.get_config()
    # The reason for cloning: one unseeded instance repeats itself on every call.
    np.testing.assert_array_equal(_draw(original), _draw(original))
    assert not np.allclose(_draw(first), _draw(second))


def test_seeded_clones_repeat_the_original():
    original = keras.initializers.RandomNormal(stddev=0.02, seed=7)
    np.testing.assert_array_equal(_draw(clone_initializer(original)), _draw(original))


def test_configured_constant_initializers_survive():
    clone = clone_initializer(keras.initializers.Constant(0.5))
    np.testing.assert_array_equal(_draw(clone, (3,)), np.full(3, 0.5, "float32"))
