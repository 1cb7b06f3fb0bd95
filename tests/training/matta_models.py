"""Tiny models and data shared by the MatTA tests."""

import keras
import numpy as np

from keras_matta import MatDense


def mlp(d_in=5, units=8, classes=3, params=None, name="ta"):
    """`Input -> MatDense(units, relu) -> MatDense(classes, nested=False)`."""
    model = keras.Sequential(
        [
            keras.Input((d_in,)),
            MatDense(units, activation="relu", name="hidden"),
            MatDense(classes, nested=False, name="logits"),
        ],
        name=name,
    )
    if params is not None:
        model.set_weights([p.astype("float32") for p in params])
    return model


def mlp_params(d_in=5, units=8, classes=3, seed=1):
    rng = np.random.RandomState(seed)
    return [
        rng.randn(d_in, units) * 0.7,
        rng.randn(units) * 0.1,
        rng.randn(units, classes) * 0.7,
        rng.randn(classes) * 0.1,
    ]


def token_lm(vocab=11, dim=6, units=12, name="lm"):
    """A token-level MLP language model: logits `(batch, seq, vocab)` per position."""
    return keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(vocab, dim, name="embed"),
            MatDense(units, activation="relu", name="hidden"),
            MatDense(vocab, nested=False, name="logits"),
        ],
        name=name,
    )


def batch(n=6, d_in=5, classes=3, seed=2):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, d_in).astype("float32")
    labels = rng.randint(0, classes, n)
    teacher_logits = (rng.randn(n, classes) * 1.5).astype("float32")
    return x, labels, teacher_logits


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]
