"""The command's quiet start-up: when it applies, and that it never overrides the user."""

import os

import pytest

from keras_matta import _startup

pytestmark = pytest.mark.backend_agnostic  # environment variables and argv only


@pytest.mark.parametrize("argv, expected", [
    (["/venv/bin/keras-matta", "demo"], True),  # the console script
    (["-m", "train"], True),  # `python -m keras_matta ...`, while the package is imported
    (["/usr/bin/pytest", "-q"], False),
    (["my_training_script.py"], False),
    (["-c"], False),
    ([""], False),  # the interactive interpreter
    ([], False),
])
def test_only_commands_are_quieted(argv, expected):
    assert _startup.launched_as_command(argv) is expected


def test_quiet_levels_never_override_the_user():
    environ = {"PATH": "/bin"}
    _startup.quiet_native_logs(environ)
    assert environ == {"PATH": "/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    environ = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    _startup.quiet_native_logs(environ)
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "0"}


@pytest.mark.parametrize("environ, expected", [
    ({"KERAS_BACKEND": "jax"}, "--xla_cpu_enable_concurrency_optimized_scheduler=false"),
    ({"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
     "--xla_force_host_platform_device_count=8 "
     "--xla_cpu_enable_concurrency_optimized_scheduler=false"),
    ({"KERAS_BACKEND": "jax",
      "XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"},
     "--xla_cpu_enable_concurrency_optimized_scheduler=true"),  # the user's choice stays
    ({"KERAS_BACKEND": "tensorflow"}, None),  # TensorFlow's XLA reads XLA_FLAGS too
])
def test_jax_commands_run_without_the_concurrency_optimized_scheduler(environ, expected):
    _startup.safe_jax_scheduler(environ)
    assert environ.get("XLA_FLAGS") == expected


def test_native_stderr_is_silenced_only_inside_the_block(capfd):
    with _startup.native_stderr_silenced():
        os.write(2, b"native log line\n")  # what a C++ library's logger does
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


@pytest.mark.parametrize("backend, imports", [("tensorflow", True), ("jax", False)])
def test_tensorflow_is_imported_quietly_only_as_the_backend(monkeypatch, backend, imports):
    looked_up = []
    monkeypatch.setattr(_startup.importlib.util, "find_spec", lambda name: looked_up.append(name))
    _startup.import_tensorflow_quietly({"KERAS_BACKEND": backend})
    assert looked_up == (["tensorflow"] if imports else [])
