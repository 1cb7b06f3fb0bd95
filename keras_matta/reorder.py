"""`reorder`: permute a Mat model's units so that every prefix holds the most important ones."""

import dataclasses
import warnings

import keras
import numpy as np
from keras import ops

from keras_matta import calibration
from keras_matta import graph as graph_lib
from keras_matta import importance as importance_lib
from keras_matta._validation import is_int


@dataclasses.dataclass
class Reordering:
    """What `reorder` measured and did.

    Attributes:
        scores: `{layer name: {dimension: scores}}`, one score per unit (neuron, head, GQA
            group) in the units' original order.
        orders: `{layer name: {dimension: order}}`: position `i` of the reordered layer holds
            original unit `order[i]` (units sorted by decreasing score, ties in original order).
        skipped: `{layer name: reason}` for Mat layers whose units could not be permuted without
            changing the model's outputs.
    """

    scores: dict
    orders: dict
    skipped: dict


def reorder(model, data, method="activation", loss=None, batch_size=32, steps=None,
            verbose="auto"):
    """Permutes every nested unit of every Mat layer so that each prefix keeps the best ones.

    A prefix of a pretrained (or freshly converted) layer is an arbitrary subset of its units,
    so slicing it as-is keeps arbitrary neurons and heads. `reorder` scores every unit on
    calibration batches (see `keras_matta.importance`: `"activation"`, Minitron's mean
    activation norm, or `"taylor"`, the first-order `|w * dL/dw|` of DynaBERT and LLM-Pruner)
    and applies, per nested dimension, the permutation `P` that sorts units by decreasing
    score to every variable axis the layer declares for that dimension (`MatLayer.nesting()`):

        W_in <- W_in P,   b_in <- b_in P,   W_out <- P^T W_out

    so at full width the model computes exactly what it did (up to float summation order), and
    every width `k` now keeps the `k` highest-scored units. Heads move as wholes, and for
    grouped-query attention whole groups of query heads move with their key/value head. The
    units of a `MatDense` are permuted together with the input rows of the Mat layers that read
    them; where a layer's output reaches anything else (the model output, a stock layer), it
    is left in place and reported in `skipped`.

    The model is changed in place, all at once: scores and permuted values are computed first,
    then every variable is assigned, so an error leaves the model untouched. Reorder before
    training: optimizer state is not permuted.

    Args:
        model: a Functional or Sequential model with Mat layers, a keras-hub Mat backbone (or
            a `keras_matta.hub.LogitsModel` around one), or a `keras_matta.MatTA` (its TA).
        data: calibration data as `evaluate` takes it: `x`, a tuple `(x, y)` or
            `(x, y, sample_weight)` of arrays (or dicts of arrays), split into batches of
            `batch_size`; or an iterable of such batches (a `tf.data.Dataset`, a list, a
            generator).
        method: `"activation"` (default: needs `x` only) or `"taylor"` (needs `y` and a loss).
        loss: for `"taylor"`: a Keras loss (name, instance or `fn(y_true, y_pred)`); defaults to
            the compiled loss of `model`.
        batch_size: batch size for array data. Defaults to 32.
        steps: the number of batches to use (default: all).
        verbose: `"auto"`, 0 or 1: whether to show a progress bar while scoring.

    Returns:
        A `Reordering` with the scores, the orders applied and the layers skipped.

    Example:

    ```python
    ta = keras.Sequential([keras.Input((16,)), keras_matta.MatDense(64, activation="relu"),
                           keras_matta.MatDense(10, nested=False)])
    x = np.random.rand(256, 16).astype("float32")
    before = ops.convert_to_numpy(ta(x))
    result = keras_matta.reorder(ta, x, verbose=0)
    np.testing.assert_allclose(ops.convert_to_numpy(ta(x)), before, rtol=1e-5, atol=1e-5)
    scores = result.scores[ta.layers[0].name]["units"]   # 64 scores, one per hidden unit
    ```

    Reference:
        Muralidharan et al., "Compact Language Models via Pruning and Knowledge Distillation"
        (Minitron), 2024; Hou et al., "DynaBERT", 2020; Ma et al., "LLM-Pruner", 2023;
        Cai et al., "Once-for-All", 2020 (reordering before elastic training).
    """
    model = graph_lib.unwrap(model)
    if method not in importance_lib.METHODS:
        raise ValueError(f"`method` must be one of {importance_lib.METHODS}; got {method!r}.")
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
    if steps is not None and (not is_int(steps) or steps < 1):
        raise ValueError(f"`steps` must be a positive integer or None; got {steps!r}.")
    if verbose not in ("auto", 0, 1):
        raise ValueError(f"`verbose` must be 'auto', 0 or 1; got {verbose!r}.")
    units, skipped = importance_lib.nested_units(model)
    if not units:
        raise ValueError(
            f"Model '{model.name}' has no nested dimension to reorder"
            + (f" (skipped: {skipped})." if skipped else ".")
        )
    if method == "taylor":
        loss = _taylor_loss(model, loss)
    batches = calibration.batches(data, batch_size, steps)
    calibration.check_batches(model, batches, needs_targets=method == "taylor")

    progress = None
    if verbose == 1 or (verbose == "auto" and len(batches) > 1):
        progress = keras.utils.Progbar(len(batches), unit_name="batch")
    unit_scores = importance_lib.scores(model, units, batches, method, loss, progress)

    result = Reordering({}, {}, skipped)
    new_values = {}
    for group, score in zip(units, unit_scores):
        order = np.argsort(-score, kind="stable")
        name = group.layer.name
        result.scores.setdefault(name, {})[group.dimension] = score
        result.orders.setdefault(name, {})[group.dimension] = order
        for entry, axis, per_unit in group.axes:
            key = id(entry.variable)
            if key not in new_values:
                new_values[key] = (entry.variable, ops.convert_to_numpy(entry.variable))
            variable, value = new_values[key]
            element_order = (order[:, None] * per_unit + np.arange(per_unit)).reshape(-1)
            new_values[key] = (variable, np.take(value, element_order, axis=axis))
    for variable, value in new_values.values():
        variable.assign(value)
    if skipped:
        warnings.warn(f"reorder left these layers in place: {skipped}", stacklevel=2)
    return result


def _taylor_loss(model, loss):
    loss = getattr(model, "loss", None) if loss is None else loss
    if loss is None:
        raise ValueError(
            "`method='taylor'` needs a loss: pass `loss=` (for language models, e.g. "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True) on a LogitsModel) "
            "or compile the model."
        )
    if isinstance(loss, keras.losses.Loss):
        return loss
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if callable(loss):
        return lambda y, y_pred, sample_weight=None: _weighted(loss(y, y_pred), sample_weight)
    raise TypeError(f"`loss` must be a Keras loss or a callable; got {loss!r}.")


def _weighted(values, sample_weight):
    if sample_weight is None:
        return ops.mean(values)
    weights = ops.cast(ops.convert_to_tensor(sample_weight), values.dtype)
    return ops.sum(values * weights) / ops.maximum(ops.sum(weights), 1.0)
