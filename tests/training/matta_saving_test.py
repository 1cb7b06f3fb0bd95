import json
import os

import keras
import numpy as np
from helpers import to_numpy
from training.matta_models import batch
from training.matta_models import mlp
from training.matta_models import mlp_params
from training.matta_models import sparse_ce
from training.matta_models import weights_of

import keras_matta
from keras_matta.training import MatTA


def as_json(config):
    return json.loads(json.dumps(config))  # tuples and lists alike, as in a .keras file


def teacher_model():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(3)], name="teacher")


def trained_matta(teacher, steps=2, **kwargs):
    x, labels, _ = batch(n=8 * steps)
    mat_ta = MatTA(mlp(params=mlp_params()), [0.25, 0.5, 0.75], teacher=teacher,
                   strategy="random", seed=3, kd_warmup_steps=5, temperature=2.0, **kwargs)
    mat_ta.compile(keras.optimizers.Adam(0.01), sparse_ce(), metrics=["accuracy"])
    mat_ta.fit(x, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return mat_ta


def test_trained_ta_round_trip_without_teacher(tmp_path):
    mat_ta = trained_matta(teacher_model())
    path = os.path.join(tmp_path, "ta.keras")
    mat_ta.model.save(path)
    loaded = keras.saving.load_model(path)
    assert len(loaded.weights) == 4  # the TA only: no teacher, no optimizer slots
    x, _, _ = batch()
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(mat_ta.model(x)), rtol=1e-6)
    quarter = []
    for model in (loaded, mat_ta.model):
        with keras_matta.WidthScope(model, 0.25):
            quarter.append(to_numpy(model(x)))
    np.testing.assert_allclose(quarter[0], quarter[1], rtol=1e-6)


def test_config_round_trip():
    mat_ta = MatTA(mlp(), [0.25, {"hidden": 6}], teacher="dataset", beta=0.5,
                   student_weights=[2.0, 1.0], strategy="sandwich", seed=7, detach_ta=False,
                   distillation="kl")
    restored = MatTA.from_config(mat_ta.get_config())
    assert restored.get_config() == mat_ta.get_config()
    assert restored.head_names == ["ta", "student_0.25", "student_mix(hidden=6)"]


def test_matta_round_trip_resumes_where_it_stopped(tmp_path):
    """Weights, optimizer state, teacher, step counter: the next step is the same."""
    mat_ta = trained_matta(teacher_model(), steps=2)
    path = os.path.join(tmp_path, "matta.keras")
    mat_ta.save(path)
    resumed = keras.saving.load_model(path)
    assert as_json(resumed.get_config()) == as_json(mat_ta.get_config())
    assert int(resumed.optimizer.iterations) == 2
    for a, b in zip(weights_of(resumed.teacher), weights_of(mat_ta.teacher)):
        np.testing.assert_array_equal(a, b)
    assert len(resumed.trainable_weights) == 4 and not resumed.teacher.trainable

    x, labels, _ = batch(n=16, seed=8)
    logs = [m.fit(x, labels, batch_size=8, epochs=1, shuffle=False, verbose=0).history
            for m in (mat_ta, resumed)]
    for name in logs[0]:
        np.testing.assert_allclose(logs[1][name], logs[0][name], rtol=1e-5, err_msg=name)
    for a, b in zip(weights_of(resumed.model), weights_of(mat_ta.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_model_checkpoint_saves_a_loadable_matta(tmp_path):
    x, labels, teacher = batch(n=16)
    mat_ta = MatTA(mlp(), [0.5], teacher="dataset")
    mat_ta.compile("adam", sparse_ce(), metrics=["accuracy"])
    path = os.path.join(tmp_path, "epoch_{epoch}.keras")
    y = {"labels": labels, "teacher_logits": teacher}
    mat_ta.fit(x, y, batch_size=8, epochs=2, verbose=0,
               callbacks=[keras.callbacks.ModelCheckpoint(path)])
    loaded = keras.saving.load_model(path.format(epoch=2))
    assert loaded.teacher_source == "dataset" and loaded.teacher is None
    results = loaded.evaluate(x, y, verbose=0, return_dict=True)
    expected = mat_ta.evaluate(x, y, verbose=0, return_dict=True)
    for name, value in expected.items():
        np.testing.assert_allclose(results[name], value, rtol=1e-5, err_msg=name)
