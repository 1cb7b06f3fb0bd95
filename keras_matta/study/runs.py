"""The study's training runs: the cached Teacher, the lone Student, classic KD and MatTA.

Every run of a task and seed sees the same batches in the same order (`batches`), for the same
number of steps, with the same warm-up + cosine learning-rate schedule; Adam and Shampoo differ
only in the optimizer object (`make_optimizer`).
"""

import hashlib
import json
import os
import pathlib
import sys
import time

import keras
import numpy as np

import keras_matta
from keras_matta.data.shakespeare import byte_windows
from keras_matta.optimizers import Shampoo
from keras_matta.study import models as models_lib
from keras_matta.study.distiller import Distiller
from keras_matta.training import MatTA

OPTIMIZERS = ("adam", "shampoo")
METHODS = ("student", "kd", "matta")
METHOD_TITLES = {
    "teacher": "Teacher",
    "student": "Student alone",
    "kd": "Student <- Teacher (KD)",
    "matta": "MatTA Student",
    "matta_ta": "MatTA TA",
}


def default_cache_dir():
    """`$KERAS_MATTA_CACHE`, else `$XDG_CACHE_HOME/keras_matta`, else `~/.cache/keras_matta`."""
    if os.environ.get("KERAS_MATTA_CACHE"):
        return pathlib.Path(os.environ["KERAS_MATTA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "keras_matta"


def loss_fn():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_optimizer(name, config, steps):
    """Adam or Shampoo (Adam-grafted, Newton roots) on a 5% linear warm-up, then cosine decay
    to 10% of the peak."""
    warmup = max(1, steps // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), alpha=0.1,
        warmup_target=config.learning_rate, warmup_steps=warmup,
    )
    if name == "adam":
        return keras.optimizers.Adam(schedule)
    if name == "shampoo":
        # Newton roots (matmuls only): the README's results were measured with them, when
        # several concurrent `eigh` calls could deadlock XLA on CPU (Shampoo now makes one).
        return Shampoo(schedule, root_method="newton")
    raise ValueError(f"Unknown optimizer {name!r}; expected one of {OPTIMIZERS}.")


def batches(task_data, config, seed, steps):
    """A generator of `steps` training batches `(x, y)`, fixed by `seed`.

    Digits: epochs of seeded permutations of the training set. Language model: windows of
    `T + 1` bytes at seeded random offsets of the training bytes (`x` the first `T`, `y` the
    last `T`).
    """
    rng = np.random.default_rng(seed)
    size = config.batch_size
    if config.task == "digits":
        x, y = task_data.train
        order = np.concatenate(
            [rng.permutation(len(y)) for _ in range(steps * size // len(y) + 1)]
        )
        for step in range(steps):
            index = order[step * size : (step + 1) * size]
            yield x[index], y[index]
        return
    data, length = task_data.train, config.sequence_length
    starts = rng.integers(0, len(data) - length - 1, size=(steps, size))
    for step in range(steps):
        index = starts[step][:, None] + np.arange(length + 1)[None, :]  # (B, T + 1)
        window = data[index].astype("int32")
        yield window[:, :-1], window[:, 1:]


def fit(model, task_data, config, seed, steps, title):
    """Fits `model` (compiled) for `steps` steps; prints progress; returns `(seconds, logs)`."""
    chunks = max(1, min(5, steps // 10))  # a few progress lines, whatever the terminal
    print(f"  {title}: {steps} steps of {config.batch_size} (shown as {chunks} Keras 'epochs')",
          flush=True)
    start = time.perf_counter()
    history = model.fit(
        batches(task_data, config, seed, steps), steps_per_epoch=steps // chunks,
        epochs=chunks, shuffle=False, verbose=1 if sys.stdout.isatty() else 2,
    )
    logs = {key: float(values[-1]) for key, values in history.history.items()}
    return time.perf_counter() - start, logs


def compile_model(model, optimizer, config):
    """Compiles with the task loss (sparse cross-entropy on logits); accuracy for digits."""
    metrics = ["accuracy"] if config.task == "digits" else None
    model.compile(optimizer=optimizer, loss=loss_fn(), metrics=metrics)


# === Teacher (cached) ===


def teacher_path(config, task_data, cache_dir):
    """Where the Teacher of `config` is cached: the file name hashes everything it depends on."""
    key = json.dumps({
        "task": config.task, "teacher": config.teacher, "steps": config.teacher_steps,
        "batch_size": config.batch_size, "learning_rate": config.learning_rate,
        "data": task_data.description, "sizes": task_data.sizes(),
        "version": keras_matta.__version__,
    }, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return pathlib.Path(cache_dir) / "teachers" / f"{config.task}-{digest}.keras"


def teacher(task_data, config, cache_dir, retrain=False):
    """The trained Teacher: loaded from the cache, or trained with Adam (seed 0) and cached.

    Returns:
        `(model, {"cached": bool, "seconds": float, "path": str})`.
    """
    path = teacher_path(config, task_data, cache_dir)
    if path.is_file() and not retrain:
        print(f"  Teacher: reusing {path}", flush=True)
        return keras.saving.load_model(path), {"cached": True, "seconds": 0.0, "path": str(path)}
    keras.utils.set_random_seed(0)
    model = models_lib.build(config.task, name=f"{config.task}_teacher", **config.teacher)
    compile_model(model, make_optimizer("adam", config, config.teacher_steps), config)
    seconds, _ = fit(model, task_data, config, 0, config.teacher_steps, "Teacher (Adam)")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model, {"cached": False, "seconds": seconds, "path": str(path)}


# === Student alone, KD, MatTA ===


def _new_student(config, seed, name):
    """A freshly initialized stand-alone Student (the TA's architecture at the Student's width)."""
    keras.utils.set_random_seed(seed)
    kwargs = models_lib.student_kwargs(config.ta, config.task, config.student_fraction)
    return models_lib.build(config.task, name=f"{config.task}_{name}", **kwargs)


def student(task_data, config, optimizer, seed):
    """The Student trained alone on the labels."""
    model = _new_student(config, seed, "student")
    compile_model(model, make_optimizer(optimizer, config, config.steps), config)
    seconds, logs = fit(model, task_data, config, seed, config.steps,
                        f"Student alone ({optimizer})")
    return model, {"seconds": seconds, "logs": logs}


def distilled_student(task_data, config, optimizer, seed, teacher_model):
    """The Student trained on labels and the Teacher's logits (classic KD)."""
    model = _new_student(config, seed, "kd_student")
    distiller = Distiller(model, teacher_model, temperature=config.temperature)
    compile_model(distiller, make_optimizer(optimizer, config, config.steps), config)
    seconds, logs = fit(distiller, task_data, config, seed, config.steps,
                        f"Student <- Teacher KD ({optimizer})")
    return model, {"seconds": seconds, "logs": logs}


def matta(task_data, config, optimizer, seed, teacher_model):
    """The TA and its nested Student trained together with the Teacher (MatTA); returns the TA."""
    keras.utils.set_random_seed(seed)
    ta = models_lib.build(config.task, name=f"{config.task}_ta", **config.ta)
    trainer = MatTA(
        ta, student_widths=[config.student_fraction], teacher=teacher_model,
        temperature=config.temperature,
        kd_warmup_steps=int(config.kd_warmup_fraction * config.steps), seed=seed,
    )
    compile_model(trainer, make_optimizer(optimizer, config, config.steps), config)
    seconds, logs = fit(trainer, task_data, config, seed, config.steps,
                        f"MatTA: TA + Student ({optimizer})")
    return ta, {"seconds": seconds, "logs": logs}


def evaluation_windows(task_data, config, split):
    """The language model's evaluation windows `(x, y)` of `split`."""
    data = getattr(task_data, split)
    return byte_windows(data, config.sequence_length, max_windows=config.eval_windows)
