"""Optimizers: Shampoo, SOAP and the matrix inverse roots they are built on."""

from keras_matta.optimizers.matrix_roots import matrix_inverse_root
from keras_matta.optimizers.shampoo import Shampoo
from keras_matta.optimizers.soap import SOAP

__all__ = ["SOAP", "Shampoo", "matrix_inverse_root"]
