"""Held-out metrics: accuracy and AUC for classification; bits per byte and final-word
accuracy for the byte-level language model. All computed in NumPy from the model's logits.
"""

import math

import keras
import numpy as np

from keras_matta.data.final_word import WORD_BYTES


def predict_logits(model, x, batch_size=256):
    """The model's outputs on `x` as `float32` NumPy, in batches of exactly `batch_size`.

    The last batch is padded (and the padding dropped), so one compiled predict function
    serves every call with inputs of this shape.
    """
    outputs = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        count = len(batch)
        if count < batch_size:
            padding = np.repeat(batch[-1:], batch_size - count, axis=0)
            batch = np.concatenate([batch, padding])
        logits = keras.ops.convert_to_numpy(model.predict_on_batch(batch))
        outputs.append(np.asarray(logits, dtype="float32")[:count])
    return np.concatenate(outputs)


def log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def macro_auc(probabilities, labels):
    """One-vs-rest ROC AUC averaged over the classes present (Mann-Whitney U, ties halved).

    Args:
        probabilities: `(n, classes)` scores.
        labels: `(n,)` integer labels.

    Returns:
        The mean AUC over classes that have both positive and negative examples (NaN if none).
    """
    aucs = []
    for c in range(probabilities.shape[1]):
        positive = labels == c
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = _average_ranks(probabilities[:, c])
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def _average_ranks(values):
    """1-based ranks with tied values sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def classification_metrics(model, x, y):
    """`{"accuracy", "auc", "cross_entropy"}` of a logits classifier on `(x, y)`.

    Example:

    ```python
    classification_metrics(student, *task.test)   # {"accuracy": 0.93, "auc": 0.99, ...}
    ```
    """
    log_p = log_softmax(predict_logits(model, x))  # (n, classes)
    return {
        "accuracy": float(np.mean(log_p.argmax(axis=-1) == y)),
        "auc": macro_auc(np.exp(log_p), y),
        "cross_entropy": float(-np.mean(log_p[np.arange(len(y)), y])),
    }


def bits_per_byte(model, x, y, batch_size=256, on_batch=None):
    """Mean next-byte cross-entropy in bits over every position of the windows `(x, y)`.

    Each window is predicted independently, so a byte near a window's start sees little
    context: the figure is for windows of the model's length, not for unlimited context.
    `on_batch()`, if given, is called after each batch (a progress bar).
    """
    total, count = 0.0, 0
    for start in range(0, len(x), batch_size):
        log_p = log_softmax(predict_logits(model, x[start : start + batch_size], batch_size))
        targets = y[start : start + batch_size]  # (b, T)
        picked = np.take_along_axis(log_p, targets[..., None], axis=-1)  # (b, T, 1)
        total -= float(picked.sum())
        count += targets.size
        if on_batch is not None:
            on_batch()
    return total / count / math.log(2.0)


def final_word_accuracy(model, contexts, targets, batch_size=256, on_step=None):
    """Share of final words the model completes exactly by greedy byte decoding.

    From each context (exactly the model's input length), the most likely next byte is
    appended and the window slides by one, until `len(longest target) + 1` bytes are decoded.
    The answer is the decoded bytes up to the first byte that is not a letter or an
    apostrophe; it is right when it equals the target word.

    Args:
        model: a byte language model `(batch, T)` -> `(batch, T, 256)`.
        contexts: `int32` `(n, T)` from `keras_matta.data.final_word_examples`.
        targets: the `n` target words as `bytes`.
        batch_size: examples per model call.
        on_step: called after each decoded byte (a progress bar).

    Returns:
        The accuracy in `[0, 1]`.
    """
    window = np.array(contexts, dtype="int32")
    steps = max(len(t) for t in targets) + 1
    decoded = np.zeros((len(window), steps), dtype=np.uint8)
    for step in range(steps):
        logits = predict_logits(model, window, batch_size)[:, -1, :]  # (n, 256)
        decoded[:, step] = logits.argmax(axis=-1)
        window = np.concatenate([window[:, 1:], decoded[:, step : step + 1]], axis=1)
        if on_step is not None:
            on_step()
    correct = 0
    for row, target in zip(decoded, targets):
        word = bytearray()
        for value in row:
            if value not in WORD_BYTES:
                break
            word.append(value)
        correct += bytes(word) == target
    return correct / len(targets)
