"""Walking the layer graph of a Sequential or Functional model.

`extract` and `cost` both replay a model's graph node by node on new tensors; this module holds
the one walker they share. Nested functional sub-models are inlined, so a Mat layer anywhere in
the graph is reached.
"""

import keras


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


def _is_leaf(model):
    try:
        functional_graph(model)
    except (TypeError, ValueError):
        return True
    return False
