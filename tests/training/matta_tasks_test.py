"""MatTA on every kind of task: the terms equal a NumPy recomputation from the same logits."""

import keras
import numpy as np
import pytest
from distillation_reference import bernoulli_kl
from distillation_reference import log_softmax
from distillation_reference import softmax_kl as kl
from helpers import to_numpy
from training.matta_models import mlp
from training.matta_models import token_lm

import keras_matta
from keras_matta.training import MatTA


def sparse_ce(labels, z):
    return -np.take_along_axis(log_softmax(z), labels[..., None], -1)[..., 0]


def binary_ce(labels, z):
    p = 1 / (1 + np.exp(-z))
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean(-1)


def terms_of(mat_ta, x, y, sample_weight=None):
    """`(total loss, {logged name: value})` from one compiled evaluation batch."""
    if sample_weight is not None and sample_weight.ndim > 1:
        # Keras' array adapter takes per-token weights for dict targets only as a dict.
        sample_weight = {key: sample_weight for key in y}
    results = mat_ta.evaluate(x, y, sample_weight=sample_weight, batch_size=len(x), verbose=0,
                              return_dict=True)
    return results.pop("loss"), results


def logits_of(model, x, widths):
    outputs = {"ta": to_numpy(model(x))}
    for spec in widths:
        with keras_matta.WidthScope(model, spec):
            outputs[f"student_{keras_matta.width_label(spec)}"] = to_numpy(model(x))
    return outputs


def weighted_mean(values, weights=None):
    """Keras' `sum_over_batch_size`: the weighted sum over the number of entries."""
    return float((values if weights is None else values * weights).sum() / values.size)


def check_terms(mat_ta, x, labels, teacher, task, kd, tau, sample_weight=None):
    y = {"labels": labels, "teacher_logits": teacher}
    total, results = terms_of(mat_ta, x, y, sample_weight)
    outputs = logits_of(mat_ta.model, x, mat_ta.student_widths)
    expected_total = 0.0
    for head, z in outputs.items():
        expected = {"task_loss": weighted_mean(task(labels, z), sample_weight),
                    "kd_teacher_loss": weighted_mean(kd(teacher, z, tau), sample_weight)}
        if head != "ta":
            expected["kd_ta_loss"] = weighted_mean(kd(outputs["ta"], z, tau), sample_weight)
        for term, value in expected.items():
            np.testing.assert_allclose(results[f"{head}_{term}"], value, rtol=1e-4,
                                       atol=1e-6, err_msg=f"{head}_{term}")
        expected_total += sum(expected.values())
    np.testing.assert_allclose(total, expected_total, rtol=1e-4)


def test_categorical_one_hot_labels():
    rng = np.random.RandomState(0)
    x = rng.randn(8, 5).astype("float32")
    labels = np.eye(3, dtype="float32")[rng.randint(0, 3, 8)]
    teacher = rng.randn(8, 3).astype("float32")
    mat_ta = MatTA(mlp(), [0.25, 0.5], teacher="dataset", temperature=2.0)
    mat_ta.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    check_terms(mat_ta, x, labels, teacher, lambda y, z: sparse_ce(y.argmax(-1), z), kl, 2.0)
    assert isinstance(mat_ta.metrics[1], keras.metrics.CategoricalAccuracy)


def test_binary_outputs_use_the_bernoulli_kl():
    rng = np.random.RandomState(1)
    x = rng.randn(8, 5).astype("float32")
    labels = rng.randint(0, 2, (8, 1)).astype("float32")
    teacher = rng.randn(8, 1).astype("float32")
    mat_ta = MatTA(mlp(classes=1), [0.5], teacher="dataset", temperature=1.5)
    mat_ta.compile("sgd", keras.losses.BinaryCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    check_terms(mat_ta, x, labels, teacher, binary_ce, bernoulli_kl, 1.5)
    assert mat_ta.metrics[1].threshold == 0.0  # accuracy of logits


def test_regression_uses_mse_between_outputs():
    rng = np.random.RandomState(2)
    x = rng.randn(8, 5).astype("float32")
    targets = rng.randn(8, 2).astype("float32")
    teacher = rng.randn(8, 2).astype("float32")
    mat_ta = MatTA(mlp(classes=2), [0.5], teacher="dataset")
    mat_ta.compile("sgd", "mse", metrics=["mae"])
    mse = lambda t, z: ((t - z) ** 2).mean(-1)  # noqa: E731
    check_terms(mat_ta, x, targets, teacher, mse, lambda t, z, tau: mse(t, z), 1.0)
    assert mat_ta.metrics[1].name == "ta_mae"


def lm_batch(seed=3, vocab=11):
    rng = np.random.RandomState(seed)
    tokens = rng.randint(1, vocab, (3, 6)).astype("int32")
    labels = rng.randint(0, vocab, (3, 6))
    teacher = (rng.randn(3, 6, vocab) * 2).astype("float32")
    padding = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], "float32")
    return tokens, labels, teacher, padding


def test_language_model_terms_with_padding_mask():
    tokens, labels, teacher, padding = lm_batch()
    mat_ta = MatTA(token_lm(), [0.25, 0.5], teacher="dataset", temperature=2.0)
    mat_ta.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    check_terms(mat_ta, tokens, labels, teacher, sparse_ce, kl, 2.0, sample_weight=padding)


def test_masked_positions_contribute_nothing_to_any_term():
    tokens, labels, teacher, padding = lm_batch()
    mat_ta = MatTA(token_lm(), [0.5], teacher="dataset")
    mat_ta.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = {"labels": labels, "teacher_logits": teacher}
    base = terms_of(mat_ta, tokens, y, padding)
    masked = padding == 0
    rng = np.random.RandomState(9)
    tokens2, labels2, teacher2 = tokens.copy(), labels.copy(), teacher.copy()
    tokens2[masked] = rng.randint(1, 11, masked.sum())
    labels2[masked] = rng.randint(0, 11, masked.sum())
    teacher2[masked] = rng.randn(masked.sum(), 11) * 5
    changed = terms_of(mat_ta, tokens2, {"labels": labels2, "teacher_logits": teacher2}, padding)
    np.testing.assert_allclose(changed[0], base[0], rtol=1e-6)
    for name, value in base[1].items():
        np.testing.assert_allclose(changed[1][name], value, rtol=1e-6, err_msg=name)


def test_per_token_weights_from_a_dataset_match_arrays():
    """A tf.data pipeline may yield `(x, {"labels", "teacher_logits"}, padding)` directly."""
    import tensorflow as tf

    tokens, labels, teacher, padding = lm_batch()
    mat_ta = MatTA(token_lm(), [0.5], teacher="dataset")
    mat_ta.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = {"labels": labels, "teacher_logits": teacher}
    dataset = tf.data.Dataset.from_tensor_slices((tokens, y, padding)).batch(3)
    from_dataset = mat_ta.evaluate(dataset, verbose=0, return_dict=True)
    from_arrays = terms_of(mat_ta, tokens, y, padding)
    np.testing.assert_allclose(from_dataset.pop("loss"), from_arrays[0], rtol=1e-5)
    for name, value in from_arrays[1].items():
        np.testing.assert_allclose(from_dataset[name], value, rtol=1e-5, err_msg=name)


@pytest.mark.slow
def test_language_model_trains_with_padding():
    rng = np.random.RandomState(4)
    # Next token = (token + 1) mod vocab: learnable per position by a token-level model.
    tokens = rng.randint(1, 11, (64, 8)).astype("int32")
    labels = (tokens + 1) % 11
    padding = (rng.rand(64, 8) < 0.8).astype("float32")
    mat_ta = MatTA(token_lm(dim=16, units=32), [0.25, 0.5])
    mat_ta.compile(keras.optimizers.Adam(0.05),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   weighted_metrics=["accuracy"])
    history = mat_ta.fit(tokens, labels, sample_weight=padding, batch_size=16, epochs=8,
                         verbose=0)
    for head in mat_ta.head_names:
        losses = history.history[f"{head}_task_loss"]
        assert losses[-1] < 0.5 * losses[0], head
        assert history.history[f"{head}_accuracy"][-1] > 0.6, head


def transformer_lm(vocab=11, dim=8, seq=6):
    from keras_matta.layers.mat_transformer_block import MatTransformerBlock

    tokens = keras.Input((seq,), dtype="int32", name="token_ids")
    padding = keras.Input((seq,), dtype="int32", name="padding_mask")
    h = keras.layers.Embedding(vocab, dim)(tokens)
    h = MatTransformerBlock(16, num_heads=2, causal=True, name="block")(h, padding_mask=padding)
    logits = keras_matta.MatDense(vocab, nested=False, name="logits")(h)
    return keras.Model({"token_ids": tokens, "padding_mask": padding}, logits)


def test_transformer_language_model_terms_with_padding_mask():
    tokens, labels, teacher, padding = lm_batch()
    x = {"token_ids": tokens, "padding_mask": padding.astype("int32")}
    mat_ta = MatTA(transformer_lm(), [0.25, 0.5], teacher="dataset", temperature=2.0)
    mat_ta.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   weighted_metrics=["accuracy"])
    check_terms(mat_ta, x, labels, teacher, sparse_ce, kl, 2.0, sample_weight=padding)
    y = {"labels": labels, "teacher_logits": teacher}
    history = mat_ta.fit(x, y, sample_weight={key: padding for key in y}, epochs=3,
                         verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
