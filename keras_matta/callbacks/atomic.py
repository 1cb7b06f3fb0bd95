"""Atomic checkpoint writes: a file at the checkpoint's path is always a complete checkpoint."""

import contextlib
import os
import uuid

import keras

_TEMP_MARKER = ".tmp-"


def _suffix(filepath):
    for suffix in (".weights.h5", ".keras", ".weights.json", ".h5", ".json"):
        if filepath.endswith(suffix):
            return suffix
    return os.path.splitext(filepath)[1]


@contextlib.contextmanager
def atomic_path(filepath):
    """Yields a temporary path next to `filepath`; on success it replaces `filepath` atomically.

    The temporary file lives in the same directory (so `os.replace` is a rename within one
    file system, atomic on POSIX and Windows), keeps `filepath`'s suffix (Keras checks it), and
    is flushed to disk before the rename, and the directory after it. If the body raises, the
    temporary file is removed and `filepath` is untouched; if the process is killed, a
    `.<name>.tmp-*` file may be left behind, never a truncated `filepath`.
    """
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    name = os.path.basename(filepath)
    temp = os.path.join(
        directory, f".{name}{_TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}{_suffix(name)}"
    )
    try:
        yield temp
        _fsync(temp)
        os.replace(temp, filepath)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
    _fsync_directory(directory)


def save_atomically(model, filepath, weights_only=None):
    """Saves `model` to `filepath` so that a crash never leaves a partial file there.

    Writes to a temporary file in the same directory, then renames it over `filepath`
    (see `atomic_path`): until the rename the previous checkpoint is intact, after it the new
    one is complete. Keras' own `save`/`save_weights` write in place, so a process killed
    while writing leaves a truncated file that fails to load or, worse, loads other weights.

    Args:
        model: a built `keras.Model` (e.g. a `MatTA`: its TA, Shampoo state and, for `.keras`
            files, its teacher and compile configuration).
        filepath: a `.keras` path (the whole model, `model.save`) or a `.weights.h5` path
            (variables, optimizer state included, `model.save_weights`).
        weights_only: force `save_weights` (`True`) or `save` (`False`); by default chosen
            from the suffix.

    Example:

    ```python
    model = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(16)])
    keras_matta.callbacks.save_atomically(model, "run/last.weights.h5")   # save_weights
    keras_matta.callbacks.save_atomically(model, "run/model.keras")       # save
    model.load_weights("run/last.weights.h5")
    ```
    """
    filepath = os.fspath(filepath)
    if weights_only is None:
        weights_only = filepath.endswith(".weights.h5")
    if not isinstance(weights_only, bool):
        raise TypeError(f"`weights_only` must be a bool or None; got {weights_only!r}.")
    expected = ".weights.h5" if weights_only else ".keras"
    if not filepath.endswith(expected):
        raise ValueError(
            f"`filepath` must end in '{expected}' with weights_only={weights_only}; "
            f"got filepath={filepath!r}."
        )
    with atomic_path(filepath) as temp:
        if weights_only:
            model.save_weights(temp, overwrite=True)
        else:
            model.save(temp, overwrite=True)


def remove_stale_temporaries(directory, name=None):
    """Removes `.<name>.tmp-*` files a killed writer left in `directory` (all names if None)."""
    if not os.path.isdir(directory):
        return
    prefix = f".{name}{_TEMP_MARKER}" if name else "."
    for entry in os.listdir(directory):
        if entry.startswith(prefix) and _TEMP_MARKER in entry:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, entry))


@keras.saving.register_keras_serializable(package="keras_matta")
class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` whose writes are atomic.

    Same arguments and behaviour as `ModelCheckpoint` (monitor, `save_best_only`, `save_freq`,
    `{epoch}`-style paths, ...), but each file is written to a temporary file in its
    directory and renamed into place, so killing the process during a save leaves the
    previous checkpoint loadable at that path (a stray `.<name>.tmp-*` file at worst).

    Args:
        filepath, monitor, verbose, save_best_only, save_weights_only, mode, save_freq,
        initial_value_threshold: as for `keras.callbacks.ModelCheckpoint`.

    Example:

    ```python
    x, y = np.random.rand(32, 8).astype("float32"), np.random.randint(0, 3, size=(32,))
    ta = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(32, activation="relu"),
                           keras_matta.MatDense(3, nested=False)])
    mat_ta = keras_matta.MatTA(ta, student_widths=[0.5])
    mat_ta.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    checkpoint = keras_matta.callbacks.AtomicModelCheckpoint("run/matta.keras")
    mat_ta.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint])
    resumed = keras.saving.load_model("run/matta.keras")   # TA, teacher, optimizer state
    ```

    Reference:
        POSIX `rename(2)`: "If newpath already exists, it will be atomically replaced".
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):
        super().__init__(filepath, monitor=monitor, verbose=verbose,
                         save_best_only=save_best_only, save_weights_only=save_weights_only,
                         mode=mode, save_freq=save_freq,
                         initial_value_threshold=initial_value_threshold)
        self._config = dict(filepath=os.fspath(filepath), monitor=monitor, verbose=verbose,
                            save_best_only=save_best_only,
                            save_weights_only=save_weights_only, mode=mode,
                            save_freq=save_freq,
                            initial_value_threshold=initial_value_threshold)

    def _save_model(self, epoch, batch, logs):
        # ModelCheckpoint's own `_save_model`, with the write made atomic: the path and the
        # "should it save" decision (best value, ...) are ModelCheckpoint's.
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise OSError(
                "Please specify a non-directory filepath for AtomicModelCheckpoint. "
                f"Filepath used is an existing directory: {filepath}"
            )
        save_atomically(self.model, filepath, weights_only=self.save_weights_only)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")

    def get_config(self):
        return dict(self._config)

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _fsync(path):
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_directory(directory):
    if os.name == "posix":  # Windows cannot open a directory to flush it.
        _fsync(directory)
