"""The contract every Mat layer implements."""

import keras
from keras import ops

from keras_matta.layer_width import resolve_layer_width
from keras_matta.layers import nesting as nesting_lib
from keras_matta.layers.sampled_width import SampledWidth


class MatLayer:
    """Mixin for layers whose kernels are shared across nested widths.

    A Mat layer stores its full (TA) kernels once. At call time it runs at a *selected width*:
    the prefix of each nested dimension chosen by an explicit `width=` argument, else by the
    enclosing `keras_matta.WidthScope`, else the full width. Subclasses implement:

    - `nested_dims()`: `{dimension: full_size}`, primary dimension first;
    - `nesting()`: the declaration of which axes of which stored variable are prefixes of which
      dimension (a list of `keras_matta.layers.nesting.Nested`, see that module). Slicing,
      parameter counts, keras-hub links, distribution layouts and importance reordering all
      derive from it;
    - `export(inputs, width, **call_kwargs)`: builds stock Keras layers equal to this layer at
      `width`, calls them on the symbolic `inputs` (with the keyword arguments this layer was
      called with), copies the sliced weights in and returns the symbolic outputs; used by
      `keras_matta.extract`;
    - `matmul_flops(width, input_shape)`: FLOPs (2 per multiply-add) of the matrix products
      for an input of `input_shape` (batch dimension included, FLOPs summed over it).

    and may override `coupled_dims()` for dimensions that follow another one.

    `keras_matta.WidthScope`, `keras_matta.MatTA`, `keras_matta.extract` and
    `keras_matta.cost` find a model's Mat layers by this class.

    Example:

    ```python
    layer = keras_matta.MatDense(64)
    assert isinstance(layer, keras_matta.MatLayer)
    layer.nested_dims()          # {"units": 64}: the dimensions a width takes a prefix of
    layer.resolve_width(0.25)    # {"units": 16}: a width spec for this layer, validated
    layer.selected_width         # None: full width, unless a WidthScope selects another
    ```
    """

    # Transient call state, never serialized: set only by `WidthScope` or `_select_width`.
    _selected_width = None
    #: whether the layer is a residual block that elastic depth can drop (`{"depth": 0}`).
    droppable = False

    def nested_dims(self):
        raise NotImplementedError

    def nesting(self):
        raise NotImplementedError

    def output_dimension(self):
        """The nested dimension the layer's output features are units of (`None`: not nested).

        Only a layer like `MatDense` returns one: the next layer then reads a prefix of them.
        """
        return None

    def coupled_dims(self):
        """`{dimension: (primary, ratio)}`: dimensions sized `primary // ratio`, unit `i` of which
        goes with units `i * ratio ... (i + 1) * ratio - 1` of `primary` (GQA key/value heads)."""
        return {}

    def complete_width(self, width):
        """`width` with its coupled dimensions filled in."""
        width = dict(width)
        for dimension, (primary, ratio) in self.coupled_dims().items():
            if primary in width:
                width[dimension] = width[primary] // ratio
        return width

    def param_count(self, width, input_dim):
        """The parameter count of the stock equivalent at `width` on `input_dim` features."""
        width = self.complete_width({**width, nesting_lib.INPUT: input_dim})
        return nesting_lib.count_params(self.nesting(), width)

    def sliced_weights(self, width, input_dim=None):
        """The served weights at `width`, as NumPy arrays in declaration order."""
        width = self.complete_width(width)
        if input_dim is not None:
            width[nesting_lib.INPUT] = input_dim
        return [
            nesting_lib.prefix(ops.convert_to_numpy(entry.served_value()), entry.axes, width)
            for entry in self.nesting()
            if entry.served
        ]

    def _slice(self, name, width, value=None):
        """Variable `name` (or `value`, a tensor computed from it) at `width`, as declared."""
        # Called several times per forward pass: the declaration is read once per built layer
        # (its variables and axes do not change after `build`), not rebuilt on every call.
        entries = self.__dict__.get("_declared_entries")
        if entries is None:
            entries = {entry.name: entry for entry in self.nesting()}
            self.__dict__["_declared_entries"] = entries  # call-time cache, never serialized
        entry = entries[name]
        value = entry.variable if value is None else value
        if isinstance(value, keras.Variable):
            # Its tensor (autocast as `Variable.__getitem__` would): torch.compile cannot trace
            # indexing the variable object itself and falls back to eager for the whole layer.
            value = value.value
        return nesting_lib.prefix(value, entry.axes, self.complete_width(width))

    def resolve_width(self, spec):
        """Validates a per-layer spec and returns `{dimension: width}`."""
        return resolve_layer_width(self.name, self.nested_dims(), spec,
                                   droppable=self.droppable)

    @property
    def selected_width(self):
        """The width selected by the enclosing scope (`None`: full width)."""
        return self._selected_width

    def width_multiple(self, dimension):
        """The step between valid widths of `dimension`: 1, or the ratio of a dimension coupled
        to it (whole GQA groups of query heads)."""
        ratios = [ratio for primary, ratio in self.coupled_dims().values() if primary == dimension]
        return max(ratios, default=1)

    def _select_width(self, width):
        # Written straight into __dict__: a selection is call state, not layer state, and must
        # bypass Keras' attribute tracking (and torch's Module.__setattr__).
        self.__dict__["_selected_width"] = width

    def _observe(self, name, tensor, unit_axis):
        """Hands `tensor`, the input that declared variable `name` reads, to an attached probe.

        Probes are attached only while `keras_matta.importance` scores units: it is call state,
        like the selected width, and costs one dictionary lookup otherwise.
        """
        probe = self.__dict__.get("_probes", {}).get(name)
        if probe is not None:
            probe(tensor, unit_axis)

    def _active_width(self, width=None):
        """The `{dimension: width}` to run at: explicit argument, else scope, else full."""
        if isinstance(width, SampledWidth):
            # A parent layer hands its sublayer one drawn width of the primary dimension.
            return {next(iter(self.nested_dims())): width}
        if width is not None:
            return self.resolve_width(width)
        if self._selected_width is not None:
            return self._selected_width
        return self.nested_dims()

    def export(self, inputs, width, **call_kwargs):
        raise NotImplementedError

    def matmul_flops(self, width, input_shape):
        raise NotImplementedError
