"""The MatTA objective: every term and one optimizer step against a hand-derived NumPy step.

Each backend's step is compared to the same float64 reference, so passing on TensorFlow, JAX and
PyTorch proves they agree with each other.
"""

import keras
import numpy as np
import pytest
from helpers import to_numpy
from training import numpy_reference as ref
from training.matta_models import batch
from training.matta_models import mlp
from training.matta_models import mlp_params
from training.matta_models import sparse_ce
from training.matta_models import weights_of

import keras_matta
from keras_matta.training import MatTA

WIDTHS = [2, 4]  # hidden units of the Students; the TA has 8
OBJECTIVE = dict(beta=0.7, alpha=0.9, gamma=1.3, beta_teacher=0.5, alpha_teacher=0.4,
                 temperature=2.0, student_weights=[1.0, 0.5])


def make_matta(params, lr=0.1, num_sampled_widths=0, **kwargs):
    # The reference is the objective of fixed Students; drawn sub-networks have their own test
    # (sampled_widths_test.py).
    mat_ta = MatTA(mlp(params=params), WIDTHS, num_sampled_widths=num_sampled_widths, **kwargs)
    mat_ta.compile(keras.optimizers.SGD(lr), sparse_ce(), metrics=["accuracy"])
    return mat_ta


def reference(params, x, labels, teacher, gamma_t, detach_ta, **objective):
    objective = {**OBJECTIVE, **objective}
    return ref.matta_step(
        params, x.astype("float64"), labels, teacher, WIDTHS,
        beta=objective["beta"], alpha=objective["alpha"], gamma_t=gamma_t,
        beta_teacher=objective["beta_teacher"], alpha_teacher=objective["alpha_teacher"],
        tau=objective["temperature"], student_weights=objective["student_weights"],
        detach_ta=detach_ta,
    )


def test_numpy_reference_gradients_match_finite_differences():
    params = mlp_params()
    x, labels, teacher = batch()
    x = x.astype("float64")
    kwargs = dict(beta=0.7, alpha=0.9, gamma_t=0.65, beta_teacher=0.5, alpha_teacher=0.4,
                  tau=2.0, student_weights=[1.0, 0.5], detach_ta=False)
    _, _, grads = ref.matta_step(params, x, labels, teacher, WIDTHS, **kwargs)
    rng = np.random.RandomState(0)
    for i, p in enumerate(params):
        for _ in range(4):
            idx = tuple(rng.randint(s) for s in p.shape)
            plus, minus = [q.copy() for q in params], [q.copy() for q in params]
            plus[i][idx] += 1e-6
            minus[i][idx] -= 1e-6
            fd = (ref.matta_step(plus, x, labels, teacher, WIDTHS, **kwargs)[0]
                  - ref.matta_step(minus, x, labels, teacher, WIDTHS, **kwargs)[0]) / 2e-6
            np.testing.assert_allclose(grads[i][idx], fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("detach_ta", [True, False])
def test_one_sgd_step_matches_numpy(detach_ta):
    """Loss, every term (warm-up and temperature included) and the updated weights."""
    params = mlp_params()
    x, labels, teacher = batch()
    mat_ta = make_matta(params, teacher="dataset", kd_warmup_steps=4, detach_ta=detach_ta,
                        **OBJECTIVE)
    mat_ta.optimizer.build(mat_ta.trainable_variables)
    mat_ta.optimizer.iterations.assign(2)  # gamma(t) = gamma * 2 / 4
    logs = mat_ta.train_on_batch(x, {"labels": labels, "teacher_logits": teacher},
                                 return_dict=True)
    total, terms, grads = reference(params, x, labels, teacher, 1.3 * 2 / 4, detach_ta)
    np.testing.assert_allclose(logs["loss"], total, rtol=1e-4)
    for name, value in terms.items():
        np.testing.assert_allclose(logs[name], value, rtol=1e-4, err_msg=name)
    expected = [p - 0.1 * g for p, g in zip(params, grads)]
    for got, want in zip(weights_of(mat_ta.model), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_warmup_follows_the_optimizer_step_inside_the_compiled_function():
    params = mlp_params()
    x, labels, _ = batch()
    objective = dict(OBJECTIVE, beta_teacher=0.0, alpha_teacher=0.0)
    mat_ta = make_matta(params, lr=0.0, kd_warmup_steps=3, **objective)
    for step in range(5):
        loss = mat_ta.train_on_batch(x, labels, return_dict=True)["loss"]
        gamma_t = OBJECTIVE["gamma"] * min(step / 3, 1.0)
        total = reference(params, x, labels, None, gamma_t, True, **objective)[0]
        np.testing.assert_allclose(loss, total, rtol=1e-5, err_msg=f"step {step}")


@pytest.mark.parametrize("detach_ta", [True, False])
def test_detach_ta_stops_gradients_into_ta_only_parameters(detach_ta):
    """Only the TA->Student term: the TA-only slices move iff it reaches the TA's logits."""
    params = mlp_params()
    x, labels, _ = batch()
    mat_ta = make_matta(params, lr=1.0, beta=0.0, alpha=0.0, gamma=1.0, detach_ta=detach_ta)
    mat_ta.train_on_batch(x, labels)
    w1, b1, w2, _ = weights_of(mat_ta.model)
    ta_only = [(w1[:, 4:], params[0][:, 4:]), (b1[4:], params[1][4:]), (w2[4:], params[2][4:])]
    for got, before in ta_only:
        if detach_ta:
            np.testing.assert_array_equal(got, before.astype("float32"))
        else:
            assert np.abs(got - before).max() > 1e-4
    # The Student slices learn either way.
    assert np.abs(w1[:, :4] - params[0][:, :4]).max() > 1e-4


def test_compute_loss_matches_numpy_without_training_step():
    params = mlp_params()
    x, labels, teacher = batch()
    mat_ta = make_matta(params, teacher="dataset", kd_warmup_steps=10, **OBJECTIVE)
    mat_ta.reset_metrics()
    # Outside training the TA->Student term has its full weight.
    loss = mat_ta.compute_loss(x, {"labels": labels, "teacher_logits": teacher},
                               training=False)
    total, terms, _ = reference(params, x, labels, teacher, 1.3, True)
    np.testing.assert_allclose(to_numpy(loss), total, rtol=1e-5)
    results = {k: float(to_numpy(v)) for k, v in mat_ta.get_metrics_result().items()}
    for name, value in terms.items():
        np.testing.assert_allclose(results[name], value, rtol=1e-5, err_msg=name)


def test_logs_name_every_head_and_term_and_evaluate_reports_them():
    x, labels, teacher = batch(n=32)
    teacher_model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    mat_ta = MatTA(mlp(), [0.25, 0.5], teacher=teacher_model)
    mat_ta.compile("sgd", sparse_ce(), metrics=["accuracy"],
                   weighted_metrics=[keras.metrics.SparseCategoricalCrossentropy(
                       from_logits=True, name="xent")])
    history = mat_ta.fit(x, labels, batch_size=8, epochs=1, verbose=0,
                         validation_data=(x, labels))
    heads = ["ta", "student_0.25", "student_0.5"]
    expected = {"loss"}
    for head in heads:
        expected |= {f"{head}_accuracy", f"{head}_xent", f"{head}_task_loss",
                     f"{head}_kd_teacher_loss"}
    expected |= {f"{head}_kd_ta_loss" for head in heads[1:]}
    expected |= {f"val_{name}" for name in expected}
    # The drawn sub-network (num_sampled_widths=1 by default) is trained, never evaluated.
    sampled = {f"sampled_{term}_loss" for term in ("task", "kd_ta", "kd_teacher")}
    assert set(history.history) == expected | sampled
    results = mat_ta.evaluate(x, labels, verbose=0, return_dict=True)
    assert set(results) == {n for n in expected if not n.startswith("val_")}
    # predict() is the TA; a Student is predicted through a WidthScope on the TA.
    np.testing.assert_allclose(mat_ta.predict(x, verbose=0), to_numpy(mat_ta.model(x)),
                               rtol=1e-5, atol=1e-6)
    with keras_matta.WidthScope(mat_ta.model, 0.25):
        small = mat_ta.model.predict(x, verbose=0)
    assert not np.allclose(small, mat_ta.predict(x, verbose=0))


def test_teacher_model_is_frozen_and_not_part_of_the_ta():
    x, labels, _ = batch(n=16)
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(16, activation="relu"),
                                keras.layers.Dense(3)])
    before = weights_of(teacher)
    mat_ta = MatTA(mlp(), [0.5], teacher=teacher)
    mat_ta.compile("adam", sparse_ce())
    mat_ta.fit(x, labels, batch_size=8, epochs=2, verbose=0)
    assert len(mat_ta.trainable_weights) == len(mat_ta.model.trainable_weights) == 4
    assert not any(id(v) in {id(t) for t in teacher.weights} for v in mat_ta.weights)
    for got, want in zip(weights_of(teacher), before):
        np.testing.assert_array_equal(got, want)
    assert mat_ta.teacher is teacher and not teacher.trainable


def test_regularization_losses_of_the_ta_are_added_once():
    x, labels, _ = batch()
    model = keras.Sequential([
        keras.Input((5,)),
        keras_matta.MatDense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(0.1)),
        keras_matta.MatDense(3, nested=False),
    ])
    mat_ta = MatTA(model, [0.5], gamma=0.0, alpha=0.0)
    mat_ta.compile("sgd", sparse_ce())
    loss = to_numpy(mat_ta.compute_loss(x, labels, training=False))
    task = to_numpy(sparse_ce()(labels, model(x)))
    penalty = 0.1 * np.sum(np.square(to_numpy(model.layers[0].kernel)))
    np.testing.assert_allclose(loss, task + penalty, rtol=1e-5)
