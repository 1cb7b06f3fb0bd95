"""Optimizers: Shampoo and the matrix inverse roots it is built on."""

from keras_matta.optimizers.matrix_roots import matrix_inverse_root
from keras_matta.optimizers.shampoo import Shampoo

__all__ = ["Shampoo", "matrix_inverse_root"]
