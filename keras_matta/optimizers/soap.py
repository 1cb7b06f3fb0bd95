"""SOAP: Adam in the eigenbasis of Shampoo's Kronecker factors."""

import keras
from keras import ops

from keras_matta.optimizers import grafting as grafting_lib
from keras_matta.optimizers.kronecker import KroneckerFactoredOptimizer
from keras_matta.optimizers.kronecker import StepScalars
from keras_matta.optimizers.kronecker import check_number
from keras_matta.optimizers.kronecker import pad_matrices
from keras_matta.optimizers.kronecker import transpose
from keras_matta.optimizers.matrix_roots import eigenbasis
from keras_matta.optimizers.matrix_roots import power_qr_eigenbasis

BASIS_REFRESHES = ("eigh", "power_qr")


@keras.saving.register_keras_serializable(package="keras_matta")
class SOAP(KroneckerFactoredOptimizer):
    """SOAP: Adam run in the eigenbasis of Shampoo's statistics, refreshed periodically.

    Blocks, statistics, the refresh schedule and failure handling are Shampoo's (see
    `Shampoo`: "Shapes", `block_size`, `exclude_*`). Per block `G` (m x n) of step `t`:

    ```
    G' = Q_L^T G Q_R                                 # the gradient in the eigenbasis
    M'_t = beta1 M'_{t-1} + (1 - beta1) G'           # first moment, kept in the eigenbasis
    v_t = beta2 v_{t-1} + (1 - beta2) G'^2           # second moment, kept in the eigenbasis
    N' = (M'_t / (1 - beta1^t)) / (sqrt(v_t / (1 - beta2^t)) + epsilon)
    w <- w - learning_rate * Q_L N' Q_R^T
    L_t = b L_{t-1} + (1 - b) G G^T,   R_t = b R_{t-1} + (1 - b) G^T G    # b = shampoo_beta
    every precondition_frequency steps from start_preconditioning_step on, after the update:
        Q_L, Q_R = eigenvectors of L_t, R_t          # eigh; identity until the first refresh
      or, with basis_refresh="power_qr", after an eigh at the first refresh:
        Q_L = qr(L_t Q_L[:, order]),  order: descending diag(Q_L^T L_t Q_L)   # likewise Q_R
      and the first moment follows the basis: M' <- P_L^T M' P_R, P = Q_old^T Q_new
    ```

    `M'` is the paper's rotated first moment `Q_L^T m_t Q_R` of the first moment `m_t` of the
    gradients (the bases are orthogonal), which the official code keeps in the original basis
    and rotates at every step. Kept rotated, a step makes six block products instead of eight
    (two Grams, the gradient in, the update out), and a refresh four more: on the digits MLP
    (PyTorch) the step took 0.87x the CPU time of the original-basis form (README, "SOAP").

    With `Q = I` this is Adam, so up to the first refresh, and for variables that are not
    preconditioned (embeddings; biases, norms and `(n, 1)` kernels unless
    `precondition_vectors`), SOAP is Adam (with epsilon added to the bias-corrected
    `sqrt(v_hat)`, as in the Adam paper; Keras' Adam adds it before the correction).
    Eigenvectors are sorted by descending eigenvalue at every refresh, as in the official
    implementation, so an entry of `v` keeps following the eigenvalue of the same rank (and, at
    the first refresh, a block with fewer real rows than the block side keeps its real
    coordinates first); `v` is not otherwise transformed when the basis changes. A refresh whose
    statistics are not finite restarts them from the step's gram, and a basis that fails keeps
    the previous one, as in `Shampoo`. Weight decay is decoupled (AdamW style).

    With `skip_first_update=True`, as in the official implementation and heavyball, the first
    step's gradient only enters the statistics `L`, `R` (and, at the default
    `start_preconditioning_step=1`, the first eigenbases): `m`, `v` and the weights keep their
    initial values and the bias corrections count from the second step (`t - 1` above), so the
    first update is already made in an eigenbasis. (Decoupled weight decay, which Keras applies
    before the update, still acts at the first step.)

    `basis_refresh="power_qr"` replaces each eigendecomposition after the first by one step of
    power iteration from the previous basis and a QR (the paper's Algorithm 4, as its official
    code and `heavyball` do). A QR costs a fraction of an eigh of the same side, which matters
    where refreshes dominate: large blocks, above all on JAX and TensorFlow, where every side
    is padded to the largest in one call. On PyTorch, with whole sides on the digits MLP, the
    step went from 9.7x to 9.5x torch Adam's at the same test accuracy (README, "SOAP").

    Args:
        learning_rate: float, schedule or callable. Defaults to `0.003` (the paper's setting).
        beta1: first-moment decay, in `[0, 1)`. Defaults to `0.9` (heavyball's; the paper
            uses 0.95). Against 0.95, whole-side SOAP on the byte LM of
            `benchmarks/shampoo_references.py` was 0.068 ± 0.011 bits/byte better (two
            seeds, paired), and tied on the digits MLP (+0.0016 ± 0.0050 accuracy, five).
        beta2: second-moment decay, in `(0, 1)`. Defaults to `0.95` (the paper's).
        epsilon: Adam's denominator term, `> 0`. Defaults to `1e-8`.
        shampoo_beta: decay of the statistics `L`, `R`, in `(0, 1]` (`1`: sums), or `None`
            for `beta2` (the paper's default). Defaults to `None`.
        block_size: largest block side. Defaults to `128` (the paper uses whole matrices up
            to 10000: blocks cap the eigendecomposition cost, `O(block_size^3)`, on CPUs).
        precondition_frequency: recompute the eigenbases every this many steps. Defaults to
            `10` (the paper's).
        start_preconditioning_step: first step (1-based) that computes the eigenbases, used
            from the next step on. Defaults to `1` (the paper's).
        max_preconditioner_dim: a matrix with a side longer than this uses Adam. Defaults to
            `4096`.
        exclude_embeddings: use Adam for variables whose path contains "embedding".
            Defaults to `True`.
        exclude_layers: regular expressions; variables whose path matches one use Adam (see
            `Shampoo`). Defaults to `None`.
        basis_refresh: `"eigh"` (default: exact eigenvectors at every refresh) or
            `"power_qr"` (an eigh at the first refresh, then one power step and a QR).
        skip_first_update: whether the first step only starts the statistics (above). Defaults
            to `False`: on `benchmarks/shampoo_references.py` it ties with the first step
            taken, on the byte LM (2.855 ± 0.004 bits/byte against 2.852 ± 0.012 at the
            default blocks, 2.843 ± 0.024 against 2.831 ± 0.020 with whole sides) and on the
            digits MLP (0.9540 ± 0.0055 at the default blocks, within the seed spread of the
            default's runs; 0.9556 against 0.9576 whole) (README, "SOAP").
        precondition_vectors: run Adam in the eigenbasis of one full factor per block for
            biases, norms' scales and `(n, 1)` kernels (the column `(n, 1)`: its right factor
            is `1 x 1`), instead of plain Adam. Defaults to `False`.
        weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps, name:
            the standard `keras.optimizers.Optimizer` arguments.

    Example:

    ```python
    from keras_matta.optimizers import SOAP

    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32), keras.layers.Dense(1)])
    optimizer = SOAP(learning_rate=3e-3)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.random.rand(256, 16), np.random.rand(256, 1), epochs=2, verbose=0)
    # The 16 x 32 kernel's left eigenbasis, refreshed after steps 1 and 11: an orthogonal matrix.
    left = [v for v in optimizer.variables if v.name.endswith("kernel_left_eigenbasis")][0]
    q = ops.convert_to_numpy(left)[0]  # (16, 16): one block
    np.testing.assert_allclose(q.T @ q, np.eye(16), atol=1e-5)
    assert not np.allclose(q, np.eye(16))
    ```

    Reference:
        Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson and Kakade, "SOAP:
        Improving and Stabilizing Shampoo using Adam", arXiv:2409.11321 (2024). George,
        Laurent, Bouthillier, Ballas and Vincent, "Fast Approximate Natural Gradient Descent in
        a Kronecker-factored Eigenbasis" (EKFAC), NeurIPS 2018.
    """

    FACTOR_NAME = "eigenbasis"
    # As in the paper, a basis refreshed at step t is first used at step t + 1. Computed from
    # statistics that include G_t, it would put G_t entirely in their range: on the rest of the
    # basis (the null space of statistics of lower rank than the block side, common in the
    # first steps and for narrow blocks) the rotated G_t would be float rounding, which Adam's
    # normalization turns into full-size steps (measured: a training loss that rose).
    FACTORS_SEE_THE_STEP_GRADIENT = False

    def __init__(
        self,
        learning_rate=0.003,
        beta1=0.9,
        beta2=0.95,
        epsilon=1e-8,
        shampoo_beta=None,
        block_size=128,
        precondition_frequency=10,
        start_preconditioning_step=1,
        max_preconditioner_dim=4096,
        exclude_embeddings=True,
        exclude_layers=None,
        precondition_vectors=False,
        basis_refresh="eigh",
        skip_first_update=False,
        **kwargs,
    ):
        # === Validation, before any work (the base class checks the arguments it shares) ===
        if not isinstance(skip_first_update, bool):
            raise TypeError(f"`skip_first_update` must be a bool; got {skip_first_update!r}.")
        if basis_refresh not in BASIS_REFRESHES:
            raise ValueError(f"`basis_refresh` must be one of {BASIS_REFRESHES}; got "
                             f"{basis_refresh!r}.")
        numbers = [
            ("beta2", beta2, "(0, 1)"),
            ("epsilon", epsilon, "(0, inf)"),
        ]
        if shampoo_beta is not None:
            numbers.append(("shampoo_beta", shampoo_beta, "(0, 1]"))
        for arg, value, interval in numbers:
            check_number(arg, value, interval)

        super().__init__(
            learning_rate=learning_rate,
            beta1=beta1,
            statistics_decay=beta2 if shampoo_beta is None else shampoo_beta,
            block_size=block_size,
            precondition_frequency=precondition_frequency,
            start_preconditioning_step=start_preconditioning_step,
            max_preconditioner_dim=max_preconditioner_dim,
            exclude_embeddings=exclude_embeddings,
            exclude_layers=exclude_layers,
            precondition_vectors=precondition_vectors,
            **kwargs,
        )
        self.beta2 = float(beta2)
        self.epsilon = float(epsilon)
        self.shampoo_beta = None if shampoo_beta is None else float(shampoo_beta)
        self.basis_refresh = basis_refresh
        self.skip_first_update = skip_first_update

    # === State ===

    def _build_momentum(self, variable, layout):
        return self._add_moment(variable, layout, "momentum")

    def _build_variable_state(self, variable, index, layout):
        self._second_moments[index] = self._add_moment(variable, layout, "second_moment")

    def _add_moment(self, variable, layout, name):
        """A moment of `variable`, in its shape, or for a preconditioned one in the eigenbasis,
        block by block (`rotated_<name>`; padding included: its entries stay ~0 and are masked
        out of the update). A step then rotates only the gradient in; a refresh moves the
        first moment into the new basis (`_carry_to_new_factors`)."""
        if layout is None:
            return self._add_state(variable, variable.shape, name)
        return self._add_state(variable, (layout.num_blocks, *layout.block_shape),
                               f"rotated_{name}")

    # === Eigenbases (the factors) ===

    def _factors(self, statistics, t, previous):
        # Eigenvectors do not depend on the statistics' scale: no bias correction.
        if self.basis_refresh == "eigh":
            return eigenbasis(statistics)
        # The first refresh starts from the identity, which no power step would turn into an
        # eigenbasis: an eigh there.
        return ops.cond(
            ops.equal(t, self.start_preconditioning_step),
            lambda: eigenbasis(statistics),
            lambda: power_qr_eigenbasis(statistics, previous),
        )

    def _factor_basis_state(self, indices):
        return [self._momentums[index] for index in indices]

    def _carry_to_new_factors(self, states, previous, factors):
        # M' = Q_L^T m Q_R in the old bases is Q_L'^T m Q_R' in the new ones after
        # P_L^T M' P_R, with P = Q^T Q' (Q orthogonal): m itself is never formed.
        moved = []
        for k, rotated in enumerate(states):
            left = ops.matmul(transpose(previous[2 * k]), factors[2 * k])
            right = ops.matmul(transpose(previous[2 * k + 1]), factors[2 * k + 1])
            moved.append(ops.matmul(ops.matmul(transpose(left), rotated), right))
        return moved

    def _pad_statistics(self, statistics, side):
        """`S` in the top-left, `-(trace(S) + 1) I` below it.

        The padding's eigenvalue is below every eigenvalue of the PSD `S` (all in
        `[0, trace(S)]`, up to rounding) by at least `trace(S) + 1 >= lambda_max(S)`, so no
        eigenvector mixes `S`'s coordinates with the padding's (a shared eigenvalue would, e.g.
        with all-zero statistics), and the padding's eigenvectors sort last: the top-left
        block of the padded basis is `S`'s basis.
        """
        trace = ops.trace(statistics, axis1=-2, axis2=-1)
        return pad_matrices(statistics, side, -(ops.abs(trace) + 1.0))

    # === Update ===

    def _step_scalars(self, learning_rate):
        schedule = self.schedule(learning_rate)
        t = schedule.t
        if self.skip_first_update:
            # Adam's count starts at the second step; at the first, m = v = 0 stay 0 (see
            # `_update_variables`), so its update is 0 whatever the count (kept at 1: finite).
            t = ops.maximum(t - 1.0, 1.0)
        return StepScalars(
            schedule=schedule,
            momentum_weight=1.0 / (1.0 - ops.power(self.beta1, t)),
            second_moment_scale=grafting_lib.second_moment_scale("adam", t, self.beta2),
        )

    def _update_variables(self, gradients, variables, indices, scalars):
        elementwise = self._elementwise
        if self.skip_first_update:
            # The moments are 0 before the first step: a zero gradient keeps them there (the
            # statistics, updated by the caller, still see the real one).
            keeps = ops.cast(scalars.schedule.t > 1.0, "float32")
            gradients = elementwise.linear(gradients, keeps)
        # Into each preconditioned variable's eigenbasis, block by block (before the first
        # refresh, Q = I: Adam's own basis), where its momentum lives; the others stay as
        # they are.
        gradients, bases = list(gradients), []
        for k, index in enumerate(indices):
            layout = self._layouts[index]
            if layout is None:
                bases.append(None)
                continue
            left = ops.convert_to_tensor(self._left_factors[index])  # (blocks, rows, rows)
            right = ops.convert_to_tensor(self._right_factors[index])  # (blocks, cols, cols)
            gradients[k] = ops.matmul(ops.matmul(transpose(left), layout.to_blocks(gradients[k])),
                                      right)
            bases.append((left, right))
        momenta = self._update_momenta(gradients, indices)

        updates = grafting_lib.grafted_directions(
            "adam", elementwise, [self._second_moments[i] for i in indices], gradients,
            elementwise.linear(momenta, scalars.momentum_weight),
            scalars.second_moment_scale, self.beta2, self.epsilon,
        )
        for k, (index, basis) in enumerate(zip(indices, bases)):
            if basis is None:
                continue
            # Back to the original basis: Q_L N' Q_R^T.
            left, right = basis
            layout = self._layouts[index]
            update = ops.matmul(ops.matmul(left, updates[k]), transpose(right))
            if layout.is_padded:
                update = update * layout.mask
            updates[k] = layout.from_blocks(update)
        elementwise.subtract(variables, updates, scalars.schedule.learning_rate)

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta2": self.beta2,
                "epsilon": self.epsilon,
                "shampoo_beta": self.shampoo_beta,
                "basis_refresh": self.basis_refresh,
                "skip_first_update": self.skip_first_update,
            }
        )
        return config
