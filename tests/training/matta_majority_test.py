"""Majority kernels inside MatTA: copies train apart, collapse on `extract`, survive saving.

A TA whose kernels are stored as `k` copies (SPEC §3), combined by `random_majority` (the combine
whose copies diverge and serve their mean; the default, `learned`, trains and serves its own
mixture: tests/layers/majority_test.py), is trained by `MatTA` with a nested Student. Every
check compares with a reference computed without the combine code:

- the copies moved, and not in lockstep: under a symmetric combine every copy receives the same
  update, so the spread of the updates around their mean is zero;
- `extract(ta, width)` holds stock Keras layers only, as many parameters as a plain
  (`majority=1`) model built at the Student's size, and predicts what a NumPy forward pass
  through the mean of the copies predicts (MLP), or what the plain TA holding that NumPy mean
  predicts at the Student width (transformer), and what the TA predicts in `WidthScope`;
- a `.keras` round trip keeps every stored copy and every prediction.
"""

import os

import keras
import numpy as np
import pytest
from helpers import to_numpy
from training.matta_models import sparse_ce
from training.matta_models import weights_of

import keras_matta
from keras_matta import MatDense
from keras_matta import MatTransformerBlock

STUDENT = 0.5

# === Models and data ===


def mlp(majority, units=8):
    """`5 -> MatDense(units, relu) -> MatDense(3)`, every kernel stored as `majority` copies."""
    return keras.Sequential(
        [
            keras.Input((5,)),
            MatDense(units, activation="relu", majority=majority,
                     majority_combine="random_majority", majority_seed=1, name="hidden"),
            MatDense(3, nested=False, majority=majority, majority_combine="random_majority",
                     majority_seed=2, name="logits"),
        ],
        name="ta",
    )


def token_lm(majority, intermediate_dim=16, num_heads=2, key_dim=None, vocab=7, dim=8):
    """Embedding -> causal MatTransformerBlock (nested FFN and heads) -> MatDense(vocab)."""
    return keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(vocab, dim, name="embed"),
            MatTransformerBlock(intermediate_dim, num_heads, key_dim=key_dim, causal=True,
                                nested_heads=True, majority=majority,
                                majority_combine="random_majority", majority_seed=3,
                                name="block"),
            MatDense(vocab, nested=False, name="logits"),
        ],
        name="lm",
    )


def classification_data(n=32):
    rng = np.random.RandomState(4)
    x = rng.randn(n, 5).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0.5).astype("int32")  # 3 classes


def next_token_data(n=16, vocab=7):
    """Predict `(token + 1) mod vocab` at every position."""
    x = np.random.RandomState(5).randint(0, vocab, (n, 6)).astype("int32")
    return x, (x + 1) % vocab


def stored_copies(model, plain):
    """`{path: value}` of the weights of `model` stored as copies: one more axis than in `plain`.

    `plain` is the same architecture with `majority=1` (its weights line up one to one).
    """
    return {
        stored.path: to_numpy(stored)
        for stored, single in zip(model.weights, plain.weights)
        if len(stored.shape) == len(single.shape) + 1
    }


def train(build, majority, x, y, steps=4, learning_rate=0.05):
    """A few MatTA steps of `build(majority)` with one Student.

    Returns `(mat_ta, copies before, copies after)`, the copies as in `stored_copies`.
    """
    keras.utils.set_random_seed(0)  # module fixtures run before the per-test seeding
    model, plain = build(majority), build(1)
    before = stored_copies(model, plain)
    mat_ta = keras_matta.MatTA(model, student_widths=[STUDENT], seed=0)
    mat_ta.compile(keras.optimizers.Adam(learning_rate), sparse_ce())
    mat_ta.fit(x, y, batch_size=len(x) // steps, epochs=1, shuffle=False, verbose=0)
    return mat_ta, before, stored_copies(model, plain)


@pytest.fixture(scope="module")
def trained_mlp():
    """`(mat_ta, copies before, copies after, x)`: the MLP TA, k = 3, trained once per module."""
    x, y = classification_data()
    return *train(mlp, 3, x, y), x


@pytest.fixture(scope="module")
def trained_lm():
    """`(mat_ta, copies before, copies after, x)`: the token LM, k = 2, trained once."""
    x, y = next_token_data()
    return *train(token_lm, 2, x, y, steps=2), x


# === Checks ===


def assert_copies_trained_apart(before, after):
    assert before and before.keys() == after.keys()
    for path, initial in before.items():
        updates = after[path] - initial  # (k, ...): what training did to each copy
        assert np.abs(updates).max() > 1e-3, f"{path}: the copies did not train"
        spread = np.abs(updates - updates.mean(axis=0)).max()  # 0 when copies move in lockstep
        assert spread > 0.05 * np.abs(updates).max(), f"{path}: the copies moved in lockstep"


def assert_stock_only(model):
    for layer in model._flatten_layers(include_self=False):
        module = type(layer).__module__
        assert module.startswith("keras.") and "keras_matta" not in module, (layer.name, module)


def predict_at(model, width, x):
    with keras_matta.WidthScope(model, width):
        return model.predict(x, verbose=0)


# === MatDense, k = 3, random majority ===


def test_dense_copies_train_apart_under_matta(trained_mlp):
    _, before, after, _ = trained_mlp
    assert len(before) == 2 and {value.shape[0] for value in before.values()} == {3}
    assert_copies_trained_apart(before, after)


def test_dense_extract_is_the_plain_student_with_the_mean_of_the_copies(trained_mlp):
    mat_ta, _, _, x = trained_mlp
    student = keras_matta.extract(mat_ta, STUDENT)
    assert_stock_only(student)
    assert student.count_params() == mlp(majority=1, units=4).count_params()

    kernel_1, bias_1, kernel_2, bias_2 = weights_of(mat_ta.model)  # copies: (3, in, out)
    hidden = np.maximum(x @ kernel_1.mean(axis=0)[:, :4] + bias_1[:4], 0.0)  # (n, 4)
    reference = hidden @ kernel_2.mean(axis=0)[:4] + bias_2  # (n, 3)
    np.testing.assert_allclose(student.predict(x, verbose=0), reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predict_at(mat_ta.model, STUDENT, x), reference, rtol=1e-5,
                               atol=1e-5)


def test_two_copies_move_in_lockstep_a_strict_majority_of_two_is_both():
    # SPEC §3's random strict majority cannot break the symmetry of k = 2 copies: the update of
    # each copy equals the update of their mean. Documented in `MatDense`; k >= 3 diverges.
    x, y = classification_data()
    _, before, after = train(mlp, 2, x, y)
    for path in before:
        updates = after[path] - before[path]  # (2, ...)
        assert np.abs(updates).max() > 1e-3
        np.testing.assert_allclose(updates[0], updates[1], atol=1e-6)


# === MatTransformerBlock, k = 2 ===


def collapsed(majority_model, plain_model):
    """`plain_model` holding `majority_model`'s weights, copies replaced by their NumPy mean."""
    values = []
    for stored, target in zip(majority_model.weights, plain_model.weights):
        value = to_numpy(stored)
        values.append(value.mean(axis=0) if value.ndim == len(target.shape) + 1 else value)
        assert values[-1].shape == tuple(target.shape), (stored.path, target.path)
    plain_model.set_weights(values)
    return plain_model


def test_block_copies_train_under_matta(trained_lm):
    _, before, after, _ = trained_lm
    assert len(before) == 6  # query, key, value, output, FFN in, FFN out
    for path, initial in before.items():
        assert initial.shape[0] == 2, path
        assert np.abs(after[path] - initial).max() > 1e-3, f"{path}: the copies did not train"


def test_block_extract_is_the_plain_student_with_the_mean_of_the_copies(trained_lm):
    mat_ta, _, _, x = trained_lm
    student = keras_matta.extract(mat_ta, STUDENT)
    assert_stock_only(student)
    # The Student's size: FFN 8 and one head of the TA's head size (8 / 2).
    assert student.count_params() == token_lm(1, 8, 1, key_dim=4).count_params()
    with keras_matta.WidthScope(plain := collapsed(mat_ta.model, token_lm(1)), STUDENT):
        reference = to_numpy(plain(x))  # (n, 6, vocab)
    np.testing.assert_allclose(student.predict(x, verbose=0), reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predict_at(mat_ta.model, STUDENT, x), reference, rtol=1e-5,
                               atol=1e-5)


# === Saving ===


@pytest.mark.parametrize("trained", ["trained_mlp", "trained_lm"])
def test_matta_round_trip_keeps_copies_and_predictions(trained, request, tmp_path):
    mat_ta, _, _, x = request.getfixturevalue(trained)
    path = os.path.join(tmp_path, "matta.keras")
    mat_ta.save(path)
    loaded = keras.saving.load_model(path)
    for saved, original in zip(weights_of(loaded.model), weights_of(mat_ta.model)):
        assert saved.shape == original.shape  # copies stored as copies, not collapsed
        np.testing.assert_array_equal(saved, original)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), mat_ta.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(predict_at(loaded.model, STUDENT, x),
                               predict_at(mat_ta.model, STUDENT, x), rtol=1e-6, atol=1e-6)
