"""
Title: Growing a Teaching Assistant around GPT-2 Medium with MatTA
Author: keras_matta developers
Date created: 2026/11/23
Last modified: 2026/11/23
Description: Nest pretrained GPT-2 Medium inside a wider TA, distill from GPT-2 Large with Shampoo, and extract a family of servable GPT-2 models.
Accelerator: GPU
"""

"""
## Introduction

MatTA (Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
KDD 2025, [arXiv 2505.23337](https://arxiv.org/abs/2505.23337)) trains three models in one run:

- the **Student**, here pretrained GPT-2 Medium: the architecture we will serve;
- a **Teaching Assistant** (TA): the same network with wider feed-forward layers, in which the
  Student's weights are a nested prefix (`W_in[:, :4096]`, `b_in[:4096]`, `W_out[:4096, :]`);
- a frozen **Teacher**, here GPT-2 Large, whose next-token distributions both learn from.

The TA learns from the Teacher, the Student from the Teacher and from the TA it lives in, and
because the weights are shared one optimizer step updates both. Afterwards every width in
between, and every per-layer mix of widths ("Mix'n'Match"), is a servable GPT-2.

This guide:

1. grows a TA with 8192 FFN units around `gpt2_medium_en` (4096), checking that the Student
   width still *is* GPT-2 Medium;
2. distills from `gpt2_large_en` with `keras_matta.MatTA` and the Shampoo optimizer on text
   from TensorFlow Datasets;
3. measures LAMBADA last-word accuracy of the original GPT-2 Medium, the trained Student, the
   TA and Mix'n'Match models;
4. extracts the Student as a plain `keras_hub.models.GPT2Backbone` and generates text with it.

Set `KERAS_MATTA_SMOKE=1` to run the whole guide offline in a minute on a CPU, with tiny random
models and a few sentences of text instead of the presets and datasets.
"""

"""
## Setup

The first cell installs what this guide needs on a stock Colab or Kaggle image: keras_matta with
the extras this guide uses (the backend; `[tensorflow]` for `tf.data`, which feeds every backend
here; `[hub]` for keras-hub; `[datasets]` for TensorFlow Datasets). keras_matta is not on PyPI
yet, so it comes from the GitHub repository these notebooks live in (set `KERAS_MATTA_SOURCE` to
a wheel's `file://` URL or another git URL to install that instead). The TensorFlow, JAX and
PyTorch the image already has are passed to pip at their installed versions, so their CUDA
builds are never replaced or downgraded. The cell runs pip only on Colab or Kaggle (on Kaggle,
turn the notebook's Internet setting on), or when `KERAS_MATTA_INSTALL=1`; anywhere else, CI
included, it only chooses the backend and installs nothing, so it is safe to run again.

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
    extras = f"{BACKEND},tensorflow,hub,datasets"
    subprocess.run([*pip, f"keras-matta[{extras}] @ {source}", *keep], check=True)
    importlib.invalidate_caches()  # so that this interpreter finds the new packages

"""
Keras reads `KERAS_BACKEND` when it is first imported, here:
"""

SMOKE = os.environ.get("KERAS_MATTA_SMOKE") == "1"

import tempfile  # noqa: E402

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_matta  # noqa: E402
from keras_matta import hub  # noqa: E402
from keras_matta.optimizers import Shampoo  # noqa: E402
from keras_matta.training import MatTA  # noqa: E402

keras.utils.set_random_seed(42)

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

The full-size run is GPU work: GPT-2 Large as the Teacher (774M parameters), a TA of about 555M
parameters around GPT-2 Medium, and the Students, for 2,000 steps of 8 sequences of 256 tokens.
Its configuration (below) fits an A100 with 40 GB in float32; on a 16 GB T4 lower `BATCH_SIZE`
and `SEQUENCE_LENGTH`. `keras.config.set_dtype_policy("mixed_bfloat16")` (a TPU, an A100 or
newer) before the models are loaded roughly halves the activations' memory. The training
computes about 4e16 floating-point operations (Teacher forward, TA and Students forward and
backward): an estimate, not a measured run, of the order of an hour on one A100. On a TPU,
Keras uses one core unless a `keras.distribution` is set: see the distributed training guide.
"""

"""
## Configuration

The real run needs a GPU with about 40 GB of memory (an A100; on a 16 GB T4 lower
`BATCH_SIZE` and `SEQUENCE_LENGTH`). The smoke run replaces every pretrained model with a tiny
random one of the same class.
"""

if SMOKE:
    SEQUENCE_LENGTH, BATCH_SIZE, TRAIN_STEPS, EVAL_EXAMPLES = 32, 4, 6, 8
    STUDENT_FFN, TA_FFN = 32, 64
    STUDENT_WIDTHS = [STUDENT_FFN, STUDENT_FFN // 2]
else:
    SEQUENCE_LENGTH, BATCH_SIZE, TRAIN_STEPS, EVAL_EXAMPLES = 256, 8, 2000, 1000
    STUDENT_FFN, TA_FFN = 4096, 8192
    STUDENT_WIDTHS = [STUDENT_FFN, STUDENT_FFN // 2]

"""
## The Student: pretrained GPT-2 Medium

In smoke mode the tokenizer is a byte-level GPT-2 tokenizer over single bytes, and the
"pretrained" models are random `GPT2Backbone`s saved with `save_to_preset` and reloaded with
`from_preset`: the same loading path as the real presets, offline.
"""


def byte_level_tokenizer():
    """A GPT-2 tokenizer whose vocabulary is the 256 byte symbols (and one merge)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for byte in range(256):  # GPT-2's bytes_to_unicode
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    vocabulary = {"<|endoftext|>": 0}
    for symbol in symbols.values():
        vocabulary[symbol] = len(vocabulary)
    vocabulary["Ġt"] = len(vocabulary)
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ t"])


def tiny_gpt2_preset(vocabulary_size, num_layers, hidden_dim, intermediate_dim, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=2,
        hidden_dim=hidden_dim, intermediate_dim=intermediate_dim, max_sequence_length=64,
    )
    path = tempfile.mkdtemp(prefix="gpt2_preset_")
    backbone.save_to_preset(path)
    return path


if SMOKE:
    tokenizer = byte_level_tokenizer()
    STUDENT_PRESET = tiny_gpt2_preset(tokenizer.vocabulary_size(), 2, 16, STUDENT_FFN, seed=1)
    TEACHER_PRESET = tiny_gpt2_preset(tokenizer.vocabulary_size(), 3, 24, 96, seed=2)
else:
    tokenizer = keras_hub.models.GPT2Tokenizer.from_preset("gpt2_medium_en")
    STUDENT_PRESET, TEACHER_PRESET = "gpt2_medium_en", "gpt2_large_en"

preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(
    tokenizer, sequence_length=SEQUENCE_LENGTH
)
gpt2_medium = keras_hub.models.GPT2Backbone.from_preset(STUDENT_PRESET)
print(f"Student: {gpt2_medium.count_params():,} parameters, "
      f"intermediate_dim={gpt2_medium.intermediate_dim}")

"""
## Growing the TA around it

`from_keras_hub` builds a `MatGPT2Backbone` whose decoder blocks are Mat blocks with
`TA_FFN` hidden units. The pretrained kernels fill the prefix; the new units get random input
weights at the pretrained scale and zero output rows, so at initialisation the TA computes
exactly what GPT-2 Medium computes, and the new units start learning from the first step.
"""

ta_backbone = hub.from_keras_hub(gpt2_medium, ta_intermediate_dim=TA_FFN,
                                 new_neurons="zero_output", seed=0)
ta = hub.LogitsModel(ta_backbone, name="ta")

sample = preprocessor(["The quick brown fox jumps over the lazy dog."])[0]
with keras_matta.WidthScope(ta, STUDENT_FFN):
    student_logits = keras.ops.convert_to_numpy(ta(sample))
original_logits = keras.ops.convert_to_numpy(hub.LogitsModel(gpt2_medium)(sample))
print("max |Student width - GPT-2 Medium| logit difference:",
      float(np.abs(student_logits - original_logits).max()))

"""
## The Teacher

Any keras-hub causal LM with the same vocabulary can teach: `LogitsModel` turns a backbone
into `{token_ids, padding_mask} -> logits` through its tied embedding, the interface
`MatTA` calls the Teacher with. The Teacher is frozen by `MatTA`.
"""

teacher = hub.LogitsModel(keras_hub.models.GPT2Backbone.from_preset(TEACHER_PRESET),
                          name="teacher")

"""
## Data

Training text comes from TensorFlow Datasets: the LAMBADA development passages (novels from
BookCorpus, the register the LAMBADA test measures). Swap in any corpus of strings. The
keras-hub preprocessor turns strings into `(x, y, sample_weight)`: inputs, next tokens, and
a mask that ignores padding. We run it once, eagerly, and keep the token arrays in memory.
"""

SMOKE_TEXT = [
    "The old sailor looked at the sea and said that the storm would come before night.",
    "She opened the letter slowly, afraid of what her brother had written to her.",
    "When the train stopped, the children ran to the window to see the snow.",
    "He had never told anyone about the key he found under the stone in the garden.",
    "The dog waited at the door every evening until his master came home from work.",
    "In the morning the village was quiet, and the baker was the only one awake.",
    "They walked along the river until the lights of the town disappeared behind them.",
    "The teacher asked the class to read the poem aloud, one line at a time.",
]


def load_passages(split):
    if SMOKE:
        return list(SMOKE_TEXT)
    import tensorflow_datasets as tfds

    dataset = tfds.load("lambada", split=split)
    return [example["passage"].decode() for example in dataset.as_numpy_iterator()]


def preprocess(texts, chunk=512):
    parts = [preprocessor(texts[i:i + chunk]) for i in range(0, len(texts), chunk)]
    to_numpy = keras.ops.convert_to_numpy
    x = {key: np.concatenate([to_numpy(p[0][key]) for p in parts]) for key in parts[0][0]}
    y = np.concatenate([to_numpy(p[1]) for p in parts])
    sample_weight = np.concatenate([to_numpy(p[2]) for p in parts]).astype("float32")
    return x, y, sample_weight


train_data = (
    tf.data.Dataset.from_tensor_slices(preprocess(load_passages("train")))
    .shuffle(10_000).repeat().batch(BATCH_SIZE, drop_remainder=True)
    .prefetch(tf.data.AUTOTUNE)
)

"""
## LAMBADA-style last-word accuracy

A passage's last word must be predicted from the passage before it. We score greedy decoding
exactly and cheaply: the model is right when the argmax at every position of the target word's
tokens is that token (teacher forcing gives the same tokens greedy decoding would produce,
in one forward pass).
"""


def last_word_examples(passages, limit):
    token_ids, padding_mask, targets = [], [], []
    for passage in passages[:limit]:
        context, word = passage.strip().rsplit(" ", 1)
        context_ids = [int(i) for i in keras.ops.convert_to_numpy(tokenizer(context))]
        word_ids = [int(i) for i in keras.ops.convert_to_numpy(tokenizer(" " + word))]
        ids = (context_ids + word_ids)[-SEQUENCE_LENGTH:]
        targets.append((len(ids) - len(word_ids), word_ids))
        token_ids.append(ids + [0] * (SEQUENCE_LENGTH - len(ids)))
        padding_mask.append([1] * len(ids) + [0] * (SEQUENCE_LENGTH - len(ids)))
    inputs = {"token_ids": np.array(token_ids, "int32"),
              "padding_mask": np.array(padding_mask, "int32")}
    return inputs, targets


def last_word_accuracy(model, widths, inputs, targets):
    """Accuracy of `model` run at `widths` (a width spec; None: full width)."""
    correct = 0
    has_widths = bool(keras_matta.widths.mat_layers(model))
    with keras_matta.WidthScope(model, widths) if has_widths else contextlib.nullcontext():
        for start in range(0, len(targets), BATCH_SIZE):
            batch = {k: v[start:start + BATCH_SIZE] for k, v in inputs.items()}
            predicted = np.argmax(model.predict_on_batch(batch), axis=-1)  # (B, T)
            for row, (first, word_ids) in enumerate(targets[start:start + BATCH_SIZE]):
                positions = np.arange(first, first + len(word_ids)) - 1
                correct += bool(np.all(predicted[row, positions] == word_ids))
    return correct / len(targets)


eval_passages = load_passages("test")
eval_inputs, eval_targets = last_word_examples(eval_passages, EVAL_EXAMPLES)

original_accuracy = last_word_accuracy(hub.LogitsModel(gpt2_medium), None, eval_inputs,
                                       eval_targets)
print(f"GPT-2 Medium (original) last-word accuracy: {original_accuracy:.3f}")

"""
## Training with MatTA and Shampoo

`MatTA` runs the TA and each Student width on every batch and sums

- the TA's next-token loss and its distillation from the Teacher,
- each Student's next-token loss, its distillation from the Teacher and from the TA
  (phased in over `kd_warmup_steps`).

Shampoo preconditions every kernel with Kronecker factors (`L^-1/4 G R^-1/4`) and takes its
step size from Adam (grafting); embeddings and vocabulary projections use Adam alone.
"""

mat_ta = MatTA(
    ta,
    student_widths=STUDENT_WIDTHS,
    teacher=teacher,
    temperature=1.0,
    kd_warmup_steps=max(1, TRAIN_STEPS // 10),
)
mat_ta.compile(
    optimizer=Shampoo(
        learning_rate=1e-5 if not SMOKE else 1e-3,
        block_size=128,
        precondition_frequency=10 if not SMOKE else 2,
        start_preconditioning_step=10 if not SMOKE else 2,
        weight_decay=0.01,
    ),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    weighted_metrics=["accuracy"],
)
history = mat_ta.fit(train_data, steps_per_epoch=TRAIN_STEPS, epochs=1,
                     verbose=2 if SMOKE else 1)
print({name: round(float(values[-1]), 4) for name, values in history.history.items()})

"""
## Results: the Student, the TA and the Mix'n'Match family

Every width of the one trained model is evaluated without extraction, by running the TA inside
a `WidthScope`. Mix'n'Match models choose per layer: here the first half of the blocks at one
width and the second half at another.
"""

num_layers = ta_backbone.num_layers
half = num_layers // 2


def mix(first, second):
    return {f"transformer_layer_{i}": first if i < half else second for i in range(num_layers)}


family = {
    "TA": None,
    "Student (GPT-2 Medium shape)": STUDENT_FFN,
    "small Student": STUDENT_FFN // 2,
    "Mix: TA first, Student last": mix(TA_FFN, STUDENT_FFN),
    "Mix: Student first, small last": mix(STUDENT_FFN, STUDENT_FFN // 2),
}
print(f"{'model':36s} {'params':>14s} {'last-word acc':>14s}")
print(f"{'GPT-2 Medium (original)':36s} {gpt2_medium.count_params():>14,} "
      f"{original_accuracy:>14.3f}")
for label, widths in family.items():
    params = keras_matta.extract(ta_backbone, widths).count_params()
    accuracy = last_word_accuracy(ta, widths, eval_inputs, eval_targets)
    print(f"{label:36s} {params:>14,} {accuracy:>14.3f}")

"""
## Extracting and serving the Student

`keras_matta.extract` slices the trained kernels into a standard `GPT2Backbone` of GPT-2 Medium's
shape: it works with `GPT2CausalLM`, its samplers, `generate` and `save_to_preset`, and carries
no trace of keras_matta.
"""

student = keras_matta.extract(ta_backbone, STUDENT_FFN, name="gpt2_medium_matta")
assert type(student) is keras_hub.models.GPT2Backbone
assert student.count_params() == gpt2_medium.count_params()
causal_lm = keras_hub.models.GPT2CausalLM(backbone=student, preprocessor=preprocessor)
causal_lm.compile(sampler="greedy")
print(causal_lm.generate(["The old sailor looked at the sea and"], max_length=SEQUENCE_LENGTH))

preset_dir = tempfile.mkdtemp(prefix="gpt2_medium_matta_") if SMOKE else "gpt2_medium_matta"
causal_lm.save_to_preset(preset_dir)
reloaded = keras_hub.models.GPT2CausalLM.from_preset(preset_dir)
print(f"Saved the Student to {preset_dir}; reloaded as {type(reloaded).__name__}.")

"""
## Where to go next

- Train longer and on more text (`TRAIN_STEPS`, a larger corpus such as `wiki40b/en`).
- Compare with the Student fine-tuned alone and with classic distillation into the Student
  (`MatTA` with `student_widths` only at `STUDENT_FFN` and `gamma=0`), and with Adam instead
  of Shampoo: the paper reports that MatTA and Shampoo together gain more than the sum of
  their separate gains.
- Widen the attention too: `from_keras_hub(..., ta_num_heads=24)` nests whole heads.
"""
