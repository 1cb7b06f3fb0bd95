"""BackupAndRestore that resumes at the exact batch it stopped at, with atomic backups."""

import contextlib
import json
import os
import re

import keras
import numpy as np

from keras_matta.callbacks.atomic import atomic_path
from keras_matta.callbacks.atomic import remove_stale_temporaries
from keras_matta.callbacks.atomic import save_atomically

_STATE_FILE = "training_state.json"
_BACKUP_FILE = re.compile(r"backup-(\d+)\.(?:weights\.h5|random\.npz)")


@keras.saving.register_keras_serializable(package="keras_matta")
class BackupAndRestore(keras.callbacks.Callback):
    """Backs up the whole training state and resumes an interrupted `fit` where it stopped.

    A drop-in replacement for `keras.callbacks.BackupAndRestore` with two differences that
    make a run killed at any moment (SIGKILL, preemption, power loss) and restarted with the
    same script end with the same weights as an uninterrupted run:

    1. **Mid-epoch resumption.** Keras' callback records the batch it saved at but restarts
       the interrupted epoch from its first batch, so the batches before the backup are
       trained twice. This one skips them: on restart, the first `b` train calls of the
       resumed epoch consume their batches without training (`b` = batches done at the
       backup), then training continues with batch `b + 1` of that epoch.
    2. **Atomic backups.** Each backup is written to a new file, then a small state file
       naming it is replaced atomically (`os.replace`), then older backups are deleted: at
       any instant the state file names a complete backup (Keras' callback overwrites its
       files in place, so a kill during a write can leave a truncated backup).

    3. **Random state.** Keras' weight files leave out the states of the layers' seed
       generators (dropout, majority-kernel draws), so a run resumed from them draws other
       dropout masks than the uninterrupted run. Each backup stores them next to the weights.

    A backup is `model.save_weights` (the model's weights and the optimizer's variables: for
    Shampoo iterations, momentum, grafting moments, block statistics and inverse roots) plus
    the seed-generator states. Everything else of a MatTA run is a function of these: the
    Student configuration of step `t` is drawn from `(seed, t)` with `t` read from the
    optimizer's iterations, and so is the distillation warm-up `gamma(t)`.

    What the restarted script must reproduce (as for Keras' callback): the same model and
    compile arguments, the same `MatTA(seed=...)` (or `keras.utils.set_random_seed`), the
    same frozen teacher (its weights are an input of the run, not part of the backup), and
    the same data in the same order: use `shuffle=False`, or a dataset whose order is a
    function of the epoch. The logs of the resumed epoch average only the batches trained
    after the restart, and other callbacks see `on_train_batch_begin/end` for the skipped
    batches with empty logs.

    Args:
        backup_dir: directory for the backups, used by this callback only.
        save_freq: `"epoch"` (default: after every epoch) or an integer `N`: after every
            `N` batches.
        delete_checkpoint: whether to delete the backups when training ends normally.
            Defaults to `True`.

    Example:

    ```python
    x, y = np.random.rand(32, 8).astype("float32"), np.random.randint(0, 3, size=(32,))
    ta = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(32, activation="relu"),
                           keras_matta.MatDense(3, nested=False)])
    mat_ta = keras_matta.MatTA(ta, student_widths=[0.5], seed=0)
    mat_ta.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mat_ta(x[:1])   # built before fit, so that a backup can be restored into it
    backup = keras_matta.callbacks.BackupAndRestore("run/backup", save_freq=2)
    mat_ta.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[backup])
    # Killed at any point? Run the same script again: it continues from the last backup.
    ```

    Reference:
        `keras.callbacks.BackupAndRestore` (Keras 3), whose interface this keeps.
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)) or not os.fspath(backup_dir):
            raise ValueError(
                f"`backup_dir` must be a non-empty path; got backup_dir={backup_dir!r}."
            )
        if save_freq != "epoch" and (
            isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1
        ):
            raise ValueError(
                f"`save_freq` must be 'epoch' or an integer >= 1; got save_freq={save_freq!r}."
            )
        if not isinstance(delete_checkpoint, bool):
            raise TypeError(
                f"`delete_checkpoint` must be a bool; got delete_checkpoint={delete_checkpoint!r}."
            )
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = delete_checkpoint
        self._reset_counters()

    def _reset_counters(self):
        self._epoch = 0  # the epoch being trained
        self._done_in_epoch = 0  # its batches done (trained now or before the restart)
        self._step = 0  # batches done since the run began, across restarts
        self._saved_step = 0  # `_step` at the last backup
        self._skipping_call = False  # the last train call only skipped its batches

    # === Restoring ===

    def on_train_begin(self, logs=None):
        self._reset_counters()
        remove_stale_temporaries(self.backup_dir)
        state = self._read_state()
        if state is None:
            return
        model = self.model
        if not model.built:
            raise ValueError(
                f"To restore a backup, model '{model.name}' must be built before `fit()`: call "
                "it on a batch of data first."
            )
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        if state.get("random_states"):
            with np.load(os.path.join(self.backup_dir, state["random_states"])) as saved:
                values = [saved[str(i)] for i in range(len(saved.files))]
            variables = _random_state_variables(model)
            if [tuple(v.shape) for v in variables] != [tuple(a.shape) for a in values]:
                raise ValueError(
                    f"The backup in {self.backup_dir} has {len(values)} seed-generator states "
                    f"that do not match the model's {len(variables)}: is it the same model?"
                )
            for variable, value in zip(variables, values):
                variable.assign(value)
        self._epoch, self._done_in_epoch = state["epoch"], state["batch"]
        self._step = self._saved_step = state["step"]
        # Keras' own BackupAndRestore resumes epochs through this attribute, read by `fit`.
        model._initial_epoch = self._epoch
        if self._done_in_epoch:
            self._skip_train_calls(self._done_in_epoch)

    def _skip_train_calls(self, batches):
        """The next train calls consume `batches` batches without training, then train again."""
        model = self.model
        per_call = model.steps_per_execution
        remaining = [-(-batches // per_call)]
        train_function = model.train_function
        backend = keras.backend.backend()

        def skipping_train_function(*args, **kwargs):
            if remaining[0] == 0:
                model.train_function = train_function
                self._skipping_call = False
                return train_function(*args, **kwargs)
            remaining[0] -= 1
            self._skipping_call = True
            if backend == "torch":  # `fit` has already read the batches of this call
                return {}
            iterator = args[1] if backend == "jax" else args[0]
            with contextlib.suppress(StopIteration):
                for _ in range(per_call):
                    next(iterator)
            return ({}, args[0]) if backend == "jax" else {}

        model.train_function = skipping_train_function

    # === Backing up ===

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self._epoch:
            self._epoch, self._done_in_epoch = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        done = batch + 1
        steps = self.params.get("steps") if self.params else None
        if steps:
            done = min(done, steps)
        if self._skipping_call:
            self._done_in_epoch = done
            return
        self._step += done - self._done_in_epoch
        self._done_in_epoch = done
        if self.save_freq != "epoch" and self._step - self._saved_step >= self.save_freq:
            if steps and done >= steps:  # the epoch's last batch: resume with the next epoch
                self._save(self._epoch + 1, 0)
            else:
                self._save(self._epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch + 1, 0)
        self._epoch, self._done_in_epoch = epoch + 1, 0

    def _save(self, epoch, batch):
        os.makedirs(self.backup_dir, exist_ok=True)
        model = self.model
        weights = f"backup-{self._step:012d}.weights.h5"
        save_atomically(model, os.path.join(self.backup_dir, weights), weights_only=True)
        random_states = None
        variables = _random_state_variables(model)
        if variables:
            random_states = f"backup-{self._step:012d}.random.npz"
            with atomic_path(os.path.join(self.backup_dir, random_states)) as temp:
                np.savez(temp, **{str(i): np.asarray(keras.ops.convert_to_numpy(v))
                                  for i, v in enumerate(variables)})
        # The state file names complete files only: it is replaced last.
        state = {"epoch": epoch, "batch": batch, "step": self._step, "weights": weights,
                 "random_states": random_states}
        with atomic_path(self._state_path) as temp:
            with open(temp, "w") as f:
                json.dump(state, f)
        self._saved_step = self._step
        self._remove_backups(keep=(weights, random_states))

    # === Files ===

    @property
    def _state_path(self):
        return os.path.join(self.backup_dir, _STATE_FILE)

    def _read_state(self):
        if not os.path.exists(self._state_path):
            return None
        with open(self._state_path) as f:
            return json.load(f)

    def _remove_backups(self, keep=()):
        for entry in os.listdir(self.backup_dir):
            if _BACKUP_FILE.fullmatch(entry) and entry not in keep:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.backup_dir, entry))

    def on_train_end(self, logs=None):
        # `fit` reads this at its start only; a later `fit` of the same model starts afresh.
        self.model._initial_epoch = None
        if not self.delete_checkpoint or not os.path.isdir(self.backup_dir):
            return
        self._remove_backups()
        with contextlib.suppress(OSError):
            os.remove(self._state_path)
        remove_stale_temporaries(self.backup_dir)
        with contextlib.suppress(OSError):
            os.rmdir(self.backup_dir)  # only if nothing else is in it

    # === Config ===

    def get_config(self):
        return {"backup_dir": self.backup_dir, "save_freq": self.save_freq,
                "delete_checkpoint": self.delete_checkpoint}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _random_state_variables(model):
    """The model's variables that `save_weights` leaves out: seed-generator states."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]
