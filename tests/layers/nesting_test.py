"""The nesting declaration's helpers, against hand-written NumPy slices."""

import numpy as np
import pytest

from keras_matta.layers import nesting
from keras_matta.layers.nesting import INPUT
from keras_matta.layers.nesting import Nested

pytestmark = pytest.mark.backend_agnostic  # NumPy arrays and plain Python only


class _Variable:
    def __init__(self, shape, name="v"):
        self.shape, self.name = shape, name


def test_prefix_slices_negative_axes_and_leaves_absent_dimensions_whole():
    value = np.arange(3 * 4 * 5).reshape(3, 4, 5)  # e.g. majority copies x d x units
    sliced = nesting.prefix(value, {-1: "units", -2: INPUT}, {"units": 2})
    np.testing.assert_array_equal(sliced, value[:, :, :2])
    sliced = nesting.prefix(value, {-1: "units", -2: INPUT}, {"units": 2, INPUT: 3})
    np.testing.assert_array_equal(sliced, value[:, :3, :2])


def test_roles_and_split_axes_follow_what_a_variable_does_with_the_units():
    kernel_in = Nested("w_in", _Variable((8, 16)), produces={-1: "k"}, consumes={-2: INPUT})
    bias_in = Nested("b_in", _Variable((16,)), produces={-1: "k"}, bias=True)
    kernel_out = Nested("w_out", _Variable((16, 8)), consumes={-2: "k"})
    norm = Nested("gamma", _Variable((8,)))
    assert [e.role for e in (kernel_in, bias_in, kernel_out, norm)] == [
        "in", "in_bias", "out", "shared"]
    assert [e.split_axis for e in (kernel_in, bias_in, kernel_out, norm)] == [-1, -1, -2, None]


def test_parameters_count_served_variables_at_their_sliced_shapes():
    entries = [
        Nested("w", _Variable((3, 8, 16)), produces={-1: "k"}, consumes={-2: INPUT},
               copies=True),  # 3 majority copies: one (8, k) kernel is served
        Nested("b", _Variable((16,)), produces={-1: "k"}, bias=True),
        Nested("lora", _Variable((2, 16)), produces={-1: "k"}, served=False),
    ]
    assert nesting.count_params(entries, {"k": 4, INPUT: 6}) == 6 * 4 + 4
    assert nesting.count_params(entries, {}) == 8 * 16 + 16


def test_rename_maps_and_drops_dimensions_under_a_scope():
    entries = [Nested("kernel", _Variable((8, 16)), produces={-1: "units"},
                      consumes={-2: INPUT})]
    (renamed,) = nesting.rename(entries, {"units": "intermediate_dim", INPUT: None}, "ffn")
    assert renamed.name == "ffn/kernel"
    assert renamed.produces == {-1: "intermediate_dim"} and renamed.consumes == {}
    assert renamed.variable is entries[0].variable


def test_non_negative_axes_are_refused():
    with pytest.raises(ValueError, match="Nested axes are negative"):
        Nested("kernel", _Variable((8, 16)), produces={1: "units"})
