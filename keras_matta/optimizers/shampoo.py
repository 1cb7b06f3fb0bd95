"""Shampoo: a block-diagonal Kronecker-factored preconditioner, grafted onto a simple optimizer."""

import re
from typing import Any
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_matta.optimizers import grafting as grafting_lib
from keras_matta.optimizers.blocking import BlockLayout
from keras_matta.optimizers.blocking import matrix_shape_for
from keras_matta.optimizers.matrix_roots import ROOT_METHODS
from keras_matta.optimizers.matrix_roots import matrix_inverse_root

# L^(-1/4) G R^(-1/4): every variable is preconditioned as a matrix (order k = 2), and an
# order-k tensor gets the exponent -1/(2k) on each axis.
_ROOT = 4


@keras.saving.register_keras_serializable(package="keras_matta")
class Shampoo(keras.optimizers.Optimizer):
    """Shampoo with layer-wise grafting, blocking and periodic inverse roots.

    Each trainable variable is viewed as a matrix (see "Shapes" below) and cut into blocks `G`
    of at most `block_size x block_size`. At step `t`, with raw gradient block `G_t`:

    ```
    L_t = beta2 L_{t-1} + (1 - beta2) G_t G_t^T        # (beta2 = 1: sums, as in AdaGrad)
    R_t = beta2 R_{t-1} + (1 - beta2) G_t^T G_t
    m_t = beta1 m_{t-1} + (1 - beta1) g_t              # whole variable
    m_hat = m_t / (1 - beta1^t)                        # Nesterov: see `nesterov`
    every precondition_frequency steps from start_preconditioning_step on:
        P_L = (L_t / c_t + eps lambda_max I)^(-1/4),  P_R likewise,  c_t = 1 - beta2^t
    D = P_L M_hat P_R                                  # M_hat: the block of m_hat
    A = grafted step for M_hat (Adam by default, see grafting.py)
    update = D * ||A||_F / ||D||_F                     # per block
    w <- w - learning_rate * update
    ```

    Before `start_preconditioning_step`, and for variables that are not preconditioned, the
    update is the grafted optimizer's step `A` alone. Weight decay is decoupled (AdamW style,
    `w <- w - learning_rate * weight_decay * w`), applied by the Keras base class.

    Shapes: size-1 axes are dropped; a variable with fewer than two axes left (biases, norms,
    `(n, 1)` kernels) is not preconditioned, nor are embeddings (`exclude_embeddings`),
    variables whose path matches `exclude_layers`, and matrices with a side over
    `max_preconditioner_dim`. A tensor of rank > 2 is reshaped to the matrix
    `(d_0 ... d_{s-1}) x (d_s ... d_{k-1})` with the split `s` that makes it the most square
    (largest smaller side). So a conv kernel `(kh, kw, c_in, c_out)` becomes
    `(kh kw c_in) x c_out` and attention's EinsumDense kernels `(d, heads, head_dim)` and
    `(heads, head_dim, d)` become `d x (heads head_dim)` and `(heads head_dim) x d`. A side
    longer than `block_size` is split into blocks of `block_size` (the last one shorter).

    Statistics, roots, momentum and grafting state are float32 whatever the variable dtype.
    A root that fails (non-finite statistics or result, or a Newton iteration that does not
    converge) is not used: the block keeps its previous preconditioner (identity at first),
    and statistics that became non-finite restart from the gradient of the next refresh step
    (between refreshes nothing reads them).

    Defaults follow Google's scalable_shampoo (`distributed_shampoo`, Anil et al.) and Meta's
    `DistributedShampoo` (Shi et al.), and say which where they differ.

    Args:
        learning_rate: float, schedule or callable. With grafting the step size is the grafted
            optimizer's, so an Adam learning rate carries over. Defaults to `0.001`.
        beta1: momentum: decay of the first-moment EMA that both Shampoo and the grafted
            optimizer use (Meta's `betas[0]`, Google's `beta1`). In `[0, 1)`. Defaults to
            `0.9`.
        beta2: decay of the Shampoo statistics, in `(0, 1]`; `1` sums them like AdaGrad.
            Defaults to `0.999` (Google's default, Meta's recommended setting).
        epsilon: relative damping of the statistics: roots of `L + epsilon lambda_max(L) I`.
            `>= 0`. Defaults to `1e-6` (Google's `matrix_epsilon`, relative mode; its doc
            calls 1e-6 the right size for float32 roots).
        block_size: largest block side. Defaults to `128` (the value Google's docstring
            recommends; Meta's 1024 costs 500x more per root and suits GPUs).
        precondition_frequency: recompute the inverse roots every this many steps. Defaults
            to `10`: both references default to 1 and Meta recommends 100 at scale; 10 keeps
            the preconditioner fresh at our model sizes for a tenth of the root cost.
        start_preconditioning_step: first step (1-based) that uses Shampoo; the roots are
            first computed there. Defaults to `10` (Meta's rule, equal to
            `precondition_frequency`; Google uses 5): some statistics first.
        grafting: `"adam"` (default, Meta's recommendation), `"sgd"` (Google's default),
            `"adagrad"`, `"rmsprop"` or `"none"`. See `keras_matta/optimizers/grafting.py`.
        grafting_beta2: second-moment decay of the Adam and RMSProp grafts, in `(0, 1)`.
            Defaults to `0.999`.
        grafting_epsilon: denominator term of the grafted optimizer, `> 0`. Defaults to
            `1e-8` (Meta's Adam-grafting setting; Google uses 1e-10).
        nesterov: Nesterov momentum, in the NAdam form
            `m_hat = beta1 m_t / (1 - beta1^(t+1)) + (1 - beta1) g_t / (1 - beta1^t)`.
            Defaults to `True` (Google's default; Meta's is `False`).
        max_preconditioner_dim: a matrix with a side longer than this uses the grafted
            optimizer alone (vocabulary projections). Defaults to `4096` (Google's
            `skip_preconditioning_dim_size_gt`).
        root_method: `"eigh"` (default, the most accurate in float32; Meta's method; all
            roots of a refresh in one batched call, smaller sides padded) or `"newton"`
            (matmul-only coupled Newton iteration; Google's method; one call per side).
        exclude_embeddings: use the grafted optimizer alone for variables whose path contains
            "embedding". Defaults to `True`.
        exclude_layers: regular expressions; variables whose path matches one use the grafted
            optimizer alone (searched, not anchored: Keras prefixes a path with the model's
            name when built, not when loaded, so write `r"(^|/)head/"` rather than
            `"^head/"`). Defaults to `None`.
        weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps, name:
            the standard `keras.optimizers.Optimizer` arguments.

    Example:

    ```python
    from keras_matta.optimizers import Shampoo

    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32), keras.layers.Dense(1)])
    # An Adam learning rate works: Adam sets each block's step size, Shampoo its direction.
    model.compile(optimizer=Shampoo(learning_rate=1e-3), loss="mse")
    model.fit(np.random.rand(256, 16), np.random.rand(256, 1), epochs=2, verbose=0)
    # 16 steps: the grafted Adam step alone for steps 1-9, then from step 10
    # (`start_preconditioning_step`) Shampoo's preconditioned direction at Adam's step size
    ```

    Reference:
        Gupta, Koren and Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization",
        ICML 2018. Anil, Gupta, Koren, Regan and Singer, "Scalable Second Order Optimization
        for Deep Learning", arXiv:2002.09018. Shi et al., "A Distributed Data-Parallel
        PyTorch Implementation of the Distributed Shampoo Optimizer", arXiv:2309.06497.
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta1=0.9,
        beta2=0.999,
        epsilon=1e-6,
        block_size=128,
        precondition_frequency=10,
        start_preconditioning_step=10,
        grafting="adam",
        grafting_beta2=0.999,
        grafting_epsilon=1e-8,
        nesterov=True,
        max_preconditioner_dim=4096,
        root_method="eigh",
        exclude_embeddings=True,
        exclude_layers=None,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        # === Validation, before any work ===
        numbers = [
            ("beta1", beta1, "[0, 1)"),
            ("beta2", beta2, "(0, 1]"),
            ("epsilon", epsilon, "[0, inf)"),
            ("grafting_beta2", grafting_beta2, "(0, 1)"),
            ("grafting_epsilon", grafting_epsilon, "(0, inf)"),
        ]
        if weight_decay is not None:
            numbers.append(("weight_decay", weight_decay, "[0, inf)"))
        for arg, value, interval in numbers:
            _check_number(arg, value, interval)
        for arg, value in (
            ("block_size", block_size),
            ("precondition_frequency", precondition_frequency),
            ("start_preconditioning_step", start_preconditioning_step),
            ("max_preconditioner_dim", max_preconditioner_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{arg}` must be an integer >= 1; got {arg}={value!r}.")
        for arg, value, allowed in (
            ("grafting", grafting, grafting_lib.GRAFTING_TYPES),
            ("root_method", root_method, ROOT_METHODS),
        ):
            if value not in allowed:
                raise ValueError(f"`{arg}` must be one of {allowed}; got {arg}={value!r}.")
        for arg, value in (("nesterov", nesterov), ("exclude_embeddings", exclude_embeddings)):
            if not isinstance(value, bool):
                raise TypeError(f"`{arg}` must be a bool; got {arg}={value!r}.")
        if isinstance(exclude_layers, str) or not all(
            isinstance(pattern, str) for pattern in exclude_layers or []
        ):
            raise TypeError(
                "`exclude_layers` must be a list of regular-expression strings or None; "
                f"got exclude_layers={exclude_layers!r}."
            )

        super().__init__(
            learning_rate=learning_rate,
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.epsilon = float(epsilon)
        self.block_size = int(block_size)
        self.precondition_frequency = int(precondition_frequency)
        self.start_preconditioning_step = int(start_preconditioning_step)
        self.grafting = grafting
        self.grafting_beta2 = float(grafting_beta2)
        self.grafting_epsilon = float(grafting_epsilon)
        self.nesterov = nesterov
        self.max_preconditioner_dim = int(max_preconditioner_dim)
        self.root_method = root_method
        self.exclude_embeddings = exclude_embeddings
        self.exclude_layers = list(exclude_layers or [])

    # === State ===

    def block_layout(self, variable):
        """The `BlockLayout` Shampoo uses for `variable`, or None if it only grafts."""
        if self.exclude_embeddings and "embedding" in variable.path.lower():
            return None
        if any(re.search(pattern, variable.path) for pattern in self.exclude_layers):
            return None
        matrix_shape = matrix_shape_for(tuple(variable.shape))
        if matrix_shape is None or max(matrix_shape) > self.max_preconditioner_dim:
            return None
        return BlockLayout(tuple(variable.shape), matrix_shape, self.block_size)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        count = len(var_list)
        self._layouts = [None] * count
        self._momentums = [None] * count
        self._second_moments = [None] * count
        self._left_statistics, self._right_statistics = [None] * count, [None] * count
        self._left_roots, self._right_roots = [None] * count, [None] * count
        for var in var_list:
            if self._overwrite_variable_with_gradient(var):
                continue
            index = self._get_variable_index(var)
            self._momentums[index] = self._add_state(var, var.shape, "momentum")
            if grafting_lib.has_second_moment(self.grafting):
                self._second_moments[index] = self._add_state(
                    var, var.shape, "grafting_second_moment"
                )
            layout = self.block_layout(var)
            if layout is None:
                continue
            self._layouts[index] = layout
            (rows, cols), n = layout.block_shape, layout.num_blocks
            left, right = (n, rows, rows), (n, cols, cols)
            identity = _BatchedIdentity()
            self._left_statistics[index] = self._add_state(var, left, "left_statistics")
            self._right_statistics[index] = self._add_state(var, right, "right_statistics")
            self._left_roots[index] = self._add_state(var, left, "left_root", identity)
            self._right_roots[index] = self._add_state(var, right, "right_root", identity)

    def _add_state(self, variable, shape, suffix, initializer="zeros"):
        """A float32 optimizer variable named after `variable`, whatever its dtype."""
        return self.add_variable(
            shape=shape,
            initializer=initializer,
            dtype="float32",
            name=f"{variable.path.replace('/', '_')}_{suffix}",
        )

    # === Update ===

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if _in_tf_distribute():
            # The base class all-reduces the gradients and then calls `update_step` per
            # variable, in cross-replica context: statistics must see the reduced gradients.
            super()._backend_update_step(grads, trainable_variables, learning_rate)
            return
        # Every variable's statistics first, so that a refresh computes all roots in a few
        # batched calls (`_root_batches`) instead of one per variable: compile time and the
        # number of solver launches stay flat as the model gets deeper.
        step_scalars = self._step_scalars(learning_rate)
        gradients = [_dense_float32(gradient) for gradient in grads]
        self._update_preconditioners(gradients, trainable_variables, step_scalars)
        for gradient, variable in zip(gradients, trainable_variables):
            self._update_variable(gradient, variable, step_scalars)

    def update_step(self, gradient, variable, learning_rate):
        """The whole step of one variable, its roots included (`apply` batches the roots)."""
        step_scalars = self._step_scalars(learning_rate)
        gradient = _dense_float32(gradient)
        self._update_preconditioners([gradient], [variable], step_scalars)
        self._update_variable(gradient, variable, step_scalars)

    def _step_scalars(self, learning_rate):
        """What every variable's update shares at this step, computed once per step.

        In eager execution each `keras.ops` call costs a dispatch: the step's scalars are not
        recomputed per variable, and the branches below are taken in Python (`_concrete`).
        """
        step = self.iterations + 1
        t = ops.cast(step, "float32")
        momentum_correction = 1.0 - ops.power(self.beta1, t)
        if self.nesterov:
            momentum_weight = self.beta1 / (1.0 - ops.power(self.beta1, t + 1.0))
            gradient_weight = (1.0 - self.beta1) / momentum_correction
        else:
            momentum_weight, gradient_weight = 1.0 / momentum_correction, None
        preconditions = step >= self.start_preconditioning_step
        return _StepScalars(
            t=t,
            learning_rate=ops.cast(learning_rate, "float32"),
            momentum_weight=momentum_weight,
            gradient_weight=gradient_weight,
            second_moment_scale=grafting_lib.second_moment_scale(
                self.grafting, t, self.grafting_beta2
            ),
            preconditions=preconditions,
            refreshes_roots=ops.logical_and(
                preconditions,
                ops.equal(
                    ops.mod(step - self.start_preconditioning_step, self.precondition_frequency),
                    0,
                ),
            ),
        )

    def _update_preconditioners(self, gradients, variables, step_scalars):
        """Updates the statistics of `variables` and, at a refresh step, their roots."""
        pending = []  # (statistics variable, its new value, this step's weighted gram, root)
        for gradient, variable in zip(gradients, variables):
            index = self._get_variable_index(variable)
            layout = self._layouts[index]
            if layout is None:
                continue
            blocks = layout.to_blocks(gradient)  # (blocks, rows, cols)
            for statistics, gram, root in (
                (self._left_statistics[index], ops.matmul(blocks, _transpose(blocks)),
                 self._left_roots[index]),
                (self._right_statistics[index], ops.matmul(_transpose(blocks), blocks),
                 self._right_roots[index]),
            ):
                weighted_gram = gram if self.beta2 == 1.0 else gram * (1.0 - self.beta2)
                updated = _decayed_sum(statistics, weighted_gram, self.beta2)
                pending.append((statistics, updated, weighted_gram, root))
        if not pending:
            return
        refreshes = _concrete(step_scalars.refreshes_roots)
        if refreshes is False:  # eager, between refreshes: the roots are neither read nor written
            for statistics, updated, _, _ in pending:
                self.assign(statistics, updated)
            return
        updated = tuple(entry[1] for entry in pending)
        previous_roots = tuple(ops.convert_to_tensor(entry[3]) for entry in pending)

        def refresh():
            # A statistic that became non-finite (an overflow, a bad batch) restarts from this
            # step's weighted gram; its root then comes from the restarted statistic.
            statistics = tuple(
                _finite_or(value, gram) for value, (_, _, gram, _) in zip(updated, pending)
            )
            return statistics, self._inverse_roots(statistics, previous_roots, step_scalars.t)

        if refreshes:
            new_statistics, roots = refresh()
        else:
            # Branches return values and the assignments happen outside: JAX cannot assign
            # inside a branch, and only the taken branch runs (no root cost between refreshes).
            new_statistics, roots = ops.cond(
                step_scalars.refreshes_roots, refresh, lambda: (updated, previous_roots)
            )
        for (statistics, _, _, root_variable), value, root in zip(pending, new_statistics, roots):
            self.assign(statistics, value)
            self.assign(root_variable, root)

    def _inverse_roots(self, statistics, previous_roots, t):
        """The inverse 4th root of every statistic, or its previous root where that fails."""
        # Bias correction matters only to grafting="none": relative damping and grafting
        # make the direction independent of the statistics' scale.
        correction = 1.0 - ops.power(self.beta2, t) if self.beta2 < 1.0 else 1.0
        roots = list(previous_roots)
        for members in self._root_batches(statistics):
            side = max(statistics[i].shape[-1] for i in members)
            padded = ops.concatenate(
                [_padded_statistics(statistics[i], side) for i in members], axis=0
            )
            previous = ops.concatenate([_padded(previous_roots[i], side) for i in members], axis=0)
            computed = self._root_or_previous(padded / correction, previous)
            offsets = np.cumsum([0] + [statistics[i].shape[0] for i in members])
            for i, begin, end in zip(members, offsets[:-1], offsets[1:]):
                size = statistics[i].shape[-1]
                roots[i] = computed[begin:end, :size, :size]
        return tuple(roots)

    def _root_batches(self, statistics):
        """Which statistics share one `matrix_inverse_root` call: indices into `statistics`.

        Newton: one call per distinct side (its cost is matmuls of that side). Eigh: a single
        call, smaller sides padded to the largest: XLA's CPU runtime runs independent LAPACK
        eigendecompositions concurrently and, on a 2-core machine, deadlocks within a few
        steps when several are in flight with the matmuls around them (jaxlib 0.10; reproduced
        in plain `jax.jit`). One call is one solver launch on every backend.
        """
        if self.root_method == "eigh":
            return [list(range(len(statistics)))]
        return _group_by_side(statistics)

    def _root_or_previous(self, statistics, previous_root):
        root = matrix_inverse_root(statistics, _ROOT, method=self.root_method, epsilon=self.epsilon)
        usable = ops.all(ops.isfinite(root), axis=(-2, -1), keepdims=True)
        return ops.where(usable, root, previous_root)

    def _update_variable(self, gradient, variable, step_scalars):
        """Momentum, the grafted step and, from the start step on, Shampoo's direction."""
        index = self._get_variable_index(variable)
        momentum = self._momentums[index]
        new_momentum = momentum + (1.0 - self.beta1) * (gradient - momentum)
        self.assign(momentum, new_momentum)
        filtered = new_momentum * step_scalars.momentum_weight
        if self.nesterov:
            filtered = filtered + gradient * step_scalars.gradient_weight

        second_moment = self._second_moments[index]
        second_moment_value = None
        if second_moment is not None:
            second_moment_value = grafting_lib.update_second_moment(
                self.grafting, second_moment, gradient, self.grafting_beta2
            )
            self.assign(second_moment, second_moment_value)
        update = grafting_lib.grafted_direction(
            self.grafting, filtered, second_moment_value, step_scalars.second_moment_scale,
            self.grafting_epsilon,
        )

        preconditions = _concrete(step_scalars.preconditions)
        if self._layouts[index] is not None and preconditions is not False:
            shampoo = self._shampoo_direction(index, filtered, update)
            update = shampoo if preconditions else ops.where(
                step_scalars.preconditions, shampoo, update
            )
        self.assign_sub(variable, ops.cast(update * step_scalars.learning_rate, variable.dtype))

    def _shampoo_direction(self, index, filtered, grafted):
        """P_L M_hat P_R per block, with the grafted step's norm, in the variable's shape."""
        layout = self._layouts[index]
        left_root = ops.convert_to_tensor(self._left_roots[index])
        right_root = ops.convert_to_tensor(self._right_roots[index])
        direction = ops.matmul(ops.matmul(left_root, layout.to_blocks(filtered)), right_root)
        if layout.is_padded:
            direction = direction * layout.mask
        if grafting_lib.rescales_shampoo(self.grafting):
            # ||A||_F / ||D||_F per block; a zero direction stays zero.
            squared_ratio = ops.divide_no_nan(
                _block_squared_norms(layout.to_blocks(grafted)), _block_squared_norms(direction)
            )
            direction = direction * ops.sqrt(squared_ratio)
        return layout.from_blocks(direction)

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta1": self.beta1,
                "beta2": self.beta2,
                "epsilon": self.epsilon,
                "block_size": self.block_size,
                "precondition_frequency": self.precondition_frequency,
                "start_preconditioning_step": self.start_preconditioning_step,
                "grafting": self.grafting,
                "grafting_beta2": self.grafting_beta2,
                "grafting_epsilon": self.grafting_epsilon,
                "nesterov": self.nesterov,
                "max_preconditioner_dim": self.max_preconditioner_dim,
                "root_method": self.root_method,
                "exclude_embeddings": self.exclude_embeddings,
                "exclude_layers": list(self.exclude_layers),
            }
        )
        return config


class _BatchedIdentity(keras.initializers.Initializer):
    """Identity matrices for a `(num_blocks, n, n)` root: a neutral preconditioner."""

    def __call__(self, shape, dtype=None):
        # A materialized copy: torch cannot assign into a broadcast (aliased) tensor.
        identities = np.broadcast_to(np.eye(shape[-1]), shape).copy()
        return ops.convert_to_tensor(identities, dtype=dtype)


class _StepScalars(NamedTuple):
    """The scalars of one step, shared by every variable's update."""

    t: Any  # the 1-based step, float32
    learning_rate: Any
    momentum_weight: Any  # m_hat = momentum_weight * m_t (+ gradient_weight * g_t: Nesterov)
    gradient_weight: Any
    second_moment_scale: Any  # see grafting.second_moment_scale
    preconditions: Any  # step >= start_preconditioning_step
    refreshes_roots: Any


def _concrete(predicate):
    """A boolean tensor's value in eager execution, or None when it is symbolic.

    Under `jit`/`tf.function`, `bool()` raises TypeError and the caller stages the branch
    (`ops.cond`, `ops.where`); eagerly, only the branch taken runs, and eager JAX does not
    compile both branches of an `ops.cond`, eigendecompositions included, on every call.
    """
    try:
        return bool(predicate)
    except TypeError:
        return None


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


def _group_by_side(statistics):
    """Indices into `statistics` grouped by matrix side, in first-seen order (deterministic)."""
    groups = {}
    for i, matrices in enumerate(statistics):
        groups.setdefault(matrices.shape[-1], []).append(i)
    return list(groups.values())


def _padded(matrices, side):
    """`(k, n, n)` -> `(k, side, side)`, zero-padded at the bottom and right."""
    extra = side - matrices.shape[-1]
    return matrices if extra == 0 else ops.pad(matrices, [(0, 0), (0, extra), (0, extra)])


def _padded_statistics(statistics, side):
    """`(k, n, n)` -> `(k, side, side)`: `S` in the top-left, `(trace(S) / n) I` below it.

    The result is block-diagonal, so the top-left block of its inverse root is exactly the
    inverse root of `S`. The padding's eigenvalue, the mean of `S`'s, is positive and at most
    `lambda_max(S)`: the relative damping does not change and `epsilon=0` stays invertible.
    """
    size = statistics.shape[-1]
    if size == side:
        return statistics
    mean_eigenvalue = ops.trace(statistics, axis1=-2, axis2=-1) / size
    padding_diagonal = ops.convert_to_tensor(np.diag((np.arange(side) >= size).astype("float32")))
    return _padded(statistics, side) + mean_eigenvalue[:, None, None] * padding_diagonal


def _decayed_sum(statistics, weighted_gram, beta2):
    """beta2 * S + (1 - beta2) * gram, given the weighted gram (a plain sum at beta2 = 1)."""
    return statistics + weighted_gram if beta2 == 1.0 else statistics * beta2 + weighted_gram


def _finite_or(matrices, replacement):
    """`matrices`, with every non-finite `(n, n)` matrix replaced by its `replacement`."""
    finite = ops.all(ops.isfinite(matrices), axis=(-2, -1), keepdims=True)
    return ops.where(finite, matrices, replacement)


def _transpose(blocks):
    return ops.swapaxes(blocks, -1, -2)


def _block_squared_norms(blocks):
    return ops.sum(ops.square(blocks), axis=(-2, -1), keepdims=True)


def _check_number(arg, value, interval):
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
