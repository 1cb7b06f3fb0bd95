"""Shampoo: a block-diagonal Kronecker-factored preconditioner, grafted onto a simple optimizer."""

import keras
from keras import ops

from keras_matta.optimizers import grafting as grafting_lib
from keras_matta.optimizers.kronecker import KroneckerFactoredOptimizer
from keras_matta.optimizers.kronecker import StepScalars
from keras_matta.optimizers.kronecker import block_norms
from keras_matta.optimizers.kronecker import check_number
from keras_matta.optimizers.kronecker import concrete
from keras_matta.optimizers.kronecker import indices_by_side
from keras_matta.optimizers.kronecker import pad_matrices
from keras_matta.optimizers.matrix_roots import ROOT_METHODS
from keras_matta.optimizers.matrix_roots import matrix_inverse_root

# L^(-1/4) G R^(-1/4): every variable is preconditioned as a matrix (order k = 2), and an
# order-k tensor gets the exponent -1/(2k) on each axis.
_ROOT = 4


@keras.saving.register_keras_serializable(package="keras_matta")
class Shampoo(KroneckerFactoredOptimizer):
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
    `(n, 1)` kernels) is not preconditioned unless `precondition_vectors` (below), nor are
    embeddings (`exclude_embeddings`), variables whose path matches `exclude_layers`, and
    matrices with a side over `max_preconditioner_dim`. A tensor of rank > 2 is reshaped to the
    matrix `(d_0 ... d_{s-1}) x (d_s ... d_{k-1})` with the split `s` that makes it the most
    square (largest smaller side). So a conv kernel `(kh, kw, c_in, c_out)` becomes
    `(kh kw c_in) x c_out` and attention's EinsumDense kernels `(d, heads, head_dim)` and
    `(heads, head_dim, d)` become `d x (heads head_dim)` and `(heads head_dim) x d`. A side
    longer than `block_size` is split into blocks of `block_size` (the last one shorter).

    Vectors (`precondition_vectors=True`, Google's default): a vector `g` of length `n` is cut
    into blocks of at most `block_size` and each block gets a full factor with the exponent of
    an order-1 tensor, `-1/(2 k) = -1/2`: `D = P_L^2 M_hat = (L_t / c_t + eps lambda_max I)^(-1/2)
    M_hat` (full-matrix AdaGrad on the block, grafted like every block), with `L_t` the EMA of
    `g g^T`.

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
        precondition_vectors: precondition biases, norms' scales and `(n, 1)` kernels with one
            full factor per block and exponent `-1/2` ("Vectors" above; Google's default),
            instead of the grafted optimizer alone (Meta's). Defaults to `False`.
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

    FACTOR_NAME = "root"

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
        precondition_vectors=False,
        **kwargs,
    ):
        # === Validation, before any work (the base class checks the arguments it shares) ===
        numbers = [
            ("beta2", beta2, "(0, 1]"),
            ("epsilon", epsilon, "[0, inf)"),
            ("grafting_beta2", grafting_beta2, "(0, 1)"),
            ("grafting_epsilon", grafting_epsilon, "(0, inf)"),
        ]
        for arg, value, interval in numbers:
            check_number(arg, value, interval)
        for arg, value, allowed in (
            ("grafting", grafting, grafting_lib.GRAFTING_TYPES),
            ("root_method", root_method, ROOT_METHODS),
        ):
            if value not in allowed:
                raise ValueError(f"`{arg}` must be one of {allowed}; got {arg}={value!r}.")
        if not isinstance(nesterov, bool):
            raise TypeError(f"`nesterov` must be a bool; got nesterov={nesterov!r}.")

        super().__init__(
            learning_rate=learning_rate,
            beta1=beta1,
            statistics_decay=beta2,
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
        self.grafting = grafting
        self.grafting_beta2 = float(grafting_beta2)
        self.grafting_epsilon = float(grafting_epsilon)
        self.nesterov = nesterov
        self.root_method = root_method

    # === State ===

    def _build_variable_state(self, variable, index, layout):
        if grafting_lib.has_second_moment(self.grafting):
            self._second_moments[index] = self._add_state(
                variable, variable.shape, "grafting_second_moment"
            )

    # === Inverse roots (the factors) ===

    def _factors(self, statistics, t, previous):
        # Bias correction matters only to grafting="none": relative damping and grafting
        # make the direction independent of the statistics' scale.
        correction = 1.0 - ops.power(self.beta2, t) if self.beta2 < 1.0 else 1.0
        return matrix_inverse_root(
            statistics / correction, _ROOT, method=self.root_method, epsilon=self.epsilon
        )

    def _pad_statistics(self, statistics, side):
        """`S` in the top-left, `(trace(S) / n) I` below it.

        The result is block-diagonal, so the top-left block of its inverse root is exactly the
        inverse root of `S`. The padding's eigenvalue, the mean of `S`'s, is positive and at
        most `lambda_max(S)`: the relative damping does not change and `epsilon=0` stays
        invertible.
        """
        mean_eigenvalue = ops.trace(statistics, axis1=-2, axis2=-1) / statistics.shape[-1]
        return pad_matrices(statistics, side, mean_eigenvalue)

    def _factor_batches(self, statistics):
        """Eigh: as the base class decides. Newton: one call per distinct side on every
        backend, in first-seen order: its cost is matmuls of that side."""
        if self.root_method == "eigh":
            return super()._factor_batches(statistics)
        return indices_by_side(statistics)

    # === Update ===

    def _step_scalars(self, learning_rate):
        schedule = self.schedule(learning_rate)
        t = schedule.t
        momentum_correction = 1.0 - ops.power(self.beta1, t)
        if self.nesterov:
            momentum_weight = self.beta1 / (1.0 - ops.power(self.beta1, t + 1.0))
            gradient_weight = (1.0 - self.beta1) / momentum_correction
        else:
            momentum_weight, gradient_weight = 1.0 / momentum_correction, None
        return StepScalars(
            schedule=schedule,
            momentum_weight=momentum_weight,
            gradient_weight=gradient_weight,
            second_moment_scale=grafting_lib.second_moment_scale(
                self.grafting, t, self.grafting_beta2
            ),
        )

    def _update_variables(self, gradients, variables, indices, scalars):
        """Momentum, the grafted step and, from the start step on, Shampoo's direction."""
        elementwise = self._elementwise
        momenta = self._update_momenta(gradients, indices)
        filtered = elementwise.linear(
            momenta, scalars.momentum_weight,
            gradients if self.nesterov else None, scalars.gradient_weight,
        )
        updates = grafting_lib.grafted_directions(
            self.grafting, elementwise, [self._second_moments[i] for i in indices], gradients,
            filtered, scalars.second_moment_scale, self.grafting_beta2, self.grafting_epsilon,
        )
        schedule = scalars.schedule
        preconditions = concrete(schedule.preconditions)
        if preconditions is not False:
            for k, index in enumerate(indices):
                if self._layouts[index] is None:
                    continue
                shampoo = self._shampoo_direction(index, filtered[k], updates[k])
                updates[k] = shampoo if preconditions else ops.where(
                    schedule.preconditions, shampoo, updates[k]
                )
        elementwise.subtract(variables, updates, schedule.learning_rate)

    def _shampoo_direction(self, index, filtered, grafted):
        """P_L M_hat P_R per block (P_L^2 M_hat for a vector's), with the grafted step's norm,
        in the variable's shape."""
        layout = self._layouts[index]
        left_root = ops.convert_to_tensor(self._left_factors[index])
        direction = ops.matmul(left_root, layout.to_blocks(filtered))
        if layout.is_vector:  # the order-1 exponent -1/2: (L^(-1/4))^2; R is a 1 x 1 scalar
            direction = ops.matmul(left_root, direction)
        else:
            direction = ops.matmul(direction, ops.convert_to_tensor(self._right_factors[index]))
        if layout.is_padded:
            direction = direction * layout.mask
        if grafting_lib.rescales_shampoo(self.grafting):
            # ||A||_F / ||D||_F per block; a zero direction stays zero. (Not `divide_no_nan`,
            # six kernels on PyTorch's eager step where this ratio is three.)
            grafted_norms = block_norms(layout.to_blocks(grafted))
            direction_norms = block_norms(direction)
            direction = direction * ops.where(
                direction_norms > 0.0, grafted_norms / direction_norms, 0.0
            )
        return layout.from_blocks(direction)

    # === Config ===

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta2": self.beta2,
                "epsilon": self.epsilon,
                "grafting": self.grafting,
                "grafting_beta2": self.grafting_beta2,
                "grafting_epsilon": self.grafting_epsilon,
                "nesterov": self.nesterov,
                "root_method": self.root_method,
            }
        )
        return config
