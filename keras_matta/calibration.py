"""Calibration data: the batches `reorder` and `importance` score units on, checked first."""

import keras
import numpy as np
from keras import ops

from keras_matta import graph as graph_lib


def batches(data, batch_size, steps):
    """`[(x, y, sample_weight)]` from in-memory arrays or an iterable of batches."""
    if isinstance(data, (np.ndarray, dict, tuple)) or ops.is_tensor(data):
        x, y, sample_weight = _unpack(data)
        size = len(keras.tree.flatten(x)[0])
        cut = lambda part, i: keras.tree.map_structure(  # noqa: E731
            lambda a: a[i: i + batch_size], part
        )
        found = [
            (cut(x, i), None if y is None else cut(y, i),
             None if sample_weight is None else cut(sample_weight, i))
            for i in range(0, size, batch_size)
        ]
    else:
        try:
            iterator = iter(data)
        except TypeError:
            raise TypeError(
                "`data` must be arrays, a tuple (x, y[, sample_weight]), or an iterable of "
                f"batches; got {type(data).__name__}."
            ) from None
        found = []
        for batch in iterator:
            if steps is not None and len(found) >= steps:
                break
            found.append(_unpack(keras.tree.map_structure(_to_numpy, batch)))
    found = found[:steps]
    if not found:
        raise ValueError("`data` holds no calibration batch.")
    return found


def _unpack(data):
    if isinstance(data, tuple):
        if not 1 <= len(data) <= 3:
            raise ValueError(
                f"A tuple of `data` must be (x,), (x, y) or (x, y, sample_weight); got "
                f"{len(data)} elements."
            )
        return tuple(data) + (None,) * (3 - len(data))
    return data, None, None


def _to_numpy(value):
    return value if isinstance(value, np.ndarray) else np.asarray(ops.convert_to_numpy(value))


def check_batches(model, batches, needs_targets):
    """Shapes, dtypes and token ids of every batch, against the model, before any work."""
    try:
        specs = graph_lib.functional_graph(model)._inputs_struct
    except (TypeError, ValueError):  # a subclassed model: its call checks its inputs
        specs = None
    vocabulary = _vocabulary_size(model)
    for index, (x, y, _) in enumerate(batches):
        if needs_targets and y is None:
            raise ValueError(f"`method='taylor'` needs targets; batch {index} has only `x`.")
        if specs is not None:
            try:
                keras.tree.assert_same_structure(specs, x)
            except (ValueError, TypeError):
                raise ValueError(
                    f"Batch {index} of `data` does not match the inputs of '{model.name}': "
                    f"expected {keras.tree.map_structure(lambda s: s.shape, specs)}, got "
                    f"{keras.tree.map_structure(lambda a: np.shape(a), x)}."
                ) from None
            for spec, array in zip(keras.tree.flatten(specs), keras.tree.flatten(x)):
                expected, shape = tuple(spec.shape), np.shape(array)
                if len(shape) != len(expected) or any(
                    e is not None and e != s for e, s in zip(expected[1:], shape[1:])
                ):
                    raise ValueError(
                        f"Batch {index}: input '{spec.name}' of '{model.name}' has shape "
                        f"{expected}; got {shape}."
                    )
        tokens = x.get("token_ids") if isinstance(x, dict) else x
        if vocabulary is not None and tokens is not None:
            tokens = np.asarray(tokens)
            if not np.issubdtype(tokens.dtype, np.integer):
                raise TypeError(f"Batch {index}: token ids must be integers; got {tokens.dtype}.")
            if tokens.size and (tokens.min() < 0 or tokens.max() >= vocabulary):
                raise ValueError(
                    f"Batch {index}: token ids must be in [0, {vocabulary}) (the vocabulary of "
                    f"'{model.name}'); got values in [{tokens.min()}, {tokens.max()}]."
                )


def _vocabulary_size(model):
    """The input size of the model's token embedding, where its input is token ids."""
    embedding = next(
        (layer for layer in model._flatten_layers(include_self=False, recursive=True)
         if isinstance(layer, keras.layers.Embedding)),
        None,
    )
    return None if embedding is None else embedding.input_dim
