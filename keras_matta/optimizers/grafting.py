"""The diagonal optimizers Shampoo grafts its per-block step size from.

Grafting (Agarwal et al., 2020, "Disentangling Adaptive Gradient Methods from Learning
Rates") takes the *direction* of one optimizer and the *step size* of another. Shampoo takes
its direction from the Kronecker-factored preconditioner and, block by block, the norm of its
step from one of the element-wise optimizers below. They all act on the same filtered
(momentum) gradient `m_hat`, so before `start_preconditioning_step`, and for variables Shampoo
does not precondition, `Shampoo(grafting="adam", nesterov=False)` is Adam (epsilon aside: Keras
adds it after the bias correction, here it is added before).

| grafting    | second moment `v` (from the raw gradient `g`) | step direction                   |
|-------------|-----------------------------------------------|----------------------------------|
| `"adam"`    | `v <- b2 v + (1 - b2) g^2`                    | `m_hat / (sqrt(v / c_t) + eps)`  |
| `"rmsprop"` | `v <- b2 v + (1 - b2) g^2`                    | `m_hat / (sqrt(v) + eps)`        |
| `"adagrad"` | `v <- v + g^2`                                | `m_hat / (sqrt(v) + eps)`        |
| `"sgd"`     | none                                          | `m_hat`                          |
| `"none"`    | none                                          | `m_hat` (see below)              |

with `c_t = 1 - b2^t` (Adam's bias correction).

`"none"` does not rescale the Shampoo direction (raw Shampoo, whose step has a different
scale, so it needs its own learning rate); where Shampoo does not apply it falls back to SGD.
"""

from keras import ops

GRAFTING_TYPES = ("adam", "sgd", "adagrad", "rmsprop", "none")
_WITH_SECOND_MOMENT = ("adam", "rmsprop", "adagrad")


def has_second_moment(grafting):
    """Whether the grafted optimizer keeps a per-coordinate second moment."""
    return grafting in _WITH_SECOND_MOMENT


def rescales_shampoo(grafting):
    """Whether Shampoo's per-block step norm is taken from the grafted optimizer."""
    return grafting != "none"


def second_moment_scale(grafting, step, beta2):
    """What the second moment is multiplied by before its root: Adam's `1 / c_t`, else 1.

    Computed once per step, not once per variable: a scalar shared by every variable.
    """
    return 1.0 / (1.0 - ops.power(beta2, step)) if grafting == "adam" else 1.0


def grafted_directions(grafting, elementwise, second_moments, gradients, filtered_gradients,
                       scale, beta2, epsilon):
    """Updates the second moments and returns the grafted optimizer's steps (before the
    learning rate), one per variable.

    Args:
        grafting: one of `GRAFTING_TYPES`.
        elementwise: the step's `keras_matta.optimizers.elementwise` implementation.
        second_moments: the second-moment optimizer variables (ignored for `"sgd"` and
            `"none"`).
        gradients: the raw gradients `g`, float32.
        filtered_gradients: the bias-corrected momenta `m_hat`, float32.
        scale: `second_moment_scale(grafting, step, beta2)`.
        beta2: the second moment's decay (not used by `"adagrad"`, which sums).
        epsilon: added to the denominator.
    """
    if not has_second_moment(grafting):
        return list(filtered_gradients)
    decay = 1.0 if grafting == "adagrad" else beta2
    updated = elementwise.ema(second_moments, gradients, decay, square=True)
    return elementwise.divide_by_root(filtered_gradients, updated, scale, epsilon)
