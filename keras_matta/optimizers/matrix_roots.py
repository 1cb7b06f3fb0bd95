"""Inverse p-th roots of symmetric positive semi-definite matrices, written in `keras.ops`."""

import keras
import numpy as np
from keras import ops

ROOT_METHODS = ("eigh", "newton")

# The Newton iteration counts as failed when its residual `max|H^p A - I|` ends above this
# (the `inverse_failure_threshold` of Google's scalable_shampoo).
_NEWTON_FAILURE_THRESHOLD = 0.1
# Below this residual the Newton iteration is in its quadratic phase, so an iteration that does
# not improve it means float rounding has been reached: stop there.
_NEWTON_QUADRATIC_PHASE = 0.1
_SQUARINGS = 16


def _check_arguments(root, method, epsilon):
    """Raises a ValueError naming the argument if `root`, `method` or `epsilon` is invalid."""
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or root < 1:
        raise ValueError(f"`root` must be an integer >= 1; got root={root!r}.")
    if method not in ROOT_METHODS:
        raise ValueError(f"`method` must be one of {ROOT_METHODS}; got method={method!r}.")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
        raise ValueError(f"`epsilon` must be a float >= 0; got epsilon={epsilon!r}.")


def matrix_inverse_root(
    matrix, root, method="eigh", epsilon=1e-6, max_iterations=100, tolerance=0.0
):
    """Inverse `root`-th root of a symmetric PSD matrix, with damping relative to its scale.

    Computes

        X = (A + epsilon * lambda_max(A) * I) ^ (-1 / root)

    for a symmetric positive semi-definite `A` (or a batch of them along leading axes). The
    damping is relative, so the result does not depend on the scale of `A` beyond the factor
    `scale^(-1/root)`, and `epsilon` bounds the condition number of the damped matrix by
    about `1 / epsilon`.

    Methods:

    - `"eigh"`: `A = V diag(w) V^T`, `X = V diag((max(w, 0) + epsilon * max(w))^(-1/root)) V^T`.
      Negative eigenvalues are float rounding of a PSD matrix and are clipped to zero.
    - `"newton"`: the coupled Newton iteration (Higham, *Functions of Matrices*, eq. 7.18; the
      routine of Google's scalable_shampoo), matrix multiplications only, so it suits
      accelerators with a slow or missing eigensolver. With `A` scaled by
      `z = (1 + root) / (2 ||A||_F)` (all eigenvalues in `(0, (1 + root) / 2]`),
      `M_0 = z A`, `H_0 = z^(1/root) I` and

          T_k = ((root + 1) I - M_k) / root,   M_{k+1} = T_k^root M_k,   H_{k+1} = H_k T_k,

      the invariant `M_k = H_k^root A` holds, `M_k -> I` and so `H_k -> A^(-1/root)`. The
      iteration stops when `max|M_k - I| <= tolerance`, when it stops improving inside its
      quadratic phase (float rounding reached), or after `max_iterations`; the iterate with
      the smallest residual is returned. `lambda_max` comes from `max_eigenvalue`.

    Accuracy in float32: both methods are normwise backward stable, so an eigenvalue `w` is
    perturbed by about `u * lambda_max` (`u = 6e-8`), a relative error of `u * kappa` on the
    smallest one, and the result has a relative error of about `u * kappa / root`
    (`kappa = cond(A + damping)`). At `kappa = 1e4` that is ~1e-4; at `kappa = 1e6` it is ~1e-2
    for `root = 2`, whichever method is used. Raise `epsilon` (or use float64 inputs on a
    backend that supports them) when that matters. A float64 `matrix` is computed in float64
    where keras.ops keeps float64 (TensorFlow; not JAX without `jax_enable_x64`, and keras'
    torch `matmul` rounds float64 to float32); any other dtype in float32.

    Args:
        matrix: a symmetric PSD matrix of shape `(..., n, n)`.
        root: the integer `p >= 1` of the inverse `p`-th root.
        method: `"eigh"` (default: the most accurate in float32) or `"newton"`.
        epsilon: relative damping `>= 0`. Defaults to `1e-6` (scalable_shampoo's
            `matrix_epsilon`, with its relative mode).
        max_iterations: the most Newton iterations. Ignored by `"eigh"`.
        tolerance: Newton stops once `max|H^root A - I|` is at most this. Defaults to `0`:
            iterate until rounding stops the residual from improving. A residual `r` bounds
            the error of `H` only by about `kappa * r / root`, so a loose tolerance (Google's
            1e-6) costs accuracy on ill-conditioned matrices. Ignored by `"eigh"`.

    Returns:
        A tensor of the shape of `matrix`. A matrix whose root could not be computed (a
        non-finite entry, a singular matrix with `epsilon=0`, an all-zero matrix, or a Newton
        iteration that did not converge) gives an all-NaN result, so that callers can test
        `ops.isfinite` and keep a previous value.

    Example:

    ```python
    from keras_matta.optimizers import matrix_inverse_root

    g = np.random.randn(8, 3).astype("float32")
    a = g @ g.T  # rank 3, so it needs the damping
    x = matrix_inverse_root(a, 4)  # (a + 1e-6 * lambda_max * I) ** (-1/4), shape (8, 8)

    b = np.cov(np.random.randn(4, 100)).astype("float32")   # full rank, well conditioned
    y = ops.convert_to_numpy(matrix_inverse_root(b, 2, epsilon=0.0))   # or method="newton"
    np.testing.assert_allclose(y @ b @ y, np.eye(4), atol=1e-3)   # y = b^(-1/2)
    ```

    Reference:
        Higham, "Functions of Matrices: Theory and Computation", SIAM 2008 (the coupled Newton
        iteration, eq. 7.18); Anil et al., "Scalable Second Order Optimization for Deep
        Learning", arXiv:2002.09018 (its use and damping in Shampoo).
    """
    _check_arguments(root, method, epsilon)
    matrix = ops.convert_to_tensor(matrix)
    dtype = "float64" if ops.dtype(matrix) == "float64" else "float32"
    matrix = ops.cast(matrix, dtype)
    size = matrix.shape[-1]
    identity = ops.eye(size, dtype=dtype)

    finite_input = all_finite(matrix)
    # A non-finite matrix is replaced before it reaches the eigensolver: torch's eigh raises on
    # NaN instead of returning NaN, which would stop training.
    safe_matrix = ops.where(finite_input, matrix, identity)
    # Statistics are symmetric in exact arithmetic only; the Newton iteration relies on it.
    safe_matrix = (safe_matrix + ops.swapaxes(safe_matrix, -1, -2)) / 2.0

    if method == "eigh":
        result = _eigh_inverse_root(safe_matrix, root, epsilon)
        converged = finite_input
    else:
        result, residual = _newton_inverse_root(
            safe_matrix, root, epsilon, identity, max_iterations, tolerance
        )
        converged = ops.logical_and(finite_input, residual <= _NEWTON_FAILURE_THRESHOLD)
    succeeded = ops.logical_and(converged, all_finite(result))
    return ops.where(succeeded, result, ops.full_like(result, float("nan")))


def eigenbasis(matrix):
    """Eigenvectors of symmetric matrices `(..., n, n)`, as columns by descending eigenvalue.

    Same failure convention as `matrix_inverse_root`: a non-finite matrix (replaced by the
    identity before the solver, which torch's eigh would raise on) or a non-finite result gives
    an all-NaN matrix, so that callers can test `ops.isfinite` and keep a previous basis.
    Computed in float32 (float64 kept as float64).
    """
    matrix = ops.convert_to_tensor(matrix)
    dtype = "float64" if ops.dtype(matrix) == "float64" else "float32"
    matrix = ops.cast(matrix, dtype)
    finite_input = all_finite(matrix)
    safe_matrix = ops.where(finite_input, matrix, ops.eye(matrix.shape[-1], dtype=dtype))
    safe_matrix = (safe_matrix + ops.swapaxes(safe_matrix, -1, -2)) / 2.0
    _, eigenvectors = _eigh(safe_matrix)  # ascending eigenvalues
    eigenvectors = ops.flip(eigenvectors, axis=-1)
    succeeded = ops.logical_and(finite_input, all_finite(eigenvectors))
    return ops.where(succeeded, eigenvectors, ops.full_like(eigenvectors, float("nan")))


def power_qr_eigenbasis(matrix, basis):
    """One power-iteration step from `basis` towards the eigenvectors of symmetric `matrix`.

    `(..., n, n)` each. The columns of `basis` are sorted by descending Rayleigh quotient
    `diag(Q^T S Q)` (their estimated eigenvalues), multiplied by `S` and re-orthogonalized:

        Q_new, _ = qr(S Q[:, order])

    One QR instead of an eigendecomposition, accurate when the statistics move slowly between
    refreshes (SOAP's Algorithm 4). Same failure convention as `eigenbasis`: a non-finite
    input or result gives an all-NaN matrix. Computed in float32 (float64 kept as float64).
    """
    matrix, basis = ops.convert_to_tensor(matrix), ops.convert_to_tensor(basis)
    dtype = "float64" if ops.dtype(matrix) == "float64" else "float32"
    matrix, basis = ops.cast(matrix, dtype), ops.cast(basis, dtype)
    product = ops.matmul(matrix, basis)
    estimates = ops.sum(basis * product, axis=-2)  # (..., n): q_j^T S q_j
    order = ops.argsort(-estimates, axis=-1)
    product = ops.take_along_axis(product, ops.expand_dims(order, -2), axis=-1)
    eigenvectors, _ = ops.qr(product)
    succeeded = ops.logical_and(all_finite(matrix), all_finite(eigenvectors))
    return ops.where(succeeded, eigenvectors, ops.full_like(eigenvectors, float("nan")))


def all_finite(matrices):
    """(..., n, n) -> (..., 1, 1) booleans: whether each matrix is entirely finite.

    Tested on each matrix's sum: one pass over the entries, where `isfinite` is four on some
    backends (PyTorch: `x == x`, `abs`, `!= inf`, `and`), and a refresh tests every statistic.
    A NaN or an infinity makes the sum non-finite; so does a sum that overflows float32 (entries
    about 1e34 and up), whose matrix no float32 root or eigh could handle either.
    """
    return ops.isfinite(ops.sum(matrices, axis=(-2, -1), keepdims=True))


def _eigh(matrices):
    """`ops.eigh` of finite symmetric matrices, with the NaN failure convention on every backend.

    JAX and TensorFlow return NaN where the solver does not converge; torch raises (LAPACK's
    `syevd` on ill-conditioned float32 matrices with clustered eigenvalues, met while training).
    There the batch is solved again in float64, and where that fails too it is all NaN, so the
    callers keep their previous factors instead of ending the user's training run.
    """
    if keras.backend.backend() != "torch":
        return ops.eigh(matrices)
    import torch

    try:
        return ops.eigh(matrices)
    except torch.linalg.LinAlgError:
        pass
    try:
        dtype = ops.dtype(matrices)
        eigenvalues, eigenvectors = ops.eigh(ops.cast(matrices, "float64"))
        return ops.cast(eigenvalues, dtype), ops.cast(eigenvectors, dtype)
    except torch.linalg.LinAlgError:
        nan = ops.full_like(matrices, float("nan"))
        return nan[..., 0], nan


def _eigh_inverse_root(matrix, root, epsilon):
    eigenvalues, eigenvectors = _eigh(matrix)  # (..., n), (..., n, n)
    lambda_max = ops.max(eigenvalues, axis=-1, keepdims=True)
    damped = _at_least(eigenvalues, 0.0) + epsilon * lambda_max
    # An all-zero (or, with epsilon=0, singular) matrix gives inf here: reported as a failure.
    scales = ops.power(damped, -1.0 / root)
    return ops.matmul(eigenvectors * scales[..., None, :], ops.swapaxes(eigenvectors, -1, -2))


def max_eigenvalue(matrix, squarings=_SQUARINGS):
    """Largest eigenvalue of each symmetric PSD matrix in `(..., n, n)`, shape `(..., 1, 1)`.

    Power iteration accelerated by repeated squaring: `B = A^(2^squarings)` (renormalized
    after each squaring) applied to a fixed pseudo-random vector, then the Rayleigh quotient
    of `A`. Plain power iteration's eigenvalue error decays only like `1 / iterations` when
    the top eigenvalues are close; `2^16` effective iterations bound it by ~3e-6 relative,
    which keeps `epsilon * lambda_max` damping consistent with `"eigh"`.
    """
    size = matrix.shape[-1]
    tiny = float(np.finfo(np.float32).tiny)
    def square(i, power):
        power = ops.matmul(power, power)
        return i + 1, power / _at_least(_frobenius(power), tiny)

    _, power = _while_loop(
        lambda i, _: i < squarings, square, (0, matrix / _at_least(_frobenius(matrix), tiny))
    )
    # A structured start (all ones) can be orthogonal to the top eigenvector.
    start = np.random.RandomState(1729).uniform(-1.0, 1.0, (size, 1))
    vector = ops.matmul(power, ops.cast(start, matrix.dtype))  # (..., n, 1)
    numerator = ops.sum(vector * ops.matmul(matrix, vector), axis=(-2, -1), keepdims=True)
    denominator = ops.sum(ops.square(vector), axis=(-2, -1), keepdims=True)
    return numerator / _at_least(denominator, tiny)


def _at_least(tensor, floor):
    # The floor is given the tensor's dtype: keras' torch `maximum` with a Python float
    # returns float32 even for a float64 tensor.
    return ops.maximum(tensor, ops.convert_to_tensor(floor, dtype=ops.dtype(tensor)))


def _frobenius(matrices):
    return ops.sqrt(ops.sum(ops.square(matrices), axis=(-2, -1), keepdims=True))


def _matrix_power(matrix, exponent):
    """`matrix ** exponent` for a Python integer exponent >= 1, by repeated squaring."""
    result = None
    while exponent:
        if exponent & 1:
            result = matrix if result is None else ops.matmul(result, matrix)
        exponent >>= 1
        if exponent:
            matrix = ops.matmul(matrix, matrix)
    return result


def _newton_inverse_root(matrix, root, epsilon, identity, max_iterations, tolerance):
    """Coupled Newton iteration; returns the best iterate and its residual `max|M - I|`."""
    lambda_max = max_eigenvalue(matrix)
    damped = matrix + epsilon * lambda_max * identity
    # ||A||_F >= lambda_max, so z puts every eigenvalue of M_0 in (0, (1 + root) / 2]; an
    # eigenvalue estimate could undershoot and push M_0 outside the region of convergence.
    z = (1.0 + root) / (2.0 * _frobenius(damped))
    m = damped * z
    h = ops.broadcast_to(identity, matrix.shape) * ops.power(z, 1.0 / root)
    residual = _max_abs(m - identity)

    def keep_going(i, m, h, best_h, best_residual, residual, done):
        return ops.logical_and(i < max_iterations, ops.logical_not(ops.all(done)))

    def iterate(i, m, h, best_h, best_residual, previous_residual, done):
        t = ((root + 1.0) * identity - m) / root
        m = ops.matmul(_matrix_power(t, root), m)
        h = ops.matmul(h, t)
        residual = _max_abs(m - identity)
        improved = residual < best_residual
        best_h = ops.where(improved, h, best_h)
        best_residual = ops.where(improved, residual, best_residual)
        stalled = ops.logical_and(
            previous_residual < _NEWTON_QUADRATIC_PHASE, residual >= previous_residual
        )
        done = ops.logical_or(done, ops.logical_or(residual <= tolerance, stalled))
        # NaN (a diverged iterate) compares False everywhere above, so mark it done too.
        done = ops.logical_or(done, ops.logical_not(ops.isfinite(residual)))
        return i + 1, m, h, best_h, best_residual, residual, done

    initial = (0, m, h, h, residual, residual, residual <= tolerance)
    _, _, _, best_h, best_residual, _, _ = _while_loop(keep_going, iterate, initial)
    return best_h, best_residual


def _while_loop(keep_going, body, loop_vars):
    """`ops.while_loop`, or a Python loop when the condition is concrete (eager execution).

    Eager JAX would otherwise trace and compile the loop on every call (~0.5 s); under
    `jit`/`tf.function` the condition is symbolic, `bool()` raises TypeError, and the loop is
    staged with `ops.while_loop`.
    """
    try:
        running = bool(keep_going(*loop_vars))
    except TypeError:
        return ops.while_loop(keep_going, body, loop_vars)
    while running:
        loop_vars = body(*loop_vars)
        running = bool(keep_going(*loop_vars))
    return loop_vars


def _max_abs(matrices):
    return ops.max(ops.abs(matrices), axis=(-2, -1), keepdims=True)
