"""TensorFlow: `tf.distribute` strategies run MatTA as they run any Keras model.

Nothing to call: a `MirroredStrategy` (or another strategy) entered with `strategy.scope()`
replicates the step, and the Kronecker-factored optimizers update their statistics from the
all-reduced gradients. MatTA only needs the number of replicas, to scale the per-term losses it
logs as Keras scales its own. TensorFlow is imported when that number is asked for on the
TensorFlow backend, never on import.
"""

import keras


def replicas_in_sync():
    """The number of replicas a TensorFlow `tf.distribute` strategy runs a step on (else 1).

    Keras' losses divide a `"sum_over_batch_size"` loss by it (the replicas' gradients are then
    summed), and its loss trackers multiply it back for logging: MatTA does the same for its
    per-term losses and its regularization losses.

    Returns:
        An int: `tf.distribute.get_strategy().num_replicas_in_sync` on the TensorFlow backend
        (1 outside a strategy's scope), 1 on the other backends.

    Example:

    ```python
    import tensorflow as tf

    with tf.distribute.MirroredStrategy().scope():   # every local GPU, or the CPU
        replicas = keras_matta.distribution.replicas_in_sync()
    # TensorFlow backend: the strategy's number of replicas (e.g. 8 GPUs -> 8); others: 1
    assert keras_matta.distribution.replicas_in_sync() == 1   # outside any strategy
    ```
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync
