"""BlockLayout: blocks against NumPy slicing of the padded matrix, and the way back."""

import numpy as np
import pytest
from helpers import to_numpy

from keras_matta.optimizers.blocking import BlockLayout
from keras_matta.optimizers.blocking import matrix_shape_for


def numpy_blocks(tensor, matrix_shape, block_size):
    """The row-major grid of `block_size` blocks of the zero-padded matrix, by slicing."""
    matrix = tensor.reshape(matrix_shape)
    rows, cols = (min(side, block_size) for side in matrix_shape)
    padded = np.zeros([-(-matrix_shape[0] // rows) * rows, -(-matrix_shape[1] // cols) * cols])
    padded[: matrix_shape[0], : matrix_shape[1]] = matrix
    return np.stack(
        [
            padded[r : r + rows, c : c + cols]
            for r in range(0, padded.shape[0], rows)
            for c in range(0, padded.shape[1], cols)
        ]
    )


@pytest.mark.parametrize(
    "shape, block_size",
    [
        ((8, 8), 8),  # one block
        ((12, 4), 4),  # a column of blocks
        ((4, 12), 4),  # a row of blocks
        ((8, 12), 4),  # a grid
        ((10, 7), 4),  # a padded grid
        ((9, 4), 4),  # a padded column
        ((2, 3, 5), 4),  # rank 3, reshaped to (6, 5), padded
        ((3, 3, 2, 8), 8),  # a conv kernel, reshaped to (18, 8)
    ],
)
def test_blocks_match_numpy_slicing_and_invert(shape, block_size):
    tensor = np.random.default_rng(0).standard_normal(shape).astype("float32")
    layout = BlockLayout(shape, matrix_shape_for(shape), block_size)
    expected = numpy_blocks(tensor, layout.matrix_shape, block_size)

    blocks = to_numpy(layout.to_blocks(tensor))
    np.testing.assert_array_equal(blocks, expected)
    assert layout.num_blocks == len(expected)
    np.testing.assert_array_equal(to_numpy(layout.from_blocks(blocks)), tensor)
    # The mask is one exactly where a block holds an entry of the matrix.
    mask = 1.0 if layout.mask is None else layout.mask
    np.testing.assert_array_equal(
        np.broadcast_to(mask, blocks.shape),
        numpy_blocks(np.ones(shape), layout.matrix_shape, block_size),
    )
