"""`extract`: a nested width of a Mat model as a standalone model of stock Keras layers."""

import re

import keras

from keras_matta import graph as graph_lib
from keras_matta import widths as widths_lib
from keras_matta.layers.mat_layer import MatLayer


def extract(model, widths, name=None):
    """Returns a standalone model of stock Keras layers equal to `model` run at `widths`.

    Every Mat layer is replaced by the stock layers it is equivalent to at its selected width
    (`MatDense` → `Dense`, `MatTransformerBlock` → `LayerNormalization`, `MultiHeadAttention`,
    `Dense`, `Dropout`, `Add`), holding copies of the sliced weights; every other layer is
    cloned with a copy of its weights. The result shares nothing with `model`, has the
    parameter count `keras_matta.cost(model, widths)["params"]` and loads from a `.keras` file
    in a process that never imports keras_matta.

    For a `MatDense` with kernel `W` `(d_in, units)` and bias `b`, run at `k` units on an input
    of `m` features (the previous layer's width):

        extract(MatDense)  =  Dense(k)  with  kernel = W[:m, :k],  bias = b[:k]

    and likewise for the FFN and head slices of the other Mat layers, so the stock model
    computes exactly what `model` computes at `widths`.

    Args:
        model: a Sequential or Functional model built from Mat layers, or a `keras_matta.MatTA`
            (its TA is extracted).
        widths: a width spec: a float in (0, 1], an int, a `{layer_name: spec}` dict
            (Mix'n'Match), or `None` for the full width.
        name: name of the returned model (default: `"<model>_<width label>"`).

    Returns:
        A Functional `keras.Model` whose outputs equal `model`'s outputs inside
        `keras_matta.WidthScope(model, widths)`.

    Example:

    ```python
    ta = keras.Sequential([keras.Input((16,)), keras_matta.MatDense(64, activation="relu"),
                           keras_matta.MatDense(10, nested=False)])
    student = keras_matta.extract(ta, 0.25)   # Dense(16, relu) -> Dense(10), sliced weights
    student.save("student.keras")   # loads with plain keras.saving.load_model
    x = np.random.rand(4, 16).astype("float32")
    with keras_matta.WidthScope(ta, 0.25):
        expected = ta(x)
    np.testing.assert_allclose(ops.convert_to_numpy(student(x)), ops.convert_to_numpy(expected),
                               rtol=1e-5, atol=1e-6)
    ```

    Reference:
        Devvrit et al., "MatFormer: Nested Transformer for Elastic Inference", 2023 (extracting
        submodels and Mix'n'Match); Verma et al., "Matryoshka Model Learning for Improved
        Elastic Student Models", KDD 2025 (arXiv 2505.23337).
    """
    model = graph_lib.unwrap(model)
    if hasattr(model, "extract_stock"):  # keras_matta.hub models: back to the keras-hub class
        return model.extract_stock(widths, name=name)
    resolved = widths_lib.resolve_widths(model, widths)
    if name is None:
        label = re.sub(r"\W+", "_", widths_lib.width_label(widths)).strip("_")
        name = f"{model.name}_{label}"
    return rebuild_stock(model, resolved, name)


def rebuild_stock(model, resolved, name):
    """`model`'s graph rebuilt with each Mat layer replaced by its stock export.

    The one graph rebuild behind extraction: `extract` for any Functional or Sequential model,
    and `keras_matta.hub.MatBackbone.extract_stock` for a Mix'n'Match spec that no keras-hub
    class can hold. Each Mat layer becomes `layer.export(inputs, width)`, a block that elastic
    depth drops is skipped, and every other layer is cloned once with a copy of its weights (a
    layer called twice stays one shared layer).

    Args:
        model: a Functional or Sequential model whose Mat layers are each called once.
        resolved: `{mat_layer: width}` for every Mat layer of `model`, as
            `keras_matta.resolve_widths` returns.
        name: name of the returned model.

    Returns:
        A Functional `keras.Model` with `model`'s inputs (a dict of inputs stays a dict) that
        shares no variable with `model`.
    """
    graph = graph_lib.functional_graph(model)
    for layer in resolved:
        if len(layer._inbound_nodes) > 1:
            raise ValueError(
                f"Mat layer '{layer.name}' is called {len(layer._inbound_nodes)} times in "
                f"'{model.name}'; extract() supports Mat layers called once."
            )
    clones = {}

    def export(layer, width, *args, **kwargs):
        return layer.export(args[0] if len(args) == 1 else args, width, **kwargs)

    def clone(operation, *args, **kwargs):
        if isinstance(operation, MatLayer):  # not in `resolved`: hidden inside another layer
            raise TypeError(
                f"Mat layer '{operation.name}' is nested inside non-Mat layer; extract() "
                "needs Mat layers at the top level of a Functional/Sequential graph."
            )
        if not isinstance(operation, keras.layers.Layer):
            return operation(*args, **kwargs)  # a stateless op such as keras.ops.add
        copy = clones.get(id(operation))
        if copy is not None:
            return copy(*args, **kwargs)
        copy = clones[id(operation)] = operation.__class__.from_config(operation.get_config())
        outputs = copy(*args, **kwargs)  # builds it, so the weights can be set
        copy.set_weights(operation.get_weights())
        return outputs

    inputs = graph_lib.input_placeholders(graph)
    outputs = graph_lib.walk_widths(graph, inputs, resolved, export, clone)
    struct = getattr(graph, "_inputs_struct", None)
    if isinstance(struct, dict):  # keras-hub backbones are called with a dict of inputs
        inputs = keras.tree.pack_sequence_as(struct, inputs)
    elif len(inputs) == 1:
        inputs = inputs[0]
    return keras.Model(inputs, outputs, name=name)
