"""What Shampoo and SOAP share: blocks, Kronecker-factor statistics and their periodic refresh.

Both optimizers view each variable as a matrix cut into blocks (`blocking.py`), keep per block
the statistics `L = sum beta^k G G^T` and `R = sum beta^k G^T G`, and every
`precondition_frequency` steps turn each statistic into one matrix, its *factor*: Shampoo's
inverse 4th root, SOAP's eigenbasis. Everything about that, computing all factors of a step in a
few batched calls, refreshing only at scheduled steps (staged under `jit`, a Python branch
eagerly), restarting non-finite statistics and keeping the previous factor where a new one
fails, lives here once, and so do what both keep besides: a first moment of every variable
(`beta1`), a place for a second moment, and the arguments that every Keras optimizer takes. A
subclass supplies the factor (`_factors`, `_pad_statistics`) and the update of the variables
(`_step_scalars`, `_update_variables`), whose element-wise passes go through
`elementwise.py` (one fused call per pass on PyTorch).
"""

import re
from typing import Any
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_matta.optimizers import elementwise as elementwise_lib
from keras_matta.optimizers.blocking import BlockLayout
from keras_matta.optimizers.blocking import matrix_shape_for
from keras_matta.optimizers.matrix_roots import all_finite


class Schedule(NamedTuple):
    """Where a step is in the preconditioning schedule; every variable's update shares it."""

    t: Any  # the 1-based step, float32
    learning_rate: Any  # float32
    preconditions: Any  # step >= start_preconditioning_step
    refreshes: Any  # this step recomputes the factors


class StepScalars(NamedTuple):
    """The scalars of one step, shared by every variable's update."""

    schedule: Schedule
    momentum_weight: Any  # m_hat = momentum_weight * m_t (+ gradient_weight * g_t)
    second_moment_scale: Any  # see grafting.second_moment_scale
    gradient_weight: Any = None  # Shampoo's Nesterov momentum; None: m_hat without g_t


class KroneckerFactoredOptimizer(keras.optimizers.Optimizer):
    """Base class of `Shampoo` and `SOAP` (not public: see their docstrings for the math).

    `beta1` is the decay of the first moment `m <- beta1 m + (1 - beta1) g` that both keep of
    every variable; `statistics_decay` is the `beta` of `S <- beta S + (1 - beta) gram` (`1`:
    plain sums). The other arguments are documented by the subclasses, which validate their own
    ones before calling this `__init__`; the standard `keras.optimizers.Optimizer` arguments
    (`weight_decay`, `clipnorm`, ..., `name`) pass through `**kwargs`.
    """

    # The factor's name in its optimizer variables' names (`<variable>_left_<name>`), which
    # `keras_matta.distribution.add_shampoo_layouts` looks up.
    FACTOR_NAME = "factor"
    # Whether a step's own gradient enters the factors it is preconditioned with (Shampoo) or
    # only the next step's (SOAP: see its `FACTORS_SEE_THE_STEP_GRADIENT`).
    FACTORS_SEE_THE_STEP_GRADIENT = True

    def __init__(
        self,
        learning_rate,
        beta1,
        statistics_decay,
        block_size,
        precondition_frequency,
        start_preconditioning_step,
        max_preconditioner_dim,
        exclude_embeddings,
        exclude_layers,
        precondition_vectors=False,
        weight_decay=None,
        **kwargs,
    ):
        check_number("beta1", beta1, "[0, 1)")
        if weight_decay is not None:
            check_number("weight_decay", weight_decay, "[0, inf)")
        for arg, value in (
            ("block_size", block_size),
            ("precondition_frequency", precondition_frequency),
            ("start_preconditioning_step", start_preconditioning_step),
            ("max_preconditioner_dim", max_preconditioner_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{arg}` must be an integer >= 1; got {arg}={value!r}.")
        for arg, value in (("exclude_embeddings", exclude_embeddings),
                           ("precondition_vectors", precondition_vectors)):
            if not isinstance(value, bool):
                raise TypeError(f"`{arg}` must be a bool; got {arg}={value!r}.")
        if isinstance(exclude_layers, str) or not all(
            isinstance(pattern, str) for pattern in exclude_layers or []
        ):
            raise TypeError(
                "`exclude_layers` must be a list of regular-expression strings or None; "
                f"got exclude_layers={exclude_layers!r}."
            )
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        self.beta1 = float(beta1)
        self.block_size = int(block_size)
        self.precondition_frequency = int(precondition_frequency)
        self.start_preconditioning_step = int(start_preconditioning_step)
        self.max_preconditioner_dim = int(max_preconditioner_dim)
        self.exclude_embeddings = exclude_embeddings
        self.exclude_layers = list(exclude_layers or [])
        self.precondition_vectors = precondition_vectors
        self._statistics_decay = float(statistics_decay)
        self._elementwise = elementwise_lib.for_backend(self)

    # === State ===

    def block_layout(self, variable):
        """The `BlockLayout` used for `variable`, or None if it is not preconditioned."""
        if self.exclude_embeddings and "embedding" in variable.path.lower():
            return None
        if any(re.search(pattern, variable.path) for pattern in self.exclude_layers):
            return None
        matrix_shape = matrix_shape_for(tuple(variable.shape), self.precondition_vectors)
        if matrix_shape is None or max(matrix_shape) > self.max_preconditioner_dim:
            return None
        return BlockLayout(tuple(variable.shape), matrix_shape, self.block_size)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        count = len(var_list)
        self._momentums = [None] * count
        self._second_moments = [None] * count  # where a subclass keeps one
        self._layouts = [None] * count
        self._left_statistics, self._right_statistics = [None] * count, [None] * count
        self._left_factors, self._right_factors = [None] * count, [None] * count
        for var in var_list:
            if self._overwrite_variable_with_gradient(var):
                continue
            index = self._get_variable_index(var)
            layout = self.block_layout(var)
            self._momentums[index] = self._build_momentum(var, layout)
            self._build_variable_state(var, index, layout)
            if layout is None:
                continue
            self._layouts[index] = layout
            (rows, cols), n = layout.block_shape, layout.num_blocks
            left, right = (n, rows, rows), (n, cols, cols)
            # The identity factor is neutral for both: no preconditioning, the standard basis.
            identity = _BatchedIdentity()
            name = self.FACTOR_NAME
            self._left_statistics[index] = self._add_state(var, left, "left_statistics")
            self._right_statistics[index] = self._add_state(var, right, "right_statistics")
            self._left_factors[index] = self._add_state(var, left, f"left_{name}", identity)
            self._right_factors[index] = self._add_state(var, right, f"right_{name}", identity)

    def _build_momentum(self, variable, layout):
        """The first moment of `variable` (`layout`: its `BlockLayout`, or None); a subclass
        that keeps it in the factors' basis shapes it like the blocks (see
        `_carry_to_new_factors`)."""
        return self._add_state(variable, variable.shape, "momentum")

    def _build_variable_state(self, variable, index, layout):
        """Subclass hook: state every variable has besides its momentum (a second moment);
        `layout` as for `_build_momentum`."""

    def _add_state(self, variable, shape, suffix, initializer="zeros"):
        """A float32 optimizer variable named after `variable`, whatever its dtype."""
        return self.add_variable(
            shape=shape,
            initializer=initializer,
            dtype="float32",
            name=f"{variable.path.replace('/', '_')}_{suffix}",
        )

    # === Update ===

    # Why Keras' private `_backend_update_step` and not a public hook: a refresh computes every
    # variable's factors in one batched call (one solver launch: concurrent eighs deadlock XLA
    # on CPU, see `_factor_batches`; pinned by shampoo_test's one-eigh-call test), so the step
    # needs all gradients at once, after Keras has unscaled, clipped, accumulated and weight-
    # decayed them, and before EMA reads the variables. This method is the only place that
    # holds exactly those: `apply` (public) sees the raw gradients, and the updates it leads to
    # run inside a gradient-accumulation `cond` branch with EMA right after, so work deferred
    # past `update_step` would escape both; deferring inside `update_step` until its last call
    # needs the number of calls, which Keras fixes privately (it drops variables without a
    # gradient and `overwrite_with_gradient` ones). Keras calls this method on all three
    # backends, documents it as "collective update_step that can be overridden", and its own
    # `Nadam` overrides it for once-per-step work. `update_step` below stays a complete step of
    # one variable for callers that use it (and for `tf.distribute`, below).
    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if _in_tf_distribute():
            # The base class all-reduces the gradients and then calls `update_step` per
            # variable, in cross-replica context: statistics must see the reduced gradients.
            super()._backend_update_step(grads, trainable_variables, learning_rate)
            return
        # Every variable's statistics first, so that a refresh computes all factors in a few
        # batched calls instead of one per variable: compile time and the number of solver
        # launches stay flat as the model gets deeper.
        scalars = self._step_scalars(learning_rate)
        gradients = [_dense_float32(gradient) for gradient in grads]
        self._step(gradients, trainable_variables, scalars)

    def update_step(self, gradient, variable, learning_rate):
        """The whole step of one variable, its factors included (`apply` batches them)."""
        scalars = self._step_scalars(learning_rate)
        self._step([_dense_float32(gradient)], [variable], scalars)

    def _step(self, gradients, variables, scalars):
        indices = [self._get_variable_index(variable) for variable in variables]
        if self.FACTORS_SEE_THE_STEP_GRADIENT:
            self._update_statistics(gradients, indices, scalars.schedule)
        self._update_variables(gradients, variables, indices, scalars)
        if not self.FACTORS_SEE_THE_STEP_GRADIENT:
            self._update_statistics(gradients, indices, scalars.schedule)

    def _update_momenta(self, gradients, indices):
        """Assigns and returns the first moments `m_t = beta1 m_{t-1} + (1 - beta1) g_t`."""
        momenta = [self._momentums[index] for index in indices]
        return self._elementwise.ema(momenta, gradients, self.beta1)

    def _step_scalars(self, learning_rate):
        """Subclass hook: the step's shared scalars, a `StepScalars`.

        In eager execution each `keras.ops` call costs a dispatch: the step's scalars are
        computed once, not per variable.
        """
        raise NotImplementedError

    def _update_variables(self, gradients, variables, indices, scalars):
        """Subclass hook: the update of `variables` (optimizer indices `indices`), their
        factors already refreshed."""
        raise NotImplementedError

    def schedule(self, learning_rate):
        """This step's `Schedule` (the step counter is not advanced)."""
        step = self.iterations + 1
        preconditions = step >= self.start_preconditioning_step
        since_start = step - self.start_preconditioning_step
        return Schedule(
            t=ops.cast(step, "float32"),
            learning_rate=ops.cast(learning_rate, "float32"),
            preconditions=preconditions,
            refreshes=ops.logical_and(
                preconditions, ops.equal(ops.mod(since_start, self.precondition_frequency), 0)
            ),
        )

    def _update_statistics(self, gradients, indices, schedule):
        """Updates the statistics of the variables at optimizer indices `indices` and, at a
        refresh step, their factors."""
        beta = self._statistics_decay
        statistics, grams, factors, preconditioned = [], [], [], []
        for gradient, index in zip(gradients, indices):
            layout = self._layouts[index]
            if layout is None:
                continue
            preconditioned.append(index)
            blocks = layout.to_blocks(gradient)  # (blocks, rows, cols)
            statistics += [self._left_statistics[index], self._right_statistics[index]]
            grams += [ops.matmul(blocks, transpose(blocks)), ops.matmul(transpose(blocks), blocks)]
            factors += [self._left_factors[index], self._right_factors[index]]
        if not statistics:
            return
        updated = self._elementwise.ema(statistics, grams, beta)
        refreshes = concrete(schedule.refreshes)
        if refreshes is False:  # eager, between refreshes: factors are neither read nor written
            return
        updated = tuple(updated)
        previous = tuple(ops.convert_to_tensor(factor) for factor in factors)
        carried = self._factor_basis_state(preconditioned)
        carried_values = tuple(ops.convert_to_tensor(state) for state in carried)

        def refresh():
            # A statistic that became non-finite (an overflow, a bad batch) restarts from this
            # step's weighted gram; its factor then comes from the restarted statistic.
            restarted = tuple(
                _finite_or(value, gram if beta == 1.0 else gram * (1.0 - beta))
                for value, gram in zip(updated, grams)
            )
            new_factors = self._refreshed_factors(restarted, previous, schedule.t)
            moved = self._carry_to_new_factors(carried_values, previous, new_factors)
            return restarted, new_factors, tuple(moved)

        if refreshes:
            new_statistics, new_factors, new_carried = refresh()
        else:
            # Branches return values and the assignments happen outside: JAX cannot assign
            # inside a branch, and only the taken branch runs (no factor cost in between).
            new_statistics, new_factors, new_carried = ops.cond(
                schedule.refreshes, refresh, lambda: (updated, previous, carried_values)
            )
        targets = statistics + factors + list(carried)
        for variable, value in zip(targets, [*new_statistics, *new_factors, *new_carried]):
            self.assign(variable, value)

    def _refreshed_factors(self, statistics, previous, t):
        """Every statistic's new factor, or its previous one where the new one is not finite.

        Statistics are stacked into one `_factors` call per `_factor_batches` group, each
        padded to the group's largest side by `_pad_statistics` so that the top-left block
        of the padded result is the factor of the unpadded statistic.
        """
        factors = list(previous)
        for members in self._factor_batches(statistics):
            side = max(statistics[i].shape[-1] for i in members)
            padded = ops.concatenate(
                [self._pad_statistics(statistics[i], side) for i in members], axis=0
            )
            # The identity on the padding keeps a previous SOAP basis orthogonal and block-
            # diagonal, as the padded statistic is (the padding is sliced off below).
            before = ops.concatenate(
                [pad_matrices(previous[i], side, ops.ones(previous[i].shape[:1]))
                 for i in members], axis=0)
            computed = _finite_or(self._factors(padded, t, before), before)
            offsets = np.cumsum([0] + [statistics[i].shape[0] for i in members])
            for i, begin, end in zip(members, offsets[:-1], offsets[1:]):
                size = statistics[i].shape[-1]
                factors[i] = computed[begin:end, :size, :size]
        return tuple(factors)

    def _factor_batches(self, statistics):
        """Which statistics share one `_factors` call: lists of indices into `statistics`.

        On JAX and TensorFlow, one call: XLA's CPU runtime runs independent LAPACK
        eigendecompositions concurrently and, on a 2-core machine, deadlocks within a few steps
        when several are in flight with the matmuls around them (jaxlib 0.10; reproduced in
        plain `jax.jit`). PyTorch runs its calls one after another, so there each distinct side
        gets its own, in first-seen order: padding every side to the largest costs the largest
        side's solve for each matrix. With whole sides (SOAP, `block_size=1024`, on the digits
        MLP: one 784 side among 256s and 10s) a step took 57 ms of CPU padded and 35 ms per
        side; on the byte LM's blocks of 128, 5 % less.
        """
        if keras.backend.backend() != "torch":
            return [list(range(len(statistics)))]
        return indices_by_side(statistics)

    def _factors(self, statistics, t, previous):
        """Subclass hook: `(k, n, n)` statistics and their `previous` factors (padded like them)
        -> `(k, n, n)` factors (NaN where failed)."""
        raise NotImplementedError

    def _factor_basis_state(self, indices):
        """Subclass hook: the state of the variables at optimizer indices `indices` (each
        preconditioned) that is stored in their factors' basis, and must follow it when the
        factors are refreshed (`_carry_to_new_factors`). Nothing by default (Shampoo)."""
        return []

    def _carry_to_new_factors(self, states, previous, factors):
        """Subclass hook: the values of `_factor_basis_state`, moved from the `previous`
        factors to the refreshed `factors` (both `(left, right)` per variable, flattened)."""
        return states

    def _pad_statistics(self, statistics, side):
        """Subclass hook: `(k, n, n)` -> `(k, side, side)`, block-diagonal, factor-preserving."""
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta1": self.beta1,
                "block_size": self.block_size,
                "precondition_frequency": self.precondition_frequency,
                "start_preconditioning_step": self.start_preconditioning_step,
                "max_preconditioner_dim": self.max_preconditioner_dim,
                "exclude_embeddings": self.exclude_embeddings,
                "exclude_layers": list(self.exclude_layers),
                "precondition_vectors": self.precondition_vectors,
            }
        )
        return config


class _BatchedIdentity(keras.initializers.Initializer):
    """Identity matrices for a `(num_blocks, n, n)` factor."""

    def __call__(self, shape, dtype=None):
        # A materialized copy: torch cannot assign into a broadcast (aliased) tensor.
        identities = np.broadcast_to(np.eye(shape[-1]), shape).copy()
        return ops.convert_to_tensor(identities, dtype=dtype)


# === Helpers shared with the subclasses ===


def concrete(predicate):
    """A boolean tensor's value in eager execution, or None when it is symbolic.

    Under `jit`/`tf.function`, `bool()` raises TypeError and the caller stages the branch
    (`ops.cond`, `ops.where`); eagerly, only the branch taken runs, and eager JAX does not
    compile both branches of an `ops.cond`, eigendecompositions included, on every call.
    """
    try:
        return bool(predicate)
    except TypeError:
        return None


def pad_matrices(matrices, side, diagonal=None):
    """`(k, n, n)` -> `(k, side, side)`, zero-padded at the bottom and right; with `diagonal`
    (shape `(k,)`), that value on each matrix's padded diagonal."""
    extra = side - matrices.shape[-1]
    if extra == 0:
        return matrices
    padded = ops.pad(matrices, [(0, 0), (0, extra), (0, extra)])
    if diagonal is None:
        return padded
    padding = ops.convert_to_tensor(np.diag(np.arange(side) >= matrices.shape[-1]), "float32")
    return padded + diagonal[:, None, None] * padding


def transpose(blocks):
    return ops.swapaxes(blocks, -1, -2)


def block_norms(blocks):
    """The Frobenius norm of each `(rows, cols)` block, shape `(blocks, 1, 1)`."""
    return ops.norm(blocks, axis=(-2, -1), keepdims=True)


def check_number(arg, value, interval):
    """Raises a ValueError naming `arg` unless `value` is a real number in `interval`, written
    like "[0, 1)" (brackets closed, parentheses open)."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    if not (
        is_number
        and (value >= low if interval[0] == "[" else value > low)
        and (value <= high if interval[-1] == "]" else value < high)
    ):
        raise ValueError(f"`{arg}` must be a number in {interval}; got {arg}={value!r}.")


def _in_tf_distribute():
    """Whether a `tf.distribute` strategy (other than the default one) is in scope."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()


def _dense_float32(gradient):
    gradient = ops.cast(gradient, "float32")
    if type(gradient).__name__ == "IndexedSlices":
        # TensorFlow's embedding gradients: keras.ops keeps them sparse through casts and
        # products, but adding them to a dense tensor densifies them.
        gradient = ops.add(ops.zeros(tuple(gradient.shape), "float32"), gradient)
    return gradient


def indices_by_side(statistics):
    """Indices into `statistics` (each `(k, n, n)`) grouped by `n`, in first-seen order."""
    groups = {}
    for i, matrices in enumerate(statistics):
        groups.setdefault(matrices.shape[-1], []).append(i)
    return list(groups.values())


def _finite_or(matrices, replacement):
    """`matrices`, with every non-finite `(n, n)` matrix replaced by its `replacement`."""
    return ops.where(all_finite(matrices), matrices, replacement)
