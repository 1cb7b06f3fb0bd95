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


def update_second_moment(grafting, second_moment, gradient, beta2):
    """The new second moment of the grafted optimizer, from the raw gradient."""
    squared = ops.square(gradient)
    if grafting == "adagrad":
        return second_moment + squared
    return second_moment + (1.0 - beta2) * (squared - second_moment)


def second_moment_scale(grafting, step, beta2):
    """What the second moment is multiplied by before its root: Adam's `1 / c_t`, else 1.

    Computed once per step, not once per variable: a scalar shared by every variable.
    """
    return 1.0 / (1.0 - ops.power(beta2, step)) if grafting == "adam" else 1.0


def grafted_direction(grafting, filtered_gradient, second_moment, scale, epsilon):
    """The grafted optimizer's step (before the learning rate) for a filtered gradient.

    Args:
        grafting: one of `GRAFTING_TYPES`.
        filtered_gradient: the bias-corrected momentum `m_hat`, float32.
        second_moment: the updated second moment (`None` for `"sgd"` and `"none"`).
        scale: `second_moment_scale(grafting, step, beta2)`.
        epsilon: added to the denominator.
    """
    if not has_second_moment(grafting):
        return filtered_gradient
    if grafting == "adam":
        second_moment = second_moment * scale
    return filtered_gradient / (ops.sqrt(second_moment) + epsilon)
