"""Scaling MatTA out: layouts for `keras.distribution` (JAX), replicas (TF), gradients (torch).

What each backend offers Keras 3.15, and what keras_matta adds:

| backend | Keras' engine | keras_matta |
| --- | --- | --- |
| JAX | `keras.distribution.DataParallel` / `ModelParallel` (a `LayoutMap` of variable paths) | `matta_layout_map` (Mat layers' kernels), `add_shampoo_layouts` (Shampoo's state) |
| TensorFlow | `tf.distribute` strategies (`MirroredStrategy`, ...) entered with `strategy.scope()` | nothing to call: MatTA logs per-term losses and regularization like Keras does |
| PyTorch | none: `keras.distribution` is JAX-only, and `fit` never talks to other processes | `synchronize_gradients`: data-parallel `fit` over `torch.distributed` |

On every backend the result of a data-parallel step equals the single-device step on the
whole batch (up to float summation order): the loss is a mean over the batch, so the mean of
the replicas' gradients (each the gradient of its shard's mean) is the whole batch's gradient
when the shards are equally large.
"""  # noqa: E501 (a Markdown table: its rows cannot wrap)

import re

import keras
import numpy as np

from keras_matta import graph as graph_lib
from keras_matta import widths as widths_lib

# === Model variables: which Mat-layer weights are split over the model axis ===

# MatTransformerBlock names its sublayers "<block>_ffn_intermediate", "<block>_ffn_output" and
# "<block>_attention"; MatDense layers get their user-given names.
DEFAULT_COLUMN_PARALLEL = (r".*_ffn_intermediate",)
DEFAULT_ROW_PARALLEL = (r".*_ffn_output",)
DEFAULT_ATTENTION = (r".*_attention",)
_SHAMPOO_SAME_SHAPE_STATE = ("momentum", "grafting_second_moment")
_SHAMPOO_BLOCK_STATE = ("left_statistics", "right_statistics", "left_root", "right_root")


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
    _check_mesh(device_mesh, "device_mesh")
    _check_axis("model_axis", model_axis, device_mesh)
    groups = {}
    for arg, value in (("column_parallel", column_parallel), ("row_parallel", row_parallel),
                       ("attention", attention)):
        groups[arg] = _check_patterns(arg, value)

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
    _check_axis("model_axis", model_axis, layout_map.device_mesh)
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


# === Optimizer variables: Shampoo's state ===


def add_shampoo_layouts(layout_map, optimizer, variables, spread_axis=None):
    """Adds layouts for Shampoo's state to `layout_map`; call before the optimizer is built.

    What Keras does with optimizer variables: on JAX every variable created while a
    distribution is set asks it for a layout. Optimizers that create state with
    `add_variable_from_reference` (Adam, SGD, ...) copy the reference variable's layout. Shampoo
    creates state of its own shapes with `add_variable`, so `ModelParallel` looks the state's
    path (`"<optimizer>/<variable path with '_'>_<suffix>"`) up in the `LayoutMap`; without an
    entry it is *replicated*, and `DataParallel` always replicates it. Replicated state is
    correct (every device holds all of it and computes every inverse root, with identical
    results), just redundant. This function adds entries so that:

    - momentum and the grafting second moment (the variable's shape) follow the variable's
      layout, as Adam's slots do;
    - the block statistics `L, R` and their roots `L^{-1/4}, R^{-1/4}`, stacked as
      `(num_blocks, b, b)`, are split along the block axis over the mesh axis that splits the
      variable, when that puts on each device exactly the blocks of its own shard of the
      gradient. Then `G_j G_j^T`, the eigendecompositions and `P_L G_j P_R` of a block run on
      the device that holds `G_j`, without communication, and the root work (the dominant
      cost, `O(b^3)` per block every `precondition_frequency` steps) is divided by the
      number of shards. Blocks are numbered row-major over the block grid of the
      `rows x cols` matrix view, so this holds for a variable split on its rows when its
      block rows divide evenly, and for one split on its columns when it has a single block
      row (`rows <= block_size`, e.g. an FFN input kernel with `d_model <= block_size`);
    - otherwise, with `spread_axis` (typically the batch axis of a data-parallel mesh), the
      blocks of a replicated variable are split over that axis when their number divides:
      each replica computes the roots of its share of the blocks and XLA all-gathers what the
      update needs, the scheme of Shi et al.'s distributed Shampoo;
    - anything else stays replicated.

    Args:
        layout_map: the `keras.distribution.LayoutMap` of the current `ModelParallel`
            distribution (entries added later are seen by it: the map is looked up when each
            variable is created).
        optimizer: a `keras_matta.optimizers.Shampoo`, not yet built.
        variables: the variables it will train: a model (its `trainable_variables`) or a list.
        spread_axis: optional mesh axis over which the blocks of variables that are not split
            otherwise are spread (see above). Defaults to `None` (replicated).

    Returns:
        `layout_map`, for chaining.

    Example:

    ```python
    devices = keras.distribution.list_devices()        # e.g. 8 accelerators
    mesh = keras.distribution.DeviceMesh((len(devices),), ("batch",), devices)
    layout_map = keras.distribution.LayoutMap(mesh)    # data parallel: no model split
    with keras.distribution.ModelParallel(layout_map=layout_map,
                                          batch_dim_name="batch").scope():
        ta = keras.Sequential([keras.Input((16,)), keras_matta.MatDense(128, activation="relu"),
                               keras_matta.MatDense(4, nested=False)], name="ta")
        optimizer = keras_matta.optimizers.Shampoo(block_size=16)
        keras_matta.distribution.add_shampoo_layouts(layout_map, optimizer, ta,
                                                     spread_axis="batch")
        # Each kernel has 8 blocks (of 16 x 16, 16 x 4): their statistics and roots are split
        # over the devices of "batch", each device computing the roots of its share.
        optimizer.build(ta.trainable_variables)   # as `fit` does: the state gets its layouts
    ```

    Reference:
        Shi et al., "A Distributed Data-Parallel PyTorch Implementation of the Distributed
        Shampoo Optimizer for Training Neural Networks At-Scale", arXiv:2309.06497.
        Anil et al., "Scalable Second Order Optimization for Deep Learning", arXiv:2002.09018.
    """
    from keras_matta.optimizers import Shampoo

    if not isinstance(layout_map, keras.distribution.LayoutMap):
        raise TypeError(
            f"`layout_map` must be a keras.distribution.LayoutMap; got {type(layout_map).__name__}."
        )
    if not isinstance(optimizer, Shampoo):
        raise TypeError(
            "`optimizer` must be a keras_matta.optimizers.Shampoo (other Keras optimizers copy "
            f"their variables' layouts themselves); got {type(optimizer).__name__}."
        )
    if optimizer.built:
        raise ValueError(
            f"`optimizer` ('{optimizer.name}') is already built: its state exists with the "
            "layouts it had. Call add_shampoo_layouts before `compile`/`fit` builds it."
        )
    mesh = layout_map.device_mesh
    _check_mesh(mesh, "layout_map.device_mesh")
    if spread_axis is not None:
        _check_axis("spread_axis", spread_axis, mesh)
    if hasattr(variables, "trainable_variables"):
        variables = variables.trainable_variables
    variables = list(variables)
    if not all(isinstance(v, keras.Variable) for v in variables):
        raise TypeError("`variables` must be a keras model or a list of keras.Variable.")

    for variable in variables:
        layout = layout_map[variable.path]
        axes = tuple(layout.axes) if layout is not None else (None,) * len(variable.shape)
        prefix = f"(?:.*/)?{re.escape(optimizer.name)}/{re.escape(variable.path.replace('/', '_'))}"
        if any(axis is not None for axis in axes):
            for suffix in _SHAMPOO_SAME_SHAPE_STATE:
                layout_map[f"{prefix}_{suffix}"] = keras.distribution.TensorLayout(axes)
        blocks = optimizer.block_layout(variable)
        if blocks is None:
            continue
        axis = statistics_axis(variable.shape, axes, blocks, mesh)
        if axis is None and spread_axis is not None:
            if blocks.num_blocks % _axis_size(mesh, spread_axis) == 0:
                axis = spread_axis
        if axis is None:
            continue
        for suffix in _SHAMPOO_BLOCK_STATE:
            layout_map[f"{prefix}_{suffix}"] = keras.distribution.TensorLayout((axis, None, None))
    return layout_map


def statistics_axis(variable_shape, axes, blocks, device_mesh):
    """The mesh axis to split Shampoo's `(num_blocks, b, b)` state on, or None (replicate).

    It is the axis that splits the variable when each device's contiguous range of blocks is
    exactly the blocks of its shard of the `rows x cols` matrix view (see
    `add_shampoo_layouts`).

    Args:
        variable_shape: the variable's shape.
        axes: its layout, one mesh axis name or None per dimension.
        blocks: its block layout, as `Shampoo.block_layout(variable)` returns it.
        device_mesh: the `keras.distribution.DeviceMesh`.

    Returns:
        The name of the mesh axis in `axes` that splits the variable, or `None`.

    Example:

    ```python
    mesh = keras.distribution.DeviceMesh((2,), ("model",), ["cpu:0", "cpu:1"])  # names only
    optimizer = keras_matta.optimizers.Shampoo(block_size=16)
    kernel = keras.Variable(np.zeros((64, 32), "float32"))
    blocks = optimizer.block_layout(kernel)   # a grid of 4 x 2 blocks of 16 x 16
    statistics_axis = keras_matta.distribution.statistics_axis
    statistics_axis(kernel.shape, ("model", None), blocks, mesh)   # "model": 2 block rows each
    statistics_axis(kernel.shape, (None, "model"), blocks, mesh)   # None (replicated): the
    # blocks of a column shard, one per block row, are not a contiguous range of the 8
    ```
    """
    sharded = [(i, a) for i, a in enumerate(axes) if a is not None]
    if len(sharded) != 1:
        return None
    index, axis = sharded[0]
    shards = _axis_size(device_mesh, axis)
    # The matrix view drops size-1 axes and splits the rest once: rows are the leading ones.
    kept = [i for i, d in enumerate(variable_shape) if d != 1]
    rows, cols = blocks.matrix_shape
    split = next(s for s in range(1, len(kept))
                 if int(np.prod([variable_shape[i] for i in kept[:s]])) == rows)
    (block_rows, block_cols), (grid_rows, _) = blocks.block_shape, blocks.grid
    if index == kept[0]:  # the matrix is split on its rows, contiguously
        per_shard = rows // shards
        aligned = rows % shards == 0 and per_shard % block_rows == 0
    elif index == kept[split]:  # on its columns: contiguous blocks only with one block row
        per_shard = cols // shards
        aligned = grid_rows == 1 and cols % shards == 0 and per_shard % block_cols == 0
    else:
        aligned = False
    return axis if aligned and blocks.num_blocks % shards == 0 else None


# === TensorFlow: tf.distribute ===


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


# === PyTorch: torch.distributed ===


class GradientSynchronization:
    """Handle returned by `synchronize_gradients`: `remove()` stops the synchronization.

    Also a context manager that calls `remove()` on exit.

    Args:
        handles: the `torch` hook handles `synchronize_gradients` registered (one per
            trainable variable).

    Example:

    ```python
    import os

    import torch.distributed as dist

    # One process here; `torchrun` starts one per device, each with its rank and world size.
    dist.init_process_group("gloo", init_method=f"file://{os.path.abspath('rendezvous')}",
                            rank=0, world_size=1)
    model = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(4)])
    model.compile("sgd", "mse")
    sync = keras_matta.distribution.synchronize_gradients(model)   # a GradientSynchronization
    model.fit(np.random.rand(16, 8), np.random.rand(16, 4), verbose=0)   # averaged gradients
    sync.remove()                                  # from here on, each process trains alone
    dist.destroy_process_group()
    ```
    """

    def __init__(self, handles):
        self._handles = list(handles)

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()


def synchronize_gradients(model, process_group=None, source_rank=0):
    """PyTorch backend: makes `model.fit` data-parallel over the processes of `torch.distributed`.

    Keras 3.15 has no distribution engine for PyTorch (`keras.distribution` is JAX-only) and
    `fit` never communicates with other processes, while `torch.nn.parallel.
    DistributedDataParallel` needs the forward pass to run through its wrapper, which
    `fit`, and MatTA's extra Student passes in `compute_loss`, do not. This does what DDP does
    to the gradients, with `fit` unchanged:

    1. broadcasts every variable of `model` (and of a `MatTA`'s frozen teacher) from
       `source_rank`, so that all processes start from the same weights and seed states;
    2. registers on each trainable variable a hook that runs once its gradient is complete
       after `backward()` and replaces it by the mean over the processes
       (`all_reduce(SUM) / world_size`).

    Each process then calls `fit` on its own equal share of every batch (e.g.
    `x[rank::world_size]` of each global batch, with `batch_size = global_batch / world_size`)
    and every optimizer, Shampoo included, applies the same averaged gradient to the same
    weights: the processes stay identical, and the step equals a single-process step on the
    global batch. Every process computes all of Shampoo's inverse roots (the statistics are not
    split across processes on this backend).

    Not synchronized: the logged losses and metrics (each process reports its own shard; use
    rank 0's, or all-reduce them in a callback), non-trainable variables updated in the
    forward pass (e.g. `BatchNormalization` statistics), and `evaluate`/`predict`. Write
    checkpoints from one rank. Hooks fire in the same order on every process because every
    process runs the same computation; a Student strategy other than `"all"` is fine since the
    Students of a step are a function of `(seed, step)`, equal on all ranks (give `MatTA` the
    same `seed` everywhere).

    Args:
        model: a built `keras.Model` (e.g. a compiled `MatTA`).
        process_group: the `torch.distributed` group; defaults to the default group.
        source_rank: the rank whose initial variables are broadcast. Defaults to 0.

    Returns:
        A `GradientSynchronization`; call `.remove()` (or use it as a context manager) to stop.

    Example:

    ```python
    import os

    import torch.distributed as dist

    # One process here; `torchrun` starts one per device, each with its rank and world size
    # (then `dist.init_process_group("gloo")` reads them from the environment).
    dist.init_process_group("gloo", init_method=f"file://{os.path.abspath('rendezvous')}",
                            rank=0, world_size=1)
    rank, world_size, global_batch = dist.get_rank(), dist.get_world_size(), 16
    x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 3, size=(64,))
    ta = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(32, activation="relu"),
                           keras_matta.MatDense(3, nested=False)])
    mat_ta = keras_matta.MatTA(ta, [0.25, 0.5], seed=0)   # the same seed on every rank
    mat_ta.compile(keras_matta.optimizers.Shampoo(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mat_ta(x[:1])                                              # build the variables first
    with keras_matta.distribution.synchronize_gradients(mat_ta):
        mat_ta.fit(x[rank::world_size], y[rank::world_size],
                   batch_size=global_batch // world_size, epochs=1, verbose=0)
    dist.destroy_process_group()
    ```

    Reference:
        Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training",
        VLDB 2020 (the gradient all-reduce DDP performs).
    """
    if keras.backend.backend() != "torch":
        raise ValueError(
            "synchronize_gradients is for the PyTorch backend; on "
            f"'{keras.backend.backend()}' use keras.distribution (JAX) or tf.distribute (TF)."
        )
    import torch
    import torch.distributed as dist

    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "synchronize_gradients needs an initialized torch.distributed process group: call "
            "torch.distributed.init_process_group(...) first."
        )
    if not model.built or not model.trainable_variables:
        raise ValueError(
            f"`model` ('{model.name}') has no variables yet: build it (call it on a batch) "
            "before synchronize_gradients."
        )
    world_size = dist.get_world_size(process_group)
    variables = list(model.variables)
    teacher = getattr(model, "teacher", None)  # MatTA keeps its frozen teacher untracked
    if isinstance(teacher, keras.Model):
        variables += teacher.variables
    with torch.no_grad():
        for variable in variables:
            dist.broadcast(variable.value.data, src=source_rank, group=process_group)

    def average(parameter):
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM, group=process_group)
        parameter.grad.div_(world_size)

    return GradientSynchronization(
        variable.value.register_post_accumulate_grad_hook(average)
        for variable in model.trainable_variables
    )


# === Argument checks ===


def _check_mesh(device_mesh, arg):
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise TypeError(
            f"`{arg}` must be a keras.distribution.DeviceMesh; got {type(device_mesh).__name__}."
        )


def _check_axis(arg, axis, device_mesh):
    if axis not in device_mesh.axis_names:
        raise ValueError(
            f"`{arg}` must be one of the mesh's axis names {list(device_mesh.axis_names)}; "
            f"got {arg}={axis!r}."
        )


def _check_patterns(arg, patterns):
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns or ()):
        raise TypeError(
            f"`{arg}` must be a list of regular-expression strings (layer names); "
            f"got {arg}={patterns!r}."
        )
    for pattern in patterns or ():
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"`{arg}` has an invalid regular expression {pattern!r}: {error}."
            ) from error
    return list(patterns or ())


def _axis_size(device_mesh, axis):
    return int(device_mesh.shape[list(device_mesh.axis_names).index(axis)])
