"""A nested width drawn at run time, applied as a mask instead of a slice."""

from keras import ops


class SampledWidth:
    """A width of one nested dimension held in a scalar integer tensor.

    A Python int width slices a kernel, so every width is a static shape and has its own
    compiled function. A width drawn afresh on every training step (MatTA's sampled
    sub-networks) would retrace on every step; a `SampledWidth` instead runs the layer at its
    full width and multiplies the nested dimension by the prefix mask

        m_j = 1 if j < count else 0,     j = 0, ..., size - 1,

    after the activation (and for attention, on each head's context before the output
    projection). Units past `count` then output exactly zero, so the next layer's kernel rows
    for them receive zero inputs: the forward pass and every gradient equal those of the sliced
    layer at width `count`, at the cost of the full width's FLOPs.

    Only layers call `mask`; users select widths with specs (`keras_matta.WidthScope`).

    Args:
        count: a scalar int tensor (or int), the width: `1 <= count <= size`.
    """

    def __init__(self, count):
        self.count = count

    def mask(self, size, dtype):
        """`(size,)` ones on the prefix of `count` entries, zeros after."""
        return ops.cast(ops.less(ops.arange(size), self.count), dtype)


def split_width(width, full):
    """`(static size, SampledWidth or None)` of a nested dimension run at `width`.

    A drawn width runs the dimension at its `full` static size, masked; an int runs at itself.
    """
    if isinstance(width, SampledWidth):
        return full, width
    return width, None
