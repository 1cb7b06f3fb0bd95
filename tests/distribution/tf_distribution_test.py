"""tf.distribute.MirroredStrategy on TensorFlow: MatTA over two logical CPUs equals one device."""

import os

import keras
import pytest
from distribution import scenarios
from helpers import run_python

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's")
HERE = os.path.dirname(os.path.abspath(__file__))

MIRRORED_FIT = """
import os, sys
sys.path.insert(0, {here!r})
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from scenarios import BATCH, build_matta, make_data, save_result

x, y = make_data()
for optimizer in ("adam", "shampoo"):
    for name, strategy in (("single", tf.distribute.get_strategy()),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        with strategy.scope():
            # L2 on the hidden kernel: MatTA adds regularization losses itself.
            mat_ta = build_matta(optimizer, l2=0.01, strategy="all")
        assert mat_ta.distribute_strategy.num_replicas_in_sync == (2 if name == "mirrored" else 1)
        history = mat_ta.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        save_result(os.path.join({out!r}, f"{{name}}_{{optimizer}}.npz"), mat_ta, history.history)
"""


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tf_distribution"))
    run_python(MIRRORED_FIT.format(here=HERE, out=out), backend="tensorflow", timeout=400)
    return lambda name: scenarios.load_result(os.path.join(out, f"{name}.npz"))


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device_with_adam(mirrored_runs):
    """Two replicas of 4 examples each: losses (every term), weights after 8 steps."""
    scenarios.assert_same_run(mirrored_runs("mirrored_adam"), mirrored_runs("single_adam"),
                              term="student_0.5_kd_ta_loss")


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device_with_shampoo(mirrored_runs):
    scenarios.assert_same_run(mirrored_runs("mirrored_shampoo"), mirrored_runs("single_shampoo"),
                              term="student_0.5_kd_ta_loss")
