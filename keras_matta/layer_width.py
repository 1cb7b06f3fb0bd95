"""One Mat layer's width spec, resolved to `{dimension: width}`.

The per-layer half of width resolution (the spec forms are described in `keras_matta.widths`):
`MatLayer.resolve_width` calls it. It sits below the layers, apart from `keras_matta.widths`,
because that module finds a model's Mat layers and so imports the layers itself.
"""

import math

from keras_matta._validation import is_fraction
from keras_matta._validation import is_int

# Elastic depth: `{"depth": 0}` in a residual block's spec drops the block (its output is its
# input). Fractions and ints never drop a block; only this explicit entry does.
DEPTH = "depth"


def is_dropped(width):
    """Whether a resolved (or selected) width drops its block."""
    return width.get(DEPTH, 1) == 0


def resolve_layer_width(layer_name, nested_dims, spec, primary=None, droppable=False):
    """Resolves one layer's spec into `{dimension: width}`.

    Args:
        layer_name: used in error messages.
        nested_dims: `{dimension: full_size}` of the layer, primary dimension first.
        spec: a float in (0, 1], an int, a dict `{dimension: float | int}` or `None`; for a
            `droppable` layer the dict may hold `"depth": 0` (drop the block) or 1 (keep it).
        primary: the dimension an int spec applies to (default: the first of `nested_dims`).
        droppable: whether the layer is a residual block that elastic depth can drop.

    Returns:
        A dict with one int per nested dimension, and `"depth": 0` for a dropped block.
    """
    if isinstance(spec, dict) and DEPTH in spec:
        depth = spec[DEPTH]
        if not droppable:
            raise ValueError(
                f"Layer '{layer_name}' is not a residual block: it cannot be dropped "
                f"(got {DEPTH!r}: {depth!r})."
            )
        if not is_int(depth) or depth not in (0, 1):
            raise ValueError(
                f"'{DEPTH}' of layer '{layer_name}' must be 0 (drop the block) or 1 (keep it); "
                f"got {depth!r}."
            )
        rest = {dim: value for dim, value in spec.items() if dim != DEPTH}
        width = resolve_layer_width(layer_name, nested_dims, rest or None, primary)
        return {**width, DEPTH: 0} if depth == 0 else width
    if spec is None:
        return dict(nested_dims)
    if not nested_dims:
        raise ValueError(
            f"Layer '{layer_name}' has no nested dimension (e.g. `nested=False`); got width "
            f"{spec!r}, allowed: None."
        )
    primary = primary or next(iter(nested_dims))
    if is_fraction(spec):
        if not 0.0 < spec <= 1.0:
            raise ValueError(
                f"Width fraction for layer '{layer_name}' must be in (0, 1]; got {spec}."
            )
        spec = {dim: spec for dim in nested_dims}
    elif is_int(spec):
        spec = {primary: int(spec)}
    elif not isinstance(spec, dict):
        raise TypeError(
            f"Width spec for layer '{layer_name}' must be a float in (0, 1], an int, or a dict "
            f"of {sorted(nested_dims)}; got {spec!r} of type {type(spec).__name__}."
        )
    unknown = set(spec) - set(nested_dims)
    if unknown:
        raise ValueError(
            f"Unknown nested dimension(s) {sorted(unknown)} for layer '{layer_name}'; "
            f"allowed: {sorted(nested_dims)}."
        )
    widths = dict(nested_dims)
    for dim, value in spec.items():
        full = nested_dims[dim]
        if is_fraction(value):
            if not 0.0 < value <= 1.0:
                raise ValueError(
                    f"Width fraction for '{dim}' of layer '{layer_name}' must be in (0, 1]; "
                    f"got {value}."
                )
            value = math.floor(value * full + 0.5)  # half up: 0.5 of 1 head is 1 head
        elif not is_int(value):
            raise TypeError(
                f"Width for '{dim}' of layer '{layer_name}' must be a float or an int; "
                f"got {value!r}."
            )
        if not 1 <= value <= full:
            raise ValueError(
                f"Width for '{dim}' of layer '{layer_name}' must be in [1, {full}]; got {value}."
            )
        widths[dim] = int(value)
    return widths
