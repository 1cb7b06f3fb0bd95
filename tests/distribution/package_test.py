"""`keras_matta.distribution`: a module per backend, none importing another backend's framework."""

import json

import keras
from helpers import run_python

import keras_matta

BACKEND = keras.backend.backend()

# Keras 3.15 imports `jax` on every backend (its Orbax callback): only TF and torch can tell.
OTHER_FRAMEWORKS = {"tensorflow": ["torch"], "jax": ["tensorflow", "torch"],
                    "torch": ["tensorflow"]}[BACKEND]


def test_the_public_names_live_in_their_backend_modules():
    distribution = keras_matta.distribution
    where = {name: getattr(distribution, name).__module__ for name in (
        "matta_layout_map", "add_nested_layouts", "add_shampoo_layouts", "statistics_axis",
        "replicas_in_sync", "synchronize_gradients", "GradientSynchronization")}
    assert where == {
        "matta_layout_map": "keras_matta.distribution.layouts",
        "add_nested_layouts": "keras_matta.distribution.layouts",
        "add_shampoo_layouts": "keras_matta.distribution.jax",
        "statistics_axis": "keras_matta.distribution.jax",
        "replicas_in_sync": "keras_matta.distribution.tensorflow",
        "synchronize_gradients": "keras_matta.distribution.torch",
        "GradientSynchronization": "keras_matta.distribution.torch",
    }
    assert distribution.DEFAULT_COLUMN_PARALLEL == (r".*_ffn_intermediate",)
    assert distribution.replicas_in_sync() == 1  # outside any tf.distribute strategy


def test_importing_keras_matta_imports_no_other_backends_framework():
    code = f"""
    import json, sys
    import keras_matta.distribution
    print(json.dumps([name for name in {OTHER_FRAMEWORKS!r} if name in sys.modules]))
    """
    assert json.loads(run_python(code).strip().splitlines()[-1]) == []
