"""matrix_inverse_root against a float64 NumPy eigendecomposition, on dense SPD matrices."""

import keras
import numpy as np
import pytest
from helpers import to_numpy

from keras_matta.optimizers import matrix_inverse_root

METHODS = ("eigh", "newton")
ROOTS = (2, 4, 8)
FLOAT32_ROUNDING = 2.0**-24
# One shape throughout: JAX compiles each eager op once per shape.
SIZE, BATCH = 24, 3


def gram_with_condition(rng, rows, cols, condition):
    """G G^T + d I for a non-square Gaussian G (rows > cols, so G G^T is singular), with d set
    so that the condition number is exactly `condition`. Rounded to float32, as stored."""
    g = rng.standard_normal((rows, cols))
    gram = g @ g.T
    eigenvalues = np.linalg.eigvalsh(gram)
    damping = (eigenvalues.max() - condition * eigenvalues.min()) / (condition - 1.0)
    return (gram + damping * np.eye(rows)).astype("float32")


def reference_root(matrix, root, epsilon):
    """(A + epsilon lambda_max I)^(-1/root) in float64, from the float32 values of A."""
    eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(matrix, dtype="float64"))
    damped = eigenvalues + epsilon * eigenvalues.max()
    return (eigenvectors * damped ** (-1.0 / root)) @ eigenvectors.T


def computes_in_float64():
    """Whether a float64 matmul keeps float64 precision on this backend: not on JAX without
    jax_enable_x64, nor on torch, where keras' `result_type` maps torch.float64 to float32."""
    x = keras.ops.convert_to_tensor(np.array([[1.0 + 2.0**-40]]))
    return float(to_numpy(keras.ops.matmul(x, x))[0, 0]) != 1.0


def relative_errors(result, reference):
    difference = np.linalg.norm(result - reference, axis=(-2, -1))
    return difference / np.linalg.norm(reference, axis=(-2, -1))


def is_inverse_root(candidate, matrix, root, epsilon, tolerance=1e-3):
    """Whether candidate^root (A + damping) = I to `tolerance`, checked in float64."""
    reference_damped = np.asarray(matrix, "float64") + epsilon * np.linalg.eigvalsh(
        np.asarray(matrix, "float64")
    ).max() * np.eye(matrix.shape[-1])
    product = np.linalg.matrix_power(np.asarray(candidate, "float64"), root) @ reference_damped
    return np.abs(product - np.eye(matrix.shape[-1])).max() < tolerance


@pytest.mark.parametrize("method", METHODS)
def test_matches_float64_reference(method):
    errors = {}
    for root in ROOTS:
        for condition in (1e2, 1e4):
            rng = np.random.default_rng(int(root * condition) % 997)
            matrices = np.stack(
                [gram_with_condition(rng, SIZE, 9, condition) for _ in range(BATCH)]
            )
            result = to_numpy(matrix_inverse_root(matrices, root, method=method, epsilon=1e-6))
            reference = np.stack([reference_root(m, root, 1e-6) for m in matrices])
            assert result.shape == matrices.shape
            errors[(root, condition)] = relative_errors(result, reference).max()
    assert max(errors.values()) < 1e-3, errors


@pytest.mark.parametrize("method", METHODS)
def test_condition_1e6_is_within_the_float32_rounding_floor(method):
    """At condition number 1e6 float32 cannot give 1e-3: a backward-stable method moves each
    eigenvalue by ~u * lambda_max, i.e. the smallest by ~u * kappa relatively, so the root is off
    by ~u * kappa / root (3e-2 for root 2). Checked against that floor (an A^(-1/2) bug is off
    by O(1)); the float64 test below shows the algorithms themselves reach 1e-3 there."""
    condition = 1e6
    for root in ROOTS:
        rng = np.random.default_rng(root)
        matrices = np.stack([gram_with_condition(rng, SIZE, 9, condition) for _ in range(BATCH)])
        result = to_numpy(matrix_inverse_root(matrices, root, method=method, epsilon=1e-6))
        reference = np.stack([reference_root(m, root, 1e-6) for m in matrices])
        floor = FLOAT32_ROUNDING * condition / root
        assert relative_errors(result, reference).max() < 4 * floor, root


@pytest.mark.parametrize("method", METHODS)
def test_condition_1e6_in_float64(method):
    if not computes_in_float64():
        pytest.skip("keras.ops computes float64 in float32 here (JAX without x64; torch matmul)")
    for root in ROOTS:
        rng = np.random.default_rng(10 + root)
        matrices = np.stack([gram_with_condition(rng, SIZE, 9, 1e6) for _ in range(BATCH)])
        result = matrix_inverse_root(
            matrices.astype("float64"), root, method=method, epsilon=1e-6
        )
        reference = np.stack([reference_root(m, root, 1e-6) for m in matrices])
        assert relative_errors(to_numpy(result), reference).max() < 1e-3, root


@pytest.mark.parametrize("method", METHODS)
def test_fourth_root_is_not_the_square_root(method):
    """The bug this guards against: an iteration converging to A^(-1/2) when asked for A^(-1/4),
    invisible on diagonal test matrices whose entries happen to be near 1. On a dense matrix
    with a wide spectrum the two differ by O(1), and X^4 (A + damping) = I tells them apart."""
    rng = np.random.default_rng(7)
    matrices = np.stack([gram_with_condition(rng, SIZE, 8, 1e3) for _ in range(BATCH)])
    # Unit lambda_max puts the 16 null-space eigenvalues at 1e-3, far from 1, where the fourth
    # (5.6) and the square (31.6) inverse roots differ.
    matrices /= np.linalg.eigvalsh(matrices.astype("float64")).max(axis=-1)[:, None, None]
    fourth = to_numpy(matrix_inverse_root(matrices, 4, method=method))
    square = to_numpy(matrix_inverse_root(matrices, 2, method=method))

    for matrix, fourth_root, square_root in zip(matrices, fourth, square):
        assert is_inverse_root(fourth_root, matrix, 4, 1e-6)
        assert not is_inverse_root(square_root, matrix, 4, 1e-6)  # the checker sees the bug
    assert relative_errors(fourth, square).min() > 0.5
    # (A^(-1/4))^2 = A^(-1/2): the two roots are consistent with each other.
    assert relative_errors(fourth @ fourth, square).max() < 1e-3
    # An identity-like result (what a diagonal test matrix near I would accept) is far off.
    assert relative_errors(fourth, np.eye(SIZE)).min() > 0.5


@pytest.mark.parametrize("method", METHODS)
def test_damping_is_relative_to_lambda_max(method):
    """(c A)^(-1/p) = c^(-1/p) A^(-1/p) even for a singular A: the damping scales with A."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal((SIZE, 2)).astype("float32")
    singular = g @ g.T  # rank 2
    scales = np.array([1e-4, 1.0, 1e4], dtype="float32")
    result = to_numpy(
        matrix_inverse_root(singular * scales[:, None, None], 4, method=method, epsilon=1e-2)
    )
    reference = reference_root(singular, 4, 1e-2)
    for scale, root_of_scaled in zip(scales, result):
        assert relative_errors(root_of_scaled, reference_root(singular * scale, 4, 1e-2)) < 1e-3
        assert relative_errors(root_of_scaled * scale**0.25, reference) < 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_failed_roots_are_nan_and_do_not_touch_other_matrices(method):
    rng = np.random.default_rng(5)
    good = gram_with_condition(rng, SIZE, 12, 1e2)
    with_nan = good.copy()
    with_nan[1, 2] = np.nan
    batch = np.stack([good, with_nan, np.zeros_like(good)])
    result = to_numpy(matrix_inverse_root(batch, 4, method=method))
    assert np.isnan(result[1]).all() and np.isnan(result[2]).all()
    assert relative_errors(result[0], reference_root(good, 4, 1e-6)) < 1e-4

    g = rng.standard_normal((BATCH, SIZE, 2)).astype("float32")
    singular = g @ np.swapaxes(g, 1, 2)
    assert np.isnan(to_numpy(matrix_inverse_root(singular, 4, method=method, epsilon=0.0))).all()


def test_invalid_arguments_raise_naming_the_argument():
    matrix = np.eye(3, dtype="float32")
    with pytest.raises(ValueError, match="`root` must be an integer >= 1; got root=0"):
        matrix_inverse_root(matrix, 0)
    with pytest.raises(ValueError, match="root=2.5"):
        matrix_inverse_root(matrix, 2.5)
    with pytest.raises(ValueError, match="`method` must be one of .* got method='svd'"):
        matrix_inverse_root(matrix, 4, method="svd")
    with pytest.raises(ValueError, match="`epsilon` must be a float >= 0; got epsilon=-1"):
        matrix_inverse_root(matrix, 4, epsilon=-1.0)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch's eigh raises on failure")
def test_a_torch_solver_failure_is_retried_in_float64_then_reported_as_nan(monkeypatch):
    """torch's eigh raises where JAX and TensorFlow return NaN (seen while training SOAP on
    torch): the batch is solved again in float64, and where that fails too the roots and bases
    are NaN, which Shampoo and SOAP answer by keeping their previous factors."""
    import torch

    from keras_matta.optimizers.matrix_roots import eigenbasis

    solve = torch.linalg.eigh
    calls = []

    def fails_in_float32(matrices):
        calls.append(matrices.dtype)
        if matrices.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.eigh: the algorithm failed to converge")
        return solve(matrices)

    rng = np.random.default_rng(6)
    batch = np.stack([gram_with_condition(rng, SIZE, 12, 1e2) for _ in range(BATCH)])
    monkeypatch.setattr(torch.linalg, "eigh", fails_in_float32)
    result = to_numpy(matrix_inverse_root(batch, 4))
    assert calls == [torch.float32, torch.float64] and result.dtype == np.float32
    for matrix, root in zip(batch, result):
        assert relative_errors(root, reference_root(matrix, 4, 1e-6)) < 1e-4

    def always_fails(matrices):
        raise torch.linalg.LinAlgError("linalg.eigh: the algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigh", always_fails)
    assert np.isnan(to_numpy(matrix_inverse_root(batch, 4))).all()
    assert np.isnan(to_numpy(eigenbasis(batch))).all()
