"""Nesting declarations: which axes of which variable are prefixes of which nested dimension.

Every Mat layer declares, once, a table of its stored variables (`MatLayer.nesting()`): for
each, the axes that index units of a nested dimension, split by what the variable does with
those units. For a nested FFN `y = f(x W_in + b_in) W_out + b_out` of hidden width `k`:

    W_in   produces {-1: "intermediate_dim"}     its columns compute the hidden units
    b_in   produces {-1: "intermediate_dim"}
    W_out  consumes {-2: "intermediate_dim"}     its rows read them
    b_out  (neither: shared in full)

Everything that touches nested weights derives from that table instead of restating it:

- slicing: a width keeps the prefix of every declared axis (`prefix`), at call time, in
  `sliced_weights` and in extraction;
- parameter counts (`count_params`);
- keras-hub conversion: the `Link`s between Mat and stock variables, and which new entries
  are random or zero when a pretrained block is widened (`Nested.role`);
- distribution layouts: the nested axis is the one Megatron splits (`Nested.split_axis`);
- importance reordering: permuting a dimension's units permutes every declared axis of it,
  producer and consumer alike, so the full-width function is unchanged.

Axes are negative so that one declaration fits both a plain kernel `(d, k)` and majority
copies stacked in front of it `(copies, d, k)`. `INPUT` names the incoming feature dimension:
a `MatDense` slices its kernel rows to whatever width the previous layer ran at, and a
composite layer that owns the previous layer binds `INPUT` to one of its own dimensions
(`rename`).
"""

import dataclasses
import math
from collections.abc import Callable

INPUT = "input"


@dataclasses.dataclass(frozen=True)
class Nested:
    """One stored variable of a Mat layer and the axes a width slices.

    Attributes:
        name: the variable's path inside the layer (`"ffn_intermediate/kernel"`), the key that
            pairs it with a stock layer's variable.
        variable: the stored variable.
        produces: `{axis: dimension}`, negative axes indexing units the variable computes
            (kernel columns, biases, per-head projections).
        consumes: `{axis: dimension}`, negative axes indexing units it reads (kernel rows).
        bias: whether the variable is added rather than multiplied (new units start at zero).
        copies: whether axis 0 stacks majority copies, which the served model does not hold.
        served: whether the stock equivalent holds the variable (LoRA factors are merged into
            the kernel instead).
        value: returns the served tensor where it differs from the variable (majority copies
            combined, LoRA merged); `None`: the variable itself.
    """

    name: str
    variable: object
    produces: dict = dataclasses.field(default_factory=dict)
    consumes: dict = dataclasses.field(default_factory=dict)
    bias: bool = False
    copies: bool = False
    served: bool = True
    value: Callable = None

    def __post_init__(self):
        for axis in (*self.produces, *self.consumes):
            if axis >= 0:
                raise ValueError(f"Nested axes are negative; '{self.name}' declares {axis}.")

    @property
    def axes(self):
        """`{axis: dimension}` of every nested axis."""
        return {**self.consumes, **self.produces}

    @property
    def role(self):
        """`"in"`, `"in_bias"`, `"out"` or `"shared"`: how widening fills new units."""
        if self.produces:
            return "in_bias" if self.bias else "in"
        return "out" if self.consumes else "shared"

    @property
    def split_axis(self):
        """The axis a model-parallel layout splits: the produced units, else the consumed."""
        return next(iter(self.produces or self.consumes), None)

    def served_shape(self):
        shape = tuple(self.variable.shape)
        return shape[1:] if self.copies else shape

    def served_value(self):
        return self.variable if self.value is None else self.value()


def prefix(value, axes, width):
    """`value` cut to the prefix `width[dimension]` along each nested axis.

    Dimensions absent from `width` keep their full size. Works on NumPy arrays and backend
    tensors alike (plain indexing).
    """
    cut = {axis: width[dimension] for axis, dimension in axes.items() if dimension in width}
    if not cut:
        return value
    # Indexed from the end (axes are negative) behind an Ellipsis, so the rank is never read:
    # reading a Keras variable's `.shape` breaks a torch.compile graph at every sliced weight.
    trailing = [slice(None)] * -min(cut)
    for axis, size in cut.items():
        trailing[axis] = slice(0, size)
    return value[(Ellipsis, *trailing)]


def sliced_shape(entry, width):
    shape = list(entry.served_shape())
    for axis, dimension in entry.axes.items():
        if dimension in width:
            shape[axis] = width[dimension]
    return shape


def count_params(entries, width):
    """Parameters the stock equivalent holds at `width`: every served variable, sliced."""
    return sum(math.prod(sliced_shape(entry, width)) for entry in entries if entry.served)


def rename(entries, dimensions, scope):
    """A sublayer's declaration as part of its parent's.

    Args:
        entries: the sublayer's `Nested` entries.
        dimensions: `{sublayer dimension: parent dimension or None}`; `None` drops the axis
            (the dimension is not nested in the parent); unlisted dimensions keep their name.
        scope: prefix of the entries' names in the parent (`"ffn_intermediate"`).
    """

    def mapped(axes):
        renamed = {axis: dimensions.get(dim, dim) for axis, dim in axes.items()}
        return {axis: dim for axis, dim in renamed.items() if dim is not None}

    return [
        dataclasses.replace(
            entry,
            name=f"{scope}/{entry.name}",
            produces=mapped(entry.produces),
            consumes=mapped(entry.consumes),
        )
        for entry in entries
    ]


def shared(layer, scope):
    """Entries for every variable of a stock sublayer (a norm): nothing nested."""
    return [
        Nested(f"{scope}/{variable.name}", variable)
        for variable in layer.weights
    ]
