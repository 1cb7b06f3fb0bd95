"""The element-wise passes of an optimizer step, over every variable at once.

Most of Shampoo's and SOAP's step is element-wise: the first and second moments, the grafted
(Adam) step and the final update are each one pass over every variable. JAX compiles the train
step with XLA, which fuses those passes whatever calls wrote them. PyTorch's train step is
eager: each `keras.ops` call is one kernel over one variable plus Keras' dispatch (about 20 us on
a CPU, more than a small variable's arithmetic), and each `assign` one more copy. The
optimizers therefore write these passes once, over lists, against the interface below, and
`for_backend` picks the implementation:

- `KerasElementwise`: one `keras.ops` call per variable and pass, and `optimizer.assign`
  (JAX and TensorFlow; what the step computes is defined by this one);
- `TorchElementwise`: one `torch._foreach_*` call per pass for all variables, updating the
  optimizer's state in place, as Keras' own PyTorch Adam does.

TensorFlow's CPU train step is a plain graph, one kernel per op, but compiling the variables'
update with XLA there saved 1-2 ms of the byte LM's 20 ms over Adam (an interleaved A/B in one
process, order shuffled per turn), not worth an XLA compilation per model: its overhead lies
elsewhere. The implementations compute the same values (`elementwise_test.py` compares them
with NumPy); only the number of kernels and copies differ.
"""

import keras
from keras import ops


class KerasElementwise:
    """The reference implementation, with `keras.ops` (see the module docstring).

    Args:
        optimizer: the `keras.optimizers.Optimizer` whose state is assigned (its `assign`).
    """

    def __init__(self, optimizer):
        self._optimizer = optimizer

    def ema(self, states, values, decay, square=False):
        """Assigns `s <- decay s + (1 - decay) v` (`v^2` with `square`) to each state and
        returns the new values; `decay=1` is the plain sum `s + v` (AdaGrad's)."""
        updated = []
        for state, value in zip(states, values):
            if square:
                value = ops.square(value)
            if decay == 1.0:
                new = state + value
            else:
                new = state + (1.0 - decay) * (value - state)
            self._optimizer.assign(state, new)
            updated.append(new)
        return updated

    def linear(self, xs, a, ys=None, b=None):
        """`a x` for each `x`, or `a x + b y` with `ys`; `a`, `b`: scalars (numbers or 0-d
        tensors)."""
        if ys is None:
            return [x * a for x in xs]
        return [x * a + y * b for x, y in zip(xs, ys)]

    def divide_by_root(self, numerators, denominators, scale, epsilon):
        """`n / (sqrt(d scale) + epsilon)`: Adam's step, `scale` its bias correction."""
        return [n / (ops.sqrt(d * scale) + epsilon) for n, d in zip(numerators, denominators)]

    def subtract(self, variables, updates, learning_rate):
        """`w <- w - learning_rate u`, in each variable's dtype."""
        for variable, update in zip(variables, updates):
            self._optimizer.assign_sub(variable, ops.cast(update * learning_rate, variable.dtype))


class TorchElementwise(KerasElementwise):
    """`torch._foreach_*`: one fused call per pass over all variables, state in place.

    Step scalars stay 0-d tensors (the `Tensor` overloads of `_foreach_mul`), so a step never
    waits for the device to read one.
    """

    def ema(self, states, values, decay, square=False):
        import torch

        with torch.no_grad():
            targets = [_torch_value(state) for state in states]
            if decay == 1.0:
                if square:
                    torch._foreach_addcmul_(targets, values, values)
                else:
                    torch._foreach_add_(targets, values)
            elif square:
                torch._foreach_mul_(targets, decay)
                torch._foreach_addcmul_(targets, values, values, value=1.0 - decay)
            else:
                torch._foreach_lerp_(targets, values, 1.0 - decay)
        return targets

    def linear(self, xs, a, ys=None, b=None):
        import torch

        result = list(torch._foreach_mul(list(xs), _torch_scalar(a)))
        if ys is not None:
            torch._foreach_add_(result, torch._foreach_mul(list(ys), _torch_scalar(b)))
        return result

    def divide_by_root(self, numerators, denominators, scale, epsilon):
        import torch

        if isinstance(scale, float) and scale == 1.0:
            roots = torch._foreach_sqrt(list(denominators))
        else:
            roots = torch._foreach_mul(list(denominators), _torch_scalar(scale))
            torch._foreach_sqrt_(roots)
        torch._foreach_add_(roots, epsilon)
        return list(torch._foreach_div(list(numerators), roots))

    def subtract(self, variables, updates, learning_rate):
        import torch

        with torch.no_grad():
            targets = [_torch_value(variable) for variable in variables]
            steps = torch._foreach_mul(list(updates), -_torch_scalar(learning_rate))
            steps = [step.to(target.dtype) for step, target in zip(steps, targets)]
            torch._foreach_add_(targets, steps)


def for_backend(optimizer):
    """The element-wise implementation for the current Keras backend."""
    if keras.backend.backend() == "torch":
        return TorchElementwise(optimizer)
    return KerasElementwise(optimizer)


def _torch_value(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def _torch_scalar(value):
    """A Python number as is; a tensor as a float32 0-d tensor (the `Tensor` overloads)."""
    if isinstance(value, (int, float)):
        return float(value)
    return ops.cast(value, "float32")
