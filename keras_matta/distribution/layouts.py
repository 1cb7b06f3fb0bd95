"""Layouts of a model's Mat-layer weights for `keras.distribution`, on any backend.

A layout says which axis of a weight is split over which mesh axis. Which weights to split
follows from the nesting (the nested dimension, Megatron-style), not from a backend: these
functions only build `keras.distribution.LayoutMap` entries, and whichever backend runs a
`ModelParallel` distribution applies them (in Keras 3.15, JAX). The optimizer's state is laid
out by `keras_matta.distribution.jax.add_shampoo_layouts`.
"""

import re

import keras

from keras_matta import graph as graph_lib
from keras_matta import widths as widths_lib
from keras_matta.distribution._checks import check_axis
from keras_matta.distribution._checks import check_mesh
from keras_matta.distribution._checks import check_patterns

# MatTransformerBlock names its sublayers "<block>_ffn_intermediate", "<block>_ffn_output" and
# "<block>_attention"; MatDense layers get their user-given names.
DEFAULT_COLUMN_PARALLEL = (r".*_ffn_intermediate",)
DEFAULT_ROW_PARALLEL = (r".*_ffn_output",)
DEFAULT_ATTENTION = (r".*_attention",)


def matta_layout_map(
    device_mesh,
    column_parallel=DEFAULT_COLUMN_PARALLEL,
    row_parallel=DEFAULT_ROW_PARALLEL,
    attention=DEFAULT_ATTENTION,
    model_axis="model",
):
    """A `keras.distribution.LayoutMap` that splits Mat layers along their nested dimension.

    A nested FFN `y = W_out^T f(W_in^T x)` with `W_in: (d, h)`, `W_out: (h, d)` is split
    Megatron-style over the `M` devices of `model_axis`, along the hidden (nested) dimension
    `h`:

    ```
    W_in  = [W_in^(1)  ... W_in^(M)]       # column-parallel: (d, h/M) per device, b_in too
    W_out = [W_out^(1); ...; W_out^(M)]    # row-parallel:    (h/M, d) per device
    y     = sum_m W_out^(m)^T f(W_in^(m)^T x) + b_out
    ```

    Each device computes its `h/M` hidden units without communication (`f` is element-wise)
    and one all-reduce sums the partial outputs: per block, one collective of the size of
    the activations instead of gathering kernels. Attention layers are split by whole heads
    the same way (query/key/value kernels `(d, H, k)` on `H`, their biases `(H, k)` on `H`,
    the output kernel `(H, k, d)` on `H`). Everything else (embeddings, norms, output biases,
    un-named layers) is replicated. XLA inserts whatever collectives the layouts imply, so any
    layout computes the same numbers; these ones minimise communication for the TA.

    Why the nested dimension and its cost for Students: a Student at width `k` uses the prefix
    `W_in[:, :k]`, `W_out[:k]`. With contiguous shards, widths `k <= h/M` live on the first
    device only, so a Student pass gathers (or recomputes) that slice and the other devices
    wait on it: the TA's pass is fully parallel, narrow Students are not. At scale, choose `M`
    so that the narrowest Student still spans the shards you care about, or keep the model
    axis small and scale out with the batch axis (`DataParallel`).

    Shampoo's state is laid out by `add_shampoo_layouts` once the model exists (its
    statistics have block shapes, not kernel shapes).

    Args:
        device_mesh: a `keras.distribution.DeviceMesh` with an axis named `model_axis` (and
            usually a batch axis, e.g. `("batch", "model")`).
        column_parallel: regular expressions of layer names (the last path component, matched
            in full) whose kernels `(d_in, units)` are split on `units` and biases `(units,)`
            with them. Defaults to the FFN input layers of `MatTransformerBlock`s. Give the
            names of the nested `MatDense` layers of an MLP here.
        row_parallel: regular expressions of layer names whose kernels `(units_in, d_out)` are
            split on their input dimension (biases replicated). Defaults to the FFN output
            layers of `MatTransformerBlock`s; give the layer after a column-parallel `MatDense`
            (e.g. the classifier head) here.
        attention: regular expressions of `MatMultiHeadAttention` layer names split by heads.
            Defaults to the attention layers of `MatTransformerBlock`s.
        model_axis: the mesh axis that splits the weights. Defaults to `"model"`.

    Returns:
        A `keras.distribution.LayoutMap` for `keras.distribution.ModelParallel`.

    Majority kernels (`majority > 1`) have a leading copies axis, which these rank-2 and
    rank-3 layouts do not describe: leave such layers out of the patterns (they are then
    replicated) or add your own entries. Sizes must divide: `units`, `num_heads` by the
    size of `model_axis`.

    Example:

    ```python
    devices = keras.distribution.list_devices()        # e.g. 8 accelerators
    mesh = keras.distribution.DeviceMesh((1, len(devices)), ("batch", "model"), devices)
    layout_map = keras_matta.distribution.matta_layout_map(
        mesh, column_parallel=["hidden"], row_parallel=["logits"])
    layout_map["ta/hidden/kernel"].axes                # (None, "model"): split on its units
    # Or keras.distribution.set_distribution(...) for the whole program.
    with keras.distribution.ModelParallel(layout_map=layout_map,
                                          batch_dim_name="batch").scope():
        ta = keras.Sequential([keras.Input((16,)),
                               keras_matta.MatDense(64, activation="relu", name="hidden"),
                               keras_matta.MatDense(4, nested=False, name="logits")], name="ta")
        optimizer = keras_matta.optimizers.Shampoo(block_size=16)
        keras_matta.distribution.add_shampoo_layouts(layout_map, optimizer, ta)
        mat_ta = keras_matta.MatTA(ta, [0.25, 0.5])
        mat_ta.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        mat_ta.fit(np.random.rand(32, 16), np.random.randint(0, 4, size=(32,)),
                   batch_size=8, epochs=1, verbose=0)
    ```

    Reference:
        Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language Models Using
        Model Parallelism", arXiv:1909.08053 (column/row-parallel FFN and attention).
    """
    check_mesh(device_mesh, "device_mesh")
    check_axis("model_axis", model_axis, device_mesh)
    groups = {}
    for arg, value in (("column_parallel", column_parallel), ("row_parallel", row_parallel),
                       ("attention", attention)):
        groups[arg] = check_patterns(arg, value)

    layout_map = keras.distribution.LayoutMap(device_mesh)
    m = model_axis

    def add(pattern, leaf, axes):
        layout_map[rf"(?:.*/)?(?:{pattern})/{leaf}"] = keras.distribution.TensorLayout(axes)

    for pattern in groups["column_parallel"]:
        add(pattern, "kernel", (None, m))
        add(pattern, "bias", (m,))
    for pattern in groups["row_parallel"]:
        add(pattern, "kernel", (m, None))
    for pattern in groups["attention"]:
        add(pattern, "(?:query|key|value)_kernel", (None, m, None))
        add(pattern, "(?:query|key|value)_bias", (m, None))
        add(pattern, "output_kernel", (m, None, None))
    return layout_map


def add_nested_layouts(layout_map, model, model_axis="model"):
    """Adds a layout for every nested variable of `model`'s Mat layers, from their declarations.

    Where `matta_layout_map` matches layer names, this reads each Mat layer's nesting table
    (`MatLayer.nesting()`): every variable with a nested axis is split over `model_axis` along
    the units it produces (column-parallel: `W_in`, `b_in`, the query/key/value heads), or, if
    it produces none, along the units it reads (row-parallel: `W_out`, the attention output).
    Shared variables (norms, output biases) stay replicated. So any Mat layer, the keras-hub
    decoders and majority kernels included, is laid out without a name pattern.

    Keras assigns layouts when variables are created, by their paths: build the model once
    (outside the distribution, or abstractly), call this, then create the model again with the
    same layer names inside the `ModelParallel` scope.

    Args:
        layout_map: the `keras.distribution.LayoutMap` to add to (exact paths).
        model: a built model holding Mat layers (or a `keras_matta.MatTA`).
        model_axis: the mesh axis that splits the weights. Defaults to `"model"`.

    Returns:
        `layout_map`.

    Example:

    ```python
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((1, len(devices)), ("batch", "model"), devices)
    make = lambda: keras.Sequential([
        keras.Input((8, 16)),
        keras_matta.MatTransformerBlock(64, 4, nested_heads=True, name="block")], name="enc")
    layout_map = keras_matta.distribution.add_nested_layouts(
        keras.distribution.LayoutMap(mesh), make())
    layout_map["enc/block/block_ffn_intermediate/kernel"].axes   # (None, "model")
    with keras.distribution.ModelParallel(layout_map=layout_map,
                                          batch_dim_name="batch").scope():
        encoder = make()   # the same paths, now split
    ```
    """
    if not isinstance(layout_map, keras.distribution.LayoutMap):
        raise TypeError(
            f"`layout_map` must be a keras.distribution.LayoutMap; got {type(layout_map).__name__}."
        )
    check_axis("model_axis", model_axis, layout_map.device_mesh)
    model = graph_lib.unwrap(model)
    for layer in widths_lib.mat_layers(model):
        for entry in layer.nesting():
            if entry.split_axis is None:
                continue
            rank = len(entry.variable.shape)
            axes = [None] * rank
            axes[rank + entry.split_axis] = model_axis
            layout_map[re.escape(entry.variable.path)] = keras.distribution.TensorLayout(
                tuple(axes)
            )
    return layout_map
