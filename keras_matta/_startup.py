"""Process settings for when this package runs as a command (internal): quiet native start-up
logs (TensorFlow imported with them silenced), and XLA's CPU scheduler without the concurrency
optimization on JAX.

TensorFlow (Keras' TensorFlow backend; `tf.data`, TensorFlow Datasets and keras-hub on any
backend) and XLA print C++ log lines while they load: CPU-feature and oneDNN notices, "Could not
find cuda drivers", cuDNN factory registrations. A command's output should start with its own
lines. The native libraries read their log level from the environment once, when they load, so
it must be set before the first `import keras`, and `keras_matta/__init__.py` imports Keras
before `cli.py` (or any other module run with `python -m`) executes: the package imports this
module first, which sets the level for commands only. A value the user set is kept; a library
import (`import keras_matta` in a script or notebook) changes nothing.
"""

import contextlib
import importlib.util
import os
import pathlib
import sys

# Level 3 hides errors too: the start-up "errors" on GPU machines (cuDNN/cuBLAS factories
# registered twice) are noise, and real failures reach the command as Python exceptions.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}

# The console script (`keras-matta`; `keras-matta-script.py` next to the launcher on Windows).
SCRIPT_NAMES = ("keras-matta", "keras-matta-script")


def launched_as_command(argv=None):
    """Whether this process runs `keras-matta` or `python -m keras_matta[.module]`.

    Args:
        argv: the argument vector to judge; defaults to `sys.argv`, read while the package is
            being imported.

    Returns:
        `True` for the console script, and for `python -m` of a module of this package: Python
        imports the package while it locates that module, when `sys.argv[0]` is still `"-m"`.
    """
    argv = sys.argv if argv is None else argv
    first = argv[0] if argv else ""
    return first == "-m" or pathlib.PurePath(first).stem in SCRIPT_NAMES


# XLA's concurrency-optimized CPU scheduler stalled multi-device collectives and concurrent
# eigendecompositions on a 2-core machine (JAX 0.10.2); commands on JAX run without it.
JAX_XLA_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def quiet_native_logs(environ=None):
    """Sets the quiet log levels in `environ` (default `os.environ`), keeping any value set.

    Args:
        environ: the mapping to update.
    """
    environ = os.environ if environ is None else environ
    for name, value in QUIET_ENVIRONMENT.items():
        environ.setdefault(name, value)


def safe_jax_scheduler(environ=None):
    """With `KERAS_BACKEND=jax`, adds `JAX_XLA_FLAG=false` to `XLA_FLAGS` unless already set.

    Args:
        environ: the mapping to update (default `os.environ`).
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if environ.get("KERAS_BACKEND") == "jax" and JAX_XLA_FLAG not in flags:
        environ["XLA_FLAGS"] = f"{flags} {JAX_XLA_FLAG}=false".strip()


@contextlib.contextmanager
def native_stderr_silenced():
    """Sends file descriptor 2 to the null device for the block: native libraries write their
    log lines there directly, past `sys.stderr`. Python's own errors still reach the user: an
    exception raised in the block is printed after the descriptor is restored."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


def import_tensorflow_quietly(environ=None):
    """Imports TensorFlow with its native start-up lines silenced, when it is the backend.

    `TF_CPP_MIN_LOG_LEVEL` does not reach every line: on CPUs where TensorFlow turns oneDNN on
    by default (AVX-512 VNNI and newer), TensorFlow 2.21 prints its "oneDNN custom operations
    are on" notice through Abseil's logging before Abseil is initialized, which writes
    everything to stderr. Importing it here, before Keras does, is the only place to catch it.

    Args:
        environ: the mapping that says the backend (default `os.environ`; unset means Keras'
            default, TensorFlow).
    """
    environ = os.environ if environ is None else environ
    if environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    with native_stderr_silenced():
        import tensorflow  # noqa: F401


if launched_as_command():
    quiet_native_logs()
    safe_jax_scheduler()
    import_tensorflow_quietly()
