"""The `keras-matta` command: help, bad input (exit 2, one line), demo; the other commands' runs
are tested in tests/commands/."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import run_cli

from keras_matta import cli
from keras_matta.study import models
from keras_matta.study import report

SUBCOMMANDS = ("demo", "train", "extract", "evaluate", "search")


def _subprocess(*args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": keras.backend.backend()}
    return subprocess.run([sys.executable, "-m", "keras_matta", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_lists_every_option(command, capsys):
    status, out, _ = run_cli([command, "--help"], capsys)
    assert status == 0
    parser = cli.build_parser()
    subparser = parser._subparsers._group_actions[0].choices[command]
    for action in subparser._actions:
        for option in action.option_strings:
            assert option in out
        assert action.help is None or action.help.split()[0] in out
    assert "example" in out


@pytest.mark.backend_agnostic
def test_top_level_help_names_the_subcommands(capsys):
    status, out, _ = run_cli(["--help"], capsys)
    assert status == 0 and all(c in out for c in SUBCOMMANDS) and "KERAS_BACKEND" in out


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("argv", [
    ["fly"],                                                  # unknown subcommand
    ["demo", "--fast"],                                       # unknown option
    ["demo", "--quick", "--full"],                            # exclusive options
    ["extract", "--model", "m.keras", "--widths", "wide", "--output", "s.keras"],
    ["train", "--task", "digits", "--data", "x.npz", "--output", "t.keras"],
    ["train", "--task", "digits", "--steps", "0", "--output", "t.keras"],
])
def test_usage_errors_exit_2(argv, capsys):
    status, _, err = run_cli(argv, capsys)
    assert status == 2 and "error:" in err


@pytest.mark.backend_agnostic
def test_options_are_never_abbreviated(capsys):
    # `--mode` is not `--model` cut short: argparse's abbreviations would read it as one.
    status, _, err = run_cli(["search", "--mode", "x", "--data", "digits"], capsys)
    assert status == 2 and "the following arguments are required: --model" in err


@pytest.mark.backend_agnostic
def test_parse_widths():
    assert cli.parse_widths("0.25") == 0.25
    assert cli.parse_widths("64") == 64
    assert cli.parse_widths('{"hidden_1": 0.5, "hidden_2": 8}') == {"hidden_1": 0.5,
                                                                    "hidden_2": 8}
    assert cli.parse_widths("full") is None


def test_library_errors_are_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.keras"
    status, _, err = run_cli(["evaluate", "--model", str(missing), "--task", "digits"],
                               capsys)
    assert status == 2 and str(missing) in err and len(err.strip().splitlines()) == 1
    ta_path = tmp_path / "ta.keras"
    models.mlp_classifier(8, name="ta").save(ta_path)
    status, _, err = run_cli(["extract", "--model", str(ta_path), "--widths", "64",
                                "--output", str(tmp_path / "s.keras")], capsys)
    assert status == 2 and "[1, 8]" in err and len(err.strip().splitlines()) == 1
    status, _, err = run_cli(["extract", "--model", str(ta_path), "--widths",
                                '{"hidden_9": 2}', "--output", str(tmp_path / "s.keras")],
                               capsys)
    assert status == 2 and "hidden_9" in err
    bad_data = tmp_path / "bad.npz"
    np.savez(bad_data, a=np.zeros(3))
    status, _, err = run_cli(["evaluate", "--model", str(ta_path), "--data", str(bad_data)],
                               capsys)
    assert status == 2 and "bad.npz" in err
    (tmp_path / "junk.keras").write_text("not a model")
    status, _, err = run_cli(["evaluate", "--model", str(tmp_path / "junk.keras"),
                                "--task", "digits"], capsys)
    assert status == 2 and "junk.keras" in err


# On TensorFlow the next test runs both launchers and checks the same exit and the one line.
@pytest.mark.runs_on("jax", "torch")
def test_console_entry_point_exits_2_without_traceback(tmp_path):
    result = _subprocess("evaluate", "--model", str(tmp_path / "none.keras"), "--task", "lm",
                         timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("keras-matta evaluate: error:")


@pytest.mark.backend_agnostic  # always TensorFlow: its native start-up logs are the point
def test_the_command_prints_no_tensorflow_startup_logs(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"  # the backend that loads TensorFlow with Keras
    script = shutil.which("keras-matta", path=os.path.dirname(sys.executable))
    launchers = [[sys.executable, "-m", "keras_matta"]] + ([[script]] if script else [])
    for launcher in launchers:
        result = subprocess.run(
            [*launcher, "evaluate", "--model", str(tmp_path / "none.keras"), "--task", "lm"],
            env=env, text=True, capture_output=True, timeout=300)
        assert result.returncode == 2
        # Only the command's own line: no cpu_feature_guard, oneDNN or CUDA notices before it.
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("keras-matta evaluate: error:")


@pytest.mark.slow
@pytest.mark.runs_on("torch")
def test_demo_quick_runs_the_real_pipeline(tmp_path):
    out_dir, cache = tmp_path / "out", tmp_path / "cache"
    args = ("demo", "--quick", "--output-dir", str(out_dir), "--cache-dir", str(cache))
    result = _subprocess(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((out_dir / "results.json").read_text())
    assert (out_dir / "quality_vs_params.png").stat().st_size > 10_000
    methods = {(r["method"], r["optimizer"]) for r in payload["rows"]}
    assert methods == {("teacher", "adam"), ("majority", "adam")} | {
        (m, o) for m in ("separate", "kd", "matta") for o in ("adam", "shampoo")}
    # The majority-kernel Student is served at exactly the Student alone's size.
    (majority,) = [r for r in payload["rows"] if r["method"] == "majority"]
    (alone,) = [r for r in payload["rows"]
                if (r["method"], r["optimizer"], r["label"]) == ("separate", "adam", "0.25")]
    assert majority["label"] == "Student, majority kernels (k=4)"
    assert majority["params"] == alone["params"]
    for row in payload["rows"]:
        assert row["params"] > 0 and row["flops"] > 0 and row["train_seconds"] >= 0
        assert 0.0 <= row["metrics"]["accuracy"] <= 1.0
    # A separate model at every trained size of the family (quick: Students 0.25, 0.5 and the
    # TA), each compared with its family member; the mix with the interpolated curve.
    assert payload["settings"]["digits"]["trained_widths"] == [0.25, 0.5, 1.0]
    separate = {r["label"] for r in payload["rows"] if r["method"] == "separate"}
    assert separate == {"0.25", "0.5", "1"}
    members = payload["family_vs_separate"]["digits"]["optimizers"]["adam"]["members"]
    assert [m["label"] for m in members] == ["0.25", "0.5", "mix(hidden_1=0.5,hidden_2=0.75)", "1"]
    assert {m["reference"] for m in members} == {"separate", "interpolated"}
    # The tables are printed, and the Teacher was cached: a second run reuses it.
    assert "| Teacher" in result.stdout and "MatTA Student" in result.stdout
    assert "Majority kernels (adam), served at the Student's size:" in result.stdout
    assert "vs separate training" in result.stdout and "Training seconds (shampoo)" in result.stdout
    assert len(list((cache / "teachers").glob("digits-*.keras"))) == 1
    # One method again (`--methods`): no Teacher, the same row as the full run's (same seed),
    # and merged with `--replace` it gives back the full run's results.
    rerun_dir = tmp_path / "majority"
    result = _subprocess("demo", "--quick", "--methods", "majority", "--output-dir",
                         str(rerun_dir), "--cache-dir", str(tmp_path / "empty_cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    rerun = json.loads((rerun_dir / "results.json").read_text())
    assert [r["method"] for r in rerun["rows"]] == ["majority"]
    assert rerun["rows"][0]["metrics"] == majority["metrics"]
    merged = tmp_path / "merged.json"
    report.main([str(merged), "--merge", str(out_dir / "results.json"),
                 str(rerun_dir / "results.json"), "--replace"])
    def metrics(results):
        return {(r["method"], r["optimizer"], r["label"]): r["metrics"] for r in results}

    assert metrics(json.loads(merged.read_text())["results"]) == metrics(payload["results"])


# === keras-matta search, and extract --point ===


@pytest.mark.backend_agnostic
def test_parse_budget():
    assert cli.parse_budget("params=2M") == {"params": 2e6}
    assert cli.parse_budget("flops=500k") == {"flops": 5e5}
    assert cli.parse_budget("latency_ms=1.5") == {"latency_ms": 1.5}
    for bad in ("params", "params=", "=3", "params=-1", "params=two"):
        with pytest.raises(argparse.ArgumentTypeError, match="COST=NUMBER"):
            cli.parse_budget(bad)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("argv", [
    ["search", "--model", "m.keras", "--task", "digits", "--budget", "params"],
    ["search", "--model", "m.keras"],                                      # no data
    ["search", "--model", "m.keras", "--task", "digits", "--strategy", "random"],
    ["extract", "--model", "m.keras", "--widths", "0.25", "--point", "f.json", "--output",
     "s.keras"],                                                           # exclusive
])
def test_search_usage_errors_exit_2(argv, capsys):
    status, _, err = run_cli(argv, capsys)
    assert status == 2 and "error:" in err


@pytest.mark.backend_agnostic
def test_search_drop_blocks_is_an_off_by_default_switch():
    parser = cli.build_parser()
    base = ["search", "--model", "m.keras", "--task", "digits"]
    assert parser.parse_args(base).drop_blocks is False
    assert parser.parse_args(base + ["--drop-blocks"]).drop_blocks is True
