"""JAX: layouts for Shampoo's state, which Keras cannot derive from the trained variables.

On JAX (the backend whose variables take layouts when they are created in Keras 3.15), an
optimizer variable made with `add_variable_from_reference` copies its variable's layout; one
made with `add_variable(shape=...)`, as Shampoo makes its block statistics, is looked up by
path in the distribution's `LayoutMap`, and replicated without an entry. `add_shampoo_layouts`
adds those entries. Nothing here imports `jax`: layouts are plain `keras.distribution` objects.
"""

import re

import keras
import numpy as np

from keras_matta.distribution._checks import axis_size
from keras_matta.distribution._checks import check_axis
from keras_matta.distribution._checks import check_mesh

_SHAMPOO_SAME_SHAPE_STATE = ("momentum", "grafting_second_moment")
_SHAMPOO_BLOCK_STATE = ("left_statistics", "right_statistics", "left_root", "right_root")


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
    check_mesh(mesh, "layout_map.device_mesh")
    if spread_axis is not None:
        check_axis("spread_axis", spread_axis, mesh)
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
            if blocks.num_blocks % axis_size(mesh, spread_axis) == 0:
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
    shards = axis_size(device_mesh, axis)
    # The matrix view drops size-1 axes and splits the rest once: rows are the leading ones.
    kept = [i for i, d in enumerate(variable_shape) if d != 1]
    rows, cols = blocks.matrix_shape
    (block_rows, block_cols), (grid_rows, _) = blocks.block_shape, blocks.grid
    if index == kept[0]:  # the matrix is split on its rows, contiguously
        per_shard = rows // shards
        aligned = rows % shards == 0 and per_shard % block_rows == 0
    elif not blocks.is_vector and index == _first_column_axis(variable_shape, kept, rows):
        # on its columns: contiguous blocks only with one block row
        per_shard = cols // shards
        aligned = grid_rows == 1 and cols % shards == 0 and per_shard % block_cols == 0
    else:
        aligned = False
    return axis if aligned and blocks.num_blocks % shards == 0 else None


def _first_column_axis(variable_shape, kept, rows):
    """The variable axis where the matrix view's columns start (`kept`: its non-1 axes)."""
    split = next(s for s in range(1, len(kept))
                 if int(np.prod([variable_shape[i] for i in kept[:s]])) == rows)
    return kept[split]
