"""What a width spec costs: parameters, FLOPs and peak memory (counted), latency (measured)."""

import statistics
import time

from keras_matta.cost import cost as count_cost
from keras_matta.extract import extract
from keras_matta.memory import peak_memory

COSTS = ("params", "flops", "peak_memory_mb", "latency_ms")
MEBIBYTE = 2**20  # what Keras' `model.summary()` calls a MB


def counted_costs(model, widths, input_shape=None):
    """`{"params", "flops"}` of `model` at `widths`: counted, no model is built or run.

    Args:
        model: the TA.
        widths: a width spec.
        input_shape: per-example input shape, where the model's has unknown dimensions.

    Returns:
        `keras_matta.cost(model, widths, input_shape)`.

    Example:

    ```python
    from keras_matta.search.costs import counted_costs

    ta = keras.Sequential([keras.Input((16,)), keras_matta.MatDense(64, name="hidden"),
                           keras_matta.MatDense(10, nested=False)])
    assert counted_costs(ta, {"hidden": 16}) == {"params": 442, "flops": 832}
    ```
    """
    return count_cost(model, widths, input_shape=input_shape)


def peak_memory_mb(model, widths, batch_size, input_shape=None):
    """Peak memory of one served call of `extract(model, widths)` on `batch_size` examples, in MB.

    Counted, not measured: `keras_matta.peak_memory` (weights plus the largest set of live
    activations), divided by `MEBIBYTE` (2**20 bytes, the MB of Keras' `model.summary()`).

    Args:
        model: the TA.
        widths: a width spec.
        batch_size: the batch served.
        input_shape: per-example input shape, where the model's has unknown dimensions.

    Returns:
        A float, in MB.

    Example:

    ```python
    from keras_matta.search.costs import peak_memory_mb

    ta = keras.Sequential([keras.Input((16,)), keras_matta.MatDense(64, name="hidden"),
                           keras_matta.MatDense(10, nested=False)])
    # 442 float32 weights; at batch 8 the input and the hidden layer (8 x 16 each) peak.
    assert peak_memory_mb(ta, {"hidden": 16}, 8) == (4 * 442 + 4 * 2 * 8 * 16) / 2**20
    ```
    """
    return peak_memory(model, widths, batch_size, input_shape)["peak_bytes"] / MEBIBYTE


def latency_ms(model, widths, batch, repeats=10, warmup=2):
    """Milliseconds per batch of the stock model `extract(model, widths)` on this backend.

    The extracted model is what is served, so it is what is timed (not the TA run at a width,
    which slices its kernels on every call). `predict_on_batch` is compiled on the first call
    (jit on JAX, `tf.function` on TensorFlow), so `warmup` calls go first; the median of
    `repeats` timed calls follows, as the median is robust to the stalls of a shared machine.

    Args:
        model: the TA.
        widths: a width spec.
        batch: one input batch (what the model is called on), its first dimension the batch.
        repeats: timed calls.
        warmup: untimed calls first.

    Returns:
        The median wall time of one call, in milliseconds.

    Example:

    ```python
    from keras_matta.search.costs import latency_ms

    ta = keras.Sequential([keras.Input((16,)), keras_matta.MatDense(64, name="hidden"),
                           keras_matta.MatDense(10, nested=False)])
    assert latency_ms(ta, 0.25, np.zeros((8, 16), "float32"), repeats=3) > 0
    ```
    """
    stock = extract(model, widths)
    for _ in range(warmup):
        stock.predict_on_batch(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        stock.predict_on_batch(batch)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
