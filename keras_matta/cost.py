"""`cost`: parameters and FLOPs of a nested width, computed without extracting it.

`trace` is the walk behind it: every node of the served forward pass on symbolic tensors, which
`keras_matta.peak_memory` reads too.
"""

import dataclasses
import math
import re

import keras

from keras_matta import graph as graph_lib
from keras_matta import widths as widths_lib


def cost(model, widths=None, input_shape=None):
    """Parameters and per-example FLOPs of `model` run at `widths`.

    The counts are those of the stock model `keras_matta.extract(model, widths)` would return:
    `params` equals its `count_params()` exactly. FLOPs count 2 per multiply-add of every
    matrix product (dense and einsum projections, attention scores and attention-weighted
    values, over the full sequence even under a causal mask); element-wise work (biases,
    activations, normalisation, softmax) is not counted, as in the usual `2 * N * tokens`
    transformer estimate. The same function applied to a stock model gives its own cost, so
    `cost(extract(model, w)) == cost(model, w)`.

    Args:
        model: a Sequential or Functional model (Mat layers optional), or a `MatTA`.
        widths: a width spec (float, int, `{layer_name: spec}` dict) or `None` (full width).
        input_shape: per-example input shape (without batch), needed only where the model's
            input has unknown dimensions, such as a variable sequence length; a list of shapes
            for a model with several inputs.

    Returns:
        A dict `{"params": int, "flops": int}`.

    Example:

    ```python
    model = keras.Sequential([keras.Input((16,)), keras_matta.MatDense(64, activation="relu"),
                              keras_matta.MatDense(10, nested=False)])
    for fraction in (0.25, 0.5, 1.0):
        print(fraction, keras_matta.cost(model, fraction))
    # 0.25 {'params': 442, 'flops': 832}     16 hidden units: 16*16+16 + 16*10+10 parameters
    # 0.5 {'params': 874, 'flops': 1664}
    # 1.0 {'params': 1738, 'flops': 3328}
    student = keras_matta.extract(model, 0.25)               # the stock model it describes
    assert keras_matta.cost(model, 0.25)["params"] == student.count_params()
    ```
    """
    totals = {"params": 0, "flops": 0}
    for step in trace(model, widths, input_shape):
        totals["params"] += step.params
        totals["flops"] += step.flops
    return totals


@dataclasses.dataclass(frozen=True)
class Step:
    """One node of a served forward pass, as `trace` replays it.

    Attributes:
        operation: the layer (a Mat layer, a stock layer) or stateless op computed.
        width: the Mat layer's `{dimension: int}`, or `None` for any other operation.
        inputs: the symbolic tensors it reads (every `KerasTensor` of its arguments).
        outputs: the symbolic tensors it returns.
        params: the parameters it adds (0 for a layer already counted at an earlier call).
        flops: the FLOPs of its matrix products (see `cost`).
    """

    operation: object
    width: object
    inputs: tuple
    outputs: tuple
    params: int
    flops: int


def trace(model, widths=None, input_shape=None, batch_size=1):
    """The nodes of `model` at `widths`, in the order a forward pass computes them.

    The one counting walk (`graph.walk_widths` on symbolic tensors; nothing is built or run):
    `cost` sums its parameters and FLOPs, `keras_matta.peak_memory` reads which tensor each
    node reads and writes. A block that elastic depth drops is no node: its input passes through.

    Args:
        model: a Sequential or Functional model (Mat layers optional), or a `MatTA`.
        widths: a width spec, or `None` (full width).
        input_shape: per-example input shape, where the model's has unknown dimensions.
        batch_size: the batch dimension of the symbolic inputs (FLOPs are summed over it).

    Returns:
        A list of `Step`s; the graph's input tensors are the `inputs` no step wrote.

    Example:

    ```python
    from keras_matta.cost import trace

    model = keras.Sequential([keras.Input((16,)), keras_matta.MatDense(64, name="hidden"),
                              keras_matta.MatDense(10, nested=False, name="logits")])
    steps = trace(model, 0.25, batch_size=8)
    assert [step.operation.name for step in steps] == ["hidden", "logits"]
    assert steps[0].width == {"units": 16} and steps[0].outputs[0].shape == (8, 16)
    assert sum(step.params for step in steps) == keras_matta.cost(model, 0.25)["params"]
    ```
    """
    model = graph_lib.unwrap(model)
    has_mat_layers = bool(widths_lib.mat_layers(model))
    resolved = widths_lib.resolve_widths(model, widths) if has_mat_layers else {}
    graph = graph_lib.functional_graph(model)
    inputs = _example_inputs(graph, input_shape, batch_size)
    steps = []
    counted = set()

    def record(operation, width, args, kwargs, outputs, params, flops):
        steps.append(Step(operation, width, _tensors((args, kwargs)), _tensors(outputs),
                          params, flops))
        return outputs

    def count_mat(layer, width, *args, **kwargs):
        first_shape = tuple(args[0].shape)
        saved = layer.selected_width
        layer._select_width(width)
        try:
            outputs = layer.compute_output_spec(*args, **kwargs)
        finally:
            layer._select_width(saved)
        return record(layer, width, args, kwargs, outputs,
                      layer.param_count(width, first_shape[-1]),
                      layer.matmul_flops(width, first_shape))

    def count_stock(operation, *args, **kwargs):
        params = 0
        if isinstance(operation, keras.layers.Layer) and id(operation) not in counted:
            counted.add(id(operation))
            params = operation.count_params() if operation.weights else 0
        return record(operation, None, args, kwargs,
                      operation.compute_output_spec(*args, **kwargs), params,
                      stock_matmul_flops(operation, *args, **kwargs))

    # Dropped blocks (elastic depth) are skipped by the walker, as `extract` skips them.
    graph_lib.walk_widths(graph, inputs, resolved, count_mat, count_stock)
    return steps


def _tensors(structure):
    return tuple(t for t in keras.tree.flatten(structure) if isinstance(t, keras.KerasTensor))


def stock_matmul_flops(layer, *args, **kwargs):
    """Matmul FLOPs of one call of a stock Keras layer (0 for layers without matmuls)."""
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(args[0].shape) * layer.units
    if isinstance(layer, keras.layers.EinsumDense):
        return einsum_flops(layer.equation, args[0].shape, layer.kernel.shape)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        query = args[0]
        value = args[1] if len(args) > 1 else kwargs["value"]
        key = args[2] if len(args) > 2 else kwargs.get("key")
        key = value if key is None else key
        projections = (
            einsum_flops(layer._query_dense.equation, query.shape, layer._query_dense.kernel.shape)
            + einsum_flops(layer._key_dense.equation, key.shape, layer._key_dense.kernel.shape)
            + einsum_flops(
                layer._value_dense.equation, value.shape, layer._value_dense.kernel.shape
            )
        )
        batch, target = query.shape[0], math.prod(query.shape[1:-1])
        source = math.prod(value.shape[1:-1])
        heads, key_dim = layer.num_heads, layer.key_dim
        value_dim = layer.value_dim or key_dim
        scores = 2 * batch * heads * target * source * key_dim
        mixing = 2 * batch * heads * target * source * value_dim
        output = 2 * batch * target * heads * value_dim * layer._output_dense.kernel.shape[-1]
        return projections + scores + mixing + output
    return 0


def einsum_flops(equation, input_shape, kernel_shape):
    """2 × the product of every index size of a two-operand einsum."""
    operands = equation.split("->")[0].split(",")
    sizes = {}
    for subscripts, shape in zip(operands, (input_shape, kernel_shape)):
        subscripts = re.sub(r"\.\.\.", "", subscripts)
        for index, size in zip(subscripts, shape[-len(subscripts):]):
            sizes[index] = size
    if "..." in operands[0]:
        explicit = len(operands[0]) - 3
        sizes["..."] = math.prod(input_shape[: len(input_shape) - explicit])
    return 2 * math.prod(sizes.values())


def _example_inputs(graph, input_shape, batch_size=1):
    shapes = input_shape
    if shapes is not None and len(graph.inputs) == 1:
        shapes = [shapes]
    placeholders = []
    for i, tensor in enumerate(graph.inputs):
        shape = tuple(shapes[i]) if shapes is not None else tuple(tensor.shape[1:])
        if any(dim is None for dim in shape):
            raise ValueError(
                f"Input '{tensor.name}' of '{graph.name}' has shape {tensor.shape} with unknown "
                "dimensions; pass `input_shape=` (per example, without the batch dimension)."
            )
        placeholders.append(keras.KerasTensor((batch_size,) + shape, dtype=tensor.dtype))
    return placeholders
