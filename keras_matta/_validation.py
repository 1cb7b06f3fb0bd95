"""Type checks shared by the arguments of the package's layers and functions (internal).

Each check only answers whether a value qualifies; the caller raises, with a message that names
its own argument, so error messages stay where the argument is documented.
"""

import numbers


def is_int(value):
    """Whether `value` is an integer: a Python `int` or a NumPy integer scalar, not a `bool`.

    NumPy integers count (`np.int64(4)` comes out of array arithmetic and `.shape` products);
    `bool` does not, although Python makes it an `int` subclass: `units=True` is a mistake, not 1.

    Args:
        value: any object.

    Returns:
        `True` for `4` or `np.int32(4)`; `False` for `True`, `4.0`, `"4"` or `np.array([4])`.

    Example:

    ```python
    from keras_matta._validation import is_int

    assert is_int(4) and is_int(np.int64(4))
    assert not is_int(True) and not is_int(4.0) and not is_int(np.array([4]))
    ```
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_fraction(value):
    """Whether `value` is a real number that is not an integer (a Python or NumPy float).

    Width specs read a float as a fraction of the full width and an int as an absolute size, so
    `1.0` (everything) and `1` (one unit) must not be confused: integers are never fractions.

    Args:
        value: any object.

    Returns:
        `True` for `0.5` or `np.float32(0.5)`; `False` for `1`, `True`, `"0.5"` or `None`.

    Example:

    ```python
    from keras_matta._validation import is_fraction

    assert is_fraction(0.25) and is_fraction(np.float32(1.0))
    assert not is_fraction(1) and not is_fraction(np.int64(1)) and not is_fraction(False)
    ```
    """
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral))
