"""`keras-matta evaluate`: a saved model's metrics on a task's split, with its cost."""

import keras_matta
from keras_matta.commands import common
from keras_matta.data import load_task
from keras_matta.study.demo import evaluate as evaluate_model


def evaluate(model_path, source, split="test", widths=None, mode="default", seed=0):
    """The metrics of the saved model at `model_path` on `source`'s `split`, and its cost.

    Args:
        model_path: a `.keras` model (a TA, an extracted Student, a Teacher).
        source: an embedded task or a data file (see `keras_matta.data.load_task`).
        split: `"test"` or `"validation"`.
        widths: evaluate the model at this width spec (it must contain Mat layers).
        mode: the preset whose evaluation sizes are used (`quick` evaluates fewer windows).
        seed: the split seed of the data (as used when training).

    Returns:
        `{name: value}`: the cost (`params`, `flops`, ...) and the task's metrics.
    """
    if split not in ("train", "validation", "test"):
        raise ValueError(f"`split` must be 'train', 'validation' or 'test'; got {split!r}.")
    model = common.load_model(model_path)
    task_data = load_task(source, seed=seed)
    config = common.matching_config(model, model_path, task_data, mode)
    model_cost = keras_matta.cost(model, widths)
    if widths is not None:
        model = keras_matta.extract(model, widths)
    final_words = common.final_words(task_data, config, split)
    return {**model_cost, **evaluate_model(model, task_data, config, split, final_words)}
