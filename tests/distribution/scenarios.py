"""The tiny MatTA run the distribution and interruption tests share, in-process or as a script.

A TA `Input(4) -> MatDense(16, relu) [-> Dropout] -> MatDense(4)` with Students at 1/4 and 1/2
width, a frozen Keras teacher called in the step, Shampoo (block 4, roots from step 2
every 2 steps) and the "random" strategy (one Student per step, drawn from `(seed, step)`: a
run resumed at the wrong step draws other Students). Data: 64 fixed examples, batches of 8
(8 steps per epoch), no shuffling.

Run as a script (`python scenarios.py <scenario> <json arguments>`) under a chosen backend;
each scenario writes its results to the `output` path it is given.
"""

import json
import os
import signal
import sys

import keras
import numpy as np

D_IN, HIDDEN, CLASSES = 4, 16, 4
BATCH, EXAMPLES = 8, 64


def make_data(examples=EXAMPLES, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randn(examples, D_IN).astype("float32"), rng.randint(0, CLASSES, examples)


def make_optimizer(kind="shampoo"):
    import keras_matta

    if kind == "adam":
        return keras.optimizers.Adam(0.01)
    return keras_matta.optimizers.Shampoo(
        0.01, block_size=4, precondition_frequency=2, start_preconditioning_step=2
    )


def build_matta(optimizer="shampoo", dropout=0.0, l2=0.0, seed=0, layout_map=None,
                spread_axis=None, strategy="random"):
    """A compiled MatTA; `layout_map` (JAX) gets Shampoo's layouts before the build."""
    import keras_matta
    from keras_matta import MatDense

    keras.utils.set_random_seed(seed)
    regularizer = keras.regularizers.L2(l2) if l2 else None
    teacher = keras.Sequential([keras.Input((D_IN,)), keras.layers.Dense(CLASSES)],
                               name="teacher")
    layers = [keras.Input((D_IN,)),
              MatDense(HIDDEN, activation="relu", kernel_regularizer=regularizer,
                       name="hidden")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout, seed=1, name="dropout"))
    layers.append(MatDense(CLASSES, nested=False, name="logits"))
    ta = keras.Sequential(layers, name="ta")
    optimizer = make_optimizer(optimizer)
    if layout_map is not None:
        keras_matta.distribution.add_shampoo_layouts(layout_map, optimizer, ta,
                                                     spread_axis=spread_axis)
    mat_ta = keras_matta.MatTA(ta, [0.25, 0.5], teacher=teacher, kd_warmup_steps=3,
                               strategy=strategy, seed=1)
    mat_ta.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return mat_ta


def ta_weights(mat_ta):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in mat_ta.model.weights]


def save_result(path, mat_ta, history=None, **extra):
    arrays = {f"w{i}": w for i, w in enumerate(ta_weights(mat_ta))}
    for name, values in (history or {}).items():
        arrays[f"history/{name}"] = np.asarray(values, "float64")
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    np.savez(path, **arrays)


def load_result(path):
    with np.load(path) as data:
        weights = [data[f"w{i}"] for i in range(sum(k.startswith("w") for k in data.files))]
        history = {k[len("history/"):]: data[k] for k in data.files if k.startswith("history/")}
        extra = {k: data[k] for k in data.files if not k.startswith(("w", "history/"))}
    return weights, history, extra


# === Scenarios run as scripts ===


class KillAtBatch(keras.callbacks.Callback):
    """SIGKILLs its own process at the end of global batch `batch` (1-based), mid-epoch."""

    def __init__(self, batch):
        super().__init__()
        self.batch, self.seen = batch, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def assert_same_run(got, expected, term="ta_kd_teacher_loss"):
    """Every logged loss (`term` among them) and every weight of `got` equal `expected`'s."""
    (weights, history, _), (expected_weights, expected_history, _) = got, expected
    assert set(history) == set(expected_history) and term in history
    for key, values in expected_history.items():
        np.testing.assert_allclose(history[key], values, rtol=1e-5, err_msg=key)
    for got_weight, expected_weight in zip(weights, expected_weights):
        # atol for entries near zero: summation order differs across devices and replicas.
        np.testing.assert_allclose(got_weight, expected_weight, rtol=1e-5, atol=1e-6)


def interrupted_fit(output, backup_dir, kill_at=None, epochs=2, save_freq=2,
                    callback="keras_matta", dropout=0.25, optimizer="shampoo"):
    """Fits with a BackupAndRestore; killed at `kill_at`, or run to the end (a restart)."""
    import keras_matta

    x, y = make_data()
    mat_ta = build_matta(optimizer, dropout=dropout)
    backup_class = (keras_matta.callbacks.BackupAndRestore if callback == "keras_matta"
                    else keras.callbacks.BackupAndRestore)
    callbacks = [backup_class(backup_dir, save_freq=save_freq)]
    if kill_at is not None:
        callbacks.append(KillAtBatch(kill_at))
    trained = []
    callbacks.append(keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: trained.append(bool(logs))))
    if keras.backend.backend() != "jax":
        mat_ta(x[:1])  # BackupAndRestore needs a built model (JAX builds it symbolically)
    history = mat_ta.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                         callbacks=callbacks)
    save_result(output, mat_ta, history.history, trained_batches=sum(trained),
                iterations=int(keras.ops.convert_to_numpy(mat_ta.optimizer.iterations)))


def uninterrupted_fit(output=None, epochs=2, dropout=0.25, optimizer="shampoo"):
    x, y = make_data()
    mat_ta = build_matta(optimizer, dropout=dropout)
    history = mat_ta.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
    if output:
        save_result(output, mat_ta, history.history)
    return mat_ta, history


def kill_during_save(output, path, atomic=True):
    """Saves `path` once, then dies (SIGKILL) in the middle of writing it a second time."""
    import keras_matta

    x, _ = make_data()
    model = keras.Sequential([keras.Input((D_IN,)), keras.layers.Dense(8, name="first"),
                              KillWhileSaving(name="killer"), keras.layers.Dense(3)])
    save = (keras_matta.callbacks.save_atomically if atomic
            else lambda m, p: m.save_weights(p))
    save(model, path)
    np.savez(output, *[np.array(w) for w in model.get_weights()])
    for w in model.weights:
        w.assign(w + 1.0)
    KillWhileSaving.armed = True
    save(model, path)  # never returns


class KillWhileSaving(keras.layers.Layer):
    """An identity layer whose weight saving SIGKILLs the process once `armed`: by then the
    first layer's weights are already in the file being written."""

    armed = False

    def call(self, x):
        return x

    def save_own_variables(self, store):
        if KillWhileSaving.armed:
            os.kill(os.getpid(), signal.SIGKILL)


SCENARIOS = {"interrupted_fit": interrupted_fit, "uninterrupted_fit": uninterrupted_fit,
             "kill_during_save": kill_during_save}

if __name__ == "__main__":
    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(1)
    SCENARIOS[sys.argv[1]](**json.loads(sys.argv[2]))
