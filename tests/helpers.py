"""Shared test helpers (kept here: `keras.src.testing` is private)."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

BACKENDS = ("tensorflow", "jax", "torch")
# keras-hub models called eagerly cost 10-60 s a test on JAX, which compiles each op on first
# use, against 1-2 s on TensorFlow and torch. Their conversions are Keras ops, checked on those
# two; on JAX every Mat hub block goes through the conformance test (compiled, saved, extracted
# to stock keras-hub) and tests/hub/gemma_test.py runs the shared decoder's grow, reorder and
# extract. Marks the hub test modules that would repeat those on JAX.
NOT_ON_JAX_EAGER = pytest.mark.runs_on("tensorflow", "torch")


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def backend_in_turn(name, names):
    """The one backend that runs `name`, the backends taking turns over sorted `names`.

    For end-to-end uses of API (docstring examples) whose backend-dependent parts the unit
    tests check on every backend: each runs once, and the three processes share the work.
    """
    return BACKENDS[sorted(names).index(name) % len(BACKENDS)]


def other_backend():
    """A backend other than the current one (for cross-backend save/load tests)."""
    current = keras.backend.backend()
    return BACKENDS[(BACKENDS.index(current) + 1) % len(BACKENDS)]


def run_python(code, backend=None, timeout=240):
    """Runs `code` in a fresh interpreter; returns its stdout. Raises on failure."""
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend or keras.backend.backend()
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def run_cli(argv, capsys):
    """`keras-matta argv` in-process: `(status, stdout, stderr)`; argparse exits are caught."""
    from keras_matta import cli

    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    out = capsys.readouterr()
    return status, out.out, out.err
