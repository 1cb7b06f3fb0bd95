"""A short MatTA run on a small task: the TA and every Student width learn."""

import keras
import numpy as np
import pytest

from keras_matta import MatDense
from keras_matta.training import MatTA


def xor_and_ring(n, seed):
    """4 classes from 8 features: the sign of x0*x1 (XOR) and whether (x2, x3) leaves a disc.

    Neither part is linearly separable; x4..x7 are noise. The hard labels have 10% noise; the
    precomputed teacher outputs are confident logits of the clean class (labels made offline).
    """
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 8).astype("float32")
    clean = 2 * (x[:, 0] * x[:, 1] > 0) + (x[:, 2] ** 2 + x[:, 3] ** 2 > 1.39)
    noisy = np.where(rng.rand(n) < 0.1, rng.randint(0, 4, n), clean)
    teacher_logits = (4.0 * np.eye(4)[clean]).astype("float32")
    return x, noisy, clean, teacher_logits


@pytest.mark.slow
def test_ta_and_every_student_learn():
    x, labels, _, teacher_logits = xor_and_ring(2048, seed=0)
    x_test, _, clean_test, _ = xor_and_ring(512, seed=1)
    ta = keras.Sequential([
        keras.Input((8,)),
        MatDense(64, activation="relu", name="hidden_1"),
        MatDense(64, activation="relu", name="hidden_2"),
        MatDense(4, nested=False, name="logits"),
    ])
    mat_ta = MatTA(ta, [0.125, 0.25, 0.5], teacher="dataset", temperature=2.0,
                   kd_warmup_steps=50)
    mat_ta.compile(keras.optimizers.Adam(0.01),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    history = mat_ta.fit(x, {"labels": labels, "teacher_logits": teacher_logits},
                         batch_size=128, epochs=12, verbose=0).history
    results = mat_ta.evaluate(x_test, {"labels": clean_test,
                                       "teacher_logits": 4.0 * np.eye(4)[clean_test]},
                              verbose=0, return_dict=True)
    for head in mat_ta.head_names:
        losses = history[f"{head}_task_loss"]
        assert losses[-1] < 0.75 * losses[0], (head, losses)
        # Chance is 0.25; the 8-unit Student is the weakest.
        assert results[f"{head}_accuracy"] > (0.8 if head == "ta" else 0.6), (head, results)
