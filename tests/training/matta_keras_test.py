"""MatTA behaves like any Keras model: steps_per_execution, XLA, mixed precision, distribution."""

import keras
import numpy as np
import pytest
from training.matta_models import batch
from training.matta_models import mlp
from training.matta_models import mlp_params
from training.matta_models import sparse_ce
from training.matta_models import weights_of

from keras_matta.training import MatTA

BACKEND = keras.backend.backend()


def fit(steps_per_execution=1, jit_compile="auto", epochs=2):
    x, labels, teacher = batch(n=48)
    mat_ta = MatTA(mlp(params=mlp_params()), [0.25, 0.5], teacher="dataset",
                   kd_warmup_steps=3, seed=0)
    mat_ta.compile(keras.optimizers.Adam(0.01), sparse_ce(), metrics=["accuracy"],
                   steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    history = mat_ta.fit(x, {"labels": labels, "teacher_logits": teacher}, batch_size=8,
                         epochs=epochs, shuffle=False, verbose=0)
    return mat_ta, history


@pytest.mark.skipif(BACKEND == "torch", reason="Keras' torch trainer needs steps_per_execution=1")
def test_steps_per_execution_gives_the_same_training():
    one, one_history = fit(steps_per_execution=1)
    three, three_history = fit(steps_per_execution=3)
    assert int(three.optimizer.iterations) == 12
    for a, b in zip(weights_of(one.model), weights_of(three.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one_history.history["student_0.25_kd_ta_loss"],
                               three_history.history["student_0.25_kd_ta_loss"], rtol=1e-5)


# torch.compile takes minutes on CPU: `large` there.
COMPILER = pytest.param("torch.compile", marks=pytest.mark.large) if BACKEND == "torch" else "xla"


@pytest.mark.skipif(BACKEND == "jax", reason="JAX always compiles with XLA")
@pytest.mark.parametrize("compiler", [COMPILER])
def test_jit_compile_matches_the_default_compilation(compiler):
    default, _ = fit(epochs=1)
    compiled, _ = fit(jit_compile=True, epochs=1)
    for a, b in zip(weights_of(default.model), weights_of(compiled.model)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    x, _, _ = batch(n=32)
    labels = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0)  # learnable: 3 classes
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    mat_ta = MatTA(mlp(), [0.5], teacher=teacher, kd_warmup_steps=2)
    mat_ta.compile(keras.optimizers.Adam(0.03), sparse_ce(), metrics=["accuracy"])
    history = mat_ta.fit(x, labels, batch_size=8, epochs=4, verbose=0)
    assert mat_ta.model.compute_dtype == policy.split("_")[1]
    assert all(v.dtype == "float32" for v in mat_ta.trainable_weights)
    if policy == "mixed_float16":
        assert isinstance(mat_ta.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(np.isfinite(v).all() for v in history.history.values())
    losses = history.history["ta_task_loss"]
    assert losses[-1] < losses[0]


def test_callbacks_see_every_head():
    x, labels, _ = batch(n=32)
    mat_ta = MatTA(mlp(), [0.25, 0.5])
    mat_ta.compile("adam", sparse_ce(), metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_student_0.25_accuracy", patience=0,
                                         mode="max")
    seen = []
    logger = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(logs))
    mat_ta.fit(x, labels, validation_split=0.25, epochs=3, batch_size=8, verbose=0,
               callbacks=[stop, logger])
    assert "val_student_0.25_accuracy" in seen[0] and "student_0.5_kd_ta_loss" in seen[0]
