"""The shared type checks: which values count as integers and which as width fractions."""

import fractions

import numpy as np
import pytest

from keras_matta._validation import is_fraction
from keras_matta._validation import is_int

pytestmark = pytest.mark.backend_agnostic  # type checks of Python and NumPy values

INTEGERS = [0, 4, -3, 2**70, np.int8(4), np.int32(4), np.int64(4), np.uint16(4)]
FRACTIONS = [0.25, 1.0, -0.5, float("nan"), np.float16(0.5), np.float32(0.5), np.float64(1.0),
             fractions.Fraction(1, 4)]
NEITHER = [True, False, np.bool_(True), None, "4", "0.5", b"4", 1j, [4], (4,), np.array(4),
           np.array([4]), np.array(0.5)]


@pytest.mark.parametrize("value", INTEGERS, ids=repr)
def test_integers_are_ints_and_not_fractions(value):
    assert is_int(value) and not is_fraction(value)


@pytest.mark.parametrize("value", FRACTIONS, ids=repr)
def test_non_integral_reals_are_fractions_and_not_ints(value):
    assert is_fraction(value) and not is_int(value)


@pytest.mark.parametrize("value", NEITHER, ids=repr)
def test_bools_strings_containers_and_arrays_are_neither(value):
    # A bool is an `int` subclass, and 0-d arrays compare like scalars: both must still fail.
    assert not is_int(value) and not is_fraction(value)
