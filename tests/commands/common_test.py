"""What the commands share: model files that fail with their path, presets that fit the data."""

import numpy as np
import pytest

from keras_matta.commands import common
from keras_matta.data import TaskData
from keras_matta.study import models


def classification(features=6, classes=3):
    split = (np.zeros((4, features), "float32"), np.zeros((4,), "int32"))
    return TaskData("toy", "classification", split, split, split, num_classes=classes)


def text(size=64):
    data = np.frombuffer(b"a" * size, np.uint8)
    return TaskData("text", "language_model", data, data, data, num_classes=256)


def test_load_model_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        common.load_model(tmp_path / "missing.keras")
    (tmp_path / "model.h5").write_text("")
    with pytest.raises(ValueError, match=r"model.h5: expected a `.keras`"):
        common.load_model(tmp_path / "model.h5")
    (tmp_path / "junk.keras").write_text("not a model")
    with pytest.raises(ValueError, match="junk.keras is not a loadable Keras model"):
        common.load_model(tmp_path / "junk.keras")


def test_config_for_takes_the_data_shapes_into_the_preset():
    config = common.config_for(classification(), "quick")
    assert config.task == "digits"
    assert config.ta["input_shape"] == (6,) and config.ta["num_classes"] == 3
    assert config.teacher["input_shape"] == (6,) and config.teacher["num_classes"] == 3
    config = common.config_for(text(), "quick", sequence_length=16)
    assert config.task == "lm" and config.ta["sequence_length"] == 16


def test_matching_config_rejects_a_model_that_does_not_fit_the_data():
    model = models.mlp_classifier(8, input_shape=(5,), num_classes=3, name="ta")
    with pytest.raises(ValueError, match=r"ta.keras takes inputs of shape \(5,\); .* \(6,\)"):
        common.matching_config(model, "ta.keras", classification(), "quick")
    with pytest.raises(ValueError, match="ta.keras is not a byte language model"):
        common.matching_config(model, "ta.keras", text(), "quick")
    fitting = models.mlp_classifier(8, input_shape=(6,), num_classes=3, name="ta")
    assert common.matching_config(fitting, "ta.keras", classification(), "quick").task == "digits"


def test_final_words_only_for_a_language_model_with_enough_text():
    config = common.config_for(text(), "quick")
    assert common.final_words(classification(), config, "test") is None
    assert common.final_words(text(8), config, "test") is None  # too little text
