"""Sub-networks at widths drawn afresh on every training step, one width per layer."""

import contextlib

import keras

from keras_matta import widths as widths_lib
from keras_matta.layer_width import DEPTH
from keras_matta.layers.sampled_width import SampledWidth


class WidthDraws:
    """Draws a Mix'n'Match sub-network: every nested dimension of every Mat layer uniformly.

    For each Mat layer `l` and nested dimension `d`, the width is an integer drawn uniformly
    from `[low_ld, full_ld]`, independently per layer, where `low_ld` is the smallest width any
    Student gives `d` in `l`. This is the sandwich rule of universally slimmable networks (the
    largest, the smallest and random widths in one step), drawn per layer so that the per-layer
    mixes MatTA serves are trained as well as the uniform widths between the Students.

    The draws are tensors (`keras.random.randint` on a `SeedGenerator` the caller owns), applied
    as masks (`SampledWidth`): one compiled train function serves every draw.

    Args:
        model: the TA.
        student_widths: the Students' width specs; their smallest width of each dimension is
            the lower end of its range.

    Example:

    ```python
    ta = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(32, name="hidden"),
                           keras_matta.MatDense(2, nested=False)])
    draws = keras_matta.training.WidthDraws(ta, [0.25, 0.5])
    assert draws.ranges == {"hidden": {"units": (8, 32)}}
    seeds = keras.random.SeedGenerator(0)
    with draws.scope(seeds):      # `hidden` runs at a width drawn from 8..32
        outputs = ta(np.ones((1, 8), "float32"))
    ```
    """

    def __init__(self, model, student_widths):
        self._layers = {}
        for spec in student_widths:
            for layer, width in widths_lib.resolve_widths(model, spec).items():
                if not width:
                    continue  # no nested dimension (a `nested=False` head)
                low = self._layers.setdefault(layer, dict(layer.nested_dims()))
                for dim, value in width.items():
                    if dim != DEPTH:  # drawn sub-networks keep every block
                        low[dim] = min(low[dim], value)

    @property
    def ranges(self):
        """`{layer name: {dimension: (lowest, full)}}` of the layers that vary."""
        return {
            layer.name: {dim: (low[dim], layer.nested_dims()[dim]) for dim in low
                         if low[dim] < layer.nested_dims()[dim]}
            for layer, low in self._layers.items()
            if any(low[dim] < layer.nested_dims()[dim] for dim in low)
        }

    @contextlib.contextmanager
    def scope(self, seed_generator):
        """A context in which the TA runs at one fresh draw; yields `{layer: {dim: width}}`."""
        selection = {}
        for layer, low in self._layers.items():
            full = layer.nested_dims()
            selection[layer] = {}
            for dim in full:
                # Draw in steps of whole groups where the layer has them (GQA query heads).
                step = layer.width_multiple(dim)
                count = keras.random.randint((), -(-low[dim] // step), full[dim] // step + 1,
                                             dtype="int32", seed=seed_generator)
                selection[layer][dim] = SampledWidth(count * step)
        saved = widths_lib.select(selection)
        try:
            yield selection
        finally:
            widths_lib.select(saved)
