"""What the commands share: loading a model file, and the study preset that fits the data."""

import dataclasses
import pathlib

import keras

from keras_matta.data import CLASSIFICATION
from keras_matta.data import final_word_examples
from keras_matta.study.config import preset


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


def keras_output(output):
    """`output` as a path, after checking it names a `.keras` file (the commands save there)."""
    output = pathlib.Path(output)
    if output.suffix != ".keras":
        raise ValueError(f"`--output` must end in .keras; got {output}.")
    return output


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


def matching_config(model, model_path, task_data, mode):
    """The study preset for `task_data`, after checking that `model` (from `model_path`) fits it."""
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


def final_words(task_data, config, split):
    """A byte LM's final-word examples of `split`; None (metric left out) if none can be made."""
    if task_data.kind == CLASSIFICATION:
        return None
    text = getattr(task_data, split).tobytes().decode("utf-8", errors="replace")
    try:
        return final_word_examples(text, config.sequence_length,
                                   max_examples=config.final_word_examples)
    except ValueError:
        return None  # too little text for the final-word task: bits per byte only
