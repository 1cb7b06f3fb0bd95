"""`keras-matta search`: the front under a budget, its cache, and `extract --point`."""

import json

import keras
import numpy as np
import pytest
from helpers import run_cli

import keras_matta
from keras_matta.study import models

# The command's logic (budgets, cache, front files, extract --point) does not depend on the
# backend; the search's evaluation and costs run on every backend in tests/search. Torch runs
# these end-to-end commands eagerly in 6 s, TensorFlow compiles them in 94 s.
pytestmark = pytest.mark.runs_on("torch")


def test_search_writes_the_front_and_extract_takes_a_point(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((200, 6)).astype("float32")
    data_path = tmp_path / "toy.npz"
    np.savez(data_path, x=x, y=(x[:, 0] > 0.5).astype("int32"))
    ta_path, out_dir = tmp_path / "ta.keras", tmp_path / "search"
    models.mlp_classifier(16, input_shape=(6,), num_classes=2, name="ta").save(ta_path)
    argv = ["search", "--model", str(ta_path), "--data", str(data_path), "--budget",
            "params=300", "--choices", "0.25", "0.5", "1", "--output-dir", str(out_dir)]
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    front = json.loads((out_dir / "front.json").read_text())
    assert (out_dir / "front.png").stat().st_size > 0
    assert front["budget"] == {"params": 300} and front["objective"] == "accuracy"
    assert front["front"] and all(p["params"] <= 300 for p in front["front"])
    assert "Pareto front:" in out and front["front"][0]["label"] in out
    # Run again: every measurement comes from the cache, none is added.
    lines = (out_dir / "cache.jsonl").read_text().count("\n")
    assert run_cli(argv, capsys)[0] == 0
    assert (out_dir / "cache.jsonl").read_text().count("\n") == lines
    # Extract the first point of the front: a stock model of the point's cost.
    student_path = tmp_path / "student.keras"
    status, out, err = run_cli(["extract", "--model", str(ta_path), "--point",
                                  f"{out_dir / 'front.json'}:0", "--output",
                                  str(student_path)], capsys)
    assert status == 0, err
    assert keras.saving.load_model(student_path).count_params() == front["front"][0]["params"]
    # Nothing fits: one line, exit 2, before any measurement.
    status, _, err = run_cli(argv[:-2] + ["--budget", "params=10", "--output-dir",
                                            str(tmp_path / "none")], capsys)
    assert status == 2 and "No width spec fits the budget" in err
    status, _, err = run_cli(["extract", "--model", str(ta_path), "--point",
                                f"{out_dir / 'front.json'}:99", "--output",
                                str(student_path)], capsys)
    assert status == 2 and "not on the front" in err
    # --drop-blocks reaches the search: an MLP has no block to drop (one line, exit 2).
    status, _, err = run_cli(argv + ["--drop-blocks"], capsys)
    assert status == 2 and "`drop_blocks=True`, but model 'ta' has no droppable block" in err


def test_search_takes_a_peak_memory_budget_and_the_sensitivity_proxy(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((64, 6)).astype("float32")
    data_path = tmp_path / "toy.npz"
    np.savez(data_path, x=x, y=(x[:, 0] > 0.5).astype("int32"))
    ta_path, out_dir = tmp_path / "ta.keras", tmp_path / "search"
    ta = models.mlp_classifier(16, input_shape=(6,), num_classes=2, name="ta")
    ta.save(ta_path)
    # Half width at a batch of 16 fits (in MB of 2**20 bytes); the full model does not.
    bound = keras_matta.peak_memory(ta, 0.5, batch_size=16)["peak_bytes"] / 2**20
    assert keras_matta.peak_memory(ta, 1.0, batch_size=16)["peak_bytes"] / 2**20 > bound
    status, out, err = run_cli(["search", "--model", str(ta_path), "--data", str(data_path),
                                "--budget", f"peak_memory_mb={bound!r}", "--batch-size", "16",
                                "--choices", "0.5", "1", "--proxy", "sensitivity",
                                "--output-dir", str(out_dir)], capsys)
    assert status == 0, err
    front = json.loads((out_dir / "front.json").read_text())
    assert front["cost"] == "peak_memory_mb" and front["front"]
    assert front["proxy"] == "sensitivity" and all(p["exact"] for p in front["front"])
    assert all(p["peak_memory_mb"] <= bound for p in front["front"])
    assert "peak_memory_mb" in out


def test_search_drops_blocks_of_a_transformer_ta_and_extract_serves_the_point(tmp_path, capsys):
    # A byte LM of two blocks, on the embedded plays; the quick preset evaluates 64 windows.
    keras.utils.set_random_seed(0)
    ta = models.byte_lm(sequence_length=32, model_dim=16, num_layers=2, num_heads=2,
                        intermediate_dim=32, name="ta")
    ta_path, out_dir = tmp_path / "ta.keras", tmp_path / "search"
    ta.save(ta_path)
    half = keras_matta.cost(ta, 0.5)["params"]
    assert keras_matta.cost(ta, {"block_2": {"depth": 0}})["params"] < half
    # Below every full-depth model: only the candidates with one block dropped fit.
    argv = ["search", "--model", str(ta_path), "--data", "shakespeare", "--quick",
            "--budget", f"params={half - 1}", "--choices", "0.5", "1", "--drop-blocks",
            "--strategy", "exhaustive", "--output-dir", str(out_dir)]
    status, out, err = run_cli(argv, capsys)
    assert status == 0, err
    front = json.loads((out_dir / "front.json").read_text())
    assert front["front"] and front["objective"] == "bits_per_byte"
    for point in front["front"]:
        assert {"depth": 0} in point["widths"].values() and point["params"] < half
    assert "dropped" in out
    student_path = tmp_path / "student.keras"
    status, _, err = run_cli(["extract", "--model", str(ta_path), "--point",
                              f"{out_dir / 'front.json'}:0", "--output", str(student_path)],
                             capsys)
    assert status == 0, err
    student = keras.saving.load_model(student_path)
    (dropped,) = [name for name, w in front["front"][0]["widths"].items() if w == {"depth": 0}]
    assert not any(layer.name.startswith(dropped) for layer in student.layers)
    assert student.count_params() == front["front"][0]["params"]
    # The served Student computes what the TA computes at the point's spec.
    x = np.random.default_rng(0).integers(0, 256, (2, 32)).astype("int32")
    with keras_matta.WidthScope(ta, front["front"][0]["widths"]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(student(x)),
                                   keras.ops.convert_to_numpy(ta(x)), atol=1e-5)
