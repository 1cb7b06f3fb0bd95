"""Stop training at the first non-finite loss term, keeping the last good weights."""

import math
import os

import keras
import numpy as np

from keras_matta.callbacks.atomic import save_atomically


@keras.saving.register_keras_serializable(package="keras_matta")
class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops `fit` when a loss term becomes NaN or infinite, and keeps the last good weights.

    After every training step it reads the logged losses: `loss` and every `*_loss` entry,
    which for `MatTA` are the unweighted terms (`ta_task_loss`, `ta_kd_teacher_loss`,
    `student_0.25_task_loss`, `student_0.25_kd_ta_loss`, ...). MatTA logs running means over
    the epoch, so a term is non-finite from the step where it first was. At the first
    non-finite value it

    1. names the step and the term: the first non-finite entry, in the order of
       `model.metrics` (the objective's order for MatTA), other than the total `loss` (which
       is non-finite whenever a term is), e.g.
       `"Non-finite loss at training step 7 (epoch 1, batch 7): 'ta_kd_teacher_loss' is nan"`;
       the message is printed and kept in `self.message`, `self.step`, `self.term`;
    2. stops training (`model.stop_training = True`), or raises `FloatingPointError` with the
       message when `raise_error=True`;
    3. puts back the *last good weights*: those after the last step whose losses were all
       finite (the non-finite step has already applied its update, typically NaN). They are
       kept after every `save_freq` good steps, in memory (model and optimizer variables) or,
       with `checkpoint_path`, atomically on disk; the file is never written from a bad step,
       so it holds the last good state even if the process dies afterwards.

    Args:
        checkpoint_path: optional `.weights.h5` (variables and optimizer state) or `.keras`
            (whole model) path for the last good state; `None` keeps it in memory.
        save_freq: keep the good state every this many steps. Defaults to 1 (the state right
            before the failing step); larger values save copies at the cost of rolling back
            further.
        restore_weights: whether to load the last good state into the model when stopping.
            Defaults to `True`.
        raise_error: raise `FloatingPointError` instead of stopping quietly. Defaults to
            `False`.

    Example:

    ```python
    x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 3, size=(64,))
    x[40:48] = np.nan   # a corrupt batch: the 6th of 8
    ta = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(32, activation="tanh"),
                           keras_matta.MatDense(3, nested=False)])
    mat_ta = keras_matta.MatTA(ta, student_widths=[0.5])
    mat_ta.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    guard = keras_matta.callbacks.StopOnNonFiniteLoss(checkpoint_path="run/good.weights.h5")
    mat_ta.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[guard])
    # prints "Non-finite loss at training step 6 (epoch 1, batch 6): 'ta_task_loss' is nan. ..."
    assert (guard.step, guard.term) == (6, "ta_task_loss")
    # mat_ta holds the state after step 5, the last good one (also in run/good.weights.h5).
    ```

    Reference:
        `keras.callbacks.TerminateOnNaN` (which checks only the total loss and keeps the NaN
        weights).
    """

    def __init__(self, checkpoint_path=None, save_freq=1, restore_weights=True,
                 raise_error=False):
        super().__init__()
        if checkpoint_path is not None:
            if not isinstance(checkpoint_path, (str, os.PathLike)) or not os.fspath(
                checkpoint_path
            ).endswith((".weights.h5", ".keras")):
                raise ValueError(
                    "`checkpoint_path` must be None or a path ending in '.weights.h5' or "
                    f"'.keras'; got checkpoint_path={checkpoint_path!r}."
                )
            checkpoint_path = os.fspath(checkpoint_path)
        if isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1:
            raise ValueError(f"`save_freq` must be an integer >= 1; got save_freq={save_freq!r}.")
        for arg, value in (("restore_weights", restore_weights), ("raise_error", raise_error)):
            if not isinstance(value, bool):
                raise TypeError(f"`{arg}` must be a bool; got {arg}={value!r}.")
        self.checkpoint_path = checkpoint_path
        self.save_freq = save_freq
        self.restore_weights = restore_weights
        self.raise_error = raise_error
        self._reset()

    def _reset(self):
        self.step = None  # the failing training step (1-based), once one failed
        self.term = None  # the name of its first non-finite term
        self.message = None
        self.good_step = None  # the step whose state was kept last
        self._epoch = 0
        self._snapshot = None
        self._good_steps = 0

    def on_train_begin(self, logs=None):
        self._reset()
        # The state training starts from. (On TensorFlow a MatTA and its optimizer are built
        # by the first step: then the first state kept is that after step 1.)
        model = self.model
        if model.built and (model.optimizer is None or model.optimizer.built):
            self._keep_good_state(self._iterations())

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # Keras sorts the logs by name; the model's metrics list the terms in the objective's
        # order (for MatTA: the TA's terms, then each Student's).
        order = [metric.name for metric in getattr(self.model, "metrics", [])]
        term, value = _first_non_finite(logs or {}, order)
        step = self._iterations()
        if term is None:
            self._good_steps += 1
            if self._good_steps % self.save_freq == 0:
                self._keep_good_state(step)
            return
        self.step, self.term = step, term
        self.message = (
            f"Non-finite loss at training step {step} (epoch {self._epoch + 1}, batch "
            f"{batch + 1}): '{term}' is {value}. Training stopped."
        )
        self.model.stop_training = True
        if self.good_step is None:
            self.message += " No good state had been kept yet."
        else:
            if self.restore_weights:
                self._restore_good_state()
                self.message += f" Restored the state after step {self.good_step}"
            else:
                self.message += f" The state after step {self.good_step} was kept"
            if self.checkpoint_path:
                self.message += f" (saved in {self.checkpoint_path})"
            self.message += "."
        print(f"\n{self.message}")
        if self.raise_error:
            raise FloatingPointError(self.message)

    # === Good state ===

    def _iterations(self):
        optimizer = self.model.optimizer
        if optimizer is None:
            return None
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def _keep_good_state(self, step):
        model = self.model
        if self.checkpoint_path:
            save_atomically(model, self.checkpoint_path)
        else:
            optimizer_variables = model.optimizer.variables if model.optimizer else []
            self._snapshot = (
                [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables],
                [np.array(keras.ops.convert_to_numpy(v)) for v in optimizer_variables],
            )
        self.good_step = step

    def _restore_good_state(self):
        model = self.model
        if self.checkpoint_path:
            model.load_weights(self.checkpoint_path)  # `.weights.h5` or `.keras` alike
            return
        model_values, optimizer_values = self._snapshot
        _assign(model.variables, model_values)
        if model.optimizer is not None:
            _assign(model.optimizer.variables, optimizer_values)

    # === Config ===

    def get_config(self):
        return {"checkpoint_path": self.checkpoint_path, "save_freq": self.save_freq,
                "restore_weights": self.restore_weights, "raise_error": self.raise_error}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _first_non_finite(logs, order=()):
    """(name, value) of the first non-finite loss entry in `order` (then log order), terms
    before the total; else (None, None)."""
    terms = [k for k in logs if k.endswith("_loss") and not k.startswith("val_")]
    names = [k for k in order if k in terms] + [k for k in terms if k not in order]
    names += ["loss"] if "loss" in logs else []
    for name in names:
        value = float(np.asarray(keras.ops.convert_to_numpy(logs[name])))
        if not math.isfinite(value):
            return name, value
    return None, None


def _assign(variables, values):
    for variable, value in zip(variables, values):
        variable.assign(value)
