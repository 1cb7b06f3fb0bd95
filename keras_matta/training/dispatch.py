"""Backend plumbing for MatTA's compiled functions: one per Student configuration, safe on JAX."""

import contextlib

import keras


@contextlib.contextmanager
def distinct_train_step(model):
    """Shadows `model.train_step` with a function of its own while a backend wraps it.

    `jax.jit` caches traces per function object, and every access to `model.train_step` gives an
    equal bound method: without a distinct function per Student configuration, every compiled
    function would replay the first configuration's trace.
    """

    def train_step(*args, **kwargs):
        return type(model).train_step(model, *args, **kwargs)

    model.train_step = train_step
    try:
        yield
    finally:
        del model.train_step


def keep_jax_state_on_error(function, variable_groups):
    """Wraps a JAX step `function(state, ...)` to put the state back into the variables on error.

    JAX `fit`/`evaluate` purge the variables' values before the first step and reattach them only
    after a step succeeded: a step failing at trace time (targets of the wrong shape, ...) would
    leave the model without weights. On other backends `function` is returned as is.

    Args:
        function: the step function; its first argument is the state tuple.
        variable_groups: a callable returning the lists of variables the state holds, in order.
    """
    if keras.backend.backend() != "jax":
        return function

    def guarded(state, *args, **kwargs):
        try:
            return function(state, *args, **kwargs)
        except Exception:
            try:
                for variables, values in zip(variable_groups(), state):
                    for variable, value in zip(variables, values):
                        variable.assign(value)
            except Exception:  # Donated buffers (a failure at run time): nothing to restore.
                pass
            raise

    return guarded
