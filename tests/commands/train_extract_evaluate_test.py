"""`keras-matta train`, `extract` and `evaluate` on a user data file, as the command runs them."""

import keras
import numpy as np
from helpers import run_cli

from keras_matta import commands


def test_train_extract_evaluate(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((120, 6)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    data_path = tmp_path / "toy.npz"
    np.savez(data_path, x=x, y=y)
    ta_path, student_path = tmp_path / "ta.keras", tmp_path / "student.keras"
    status, out, err = run_cli(["train", "--data", str(data_path), "--quick", "--optimizer",
                                  "adam", "--steps", "10", "--output", str(ta_path)], capsys)
    assert status == 0, err
    assert ta_path.is_file() and "ta: params=" in out and "student 0.25: params=" in out
    status, out, err = run_cli(["extract", "--model", str(ta_path), "--widths", "0.25",
                                  "--output", str(student_path)], capsys)
    assert status == 0, err
    student = keras.saving.load_model(student_path)
    assert f"params={student.count_params()}" in out
    assert not any("Mat" in type(layer).__name__ for layer in student.layers)
    status, out, err = run_cli(["evaluate", "--model", str(student_path), "--data",
                                  str(data_path)], capsys)
    assert status == 0, err
    assert "accuracy=" in out and "auc=" in out and f"params={student.count_params()}" in out


def test_the_functions_return_what_the_command_prints(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((100, 4)).astype("float32")
    data_path = tmp_path / "toy.npz"
    np.savez(data_path, x=x, y=(x[:, 1] > 0.5).astype("int32"))
    ta_path, student_path = tmp_path / "ta.keras", tmp_path / "student.keras"
    results = commands.train(str(data_path), ta_path, mode="quick", optimizer="adam", steps=4,
                             student_widths=[0.5])
    assert list(results) == ["ta", "student 0.5"]
    assert results["student 0.5"]["params"] < results["ta"]["params"]
    cost = commands.extract(ta_path, 0.5, student_path)
    assert cost["params"] == results["student 0.5"]["params"]
    metrics = commands.evaluate(student_path, str(data_path))
    assert metrics["params"] == cost["params"] and 0.0 <= metrics["accuracy"] <= 1.0
