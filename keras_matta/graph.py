"""Walking the layer graph of a Sequential or Functional model.

`extract` (and through it the Mix'n'Match extraction of `keras_matta.hub` backbones) and `cost`
replay a model's graph node by node on new tensors; this module holds the one walker they share.
Nested functional sub-models are inlined, so a Mat layer anywhere in the graph is reached.
"""

import keras

from keras_matta.layer_width import is_dropped


def unwrap(model):
    """The model a trainer wraps (the TA of a `keras_matta.MatTA`); any other model unchanged.

    A trainer is recognised by its shape, not its class, so this walker needs nothing from the
    training package built on top of it: a subclassed model (no recorded graph to walk) that holds
    a `keras.Model` as `.model`, as `MatTA` holds its TA.

    Args:
        model: a `keras.Model`, or a trainer around one.

    Returns:
        The wrapped model for a trainer, else `model` itself.
    """
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, keras.Model) and _is_leaf(model) else model


def functional_graph(model):
    """Returns the `Functional` graph behind `model`.

    Raises:
        ValueError: a Sequential model that was never built on a known input shape.
        TypeError: a subclassed model, whose graph Keras does not record.
    """
    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:
            raise ValueError(
                f"Sequential model '{model.name}' has no input shape yet: start it with "
                "`keras.Input(shape)` or call `model.build(input_shape)` first."
            )
        return model._functional
    if hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth"):
        return model
    raise TypeError(
        f"Model '{model.name}' is a subclassed model ({type(model).__name__}): its layer graph "
        "is not recorded, so it cannot be walked. Build it as a Functional or Sequential model "
        "(subclassed *layers* such as MatDense inside them are fine)."
    )


def input_placeholders(graph, batch_size=None):
    """New symbolic inputs shaped like the graph's inputs."""
    placeholders = []
    for tensor in graph.inputs:
        placeholders.append(
            keras.Input(
                shape=tensor.shape[1:],
                batch_size=batch_size,
                dtype=tensor.dtype,
                sparse=tensor.sparse,
                name=tensor.name,
            )
        )
    return placeholders


def walk(graph, inputs, call_fn):
    """Replays `graph` on `inputs`, computing every node as `call_fn(operation, *args, **kw)`.

    Nested Functional/Sequential sub-models are not handed to `call_fn`: their own graphs are
    walked in place, so `call_fn` sees every leaf layer.
    """

    def visit(operation, *args, **kwargs):
        if isinstance(operation, keras.Model) and not _is_leaf(operation):
            inner = functional_graph(operation)
            return walk(inner, args[0] if len(args) == 1 else list(args), call_fn)
        return call_fn(operation, *args, **kwargs)

    return graph._run_through_graph(inputs, call_fn=visit)


def walk_widths(graph, inputs, resolved, mat_fn, layer_fn):
    """Replays `graph` on `inputs` with every Mat layer at its resolved width.

    A Mat layer of `resolved` is computed as `mat_fn(layer, width, *args, **kwargs)`, every
    other operation as `layer_fn(operation, *args, **kwargs)`. A block that elastic depth drops
    (`{"depth": 0}`) reaches neither: its input passes through, as its own `call` does, so
    extraction and cost cannot disagree on which blocks exist.

    Args:
        graph: a Functional graph (see `functional_graph`).
        inputs: the tensors to replay it on, one per graph input.
        resolved: `{mat_layer: width}`, as `keras_matta.resolve_widths` returns.
        mat_fn: computes a kept Mat layer at its width.
        layer_fn: computes any other operation (stock layers and stateless ops).

    Returns:
        The graph's outputs computed from `inputs`.
    """

    def visit(operation, *args, **kwargs):
        if operation not in resolved:
            return layer_fn(operation, *args, **kwargs)
        width = resolved[operation]
        if is_dropped(width):
            return args[0]
        return mat_fn(operation, width, *args, **kwargs)

    return walk(graph, inputs, visit)


def _is_leaf(model):
    try:
        functional_graph(model)
    except (TypeError, ValueError):
        return True
    return False
