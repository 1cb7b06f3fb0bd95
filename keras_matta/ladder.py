"""A ladder of Student widths: the granularities of a family, without listing every spec."""

import math
import numbers

from keras_matta import widths as widths_lib


def ladder(model, smallest, num_widths=None, factor=2.0):
    """Student width specs from just below the TA down to `smallest`, for `MatTA`.

    Every nested dimension of every Mat layer gets a rung per granularity:

    - geometric (the default, `num_widths=None`): `f_r = max(s, factor^-r)` for `r = 1, 2, ...`
      until every dimension has reached its smallest fraction `s` (MatFormer's halvings);
    - linear (`num_widths=n`): `f_r = s + r (1 - s) / n` for `r = 0, ..., n - 1`.

    `smallest` is one fraction for every nested dimension, or a dict by layer class name or
    layer name (`{"MatTransformerBlock": {"intermediate_dim": 0.125, "num_heads": 0.5}}`), in
    which case each dimension descends to its own smallest fraction and stops there while others
    go on; layers the dict does not name stay at full width. Rungs that resolve to the same
    integer widths are kept once.

    Args:
        model: the TA (a model containing Mat layers).
        smallest: a fraction in (0, 1), or a dict `{class or layer name: fraction or
            {dimension: fraction}}`.
        num_widths: the number of Students, evenly spaced (linear), or `None` for the
            geometric ladder.
        factor: the ratio between geometric rungs, > 1. Defaults to 2 (halvings).

    Returns:
        A list of width specs, smallest first: floats for a single fraction, else
        `{layer name: {dimension: width}}` dicts.

    Example:

    ```python
    ta = keras.Sequential([keras.Input((16,)), keras_matta.MatDense(64, name="hidden"),
                           keras_matta.MatDense(10, nested=False, name="logits")])
    assert keras_matta.ladder(ta, 0.125) == [0.125, 0.25, 0.5]
    assert keras_matta.ladder(ta, 0.25, num_widths=3) == [0.25, 0.5, 0.75]
    rungs = keras_matta.ladder(ta, {"MatDense": 0.25})
    assert rungs == [{"hidden": {"units": 16}}, {"hidden": {"units": 32}}]
    mat_ta = keras_matta.MatTA(ta, student_widths=rungs)
    ```
    """
    if num_widths is not None and (isinstance(num_widths, bool)
                                   or not isinstance(num_widths, numbers.Integral)
                                   or num_widths < 1):
        raise ValueError(f"`num_widths` must be None or an int >= 1; got {num_widths!r}.")
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not factor > 1:
        raise ValueError(f"`factor` must be a number > 1; got {factor!r}.")
    layers = [layer for layer in widths_lib.mat_layers(model) if layer.nested_dims()]
    if not layers:
        raise ValueError(f"Model '{model.name}' has no nested Mat layer to build a ladder for.")
    if not isinstance(smallest, dict):
        return [float(f) for f in _fractions(_fraction(smallest, "smallest"), num_widths,
                                             factor)]
    rungs_of = {layer: {dim: _fractions(floor, num_widths, factor) for dim, floor in dims.items()}
                for layer, dims in _floors(layers, smallest).items()}
    depth = max(len(rungs) for dims in rungs_of.values() for rungs in dims.values())
    specs, seen = [], set()
    for r in range(depth):
        # Shorter ladders stay at their smallest rung while longer ones go on down.
        spec = {layer.name: {dim: max(1, math.floor(rungs[max(0, len(rungs) - depth + r)]
                                                    * layer.nested_dims()[dim] + 0.5))
                             for dim, rungs in dims.items()}
                for layer, dims in rungs_of.items()}
        key = tuple(sorted((name, tuple(sorted(d.items()))) for name, d in spec.items()))
        narrower = any(spec[layer.name][dim] < layer.nested_dims()[dim]
                       for layer, dims in rungs_of.items() for dim in dims)
        if key not in seen and narrower:
            seen.add(key)
            specs.append(spec)
    return specs


def _fraction(value, where):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"`{where}` must be a fraction in (0, 1); got {value!r}.")
    return float(value)


def _fractions(floor, num_widths, factor):
    """The rungs of one dimension, smallest first, all below 1."""
    if num_widths is not None:
        return [floor + r * (1.0 - floor) / num_widths for r in range(num_widths)]
    rungs, r = [], 1
    while factor ** -r > floor * (1 + 1e-9):
        rungs.append(factor ** -r)
        r += 1
    return [floor] + rungs[::-1]


def _floors(layers, smallest):
    """`{layer: {dimension: smallest fraction}}` of the layers a per-layer ladder varies."""
    names = {layer.name for layer in layers} | {type(layer).__name__ for layer in layers}
    if not smallest:
        raise ValueError(f"`smallest` must name at least one of {sorted(names)}; got {{}}.")
    unknown = sorted(set(smallest) - names)
    if unknown:
        raise ValueError(
            f"Unknown layer or class name(s) {unknown} in `smallest`; allowed: {sorted(names)}."
        )
    floors = {}
    for layer in layers:
        value = smallest.get(layer.name, smallest.get(type(layer).__name__))
        if value is None:
            continue
        dims = layer.nested_dims()
        if not isinstance(value, dict):
            value = {dim: value for dim in dims}
        bad = sorted(set(value) - set(dims))
        if bad:
            raise ValueError(
                f"Unknown nested dimension(s) {bad} for layer '{layer.name}' in `smallest`; "
                f"allowed: {sorted(dims)}."
            )
        floors[layer] = {dim: _fraction(f, f"smallest['{layer.name}']['{dim}']")
                         for dim, f in value.items()}
    return floors
