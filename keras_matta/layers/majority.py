"""Majority kernels: `k` stored copies of a kernel, combined in weight space per forward pass.

The combine is the only place copies meet, so every Mat layer calls the functions here:
`add_majority_kernel` (and `add_mixture`) in `build` and `combine_copies` in `call`. Each
combine maps the copies `W_1, ..., W_k` (stacked on axis 0) to one kernel `W` of the original
shape, and each runs one matmul with it (`m = floor(k / 2) + 1` is a strict majority):

| combine            | training step                                   | inference, `extract` |
|--------------------|-------------------------------------------------|----------------------|
| `random_majority`  | `W = (1/m) sum_{i in S} W_i`, `S` drawn, `|S|=m` | mean                 |
| `unit_majority`    | the same, a fresh `S_u` per unit `u`             | mean                 |
| `element_majority` | the same, a fresh `S_e` per kernel element `e`   | mean                 |
| `random_convex`    | `W = sum_i p_i W_i`, `p ~ Dirichlet(1, ..., 1)`  | mean                 |
| `learned`          | `W = sum_i softmax(a)_i W_i`, logits `a` trained | the same             |
| `median`           | element-wise median (odd `k`)                    | the same             |
| `mean`             | `W = (1/k) sum_i W_i`                            | the same             |

Why the random combines: a fixed symmetric combine (`mean`) gives every copy the same gradient
`dL/dW_i = g / k`, so the copies' differences never change and the model is the small model
with a rescaled learning rate. With Adam, which divides out the gradient's scale, it is the small
model whose initial kernel is the mean of the copies, and with identical copies exactly the
plain model with Adam's `epsilon` times `k`: no learning-rate compensation is needed. A random
combine gives each drawn copy `g / m` and the others nothing, so the copies diverge. Every
random combine has expectation `E[W] = mean` over the draw, which is why inference uses the mean.

A "unit" is an index of the kernel's last axis: a `Dense` kernel's output unit, an attention
projection's position within a head (shared by the heads) and an output projection's feature.

The default combine is `learned` (`DEFAULT_COMBINE`). No combine beat the plain model beyond
seed noise in the project's study (README, "Majority kernels": Adam, each variant at its best
learning rate, three seeds, four regimes). `random_majority`, the published method and the
former default, was significantly worse (+0.42 ± 0.02 bits/byte on the byte LM; +0.09 ± 0.05
on its smaller, longer-trained variant), as was `element_majority` with identical copies;
`learned` was the only one ahead on both language models (-0.019 ± 0.039 and -0.035 ± 0.026
bits/byte), and behind within noise on digits (-0.007 ± 0.011 and -0.010 ± 0.012 accuracy).
In the main job's byte LM (`keras-matta demo --full`, one learning rate) its Student was ahead
of the Student alone by 0.039 ± 0.004 bits/byte. Unlike the random combines, it serves the
kernel it trained with.

A strict majority of two copies is both copies, so at `k = 2` the three `*_majority` combines
are the mean. `majority_init="identical"` starts every copy from the plain layer's draw, so the
served (mean) model starts exactly as the plain model; `"independent"` draws each copy.

Reference:
    Mazzawi, Awasthi, Gonzalvo, Ramalingam, "Majority Kernels: An Approach to Leverage Big
    Model Dynamics for Efficient Small Model Training", NeurIPS 2024 Compression Workshop,
    arXiv 2402.05033.
"""

import keras
from keras import ops

COMBINES = (
    "random_majority",
    "unit_majority",
    "element_majority",
    "random_convex",
    "learned",
    "median",
    "mean",
)
INITS = ("independent", "identical")
DEFAULT_COMBINE = "learned"  # why: the module docstring
# The draw of each strict-majority combine is shared along these kernel axes.
_GROUPS = {"random_majority": "copy", "unit_majority": "unit", "element_majority": "element"}


def validate_majority(majority, majority_combine, majority_init="independent"):
    """Checks the `majority`, `majority_combine` and `majority_init` arguments of a Mat layer."""
    if isinstance(majority, bool) or not isinstance(majority, int) or majority < 1:
        raise ValueError(f"`majority` must be an int >= 1; got {majority!r}.")
    if majority_combine not in COMBINES:
        raise ValueError(
            f"`majority_combine` must be one of {COMBINES}; got {majority_combine!r}."
        )
    if majority_init not in INITS:
        raise ValueError(f"`majority_init` must be one of {INITS}; got {majority_init!r}.")
    if majority_combine == "median" and majority % 2 == 0:
        raise ValueError(
            f"`majority_combine='median'` needs an odd `majority`; got majority={majority}."
        )


@keras.saving.register_keras_serializable(package="keras_matta")
class CopiesInitializer(keras.initializers.Initializer):
    """Initializes `copies` kernels with `initializer`, stacked on axis 0.

    Fans are those of one copy, so every copy has the scale the wrapped initializer gives a
    single kernel. Keras initializers seeded with an int (or unseeded) repeat their draw on
    every call, so copy `i` uses seed `seed + i`: copy 0 is what a plain layer would get. With
    `identical=True` every copy is copy 0.
    """

    def __init__(self, initializer, copies, identical=False):
        self.initializer = keras.initializers.get(initializer)
        self.copies = copies
        self.identical = identical

    def __call__(self, shape, dtype=None):
        if self.identical:
            first = self._copy(0)(shape[1:], dtype=dtype)
            # Stacked, not broadcast: torch's `repeat` of a size-1 axis can return a view that
            # the optimizer's in-place updates then refuse.
            return ops.stack([first] * shape[0])
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
            "identical": self.identical,
        }


def add_majority_kernel(
    layer, name, shape, majority, initializer, majority_init="independent", **weight_kwargs
):
    """Adds a kernel of `shape` to `layer`, stored as `majority` copies when `majority > 1`."""
    if majority == 1:
        return layer.add_weight(name=name, shape=shape, initializer=initializer, **weight_kwargs)
    return layer.add_weight(
        name=name,
        shape=(majority,) + tuple(shape),
        initializer=CopiesInitializer(initializer, majority, majority_init == "identical"),
        **weight_kwargs,
    )


def add_mixture(layer, name, majority, combine):
    """The `(majority,)` trainable logits of the `learned` combine (zeros: the mean), or `None`.

    The mixture is part of training only: `extract` serves the combined kernel.
    """
    if majority == 1 or combine != "learned":
        return None
    return layer.add_weight(name=f"{name}_mixture", shape=(majority,), initializer="zeros")


def combine_copies(copies, majority, combine, training=False, seed_generator=None, mixture=None):
    """Combines stored copies into one kernel (the identity when `majority == 1`).

    Args:
        copies: `(majority, *shape)`, the stored copies.
        majority: `k`, the number of copies.
        combine: one of `COMBINES` (see the module docstring for the math).
        training: whether to draw (the random combines); otherwise the mean.
        seed_generator: a `keras.random.SeedGenerator` for the draws.
        mixture: the `(majority,)` logits of the `learned` combine.

    Returns:
        The combined kernel, of shape `shape`.

    Example:

    ```python
    from keras_matta.layers.majority import combine_copies

    copies = np.stack([np.full((2, 3), v, "float32") for v in (1.0, 2.0, 6.0)])  # (3, 2, 3)
    median = ops.convert_to_numpy(combine_copies(copies, 3, "median"))
    mean = ops.convert_to_numpy(combine_copies(copies, 3, "random_majority"))  # inference
    np.testing.assert_array_equal(median, np.full((2, 3), 2.0))
    np.testing.assert_array_equal(mean, np.full((2, 3), 3.0))
    ```
    """
    if majority == 1:
        return copies
    # Every combine is a weighted sum over the copies; those whose weights are not trained are
    # written as `k` fused multiply-adds: a reduction over the leading axis
    # (`ops.mean(copies, 0)`) made a whole training step of the digits MLP 4x slower than the
    # plain model's on XLA CPU, the unrolled sum 1.1x.
    if combine == "median":
        ranks = _ranks([copies[i] for i in range(majority)])
        return _weighted_sum([ops.cast(r == majority // 2, copies.dtype) for r in ranks], copies)
    if combine == "learned":
        # One (1, k) x (k, n) product: its gradient for the logits is a matrix-vector product,
        # where the unrolled sum's was k reductions over a kernel. The digits MLP's training
        # step at batch 64 went from 2.28x the plain model's to 1.29x (interleaved A/B, JAX).
        weights = ops.softmax(ops.cast(mixture, copies.dtype))  # (k,)
        flat = ops.reshape(copies, (majority, -1))
        return ops.reshape(ops.matmul(weights[None], flat), copies.shape[1:])
    if not training or combine == "mean":
        return _weighted_sum([1.0 / majority] * majority, copies)
    if combine == "random_convex":
        # -log(U) is Exponential(1); exponentials normalized by their sum are Dirichlet(1).
        uniform = keras.random.uniform((majority,), minval=1e-7, seed=seed_generator)
        weights = -ops.log(uniform)
        weights = ops.cast(weights / ops.sum(weights), copies.dtype)  # (k,)
        return _weighted_sum([weights[i] for i in range(majority)], copies)
    group = _GROUPS[combine]
    shape = {
        "copy": (),
        "unit": (1,) * (len(copies.shape) - 2) + (copies.shape[-1],),
        "element": tuple(copies.shape[1:]),
    }[group]
    chosen = majority // 2 + 1
    scores = keras.random.uniform((majority,) + shape, seed=seed_generator)
    ranks = _ranks([scores[i] for i in range(majority)])
    return _weighted_sum([ops.cast(r < chosen, copies.dtype) / chosen for r in ranks], copies)


def _weighted_sum(weights, copies):
    """`sum_i weights[i] * copies[i]`, each weight a scalar or broadcastable to one copy."""
    total = weights[0] * copies[0]
    for i in range(1, len(weights)):
        total = total + weights[i] * copies[i]
    return total


def _ranks(values):
    """The rank of each of `values` (a list of `k` same-shaped tensors), ties broken by index.

    `rank_i = #{j : v_j < v_i} + #{j < i : v_j = v_i}`, a permutation of `0..k-1` at every
    element, by `k^2` element-wise comparisons: cheaper than a sort along a short axis (and
    than `ops.median`, which sorts and gathers), and exact on ties, so a selection always holds
    exactly the intended count.
    """
    ranks = []
    for i, this in enumerate(values):
        below = [ops.cast(other < this if j > i else other <= this, "int32")
                 for j, other in enumerate(values) if j != i]
        ranks.append(sum(below[1:], below[0]))
    return ranks
