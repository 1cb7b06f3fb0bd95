"""SOAP: steps against an independent float64 NumPy implementation, state, failures, arguments."""

import keras
import numpy as np
import pytest
from helpers import to_numpy
from optimizers.kronecker_reference import SHAPE
from optimizers.kronecker_reference import VARIABLES
from optimizers.kronecker_reference import NumpyKroneckerReference
from optimizers.kronecker_reference import assert_config_round_trip_and_registration
from optimizers.kronecker_reference import assert_invalid_arguments_raise
from optimizers.kronecker_reference import run_against_reference

from keras_matta.optimizers import SOAP
from keras_matta.optimizers import soap as soap_module

# === An independent float64 NumPy SOAP, written from the docstring ===


class NumpySOAP(NumpyKroneckerReference):
    """One variable's SOAP state: explicit ragged blocks in Python loops, float64 eigh.

    Its second moment lives in the eigenbasis, block by block, for preconditioned variables.
    """

    def step(self, weight, gradient, t, lr):
        h = self.h
        b1, b2, eps = h["beta1"], h["beta2"], h["epsilon"]
        beta = b2 if h["shampoo_beta"] is None else h["shampoo_beta"]
        if h["weight_decay"]:
            weight = weight - lr * h["weight_decay"] * weight
        skip = h.get("skip_first_update", False)
        if skip and t == 1:  # the gradient only starts the statistics (and the first bases)
            if self.matrix_shape is not None:
                g = gradient.reshape(self.matrix_shape)
                for i, block in enumerate(self.blocks):
                    self.update_statistics_and_bases(i, g[block], beta, t)
            return weight
        count = t - 1 if skip else t  # Adam's: from the second step
        self.momentum = b1 * self.momentum + (1 - b1) * gradient

        def adam(m, v):
            return (m / (1 - b1**count)) / (np.sqrt(v / (1 - b2**count)) + eps)

        if self.matrix_shape is None:
            self.second_moment = b2 * self.second_moment + (1 - b2) * gradient**2
            return weight - lr * adam(self.momentum, self.second_moment)

        g = gradient.reshape(self.matrix_shape)
        m = self.momentum.reshape(self.matrix_shape)
        v = self.second_moment.reshape(self.matrix_shape)
        update = np.zeros(self.matrix_shape)
        for i, block in enumerate(self.blocks):
            gb = g[block]
            ql, qr = self.left_factor[i], self.right_factor[i]  # the eigenbases
            v[block] = b2 * v[block] + (1 - b2) * (ql.T @ gb @ qr) ** 2
            update[block] = ql @ adam(ql.T @ m[block] @ qr, v[block]) @ qr.T
            # The statistics and bases after the update: a new basis serves from step t + 1.
            self.update_statistics_and_bases(i, gb, beta, t)
        self.second_moment = v.reshape(self.shape)
        return weight - lr * update.reshape(self.shape)

    def update_statistics_and_bases(self, i, block_gradient, beta, t):
        self.update_statistics(i, block_gradient, beta)
        if self.refreshes(t):
            self.left_factor[i] = self.basis(self.left[i], self.left_factor[i], t)
            self.right_factor[i] = self.basis(self.right[i], self.right_factor[i], t)

    def basis(self, statistic, previous, t):
        if self.h.get("basis_refresh") == "power_qr" and t != self.h["start_preconditioning_step"]:
            # One power step from the previous basis, its columns by descending Rayleigh
            # quotient, then Gram-Schmidt (QR).
            product = statistic @ previous
            order = np.argsort(-np.sum(previous * product, axis=0), kind="stable")
            return np.linalg.qr(product[:, order])[0]
        return np.linalg.eigh(statistic)[1][:, ::-1]  # columns by descending eigenvalue


HYPER = dict(
    beta1=0.9,
    beta2=0.95,
    epsilon=1e-8,
    shampoo_beta=0.99,
    block_size=4,
    precondition_frequency=2,
    # Refreshes after steps 4 and 6: the statistics of a 4 x 1 block gain one rank per step,
    # and the eigenvectors of a repeated zero eigenvalue are arbitrary (float32 and float64
    # would disagree).
    start_preconditioning_step=4,
    weight_decay=None,
)


def run_both(steps=9, learning_rate=0.01, named_shapes=VARIABLES, **overrides):
    return run_against_reference(
        SOAP, NumpySOAP, dict(HYPER, **overrides), steps, learning_rate, named_shapes
    )


@pytest.mark.parametrize(
    "overrides",
    [{}, {"shampoo_beta": None, "weight_decay": 0.1}, {"shampoo_beta": 1.0, "beta1": 0.0},
     {"precondition_vectors": True}, {"basis_refresh": "power_qr"},
     {"basis_refresh": "power_qr", "precondition_vectors": True},
     {"skip_first_update": True, "weight_decay": 0.1}],
    ids=["default", "beta2-statistics-decay", "sums-no-momentum", "vectors", "power-qr",
         "power-qr-vectors", "skip-first-update"],
)
def test_steps_match_numpy_reference(overrides):
    optimizer, variables, initial = run_both(**overrides)
    for variable, start in zip(variables, initial):
        assert np.abs(to_numpy(variable) - start).max() > 1e-3
    vectors = overrides.get("precondition_vectors", False)
    assert [layout is not None for layout in optimizer._layouts] == [True, True, vectors, False]


def test_the_eigenbasis_is_not_adam_and_the_start_step_matters():
    """Guard against a reference that agrees because both stay in the standard basis."""
    _, soap_vars, _ = run_both()
    _, adam_vars, _ = run_both(start_preconditioning_step=100)
    kernel_difference = np.abs(to_numpy(soap_vars[0]) - to_numpy(adam_vars[0])).max()
    bias_difference = np.abs(to_numpy(soap_vars[2]) - to_numpy(adam_vars[2])).max()
    assert kernel_difference > 1e-3 and bias_difference == 0.0


def test_skip_first_update_changes_only_the_statistics_at_the_first_step():
    """Guard against a skip that the reference matches by doing nothing: one step moves no
    weight and no moment, fills the statistics and, at `start_preconditioning_step=1`, turns
    the bases from the identity; the next step moves every weight."""
    optimizer, variables, initial = run_both(steps=1, skip_first_update=True,
                                             start_preconditioning_step=1)
    for variable, start in zip(variables, initial):
        np.testing.assert_array_equal(to_numpy(variable), start.astype("float32"))
    state = {v.name: to_numpy(v) for v in optimizer.variables}
    assert not any(np.any(value) for name, value in state.items() if "moment" in name)
    assert np.any(state["kernel_left_statistics"])
    assert not np.allclose(state["kernel_left_eigenbasis"], np.eye(4))
    _, variables, initial = run_both(steps=2, skip_first_update=True)
    for variable, start in zip(variables, initial):
        assert np.abs(to_numpy(variable) - start).max() > 1e-3


def test_power_qr_refreshes_differ_from_eigh_after_the_first():
    """Guard against a power-QR path that runs eigh: the first refresh (step 4) is an eigh in
    both, so the weights agree through step 5 and differ once the QR bases serve (step 7)."""
    _, eigh_vars, _ = run_both(steps=5)
    _, qr_vars, _ = run_both(steps=5, basis_refresh="power_qr")
    np.testing.assert_allclose(to_numpy(qr_vars[0]), to_numpy(eigh_vars[0]), rtol=1e-6)
    _, eigh_vars, _ = run_both(steps=9)
    _, qr_vars, _ = run_both(steps=9, basis_refresh="power_qr")
    assert np.abs(to_numpy(qr_vars[0]) - to_numpy(eigh_vars[0])).max() > 1e-5


def test_before_the_first_refresh_it_is_keras_adam():
    rng = np.random.default_rng(1)
    start = rng.standard_normal(SHAPE).astype("float32")
    soap_var, adam_var = keras.Variable(start), keras.Variable(start)
    # Keras adds epsilon before Adam's bias correction, SOAP after; with a negligible epsilon
    # the two updates are the same formula.
    soap = SOAP(learning_rate=0.01, beta1=0.9, beta2=0.999, epsilon=1e-12,
                start_preconditioning_step=100, block_size=4)
    adam = keras.optimizers.Adam(learning_rate=0.01, epsilon=1e-12)
    for _ in range(5):
        gradient = keras.ops.convert_to_tensor(rng.standard_normal(SHAPE).astype("float32"))
        soap.apply([gradient], [soap_var])
        adam.apply([gradient], [adam_var])
    np.testing.assert_allclose(to_numpy(soap_var), to_numpy(adam_var), rtol=1e-5, atol=1e-6)
    assert np.abs(to_numpy(soap_var) - start).max() > 0.01


@pytest.mark.parametrize("basis_refresh", ["eigh", "power_qr"])
def test_padded_statistics_of_different_sides_keep_their_own_eigenbasis(basis_refresh):
    """Sides 4, 3 and 2 share one padded eigh call (PyTorch: one call per side): each basis is
    orthogonal and diagonalizes its own statistic, all-zero statistics (a shared eigenvalue
    with naive padding) included. Power steps from the identity (refreshes of the same
    statistics) get there too, and never mix a statistic's coordinates with its padding's."""
    optimizer = SOAP(basis_refresh=basis_refresh)
    rng = np.random.default_rng(2)
    statistics = []
    for side in (4, 3, 2):
        # Eigenvalues 1, 1/4, 1/16, ...: a power step shrinks each error by 4x.
        rotation = np.linalg.qr(rng.standard_normal((2, side, side)))[0]
        spectrum = 0.25 ** np.arange(side)
        statistic = (rotation * spectrum) @ np.swapaxes(rotation, -1, -2)
        statistics.append(keras.ops.convert_to_tensor(statistic.astype("float32")))
    statistics.append(keras.ops.zeros((1, 3, 3)))
    # From the identity (an untrained basis), never at the first refresh (step 1): eigh once,
    # or power steps only.
    bases = tuple(keras.ops.broadcast_to(keras.ops.eye(s.shape[-1]), s.shape)
                  for s in statistics)
    for t in range(1, 15 if basis_refresh == "power_qr" else 2):
        bases = optimizer._refreshed_factors(tuple(statistics), bases, float(t + 1))
    for s, q in zip(statistics, bases):
        s, q = to_numpy(s), to_numpy(q)
        np.testing.assert_allclose(np.swapaxes(q, -1, -2) @ q, np.broadcast_to(np.eye(
            s.shape[-1]), s.shape), atol=1e-5)
        rotated = np.swapaxes(q, -1, -2) @ s @ q
        off_diagonal = rotated - rotated * np.eye(s.shape[-1])
        assert np.abs(off_diagonal).max() <= 1e-4 * max(1.0, np.abs(s).max())


def test_failed_eigenbasis_keeps_the_previous_one(monkeypatch):
    variable = keras.Variable(np.ones(SHAPE, "float32"))
    optimizer = SOAP(start_preconditioning_step=2, precondition_frequency=2, block_size=4)
    rng = np.random.default_rng(4)
    gradients = [rng.standard_normal(SHAPE).astype("float32") for _ in range(6)]
    for gradient in gradients[:2]:  # bases computed at step 2
        optimizer.apply([gradient], [variable])
    basis_at_step_2 = to_numpy(optimizer._left_factors[0])
    assert not np.allclose(basis_at_step_2[0], np.eye(4))

    def failing_basis(matrix):
        return keras.ops.full_like(matrix, float("nan"))

    monkeypatch.setattr(soap_module, "eigenbasis", failing_basis)
    for gradient in gradients[2:4]:  # the step-4 refresh fails
        optimizer.apply([gradient], [variable])
    np.testing.assert_array_equal(to_numpy(optimizer._left_factors[0]), basis_at_step_2)
    assert np.isfinite(to_numpy(variable)).all()

    monkeypatch.undo()
    for gradient in gradients[4:]:  # step 6 refreshes again
        optimizer.apply([gradient], [variable])
    assert not np.array_equal(to_numpy(optimizer._left_factors[0]), basis_at_step_2)
    assert np.isfinite(to_numpy(variable)).all()


def test_nan_in_a_statistic_does_not_reach_the_weights():
    variable = keras.Variable(np.ones(SHAPE, "float32"))
    optimizer = SOAP(learning_rate=0.01, start_preconditioning_step=2, precondition_frequency=2,
                     block_size=4)
    rng = np.random.default_rng(3)
    for _ in range(3):
        optimizer.apply([rng.standard_normal(SHAPE).astype("float32")], [variable])
    poisoned = to_numpy(optimizer._left_statistics[0])
    poisoned[0, 1, 1] = np.nan
    optimizer._left_statistics[0].assign(poisoned)
    for _ in range(4):  # step 4 refreshes from the restarted statistic
        optimizer.apply([rng.standard_normal(SHAPE).astype("float32")], [variable])
    assert np.isfinite(to_numpy(optimizer._left_statistics[0])).all()
    assert np.isfinite(to_numpy(variable)).all()


def test_state_names_and_shapes():
    """Variable names follow Shampoo's scheme (`add_shampoo_layouts` reads them)."""
    kernel = keras.Variable(np.zeros((10, 7), "float32"), name="kernel")
    optimizer = SOAP(block_size=4)
    optimizer.build([kernel])
    shapes = {v.name: tuple(v.shape) for v in optimizer.variables}
    assert shapes["kernel_left_eigenbasis"] == (6, 4, 4)
    assert shapes["kernel_right_statistics"] == (6, 4, 4)
    # Both moments of a preconditioned variable live in the eigenbasis, block by block.
    assert shapes["kernel_rotated_second_moment"] == (6, 4, 4)
    assert shapes["kernel_rotated_momentum"] == (6, 4, 4)
    assert "kernel_momentum" not in shapes and "kernel_second_moment" not in shapes


def test_get_config_round_trip_and_registration():
    optimizer = SOAP(learning_rate=0.02, beta1=0.8, beta2=0.99, epsilon=1e-7, shampoo_beta=1.0,
                     block_size=64, precondition_frequency=5, start_preconditioning_step=3,
                     max_preconditioner_dim=2048, exclude_embeddings=False,
                     exclude_layers=["head"], weight_decay=0.01, gradient_accumulation_steps=2,
                     basis_refresh="power_qr", skip_first_update=True)
    assert_config_round_trip_and_registration(optimizer)


INVALID_VALUES = [
    ({"beta1": 1.0}, r"`beta1` must be a number in \[0, 1\); got beta1=1.0"),
    ({"beta2": 1.0}, r"`beta2` must be a number in \(0, 1\); got beta2=1.0"),
    ({"epsilon": 0.0}, r"`epsilon` must be a number in \(0, inf\); got epsilon=0.0"),
    ({"shampoo_beta": 0.0}, r"`shampoo_beta` must be a number in \(0, 1\]; got shampoo_beta=0.0"),
    ({"weight_decay": -0.1}, r"`weight_decay` must be a number in \[0, inf\)"),
    ({"block_size": 0}, "`block_size` must be an integer >= 1; got block_size=0"),
    ({"precondition_frequency": 1.5}, "precondition_frequency=1.5"),
]
INVALID_TYPES = [
    ({"exclude_embeddings": 1}, "`exclude_embeddings` must be a bool"),
    ({"exclude_layers": "head"}, "`exclude_layers` must be a list"),
    ({"skip_first_update": 1}, "`skip_first_update` must be a bool; got 1"),
]


def test_invalid_arguments_raise_naming_argument_and_value():
    assert_invalid_arguments_raise(SOAP, INVALID_VALUES, INVALID_TYPES)
    with pytest.raises(ValueError, match=r"`basis_refresh` must be one of .*got 'qr'"):
        SOAP(basis_refresh="qr")
