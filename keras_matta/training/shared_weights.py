"""The weights every width shares in full, and reading them without a gradient."""

import contextlib

import keras
from keras import ops

from keras_matta import widths as widths_lib


def shared_variables(model):
    """The trainable variables of `model` outside every Mat layer.

    These are the weights no width slices (embeddings, position tables, norms and output layers
    between the Mat layers): every member of the family uses all of them. Norms and biases
    inside a Mat layer belong to it and are not included. `MatTA(..., detach_shared=True)`
    trains them with the TA's terms only.

    Args:
        model: a model with Mat layers (the TA).

    Returns:
        A list of variables, in `model.trainable_variables` order.

    Example:

    ```python
    ta = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="embed"),
                           keras_matta.MatDense(16, name="hidden")])
    shared = keras_matta.training.shared_variables(ta)  # embed's kernel and bias
    assert [v.name for v in shared] == ["kernel", "bias"]
    ```
    """
    nested = {id(v) for layer in widths_lib.mat_layers(model) for v in layer.variables}
    return [v for v in model.trainable_variables if id(v) not in nested]


@contextlib.contextmanager
def detached(variables, all_variables):
    """A context in which `variables` read as constants: no gradient reaches them from inside.

    Every variable in `all_variables` is read through one `keras.StatelessScope` (on JAX the
    trainer's traced values, elsewhere the variables' current values), `variables` behind a
    stop-gradient (`read_through`). Values assigned inside (a dropout seed, say) are written
    back on exit, so the context changes gradients only.

    Args:
        variables: the variables to detach.
        all_variables: every variable the computation inside reads (a model's `variables`):
            on JAX, one that is missing would read its stored value instead of the traced one.
    """
    detach = {id(v) for v in variables}

    def stop_gradient(variable, value):
        return ops.stop_gradient(value) if id(variable) in detach else value

    with read_through(stop_gradient, all_variables):
        yield


@contextlib.contextmanager
def read_through(transform, all_variables):
    """A context in which each of `all_variables` reads as `transform(variable, value)`.

    The values are read once, through one `keras.StatelessScope` (on JAX the trainer's traced
    values, elsewhere the variables' current values); values assigned inside are written back
    on exit. `transform` may change what flows back (a stop-gradient), not what is computed.

    Args:
        transform: `(variable, value) -> value read inside`.
        all_variables: every variable the computation inside reads (see `detached`).
    """
    mapping = [(v, transform(v, v.value)) for v in all_variables]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        read = dict(scope.state_mapping)
        yield
    for v in all_variables:
        value = scope.get_current_value(v)
        if value is not read[id(v)]:
            v.assign(value)
