"""Majority kernels: `k` stored copies of a kernel, combined in weight space per forward pass.

The combine is the only place copies meet, so every Mat layer calls the two functions here:
`add_majority_kernel` in `build` and `combine_copies` in `call`. A plain mean of the copies is
just the small model with its kernel learning rate divided by `k` (every copy receives the same
gradient `g / k`, so they never diverge), which is why the default combine breaks the symmetry:
each training step averages a fresh random strict majority of the copies. A strict majority
of two copies is both, so at `k = 2` the default is the mean too: symmetry breaks from `k = 3`.

Reference:
    Mazzawi, Awasthi, Gonzalvo, Ramalingam, "Majority Kernels: An Approach to Leverage Big
    Model Dynamics for Efficient Small Model Training", NeurIPS 2024 Compression Workshop,
    arXiv 2402.05033.
"""

import keras
from keras import ops

COMBINES = ("random_majority", "median", "mean")


def validate_majority(majority, majority_combine):
    """Checks the `majority` and `majority_combine` arguments of a Mat layer."""
    if isinstance(majority, bool) or not isinstance(majority, int) or majority < 1:
        raise ValueError(f"`majority` must be an int >= 1; got {majority!r}.")
    if majority_combine not in COMBINES:
        raise ValueError(
            f"`majority_combine` must be one of {COMBINES}; got {majority_combine!r}."
        )
    if majority_combine == "median" and majority % 2 == 0:
        raise ValueError(
            f"`majority_combine='median'` needs an odd `majority`; got majority={majority}."
        )


@keras.saving.register_keras_serializable(package="keras_matta")
class CopiesInitializer(keras.initializers.Initializer):
    """Initializes `copies` kernels independently with `initializer`, stacked on axis 0.

    Fans are those of one copy, so every copy has the scale the wrapped initializer gives a
    single kernel. Keras initializers seeded with an int (or unseeded) repeat their draw on
    every call, so copy `i` uses seed `seed + i`: copy 0 is what a plain layer would get.
    """

    def __init__(self, initializer, copies):
        self.initializer = keras.initializers.get(initializer)
        self.copies = copies

    def __call__(self, shape, dtype=None):
        return ops.stack([self._copy(i)(shape[1:], dtype=dtype) for i in range(shape[0])])

    def _copy(self, index):
        seed = getattr(self.initializer, "seed", None)
        if index == 0 or not isinstance(seed, int):
            return self.initializer
        config = {**self.initializer.get_config(), "seed": seed + index}
        return type(self.initializer).from_config(config)

    def get_config(self):
        return {
            "initializer": keras.initializers.serialize(self.initializer),
            "copies": self.copies,
        }


def add_majority_kernel(layer, name, shape, majority, initializer, **weight_kwargs):
    """Adds a kernel of `shape` to `layer`, stored as `majority` copies when `majority > 1`."""
    if majority == 1:
        return layer.add_weight(name=name, shape=shape, initializer=initializer, **weight_kwargs)
    return layer.add_weight(
        name=name,
        shape=(majority,) + tuple(shape),
        initializer=CopiesInitializer(initializer, majority),
        **weight_kwargs,
    )


def combine_copies(copies, majority, combine, training=False, seed_generator=None):
    """Combines stored copies into one kernel (the identity when `majority == 1`).

    `random_majority` averages `majority // 2 + 1` copies drawn without replacement from
    `seed_generator` while training, and all copies otherwise; `median` is element-wise over
    the copies; `mean` averages all copies.
    """
    if majority == 1:
        return copies
    if combine == "median":
        return ops.median(copies, axis=0)
    if combine == "random_majority" and training:
        chosen = majority // 2 + 1
        scores = keras.random.uniform((majority,), seed=seed_generator)
        threshold = ops.sort(scores)[chosen - 1]
        weights = ops.cast(scores <= threshold, copies.dtype) / chosen  # (majority,)
        return ops.tensordot(weights, copies, axes=1)
    return ops.mean(copies, axis=0)
