"""Scoring the embedded tasks: bits per byte, final-word accuracy and macro AUC, each checked
against a reference computed another way (uniform and oracle models, pairwise AUC)."""

import itertools

import keras
import numpy as np
import pytest

from keras_matta.data import final_word_examples
from keras_matta.data import shakespeare
from keras_matta.study import metrics


class _Oracle:
    """Predicts the true next byte of `text` for any window seen in it (a lookup table)."""

    def __init__(self, data, length):
        self.next = {data[i : i + length]: data[i + length] for i in range(len(data) - length)}

    def predict_on_batch(self, windows):
        logits = np.zeros(windows.shape + (256,), dtype="float32")
        for row, window in enumerate(windows.astype(np.uint8)):
            logits[row, -1, self.next.get(window.tobytes(), 0)] = 10.0
        return logits


class _Constant:
    def __init__(self, byte=None):
        self.byte = byte

    def predict_on_batch(self, windows):
        logits = np.zeros(windows.shape + (256,), dtype="float32")
        if self.byte is not None:
            logits[..., self.byte] = 10.0
        return logits


@pytest.mark.backend_agnostic
def test_bits_per_byte_of_a_uniform_model_is_eight():
    x, y = shakespeare.byte_windows(shakespeare.load_bytes("test"), 32, max_windows=300)
    np.testing.assert_allclose(metrics.bits_per_byte(_Constant(), x, y), 8.0, rtol=1e-6)


@pytest.mark.backend_agnostic
def test_final_word_accuracy_of_an_oracle_and_of_a_babbler():
    text = shakespeare.load_play("macbeth")[:30_000]
    contexts, targets = final_word_examples(text, 48, max_examples=60)
    oracle = _Oracle(text.encode("utf-8"), 48)
    assert metrics.final_word_accuracy(oracle, contexts, targets, batch_size=16) == 1.0
    # A model that never ends the word (always "e") and one that ends it at once: both wrong.
    assert metrics.final_word_accuracy(_Constant(ord("e")), contexts, targets) == 0.0
    assert metrics.final_word_accuracy(_Constant(ord(" ")), contexts, targets) == 0.0


@pytest.mark.backend_agnostic
def test_macro_auc_matches_pairwise_counting():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 40)
    scores = np.round(rng.random((40, 3)), 1)  # rounding creates ties
    expected = []
    for c in range(3):
        pos, neg = scores[labels == c, c], scores[labels != c, c]
        wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
                   for p, n in itertools.product(pos, neg))
        expected.append(wins / (len(pos) * len(neg)))
    np.testing.assert_allclose(metrics.macro_auc(scores, labels), np.mean(expected))


def test_predict_logits_pads_to_one_batch_shape():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((300, 5)).astype("float32")
    np.testing.assert_allclose(metrics.predict_logits(model, x, batch_size=128),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    result = metrics.classification_metrics(model, x, np.arange(300) % 3)
    assert set(result) == {"accuracy", "auc", "cross_entropy"}
    assert np.isnan(metrics.macro_auc(np.ones((4, 2)), np.zeros(4, dtype=int)))
