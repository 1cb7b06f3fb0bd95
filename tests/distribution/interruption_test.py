"""A MatTA + Shampoo run killed with SIGKILL and restarted ends with the uninterrupted weights."""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
from distribution import scenarios

import keras_matta

BACKEND = keras.backend.backend()
SCRIPT = scenarios.__file__


def run_scenario(name, **arguments):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, SCRIPT, name, json.dumps(arguments)], env=env,
                          capture_output=True, text=True, timeout=300)


def interrupt_and_resume(tmp_path, **arguments):
    """Runs the fit killed at global batch 11 of 16, then the same script again."""
    backup_dir = str(tmp_path / "backup")
    killed = run_scenario("interrupted_fit", output=str(tmp_path / "killed.npz"),
                          backup_dir=backup_dir, kill_at=11, **arguments)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr[-3000:]
    assert not os.path.exists(tmp_path / "killed.npz")
    state_file = ("training_metadata.json" if arguments.get("callback") == "keras"
                  else "training_state.json")
    with open(os.path.join(backup_dir, state_file)) as f:
        state = json.load(f)
    resumed = run_scenario("interrupted_fit", output=str(tmp_path / "resumed.npz"),
                           backup_dir=backup_dir, **arguments)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-3000:]
    return state, scenarios.load_result(tmp_path / "resumed.npz"), backup_dir


def assert_same_weights(got, expected):
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_restart_ends_with_the_uninterrupted_weights(tmp_path):
    """Backups every 2 batches; killed after batch 3 of epoch 2 (global 11): the restart
    restores the backup of batch 2 (Shampoo statistics and roots, dropout seed state), skips
    the 2 batches it already trained and trains the other 6. Reference: the same run without
    interruption, in this process."""
    reference, _ = scenarios.uninterrupted_fit(dropout=0.25)
    state, (weights, history, extra), backup_dir = interrupt_and_resume(tmp_path, dropout=0.25)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 10)
    assert int(extra["trained_batches"]) == 6 and int(extra["iterations"]) == 16
    assert len(history["loss"]) == 1  # only the interrupted epoch was left
    assert_same_weights(weights, scenarios.ta_weights(reference))
    assert not os.path.exists(backup_dir)  # deleted after the run completed


@pytest.mark.slow
@pytest.mark.runs_on("torch")  # backend-independent callback logic
def test_keras_backup_and_restore_at_epoch_ends_carries_matta_and_shampoo_state(tmp_path):
    """Keras' own callback with epoch backups (it restarts an epoch from its first batch, and
    its weight files hold no seed states, hence no dropout): the restarted run restores
    Shampoo's state and MatTA draws the Students of the right steps."""
    reference, _ = scenarios.uninterrupted_fit(dropout=0.0)
    state, (weights, _, extra), _ = interrupt_and_resume(
        tmp_path, dropout=0.0, callback="keras", save_freq="epoch")
    assert state["epoch"] == 1
    assert int(extra["trained_batches"]) == 8 and int(extra["iterations"]) == 16
    assert_same_weights(weights, scenarios.ta_weights(reference))


def test_keras_checkpoint_resumes_matta_with_shampoo(tmp_path):
    """A `.keras` checkpoint (atomic) after epoch 1, loaded in place of the live model,
    continues into epoch 2 exactly like the uninterrupted run."""
    x, y = scenarios.make_data()
    reference = scenarios.build_matta(strategy="all")
    reference.fit(x, y, batch_size=scenarios.BATCH, epochs=2, shuffle=False, verbose=0)
    path = str(tmp_path / "matta.keras")
    first = scenarios.build_matta(strategy="all")
    first.fit(x, y, batch_size=scenarios.BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[keras_matta.callbacks.AtomicModelCheckpoint(path)])
    resumed = keras.saving.load_model(path)
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 8
    for saved, live in zip(resumed.optimizer.variables, first.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved),
                                      keras.ops.convert_to_numpy(live))
    resumed.fit(x, y, batch_size=scenarios.BATCH, epochs=2, initial_epoch=1, shuffle=False,
                verbose=0)
    assert_same_weights(scenarios.ta_weights(resumed), scenarios.ta_weights(reference))
