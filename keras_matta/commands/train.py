"""`keras-matta train`: a MatTA run on a task or a data file, saved as the TA's `.keras` file."""

import dataclasses

import keras

import keras_matta
from keras_matta import widths as widths_lib
from keras_matta.commands import common
from keras_matta.data import load_task
from keras_matta.study import models as models_lib
from keras_matta.study import runs
from keras_matta.study.demo import evaluate as evaluate_model
from keras_matta.training import MatTA


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
    output = common.keras_output(output)
    task_data = load_task(source, seed=seed)
    config = common.config_for(task_data, mode)
    overrides = {k: v for k, v in (("steps", steps), ("batch_size", batch_size),
                                   ("learning_rate", learning_rate)) if v is not None}
    config = dataclasses.replace(config, **overrides)
    print(f"{task_data.description}; sizes {task_data.sizes()}", flush=True)
    teacher_model = common.load_model(teacher) if teacher else None
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
    final_words = common.final_words(task_data, config, "test")
    results = {}
    for spec in [None] + widths:
        model = ta if spec is None else keras_matta.extract(ta, spec)
        label = "ta" if spec is None else f"student {widths_lib.width_label(spec)}"
        results[label] = {**keras_matta.cost(ta, spec),
                          **evaluate_model(model, task_data, config, "test", final_words)}
    print(f"Saved the TA to {output}.")
    return results
