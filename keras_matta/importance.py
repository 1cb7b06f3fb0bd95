"""Importance of every nested unit: which neurons, heads and GQA groups a prefix should keep.

A unit is what a width keeps or drops as a whole: an FFN neuron, an attention head, or for
grouped-query attention a whole group of query heads with its key/value head. Its score comes
from the layer's nesting declaration (`keras_matta.layers.nesting`): the variables that read the
unit (its consumers) see its activation, and every variable declared along the unit's axis
holds its weights. Two methods:

- `"activation"` (Minitron): the mean over calibration positions of the L2 norm of the unit's
  activation as its consumer reads it (a neuron's output, a head's context vector),

      s_u = mean_{b, t} || a_u(b, t) ||_2 ;

- `"taylor"` (first-order Taylor, DynaBERT / LLM-Pruner): with `g = dL/dw` summed over the
  calibration batches, the element-wise first-order estimate of the loss change from zeroing
  the unit's weights, over every variable declared along its axis (producers and consumers),

      s_u = sum_{w in unit u} | w * g | .

For GQA, a group's score is the sum of its query heads' scores and its key/value head's.
"""

import collections

import keras
import numpy as np
from keras import ops

from keras_matta import _gradients
from keras_matta import calibration
from keras_matta import graph as graph_lib
from keras_matta import widths as widths_lib
from keras_matta.layers.mat_layer import MatLayer
from keras_matta.layers.nesting import INPUT

METHODS = ("activation", "taylor")

# Layers that apply the same function to every feature, so a permutation of the features
# passes through them unchanged.
_ELEMENTWISE = (
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
)


class Units:
    """The units of one nested dimension of one Mat layer, and every variable axis they own.

    Attributes:
        layer: the outermost Mat layer.
        dimension: its nested dimension (`"units"`, `"intermediate_dim"`, `"num_heads"`, ...).
        group: how many elements of `dimension` move together (query heads per key/value head).
        coupled: the coupled dimension that moves with the groups (`"num_key_value_heads"`).
        axes: `[(entry, axis, per_unit)]`, every declared axis of a unit: `per_unit` elements
            of the axis belong to one unit (`group` along `dimension`, 1 along `coupled`).
        readers: `[(entry, sublayer)]`, the declared variables that read the units, and the
            Mat layer whose call reads them (where activations are observed).
    """

    def __init__(self, layer, dimension, consumers):
        self.layer, self.dimension = layer, dimension
        self.group = layer.width_multiple(dimension)
        self.coupled = next(
            (dim for dim, (primary, _) in layer.coupled_dims().items() if primary == dimension),
            None,
        )
        self.axes, self.readers = [], []
        for entry in layer.nesting():
            for axis, dim in entry.axes.items():
                if dim == dimension:
                    self.axes.append((entry, axis, self.group))
                elif dim == self.coupled:
                    self.axes.append((entry, axis, 1))
            if dimension in entry.consumes.values():
                self.readers.append((entry, _owner(layer, entry.variable)))
        for consumer in consumers:  # Mat layers reading this layer's output features
            for entry in consumer.nesting():
                if INPUT in entry.consumes.values():
                    axis = next(a for a, d in entry.consumes.items() if d == INPUT)
                    self.axes.append((entry, axis, self.group))
                    self.readers.append((entry, _owner(consumer, entry.variable)))

    @property
    def count(self):
        return self.layer.nested_dims()[self.dimension] // self.group


def nested_units(model):
    """Every reorderable `Units` of `model`, and `{layer name: reason}` for the ones skipped.

    A Mat layer whose output features are nested (a `MatDense`) can be reordered only when
    every path from its output reaches Mat layers that read their input by prefix, through
    element-wise layers: anything else (the model output, a stock layer) would see its features
    in a new order.
    """
    layers = widths_lib.mat_layers(model)
    consumers, skipped = _feature_consumers(model, layers)
    units = []
    for layer in layers:
        for dimension in layer.nested_dims():
            if dimension == layer.output_dimension() and layer.name in skipped:
                continue
            reads = consumers.get(layer, []) if dimension == layer.output_dimension() else []
            units.append(Units(layer, dimension, reads))
    return units, skipped


def scores(model, units, batches, method, loss=None, progress=None):
    """`[np.ndarray]`: one score per unit for each `Units`, from calibration `batches`.

    Args:
        model: the model the units belong to, called on each batch (inference mode).
        units: the `Units` to score (from `nested_units`).
        batches: a list of `(x, y, sample_weight)`; `y` is used by `"taylor"` only.
        method: one of `METHODS`.
        loss: `loss(y, y_pred, sample_weight=...)`, for `"taylor"`.
        progress: an object with `update(step)` (a `keras.utils.Progbar`), or `None`.
    """
    if method == "activation":
        return _activation_scores(model, units, batches, progress)
    return _taylor_scores(model, units, batches, loss, progress)


# === Activation ===


class _MeanNorm:
    """Accumulates the mean over positions of each unit's L2 norm (`unit_axis` of a tensor)."""

    def __init__(self, group):
        self.group, self.total, self.count = group, 0.0, 0

    def __call__(self, tensor, unit_axis):
        x = np.asarray(ops.convert_to_numpy(ops.cast(tensor, "float32")), "float64")
        unit_vector = tuple(range(x.ndim + unit_axis + 1, x.ndim))  # e.g. a head's features
        norms = np.sqrt(np.sum(np.square(x), axis=unit_vector))  # (..., units)
        norms = norms.reshape(-1, norms.shape[-1])  # (positions, units)
        self.total = self.total + norms.sum(axis=0)
        self.count += norms.shape[0]

    def mean(self):
        per_element = self.total / max(self.count, 1)
        return per_element.reshape(-1, self.group).sum(axis=1)


def _activation_scores(model, units, batches, progress):
    probes = []
    for group in units:
        probes.append([])
        for entry, owner in group.readers:
            probe = _MeanNorm(group.group)
            owner.__dict__.setdefault("_probes", {})[_own_name(owner, entry.variable)] = probe
            probes[-1].append(probe)
    try:
        for step, (x, _, _) in enumerate(batches):
            model(x, training=False)
            if progress is not None:
                progress.update(step + 1)
    finally:
        for group in units:
            for _, owner in group.readers:
                owner.__dict__.pop("_probes", None)
    return [sum(probe.mean() for probe in group_probes) for group_probes in probes]


# === Taylor ===


def _taylor_scores(model, units, batches, loss, progress):
    variables = list(model.trainable_variables)
    totals = None
    for step, (x, y, sample_weight) in enumerate(batches):
        def batch_loss(x=x, y=y, sample_weight=sample_weight):
            return loss(y, model(x, training=False), sample_weight=sample_weight)

        _, gradients = _gradients.value_and_gradients(batch_loss, variables)
        gradients = [np.asarray(ops.convert_to_numpy(g), dtype="float64") for g in gradients]
        totals = gradients if totals is None else [t + g for t, g in zip(totals, gradients)]
        if progress is not None:
            progress.update(step + 1)
    gradient_of = {id(v): g for v, g in zip(variables, totals)}
    result = []
    for group in units:
        score = np.zeros(group.count)
        for entry, axis, _ in group.axes:  # a GQA group's heads are consecutive on the axis
            gradient = gradient_of.get(id(entry.variable))
            if gradient is None:  # a frozen variable: no first-order change
                continue
            weight = np.asarray(ops.convert_to_numpy(entry.variable), dtype="float64")
            saliency = np.moveaxis(np.abs(weight * gradient), axis, 0)
            score += saliency.reshape(group.count, -1).sum(axis=1)
        result.append(score)
    return result


# === Helpers ===


def _owner(layer, variable):
    """The innermost Mat layer under `layer` that declares `variable` itself (it observes it)."""
    owner = layer
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sublayer, MatLayer) and any(
            entry.variable is variable for entry in sublayer.nesting()
        ):
            owner = sublayer
    return owner


def _own_name(owner, variable):
    return next(entry.name for entry in owner.nesting() if entry.variable is variable)


def _feature_consumers(model, layers):
    """`({producer: [Mat consumers]}, {producer name: reason})` for layers with nested outputs."""
    producers = [layer for layer in layers if layer.output_dimension() is not None]
    if not producers:
        return {}, {}
    graph = graph_lib.functional_graph(model)
    sources = {}  # id(symbolic tensor) -> producers whose units its features are
    consumers, skipped = collections.defaultdict(list), {}

    def visit(operation, *args, **kwargs):
        tensors = [
            t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)
        ]
        incoming = set().union(*(sources.get(id(t), set()) for t in tensors))
        reads_prefix = isinstance(operation, MatLayer) and any(
            INPUT in entry.consumes.values() for entry in operation.nesting()
        )
        for producer in incoming:
            if reads_prefix:
                consumers[producer].append(operation)
            elif not isinstance(operation, _ELEMENTWISE):
                skipped.setdefault(producer.name, f"its output reaches '{operation.name}'")
        outgoing = incoming if isinstance(operation, _ELEMENTWISE) else set()
        if operation in producers:
            outgoing = {operation}
        outputs = operation.compute_output_spec(*args, **kwargs)
        for tensor in keras.tree.flatten(outputs):
            sources[id(tensor)] = outgoing
        return outputs

    outputs = graph_lib.walk(graph, graph_lib.input_placeholders(graph), visit)
    for tensor in keras.tree.flatten(outputs):
        for producer in sources.get(id(tensor), ()):
            skipped.setdefault(producer.name, "its output is a model output")
    return dict(consumers), skipped


# === Blocks (elastic depth) ===


def block_importance(model, data, batch_size=32, steps=None):
    """How much each residual block changes the hidden state: which blocks depth can drop.

    For a block with input `x` and output `y` at every position, the block influence (Men et
    al.'s ShortGPT, the depth score of Minitron and Nemotron Elastic) is

        s = mean_{b, t} ( 1 - x . y / (||x|| ||y||) ),

    near 0 for a block that leaves the residual stream almost unchanged (a candidate to drop
    with `{"depth": 0}`), larger for a block that rewrites it.

    Args:
        model: a model with droppable Mat blocks (`MatTransformerBlock`, the keras-hub Mat
            decoders), or a `keras_matta.MatTA`.
        data: calibration data, as `keras_matta.reorder` takes it.
        batch_size: batch size for array data. Defaults to 32.
        steps: the number of batches to use (default: all).

    Returns:
        `{block name: score}`, in the model's block order.

    Example:

    ```python
    inputs = keras.Input((6, 16))
    x = keras_matta.MatTransformerBlock(32, 2, name="block_0")(inputs)
    x = keras_matta.MatTransformerBlock(32, 2, name="block_1")(x)
    model = keras.Model(inputs, x)
    scores = keras_matta.block_importance(model, np.random.rand(8, 6, 16).astype("float32"))
    weakest = min(scores, key=scores.get)
    small = keras_matta.extract(model, {weakest: {"depth": 0}})   # one block fewer
    ```

    Reference:
        Men et al., "ShortGPT: Layers in Large Language Models are More Redundant Than You
        Expect", 2024; Muralidharan et al., "Compact Language Models via Pruning and Knowledge
        Distillation" (Minitron), 2024.
    """
    model = graph_lib.unwrap(model)
    blocks = [layer for layer in widths_lib.mat_layers(model) if layer.droppable]
    if not blocks:
        raise ValueError(
            f"Model '{model.name}' has no droppable block (MatTransformerBlock, a keras-hub Mat "
            "decoder): there is no depth to score."
        )
    batches = calibration.batches(data, batch_size, steps)
    calibration.check_batches(model, batches, needs_targets=False)
    probes = {block: _BlockInfluence() for block in blocks}
    for block, probe in probes.items():
        block.__dict__.setdefault("_probes", {})["residual"] = probe
    try:
        for x, _, _ in batches:
            model(x, training=False)
    finally:
        for block in blocks:
            block.__dict__.pop("_probes", None)
    return {block.name: probe.mean() for block, probe in probes.items()}


class _BlockInfluence:
    """Accumulates `1 - cos(x, y)` over positions for a block's `(input, output)` pair."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def __call__(self, tensors, unit_axis):
        x, y = (np.asarray(ops.convert_to_numpy(ops.cast(t, "float32")), "float64")
                for t in tensors)
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        norms = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
        cosine = np.sum(x * y, axis=-1) / np.maximum(norms, 1e-12)
        self.total += float(np.sum(1.0 - cosine))
        self.count += len(cosine)

    def mean(self):
        return self.total / max(self.count, 1)
