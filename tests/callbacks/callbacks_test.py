"""keras_matta.callbacks: atomic checkpoints, BackupAndRestore files, StopOnNonFiniteLoss,
SynchronousCallbacks."""

import json
import os
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest
from distribution import scenarios

import keras_matta
from keras_matta.callbacks import AtomicModelCheckpoint
from keras_matta.callbacks import BackupAndRestore
from keras_matta.callbacks import StopOnNonFiniteLoss
from keras_matta.callbacks import SynchronousCallbacks
from keras_matta.callbacks import save_atomically

BACKEND = keras.backend.backend()


class FailingSave(keras.layers.Layer):
    """An identity layer whose saving raises once `armed`, after earlier layers were written."""

    armed = False

    def call(self, x):
        return x

    def save_own_variables(self, store):
        if FailingSave.armed:
            raise OSError("disk full")


@pytest.fixture
def failing_model():
    FailingSave.armed = False
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="first"),
                              FailingSave(), keras.layers.Dense(2, name="second")])
    yield model
    FailingSave.armed = False


def weights_of(model):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


def load_into(model, path):
    FailingSave.armed = False
    model.load_weights(path)
    return weights_of(model)


# === Atomic writes ===


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "keras_in_place"])
def test_a_failing_write_keeps_the_previous_checkpoint_only_when_atomic(failing_model, tmp_path,
                                                                        atomic):
    path = str(tmp_path / "model.weights.h5")
    save = save_atomically if atomic else (lambda m, p: m.save_weights(p))
    save(failing_model, path)
    saved = weights_of(failing_model)
    for w in failing_model.weights:
        w.assign(w + 1.0)
    FailingSave.armed = True
    with pytest.raises(OSError, match="disk full"):
        save(failing_model, path)
    if atomic:
        for got, want in zip(load_into(failing_model, path), saved):
            np.testing.assert_array_equal(got, want)
        assert os.listdir(tmp_path) == ["model.weights.h5"]  # no temporary left behind
    else:
        # The control: Keras truncates the file first, so the previous weights are gone.
        try:
            loaded = load_into(failing_model, path)
        except Exception:
            return
        assert not all(np.array_equal(a, b) for a, b in zip(loaded, saved))


def test_atomic_model_checkpoint_survives_a_failing_save(failing_model, tmp_path):
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    failing_model.compile("sgd", "mse")
    path = str(tmp_path / "last.keras")
    checkpoint = AtomicModelCheckpoint(path)
    failing_model.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint])
    saved = weights_of(failing_model)
    FailingSave.armed = True
    with pytest.raises(OSError, match="disk full"):
        failing_model.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint])
    for got, want in zip(load_into(failing_model, path), saved):
        np.testing.assert_array_equal(got, want)
    assert sorted(os.listdir(tmp_path)) == ["last.keras"]


@pytest.mark.slow
@pytest.mark.runs_on("torch")  # file-system behaviour
@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "keras_in_place"])
def test_sigkill_during_a_write_keeps_the_previous_checkpoint_only_when_atomic(tmp_path, atomic):
    path, output = str(tmp_path / "model.weights.h5"), str(tmp_path / "first.npz")
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, scenarios.__file__, "kill_during_save",
         json.dumps({"output": output, "path": path, "atomic": atomic})],
        env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr[-3000:]  # killed in the middle of the write
    with np.load(output) as data:
        first = [data[f"arr_{i}"] for i in range(len(data.files))]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="first"),
                              scenarios.KillWhileSaving(name="killer"), keras.layers.Dense(3)])
    if atomic:
        model.load_weights(path)
        for got, want in zip(model.get_weights(), first):
            np.testing.assert_array_equal(got, want)
    else:
        # A truncated file, written up to the kill: each backend's reader fails in its own way.
        with pytest.raises(Exception):  # noqa: B017
            model.load_weights(path)


# === BackupAndRestore ===


def test_backup_and_restore_keeps_one_complete_backup(tmp_path):
    backup_dir = tmp_path / "backup"
    os.makedirs(backup_dir)
    (backup_dir / ".backup-000000000001.weights.h5.tmp-1-deadbeef.weights.h5").write_text("x")
    x, y = scenarios.make_data()
    mat_ta = scenarios.build_matta(dropout=0.25, strategy="all")
    mat_ta(x[:1])
    backup = BackupAndRestore(str(backup_dir), save_freq=3, delete_checkpoint=False)
    mat_ta.fit(x, y, batch_size=scenarios.BATCH, epochs=1, shuffle=False, verbose=0,
               callbacks=[backup])
    with open(backup_dir / "training_state.json") as f:
        state = json.load(f)
    # Backups after batches 3 and 6 of the 8: the state names the last, the first is gone.
    assert state == {"epoch": 0, "batch": 6, "step": 6,
                     "weights": "backup-000000000006.weights.h5",
                     "random_states": "backup-000000000006.random.npz"}
    assert sorted(os.listdir(backup_dir)) == [
        "backup-000000000006.random.npz", "backup-000000000006.weights.h5",
        "training_state.json"]


def test_callback_arguments_and_configs():
    with pytest.raises(ValueError, match="backup_dir"):
        BackupAndRestore("")
    with pytest.raises(ValueError, match="save_freq.*0"):
        BackupAndRestore("dir", save_freq=0)
    with pytest.raises(TypeError, match="delete_checkpoint"):
        BackupAndRestore("dir", delete_checkpoint="yes")
    with pytest.raises(ValueError, match="checkpoint_path.*model.h5"):
        StopOnNonFiniteLoss(checkpoint_path="model.h5")
    with pytest.raises(ValueError, match="save_freq"):
        StopOnNonFiniteLoss(save_freq=True)
    with pytest.raises(TypeError, match="raise_error"):
        StopOnNonFiniteLoss(raise_error=1)
    with pytest.raises(ValueError, match="weights_only=True"):
        save_atomically(None, "model.keras", weights_only=True)
    with pytest.raises(TypeError, match="weights_only"):
        save_atomically(None, "model.keras", weights_only="no")
    for callback in (BackupAndRestore("dir", save_freq=5, delete_checkpoint=False),
                     StopOnNonFiniteLoss("good.weights.h5", save_freq=2, raise_error=True),
                     AtomicModelCheckpoint("m.keras", monitor="loss", save_best_only=True),
                     SynchronousCallbacks()):
        config = callback.get_config()
        assert type(callback).from_config(config).get_config() == config
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(callback))
        assert type(restored) is type(callback) and restored.get_config() == config


# === StopOnNonFiniteLoss ===

NAN_BATCH = 3  # 0-based: the 4th step meets NaN teacher logits


def nan_teacher_run(callback, steps=8):
    """A MatTA with teacher outputs in the data; batch NAN_BATCH's teacher logits are NaN."""
    x, labels = scenarios.make_data()
    teacher = np.random.RandomState(3).randn(len(x), scenarios.CLASSES).astype("float32")
    teacher[NAN_BATCH * scenarios.BATCH] = np.nan
    keras.utils.set_random_seed(0)
    ta = keras.Sequential([keras.Input((scenarios.D_IN,)),
                           keras_matta.MatDense(8, activation="relu", name="hidden"),
                           keras_matta.MatDense(scenarios.CLASSES, nested=False, name="logits")],
                          name="ta")
    mat_ta = keras_matta.MatTA(ta, [0.5], teacher="dataset")
    mat_ta.compile(keras.optimizers.Adam(0.01),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    n = steps * scenarios.BATCH
    y = {"labels": labels[:n], "teacher_logits": teacher[:n]}
    callbacks = [callback] if callback else []
    mat_ta.fit(x[:n], y, batch_size=scenarios.BATCH, epochs=1, shuffle=False, verbose=0,
               callbacks=callbacks)
    return mat_ta


@pytest.fixture(scope="module")
def good_weights():
    """The reference: the run stopped by hand before the NaN batch."""
    return scenarios.ta_weights(nan_teacher_run(None, steps=NAN_BATCH))


@pytest.mark.parametrize("where", ["memory", "weights.h5", "keras"])
def test_non_finite_loss_stops_names_the_term_and_keeps_the_last_good_weights(
        tmp_path, good_weights, where, capsys):
    path = None if where == "memory" else str(tmp_path / f"good.{where}")
    guard = StopOnNonFiniteLoss(checkpoint_path=path)
    mat_ta = nan_teacher_run(guard)
    assert guard.step == NAN_BATCH + 1 and guard.good_step == NAN_BATCH
    # The task losses stay finite: the teacher term is the one that is not.
    assert guard.term == "ta_kd_teacher_loss"
    assert "step 4 (epoch 1, batch 4): 'ta_kd_teacher_loss' is nan" in guard.message
    assert guard.message in capsys.readouterr().out
    assert int(keras.ops.convert_to_numpy(mat_ta.optimizer.iterations)) == NAN_BATCH
    for got, want in zip(scenarios.ta_weights(mat_ta), good_weights):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    if path:  # the file holds the last good state, loadable on its own
        saved = nan_teacher_run(None, steps=1) if where == "weights.h5" else None
        if saved is not None:
            saved.load_weights(path)
        else:
            saved = keras.saving.load_model(path)
        for got, want in zip(scenarios.ta_weights(saved), good_weights):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_non_finite_loss_can_raise_and_roll_back_further(good_weights):
    with pytest.raises(FloatingPointError, match="'ta_kd_teacher_loss' is nan"):
        nan_teacher_run(StopOnNonFiniteLoss(raise_error=True))
    guard = StopOnNonFiniteLoss(save_freq=2)
    mat_ta = nan_teacher_run(guard)
    assert guard.good_step == 2  # kept after steps 2, 4, ...; step 4 failed
    assert all(np.isfinite(w).all() for w in scenarios.ta_weights(mat_ta))
    guard = StopOnNonFiniteLoss(restore_weights=False)
    mat_ta = nan_teacher_run(guard)
    assert guard.step == NAN_BATCH + 1
    assert not all(np.isfinite(w).all() for w in scenarios.ta_weights(mat_ta))


# === SynchronousCallbacks ===


class ThreadRecorder(keras.callbacks.Callback):
    """Records the thread of every batch-end call; async-safe, so Keras may run it elsewhere."""

    async_safe = True

    def __init__(self):
        super().__init__()
        self.threads = set()

    def on_train_batch_end(self, batch, logs=None):
        self.threads.add(threading.get_ident())

    on_test_batch_end = on_predict_batch_end = on_train_batch_end


@pytest.mark.parametrize("synchronous", [False, True])
def test_synchronous_callbacks_keep_batch_end_callbacks_on_the_training_thread(synchronous):
    x, y = np.random.default_rng(0).random((32, 4), "float32"), np.arange(32) % 3
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    recorder = ThreadRecorder()
    callbacks = [recorder, SynchronousCallbacks()] if synchronous else [recorder]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks)
    model.evaluate(x, y, batch_size=4, verbose=0, callbacks=callbacks)
    model.predict(x, batch_size=4, verbose=0, callbacks=callbacks)
    # Keras runs callbacks in a thread pool on the backends it marks thread-safe (JAX, torch).
    in_line = synchronous or BACKEND == "tensorflow"
    assert (recorder.threads == {threading.get_ident()}) == in_line, recorder.threads
