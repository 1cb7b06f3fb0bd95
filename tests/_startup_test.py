"""The command's quiet start-up: when it applies, and that it never overrides the user."""

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
