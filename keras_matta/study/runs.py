"""The study's training runs: the cached Teacher, separately trained models, classic KD, the
Student with majority kernels, MatTA.

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
from keras_matta.widths import width_label

OPTIMIZERS = ("adam", "shampoo")
METHOD_TITLES = {
    "teacher": "Teacher",
    "separate": "Student alone",  # the separately trained model at the Student's width
    "student": "Student alone",  # the same row in results written before `separate` existed
    "kd": "Student <- Teacher (KD)",
    "majority": "Student, majority kernels",
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


# === Separately trained models, KD, MatTA ===


def _new_model(config, seed, fraction, name, majority=1):
    """A freshly initialized model of the TA's architecture at `fraction` of its width."""
    keras.utils.set_random_seed(seed)
    kwargs = models_lib.student_kwargs(config.ta, config.task, fraction)
    return models_lib.build(config.task, name=f"{config.task}_{name}", majority=majority,
                            **kwargs)


def separate(task_data, config, optimizer, seed, fraction):
    """A model of the TA's architecture at `fraction`, trained alone on the labels.

    The reference for the family member of the same size: the same batches, steps and
    schedule as the MatTA run of this seed. At `config.student_fraction` it is the Student
    trained alone.

    Args:
        task_data: the task's data (`keras_matta.data.load_task`).
        config: the task's `TaskConfig`.
        optimizer: `"adam"` or `"shampoo"`.
        seed: seeds the initialization and the data order.
        fraction: the width in (0, 1] (1.0: the TA's size).

    Returns:
        `(model, {"seconds": float, "logs": dict})`.

    Example:

    ```python
    model, info = separate(task_data, preset("digits", "quick"), "adam", 0, 0.5)
    ```
    """
    if not isinstance(fraction, float) or not 0.0 < fraction <= 1.0:
        raise ValueError(f"`fraction` must be a float in (0, 1]; got {fraction!r}.")
    label = width_label(fraction)
    model = _new_model(config, seed, fraction, f"separate_{label.replace('.', '_')}")
    compile_model(model, make_optimizer(optimizer, config, config.steps), config)
    seconds, logs = fit(model, task_data, config, seed, config.steps,
                        f"Separate, width {label} ({optimizer})")
    return model, {"seconds": seconds, "logs": logs}


def distilled_student(task_data, config, optimizer, seed, teacher_model):
    """The Student trained on labels and the Teacher's logits (classic KD)."""
    model = _new_model(config, seed, config.student_fraction, "kd_student")
    distiller = Distiller(model, teacher_model, temperature=config.temperature)
    compile_model(distiller, make_optimizer(optimizer, config, config.steps), config)
    seconds, logs = fit(distiller, task_data, config, seed, config.steps,
                        f"Student <- Teacher KD ({optimizer})")
    return model, {"seconds": seconds, "logs": logs}


def majority_student(task_data, config, optimizer, seed):
    """The Student's architecture with `config.majority` copies of every Mat kernel, trained
    on the labels, then collapsed to the served Student (one kernel each) by `extract`.

    The served model has exactly the Student alone's size; the copies cost only training.

    Returns:
        `(served_model, {"seconds": float, "logs": dict})`.
    """
    model = _new_model(config, seed, config.student_fraction, "majority_student",
                       majority=config.majority)
    compile_model(model, make_optimizer(optimizer, config, config.steps), config)
    seconds, logs = fit(model, task_data, config, seed, config.steps,
                        f"Student, {config.majority} kernel copies ({optimizer})")
    return keras_matta.extract(model, 1.0), {"seconds": seconds, "logs": logs}


def matta(task_data, config, optimizer, seed, teacher_model):
    """The TA and its nested Students trained together with the Teacher (MatTA); returns the TA.

    Only the Students' widths, the Teacher and the warm-up are set: every other argument is
    the library's default, because the defaults are the recipe a user gets.
    """
    keras.utils.set_random_seed(seed)
    ta = models_lib.build(config.task, name=f"{config.task}_ta", **config.ta)
    trainer = MatTA(
        ta, student_widths=list(config.student_widths), teacher=teacher_model,
        kd_warmup_steps=int(config.kd_warmup_fraction * config.steps), seed=seed,
    )
    compile_model(trainer, make_optimizer(optimizer, config, config.steps), config)
    students = ", ".join(width_label(w) for w in config.student_widths)
    seconds, logs = fit(trainer, task_data, config, seed, config.steps,
                        f"MatTA: TA + Students {students} ({optimizer})")
    return ta, {"seconds": seconds, "logs": logs}


def evaluation_windows(task_data, config, split):
    """The language model's evaluation windows `(x, y)` of `split`."""
    data = getattr(task_data, split)
    return byte_windows(data, config.sequence_length, max_windows=config.eval_windows)
