"""A loss and its gradients with respect to chosen variables, on every backend, outside `fit`."""

import keras
from keras import ops


def value_and_gradients(loss_fn, variables):
    """`(loss, [gradient per variable])` of the zero-argument `loss_fn`, eagerly.

    Keras has no backend-neutral `grad`; `fit` hides one per backend inside its train step.
    Tools that need gradients without training (importance scores) use this instead. A variable
    the loss does not reach gets a zero gradient.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        gradients = tape.gradient(loss, [variable.value for variable in variables])
    elif backend == "torch":
        for variable in variables:
            variable.value.grad = None
        loss = loss_fn()
        loss.backward()
        gradients = [variable.value.grad for variable in variables]
    elif backend == "jax":
        import jax

        def stateless_loss(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn()

        loss, gradients = jax.value_and_grad(stateless_loss)([v.value for v in variables])
    else:
        raise NotImplementedError(f"Gradients are not implemented for backend {backend!r}.")
    gradients = [
        ops.zeros(variable.shape, variable.dtype) if gradient is None else gradient
        for gradient, variable in zip(gradients, variables)
    ]
    return loss, gradients
