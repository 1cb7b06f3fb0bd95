"""What `keras-matta train`, `extract` and `evaluate` do (the CLI only parses arguments).

- `train`: a MatTA run (TA + nested Students, optionally a Teacher) on an embedded task or a
  user data file; saves the TA as `.keras` and prints every head's test metrics.
- `extract`: one width (or Mix'n'Match spec) of a saved TA as a standalone stock-Keras model.
- `evaluate`: a saved model's metrics on a task's split, with its parameters and FLOPs.
- `search`: the Pareto front of a saved TA's width specs on a task's validation split, under a
  budget; prints a table, writes JSON and a PNG.
"""

import dataclasses
import pathlib

import keras

import keras_matta
from keras_matta import widths as widths_lib
from keras_matta.data import CLASSIFICATION
from keras_matta.data import final_word_examples
from keras_matta.data import load_task
from keras_matta.search import report as search_report
from keras_matta.study import metrics as metrics_lib
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
    config = _matching_config(model, model_path, task_data, mode)
    model_cost = keras_matta.cost(model, widths)
    if widths is not None:
        model = keras_matta.extract(model, widths)
    final_words = _final_words(task_data, config, split)
    return {**model_cost, **evaluate_model(model, task_data, config, split, final_words)}


def _matching_config(model, model_path, task_data, mode):
    """The study preset for `task_data`, after checking that `model` fits the data."""
    if task_data.kind == CLASSIFICATION:
        expected = tuple(model.input_shape[1:])
        if expected != task_data.input_shape:
            raise ValueError(
                f"{model_path} takes inputs of shape {expected}; the data {task_data.name!r} "
                f"has examples of shape {task_data.input_shape}."
            )
        return config_for(task_data, mode)
    if len(model.input_shape) != 2 or model.output_shape[-1] != 256:
        raise ValueError(
            f"{model_path} is not a byte language model (input (batch, T), output "
            f"(batch, T, 256)); got input {model.input_shape}, output {model.output_shape}."
        )
    return config_for(task_data, mode, sequence_length=model.input_shape[1])


def search(model_path, source, output_dir, budget=None, objective=None, choices=None,
           strategy="auto", max_evaluations=200, seed=0, proxy_steps=None, batch_size=None,
           split="validation", mode="default", data_seed=0, resume=True):
    """The Pareto front of the saved TA's width specs on `source`'s `split` (`keras_matta.search`).

    Args:
        model_path: the TA's `.keras` file.
        source: an embedded task or a data file (see `keras_matta.data.load_task`).
        output_dir: where `front.json`, `front.png` and the resumable `cache.jsonl` go.
        budget: `{cost: bound}` or `None`.
        objective: a metric name; default `accuracy` (classification) or `bits_per_byte`
            (byte language model, computed as in `keras-matta evaluate`).
        choices: the per-layer widths (default `(0.25, 0.5, 0.75, 1.0)`).
        strategy, max_evaluations, seed, proxy_steps: as in `keras_matta.search`.
        batch_size: the evaluation batch and the batch latency is timed at (default: the
            preset's training batch size).
        split: the split to search on (`validation`: keep `test` for the final report).
        mode: the preset whose evaluation sizes are used (`quick` evaluates fewer windows).
        data_seed: the split seed of the data (as used when training).
        resume: reuse the measurements in `output_dir/cache.jsonl` of an interrupted run.

    Returns:
        The `SearchResult`; prints its table.
    """
    model = load_model(model_path)
    task_data = load_task(source, seed=data_seed)
    config = _matching_config(model, model_path, task_data, mode)
    batch_size = batch_size or config.batch_size
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if task_data.kind == CLASSIFICATION:
        data = getattr(task_data, split)
        model.compile(loss=loss, metrics=["accuracy"])
        objective, maximize = objective or "accuracy", None
    else:
        data = runs.evaluation_windows(task_data, config, split)
        model.compile(loss=loss)
        if objective in (None, "bits_per_byte"):
            def bits_per_byte(at_width, windows):
                return metrics_lib.bits_per_byte(at_width, *windows[:2])

            objective, maximize = bits_per_byte, False
        else:
            maximize = None
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cache = output_dir / "cache.jsonl"
    if not resume and cache.exists():
        cache.unlink()
    result = keras_matta.search(
        model, data, budget=budget, objective=objective, maximize=maximize,
        choices=choices or (0.25, 0.5, 0.75, 1.0), strategy=strategy,
        max_evaluations=max_evaluations, seed=seed, batch_size=batch_size,
        proxy_steps=proxy_steps, cache=cache)
    search_report.write_json(result, output_dir / "front.json", model=str(model_path),
                             data=str(source), split=split, backend=keras.backend.backend())
    search_report.plot(result, output_dir / "front.png")
    print(search_report.table(result))
    print(f"Wrote {output_dir / 'front.json'} and {output_dir / 'front.png'}; extract a point "
          f"with: keras-matta extract --model {model_path} --point "
          f"{output_dir / 'front.json'}:INDEX --output student.keras")
    return result

