"""Weight surgery between stock keras-hub layers and Mat layers: slicing and widening.

One table of `Link`s per decoder block says, for every stored Mat variable, which stock
variable it corresponds to and along which axes it is nested. A block's links come from its
nesting declaration (`MatLayer.nesting()`, see `keras_matta.layers.nesting`) and a map of
stock variables by entry name (`links`), so the axes and roles are never written twice. The
same table drives both directions, so the nesting of a converted model and of its extraction
cannot disagree:

- `slice_into_stock(links, width)`: stock variable <- the prefix of the Mat variable at
  `width` (extraction: `W_in[:, :k]`, `b_in[:k]`, `W_out[:k, :]`, whole heads);
- `widen_from_stock(links, new_neurons, rng)`: Mat variable <- the stock variable in its prefix
  and freshly initialised TA neurons around it (conversion).

New neurons (the TA's units and heads beyond the pretrained Student's):

- `"in"` variables (the kernels that compute a new neuron: FFN input/gate columns, Q/K/V head
  columns) get `N(0, std(pretrained kernel)^2)` entries, so new units are as active as the
  pretrained ones from the first step;
- `"in_bias"` variables get zeros;
- `"out"` variables (the kernels that read a new neuron: FFN output rows, attention output rows)
  get zeros with `new_neurons="zero_output"`, so the TA starts as an exact copy of the Student,
  or `N(0, std^2)` entries with `new_neurons="random"`.
"""

import dataclasses

import numpy as np
from keras import ops

from keras_matta.layers.nesting import prefix

NEW_NEURONS = ("zero_output", "random")
ROLES = ("shared", "in", "in_bias", "out")


@dataclasses.dataclass
class Link:
    """A stored Mat variable and the stock variable it holds at some width.

    Attributes:
        mat: the Mat layer's variable (full TA size).
        stock: the stock layer's variable (sizes of one width), or `None` where the stock layer
            has no such variable (e.g. untied reverse embeddings).
        axes: `{axis: dimension}`: the axes of `mat` that are nested, and by which nested
            dimension of the block (`"intermediate_dim"`, `"num_heads"`, ...).
        role: `"shared"` (not nested), `"in"`, `"in_bias"` or `"out"` (see the module
            docstring).
    """

    mat: object
    stock: object
    axes: dict = dataclasses.field(default_factory=dict)
    role: str = "shared"

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"`role` must be one of {ROLES}; got {self.role!r}.")


def to_numpy(variable):
    return np.asarray(ops.convert_to_numpy(variable))


def links(layer, stock_variables):
    """The `Link`s of a Mat block's declared variables to a stock block's.

    Args:
        layer: a Mat layer (its `nesting()` names, axes and roles the variables).
        stock_variables: `{entry name: stock variable or None}` covering every served entry.
    """
    entries = [entry for entry in layer.nesting() if entry.served]
    names = {entry.name for entry in entries}
    if names != set(stock_variables):
        raise ValueError(
            f"The stock variables of '{layer.name}' must cover its declared variables "
            f"{sorted(names)}; missing {sorted(names - set(stock_variables))}, unknown "
            f"{sorted(set(stock_variables) - names)}."
        )
    return [
        Link(entry.variable, stock_variables[entry.name], entry.axes, entry.role)
        for entry in entries
    ]


def slice_into_stock(links, width):
    """Assigns every stock variable the prefix of its Mat variable at `width`."""
    for link in links:
        if link.stock is None:
            continue
        value = prefix(to_numpy(link.mat), link.axes, width)
        _assign(link.stock, value)


def widen_from_stock(links, new_neurons, rng):
    """Assigns every Mat variable its stock value as a prefix plus initialised new neurons."""
    if new_neurons not in NEW_NEURONS:
        raise ValueError(f"`new_neurons` must be one of {NEW_NEURONS}; got {new_neurons!r}.")
    for link in links:
        if link.stock is None:
            continue
        _assign(link.mat, widen(to_numpy(link.stock), tuple(link.mat.shape), link, new_neurons,
                                rng))


def widen(stock_value, full_shape, link, new_neurons, rng):
    """`stock_value` placed in the prefix of an array of `full_shape`, new entries initialised."""
    nested = {axis % len(full_shape) for axis in link.axes}
    for axis in range(len(full_shape)):
        if axis not in nested and stock_value.shape[axis] != full_shape[axis]:
            raise ValueError(
                f"Cannot widen '{_path(link.mat)}': axis {axis} is not nested but has size "
                f"{stock_value.shape[axis]} in the stock layer and {full_shape[axis]} in the "
                "Mat layer."
            )
    if tuple(stock_value.shape) == full_shape:
        return stock_value
    random_new = link.role == "in" or (link.role == "out" and new_neurons == "random")
    if random_new:
        scale = float(stock_value.std()) or 0.02
        full = rng.normal(0.0, scale, size=full_shape).astype(stock_value.dtype)
    else:
        full = np.zeros(full_shape, dtype=stock_value.dtype)
    index = tuple(slice(0, size) for size in stock_value.shape)
    full[index] = stock_value
    return full


def _assign(variable, value):
    if tuple(variable.shape) != tuple(value.shape):
        raise ValueError(
            f"Shape mismatch for '{_path(variable)}': expected {tuple(variable.shape)}, got "
            f"{tuple(value.shape)}."
        )
    variable.assign(value.astype(_dtype(variable)))


def _dtype(variable):
    from keras import backend

    return backend.standardize_dtype(variable.dtype)


def _path(variable):
    return getattr(variable, "path", getattr(variable, "name", "variable"))
