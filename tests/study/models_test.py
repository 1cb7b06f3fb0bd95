"""The study's builders: the majority-kernel Student serves at exactly the Student's size."""

import dataclasses

import numpy as np
import pytest

import keras_matta
from keras_matta.study import models
from keras_matta.study.config import preset

LM = dict(sequence_length=8, model_dim=8, num_layers=1, num_heads=2, intermediate_dim=16)


@pytest.mark.parametrize("kind, kwargs", [("digits", dict(hidden_units=8)), ("lm", LM)])
def test_majority_student_serves_the_mean_of_its_copies_at_the_plain_size(kind, kwargs):
    copies = models.build(kind, "copies", majority=3, **kwargs)
    plain = models.build(kind, "plain", **kwargs)
    # The plain model with each kernel set to the mean of the copies, by hand in NumPy: the
    # default combine's mixture logits (`learned`) start at zero, which weights the copies
    # equally.
    stored = [variable for variable in copies.weights if not variable.path.endswith("_mixture")]
    for variable, reference in zip(stored, plain.weights, strict=True):
        value = np.asarray(variable)
        if tuple(variable.shape) != tuple(reference.shape):
            assert value.shape == (3, *reference.shape)
            value = value.mean(axis=0)
        reference.assign(value)
    served = keras_matta.extract(copies, 1.0)
    assert served.count_params() == plain.count_params()
    x = (np.random.default_rng(0).normal(size=(4, 784)).astype("float32") if kind == "digits"
         else np.random.default_rng(0).integers(0, 256, size=(4, 8)).astype("int32"))
    np.testing.assert_allclose(served.predict(x, verbose=0), plain.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.backend_agnostic
def test_bad_majority_is_refused_by_name():
    with pytest.raises(ValueError, match="`majority` needs `nested=True`"):
        models.mlp_classifier(8, nested=False, majority=2)
    with pytest.raises(ValueError, match=r"`majority` must be an int >= 1; got 0"):
        dataclasses.replace(preset("digits", "quick"), majority=0)
