"""The validation data of a search, in any form `Model.evaluate` accepts.

Arrays (`(x, y)` or `(x, y, sample_weight)`) are sliced for the proxy subset and checked
against the model's input shape before anything runs; a `tf.data.Dataset` is cut with
`take`; any other iterable (a `keras.utils.PyDataset`, a generator factory's output) is passed
to `evaluate` with `steps=`.
"""

import numpy as np


class SearchData:
    """Validation data for `keras_matta.search`: the whole set, a proxy subset, one batch.

    Args:
        data: `(x, y)`, `(x, y, sample_weight)` of arrays, a `tf.data.Dataset` of batches, or
            another iterable of batches `Model.evaluate` accepts.
        batch_size: the batch size for arrays (datasets come batched).

    Example:

    ```python
    from keras_matta.search.data import SearchData

    data = SearchData((np.zeros((100, 4), "float32"), np.zeros(100, "int32")), batch_size=32)
    assert data.first_batch().shape == (32, 4)
    x, y = data.subset(2).arrays[:2]                     # the first 2 batches: 64 examples
    assert x.shape == (64, 4) and y.shape == (64,)
    ```
    """

    def __init__(self, data, batch_size=32):
        self.batch_size = batch_size
        self.steps = None
        if isinstance(data, (tuple, list)):
            if not 2 <= len(data) <= 3:
                raise ValueError(
                    "`data` as a tuple must be (x, y) or (x, y, sample_weight); got a tuple of "
                    f"{len(data)} items."
                )
            self.arrays = tuple(data)
            lengths = {len(part) for part in self.arrays}
            if len(lengths) != 1:
                raise ValueError(f"`data` arrays differ in length: {[len(p) for p in data]}.")
            if not lengths.pop():
                raise ValueError("`data` is empty.")
            self.dataset = None
        elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
            self.arrays, self.dataset = None, data
        else:
            raise TypeError(
                "`data` must be (x, y) or (x, y, sample_weight) arrays or a dataset of batches "
                f"(what `Model.evaluate` accepts); got {type(data).__name__}."
            )

    def check_inputs(self, model):
        """Raises `ValueError` when arrays do not fit the model's input shape."""
        if self.arrays is None:
            return
        x = self.arrays[0]
        expected = model.input_shape
        if isinstance(x, np.ndarray) and isinstance(expected, tuple):
            shape = tuple(x.shape[1:])
            fits = len(shape) == len(expected) - 1 and all(
                e is None or e == s for e, s in zip(expected[1:], shape))
            if not fits:
                raise ValueError(
                    f"`data` does not match the model: '{model.name}' takes inputs of shape "
                    f"{expected}, the data's examples have shape {shape}."
                )

    def subset(self, steps):
        """The first `steps` batches (the proxy), or all of it for `steps=None`."""
        if steps is None:
            return self
        if self.arrays is not None:
            part = SearchData(tuple(a[: steps * self.batch_size] for a in self.arrays),
                              self.batch_size)
        elif hasattr(self.dataset, "take"):
            part = SearchData(self.dataset.take(steps), self.batch_size)
        else:
            part = SearchData(self.dataset, self.batch_size)
            part.steps = steps
        return part

    def first_batch(self):
        """The inputs of one batch (for timing)."""
        if self.arrays is not None:
            return self.arrays[0][: self.batch_size]
        batch = next(iter(self.dataset))
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    def evaluate(self, model):
        """`model.evaluate(...)` on this data, as a dict of the compiled metrics."""
        if self.arrays is not None:
            x, y, *weights = self.arrays
            return model.evaluate(x, y, sample_weight=weights[0] if weights else None,
                                  batch_size=self.batch_size, verbose=0, return_dict=True)
        return model.evaluate(self.dataset, steps=self.steps, verbose=0, return_dict=True)

    def as_evaluate_argument(self):
        """What a user's objective function receives: the arrays tuple, or the dataset."""
        return self.arrays if self.arrays is not None else self.dataset
