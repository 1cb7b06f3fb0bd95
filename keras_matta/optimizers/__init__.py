"""Optimizers: Shampoo and its matrix roots."""
