"""Every example in a docstring of `keras_matta.search`'s modules runs.

`tests/docstring_examples_test.py` covers the top-level `keras_matta.search` function; the
package's own pieces are reached here, with the same namespace (`keras`, `np`, `ops`,
`keras_matta`) and an empty working directory. Each runs on one backend, the three taking
turns (`helpers.backend_in_turn`): the unit tests check the search on every backend.
"""

import importlib
import inspect
import pkgutil
import re
import sys

import keras
import numpy as np
import pytest
from helpers import backend_in_turn

import keras_matta

# `keras_matta.search` is the function; the package is reached through sys.modules.
search_package = sys.modules["keras_matta.search"]

BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def examples():
    found = {}
    for info in pkgutil.iter_modules(search_package.__path__):
        module = importlib.import_module(f"keras_matta.search.{info.name}")
        for name, value in vars(module).items():
            if getattr(value, "__module__", None) != module.__name__:
                continue
            for i, block in enumerate(BLOCK.findall(inspect.getdoc(value) or "")):
                found[f"{module.__name__}.{name}[{i}]"] = block
    return found


EXAMPLES = examples()


def test_there_are_examples():
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name, tmp_path, monkeypatch):
    backend = backend_in_turn(name, EXAMPLES)
    if backend != keras.backend.backend():
        pytest.skip(f"the example runs on the {backend} backend")
    monkeypatch.chdir(tmp_path)
    exec(compile(EXAMPLES[name], name, "exec"),
         {"keras": keras, "np": np, "ops": keras.ops, "keras_matta": keras_matta})
