"""How Shampoo sees a variable: as a matrix, cut into equal blocks.

Every variable is preconditioned as a matrix (`matrix_shape_for`), and a matrix side longer
than `block_size` is split (`BlockLayout`), so that one preconditioner never costs more than a
`block_size`-sided eigendecomposition and all blocks of a variable are computed in one batch.
"""

import math

import numpy as np
from keras import ops


def matrix_shape_for(shape, vectors=False):
    """The 2-D shape Shampoo preconditions a variable of `shape` as, or None (graft only).

    Size-1 axes are dropped; fewer than two axes left means no matrix, or, with `vectors`, a
    column `(n, 1)` for one axis of `n >= 2` (a bias, an `(n, 1)` kernel). Otherwise the axes
    are split once, keeping their order (so the reshape is free), where the smaller side is the
    largest: e.g. `(3, 3, 16, 32) -> (144, 32)`, `(64, 4, 16) -> (64, 64)`.
    """
    dims = [int(d) for d in shape if d != 1]
    if vectors and len(dims) == 1:
        return (dims[0], 1)
    if len(dims) < 2:
        return None
    splits = [(math.prod(dims[:s]), math.prod(dims[s:])) for s in range(1, len(dims))]
    return max(splits, key=lambda sides: (min(sides), -max(sides)))


class BlockLayout:
    """How a variable maps to a stack of equal-shaped matrix blocks (and back).

    The matrix `(rows, cols)` is cut into a grid of `block_shape` blocks, `block_shape` being
    `min(side, block_size)` per side. The last block of a side that `block_size` does not
    divide is zero-padded; `mask` zeroes the padding in a blocked direction, so it never
    counts in a block's norm. A vector is the column `(n, 1)` (`is_vector`): a real matrix has
    no size-1 side (`matrix_shape_for` drops those axes).
    """

    def __init__(self, variable_shape, matrix_shape, block_size):
        self.variable_shape = tuple(int(d) for d in variable_shape)
        self.matrix_shape = tuple(matrix_shape)
        self.block_shape = tuple(min(side, block_size) for side in self.matrix_shape)
        self.grid = tuple(
            -(-side // block) for side, block in zip(self.matrix_shape, self.block_shape)
        )
        self.num_blocks = self.grid[0] * self.grid[1]
        self.is_vector = self.matrix_shape[1] == 1
        self._padding = tuple(
            g * b - side for g, b, side in zip(self.grid, self.block_shape, self.matrix_shape)
        )
        self.is_padded = any(self._padding)
        # A NumPy constant: it is built outside any traced function and used inside many.
        padded = np.zeros([g * b for g, b in zip(self.grid, self.block_shape)], "float32")
        padded[: self.matrix_shape[0], : self.matrix_shape[1]] = 1.0
        self.mask = self._blocks_from_padded(padded, np) if self.is_padded else None

    def to_blocks(self, tensor):
        """`variable_shape` -> `(num_blocks, *block_shape)`, row-major over the grid."""
        if self.is_padded:
            matrix = ops.reshape(tensor, self.matrix_shape)
            tensor = ops.pad(matrix, [(0, self._padding[0]), (0, self._padding[1])])
        return self._blocks_from_padded(tensor)

    def from_blocks(self, blocks):
        """Inverse of `to_blocks`: `(num_blocks, *block_shape)` -> `variable_shape`."""
        (grid_rows, grid_cols), (rows, cols) = self.grid, self.block_shape
        if grid_cols > 1:
            blocks = ops.reshape(blocks, (grid_rows, grid_cols, rows, cols))
            blocks = ops.transpose(blocks, (0, 2, 1, 3))
        if not self.is_padded:
            return ops.reshape(blocks, self.variable_shape)
        matrix = ops.reshape(blocks, (grid_rows * rows, grid_cols * cols))
        matrix = matrix[: self.matrix_shape[0], : self.matrix_shape[1]]
        return ops.reshape(matrix, self.variable_shape)

    def _blocks_from_padded(self, matrix, backend=ops):
        # A grid of one column is one reshape away (each block's rows are consecutive): in
        # eager execution every `keras.ops` call is a dispatch, dearer than small blocks' math.
        (grid_rows, grid_cols), (rows, cols) = self.grid, self.block_shape
        if grid_cols == 1:
            return backend.reshape(matrix, (grid_rows, rows, cols))
        blocks = backend.reshape(matrix, (grid_rows, rows, grid_cols, cols))
        blocks = backend.transpose(blocks, (0, 2, 1, 3))
        return backend.reshape(blocks, (self.num_blocks, rows, cols))
