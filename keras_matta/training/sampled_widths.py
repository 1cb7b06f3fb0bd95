"""Sub-networks at widths drawn afresh on every training step, one width per layer."""

import contextlib

import keras
from keras import ops

from keras_matta import widths as widths_lib
from keras_matta.layer_width import DEPTH
from keras_matta.layers.sampled_width import SampledWidth

DISTRIBUTIONS = ("range", "granularities", "either")


def check_distribution(distribution):
    """`distribution` if it names one of `DISTRIBUTIONS`; a `ValueError` naming it if not."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"`sampled_width_distribution` must be one of {DISTRIBUTIONS}; got "
                         f"{distribution!r}.")
    return distribution


class WidthDraws:
    """Draws a Mix'n'Match sub-network: a width for every nested dimension of every Mat layer.

    For each Mat layer `l` and nested dimension `d`, independently per layer, the width is

    - `"range"`: an integer drawn uniformly from `[low_ld, full_ld]`, where `low_ld` is the
      smallest width any Student gives `d` in `l`. This is the sandwich rule of universally
      slimmable networks (the largest, the smallest and random widths in one step), drawn per
      layer so that the widths between the Students are trained as well as the mixes;
    - `"granularities"`: one of the trained widths of `d` in `l` (each Student's, and the
      full width) drawn uniformly, as MatFormer's Mix'n'Match draws per-layer granularities:
      every per-layer mix of trained widths is drawn with the same probability;
    - `"either"`: a fair coin per layer and dimension picks one of the two rules above.

    The draws are tensors (`keras.random` on a `SeedGenerator` the caller owns), applied as
    masks (`SampledWidth`): one compiled train function serves every draw.

    Args:
        model: the TA.
        student_widths: the Students' width specs; they set each dimension's trained widths
            and its smallest.
        distribution: `"range"` (default), `"granularities"` or `"either"`.

    Example:

    ```python
    ta = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(32, name="hidden"),
                           keras_matta.MatDense(2, nested=False)])
    draws = keras_matta.training.WidthDraws(ta, [0.25, 0.5])
    assert draws.ranges == {"hidden": {"units": (8, 32)}}
    assert draws.granularities == {"hidden": {"units": (8, 16, 32)}}
    seeds = keras.random.SeedGenerator(0)
    with draws.scope(seeds):      # `hidden` runs at a width drawn from 8..32
        outputs = ta(np.ones((1, 8), "float32"))
    ```

    Reference:
        Yu & Huang, "Universally Slimmable Networks and Improved Training Techniques",
        ICCV 2019; Devvrit et al., "MatFormer: Nested Transformer for Elastic Inference",
        NeurIPS 2024.
    """

    def __init__(self, model, student_widths, distribution="range"):
        self.distribution = check_distribution(distribution)
        # {layer: {dimension: sorted trained widths, the full width last}}
        self._trained = {}
        for spec in student_widths:
            for layer, width in widths_lib.resolve_widths(model, spec).items():
                if not width:
                    continue  # no nested dimension (a `nested=False` head)
                trained = self._trained.setdefault(
                    layer, {dim: {full} for dim, full in layer.nested_dims().items()})
                for dim, value in width.items():
                    if dim != DEPTH:  # drawn sub-networks keep every block
                        trained[dim].add(value)
        self._trained = {layer: {dim: tuple(sorted(values)) for dim, values in dims.items()}
                         for layer, dims in self._trained.items()}

    def _varying(self):
        return {layer: {dim: values for dim, values in dims.items() if len(values) > 1}
                for layer, dims in self._trained.items()}

    @property
    def ranges(self):
        """`{layer name: {dimension: (lowest, full)}}` of the layers that vary."""
        return {layer.name: {dim: (values[0], values[-1]) for dim, values in dims.items()}
                for layer, dims in self._varying().items() if dims}

    @property
    def granularities(self):
        """`{layer name: {dimension: trained widths ascending}}` of the layers that vary."""
        return {layer.name: dims for layer, dims in self._varying().items() if dims}

    def _draw(self, layer, dim, seed_generator):
        """A scalar int tensor: the width of `dim` in `layer` for one draw."""
        trained = self._trained[layer][dim]

        def in_range():
            # In steps of whole groups where the layer has them (GQA query heads).
            step = layer.width_multiple(dim)
            return step * keras.random.randint(
                (), -(-trained[0] // step), trained[-1] // step + 1, dtype="int32",
                seed=seed_generator)

        def granularity():
            index = keras.random.randint((), 0, len(trained), dtype="int32",
                                         seed=seed_generator)
            return ops.take(ops.convert_to_tensor(trained, "int32"), index)

        if self.distribution == "range":
            return in_range()
        if self.distribution == "granularities":
            return granularity()
        coin = keras.random.randint((), 0, 2, dtype="int32", seed=seed_generator)
        return ops.where(ops.equal(coin, 1), granularity(), in_range())

    @contextlib.contextmanager
    def scope(self, seed_generator):
        """A context in which the TA runs at one fresh draw; yields `{layer: {dim: width}}`."""
        selection = {layer: {dim: SampledWidth(self._draw(layer, dim, seed_generator))
                             for dim in dims}
                     for layer, dims in self._trained.items()}
        saved = widths_lib.select(selection)
        try:
            yield selection
        finally:
            widths_lib.select(saved)
