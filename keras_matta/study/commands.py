"""What `keras-matta train`, `extract` and `evaluate` do (the CLI only parses arguments).

- `train`: a MatTA run (TA + nested Students, optionally a Teacher) on an embedded task or a
  user data file; saves the TA as `.keras` and prints every head's test metrics.
- `extract`: one width (or Mix'n'Match spec) of a saved TA as a standalone stock-Keras model.
- `evaluate`: a saved model's metrics on a task's split, with its parameters and FLOPs.
"""

import dataclasses
import pathlib

import keras

import keras_matta
from keras_matta import widths as widths_lib
from keras_matta.data import CLASSIFICATION
from keras_matta.data import final_word_examples
from keras_matta.data import load_task
from keras_matta.study import models as models_lib
from keras_matta.study import runs
from keras_matta.study.config import preset
from keras_matta.study.demo import evaluate as evaluate_model
from keras_matta.training import MatTA


def load_model(path):
    """`keras.saving.load_model(path)` with errors that name the path."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}")
    if path.suffix != ".keras":
        raise ValueError(f"{path}: expected a `.keras` model file.")
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # Keras raises many types for a damaged archive.
        raise ValueError(f"{path} is not a loadable Keras model: {error}") from error


def config_for(task_data, mode="default", sequence_length=None):
    """The study preset that fits `task_data`: the MLP for classification, else the byte LM."""
    if task_data.kind == CLASSIFICATION:
        config = preset("digits", mode)
        shape = {"input_shape": task_data.input_shape, "num_classes": task_data.num_classes}
        return dataclasses.replace(config, ta={**config.ta, **shape},
                                   teacher={**config.teacher, **shape})
    config = preset("lm", mode)
    if sequence_length is not None:
        config = dataclasses.replace(
            config, ta={**config.ta, "sequence_length": sequence_length},
            teacher={**config.teacher, "sequence_length": sequence_length})
    return config


def _final_words(task_data, config, split):
    if task_data.kind == CLASSIFICATION:
        return None
    text = getattr(task_data, split).tobytes().decode("utf-8", errors="replace")
    try:
        return final_word_examples(text, config.sequence_length,
                                   max_examples=config.final_word_examples)
    except ValueError:
        return None  # too little text for the final-word task: bits per byte only


def train(source, output, mode="default", student_widths=None, optimizer="shampoo",
          steps=None, batch_size=None, learning_rate=None, teacher=None, seed=0):
    """Trains a MatTA on `source` and saves its TA to `output`.

    Args:
        source: an embedded task (`"digits"`, `"shakespeare"`) or a data file / source accepted
            by `keras_matta.data.load_task`.
        output: the `.keras` path of the TA.
        mode: the size preset (`quick`, `default`, `full`).
        student_widths: width specs of the Students (default: the preset's Student widths).
        optimizer: `"shampoo"` or `"adam"`.
        steps, batch_size, learning_rate: override the preset.
        teacher: path of a trained `.keras` Teacher with the TA's output shape, or `None`.
        seed: seeds the model and the data order.

    Returns:
        `{head: metrics}` on the test split, `"ta"` first.
    """
    output = pathlib.Path(output)
    if output.suffix != ".keras":
        raise ValueError(f"`--output` must end in .keras; got {output}.")
    task_data = load_task(source, seed=seed)
    config = config_for(task_data, mode)
    overrides = {k: v for k, v in (("steps", steps), ("batch_size", batch_size),
                                   ("learning_rate", learning_rate)) if v is not None}
    config = dataclasses.replace(config, **overrides)
    print(f"{task_data.description}; sizes {task_data.sizes()}", flush=True)
    teacher_model = load_model(teacher) if teacher else None
    keras.utils.set_random_seed(seed)
    ta = models_lib.build(config.task, name="ta", **config.ta)
    widths = list(student_widths or config.student_widths)
    # Only what the run fixes: MatTA's own defaults are the recipe.
    trainer = MatTA(ta, student_widths=widths, teacher=teacher_model, seed=seed,
                    kd_warmup_steps=int(config.kd_warmup_fraction * config.steps))
    runs.compile_model(trainer, runs.make_optimizer(optimizer, config, config.steps), config)
    runs.fit(trainer, task_data, config, seed, config.steps, f"MatTA ({optimizer})")
    output.parent.mkdir(parents=True, exist_ok=True)
    ta.save(output)
    final_words = _final_words(task_data, config, "test")
    results = {}
    for spec in [None] + widths:
        model = ta if spec is None else keras_matta.extract(ta, spec)
        label = "ta" if spec is None else f"student {widths_lib.width_label(spec)}"
        results[label] = {**keras_matta.cost(ta, spec),
                          **evaluate_model(model, task_data, config, "test", final_words)}
    print(f"Saved the TA to {output}.")
    return results


def extract(model_path, widths, output):
    """Extracts `widths` from the saved TA at `model_path`; saves it; returns its cost."""
    output = pathlib.Path(output)
    if output.suffix != ".keras":
        raise ValueError(f"`--output` must end in .keras; got {output}.")
    model = load_model(model_path)
    student = keras_matta.extract(model, widths)
    output.parent.mkdir(parents=True, exist_ok=True)
    student.save(output)
    print(f"Saved {student.name} to {output}.")
    return keras_matta.cost(model, widths)


def evaluate(model_path, source, split="test", widths=None, mode="default", seed=0):
    """The metrics of the saved model at `model_path` on `source`'s `split`, and its cost.

    Args:
        model_path: a `.keras` model (a TA, an extracted Student, a Teacher).
        source: an embedded task or a data file (see `keras_matta.data.load_task`).
        split: `"test"` or `"validation"`.
        widths: evaluate the model at this width spec (it must contain Mat layers).
        mode: the preset whose evaluation sizes are used (`quick` evaluates fewer windows).
        seed: the split seed of the data (as used when training).
    """
    if split not in ("train", "validation", "test"):
        raise ValueError(f"`split` must be 'train', 'validation' or 'test'; got {split!r}.")
    model = load_model(model_path)
    task_data = load_task(source, seed=seed)
    if task_data.kind == CLASSIFICATION:
        expected = tuple(model.input_shape[1:])
        if expected != task_data.input_shape:
            raise ValueError(
                f"{model_path} takes inputs of shape {expected}; the data {task_data.name!r} "
                f"has examples of shape {task_data.input_shape}."
            )
        config = config_for(task_data, mode)
    else:
        if len(model.input_shape) != 2 or model.output_shape[-1] != 256:
            raise ValueError(
                f"{model_path} is not a byte language model (input (batch, T), output "
                f"(batch, T, 256)); got input {model.input_shape}, output {model.output_shape}."
            )
        config = config_for(task_data, mode, sequence_length=model.input_shape[1])
    model_cost = keras_matta.cost(model, widths)
    if widths is not None:
        model = keras_matta.extract(model, widths)
    final_words = _final_words(task_data, config, split)
    return {**model_cost, **evaluate_model(model, task_data, config, split, final_words)}
