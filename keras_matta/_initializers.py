"""A fresh copy of a Keras initializer for each weight it initializes (internal)."""


def clone_initializer(initializer):
    """A new instance of `initializer` with the same configuration.

    Keras 3 initializers are stateless: an unseeded one draws its seed once, when it is
    created, and every call repeats the same values. A layer that hands one instance to several
    weights of one shape (the query and key kernels, the FFN of every sublayer) would start them
    identical; a clone per weight draws its own seed. A seeded initializer's clone keeps the
    seed, so seeded models stay reproducible.

    Args:
        initializer: a `keras.initializers.Initializer` instance.

    Returns:
        An initializer of the same class built from `initializer.get_config()`.

    Example:

    ```python
    from keras_matta._initializers import clone_initializer

    glorot = keras.initializers.GlorotUniform()
    a, b = clone_initializer(glorot), clone_initializer(glorot)
    assert not np.allclose(ops.convert_to_numpy(a((4, 4))), ops.convert_to_numpy(b((4, 4))))
    ```
    """
    return initializer.__class__.from_config(initializer.get_config())
