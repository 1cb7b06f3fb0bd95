"""Bad input fails early with an error naming the argument, the value and what is allowed."""

import keras
import numpy as np
import pytest
from training.matta_models import batch
from training.matta_models import mlp
from training.matta_models import sparse_ce

from keras_matta.training import MatTA


def dense_model():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8), keras.layers.Dense(3)])


def test_model_without_mat_layers():
    with pytest.raises(ValueError, match="`model`.*no Mat layer"):
        MatTA(dense_model(), [0.5])
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        MatTA("mlp", [0.5])


@pytest.mark.parametrize("widths, error, match", [
    ([1.0], ValueError, r"student_widths\[0\]`=1.0 resolves to the full"),
    ([0.5, 8], ValueError, r"student_widths\[1\]`=8 resolves to the full"),
    ([{"hidden": 8}], ValueError, "full"),
    ([16], ValueError, r"student_widths\[0\]`=16 is invalid.*\[1, 8\]"),
    ([1.5], ValueError, r"student_widths\[0\]`=1.5 is invalid.*\(0, 1\]"),
    ([{"nope": 2}], ValueError, "Unknown Mat layer name"),
    (["half"], TypeError, r"student_widths\[0\]`='half' is invalid"),
    ([0.5, 4], ValueError, r"student_widths\[1\]`=4 selects the same widths as "
                           r"`student_widths\[0\]`=0.5"),
    ([], ValueError, "non-empty list"),
    (0.5, ValueError, "non-empty list"),
])
def test_bad_student_widths(widths, error, match):
    with pytest.raises(error, match=match):
        MatTA(mlp(), widths)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(beta=-1.0), ValueError, r"`beta` must be a finite number >= 0; got -1.0"),
    (dict(alpha=-0.1), ValueError, "`alpha`"),
    (dict(gamma=float("nan")), ValueError, "`gamma`"),
    (dict(gamma="1"), TypeError, "`gamma` must be a number"),
    (dict(student_weights=[1.0, -2.0]), ValueError, r"student_weights\[1\]"),
    (dict(student_weights=[1.0]), ValueError, "one weight per Student width"),
    (dict(temperature=0.0), ValueError, "`temperature` must be > 0"),
    (dict(temperature=-2.0), ValueError, "`temperature`"),
    (dict(kd_warmup_steps=-5), ValueError, "`kd_warmup_steps`"),
    (dict(kd_warmup_steps=2.5), ValueError, "`kd_warmup_steps`"),
    (dict(detach_ta="yes"), TypeError, "`detach_ta` must be a bool"),
    (dict(strategy="greedy"), ValueError, r"`strategy` must be one of .*'all'.*'greedy'"),
    (dict(strategy="random", num_random_widths=3), ValueError, "num_random_widths"),
    (dict(distillation="l2"), ValueError, "`distillation` must be 'auto' or one of"),
    (dict(beta_teacher=0.5), ValueError, "`beta_teacher`=0.5 weights a teacher term"),
    (dict(alpha_teacher=1.0), ValueError, "`alpha_teacher`"),
    (dict(teacher="labels"), ValueError, "`teacher` must be None, a keras.Model or 'dataset'"),
    (dict(teacher=np.zeros(3)), TypeError, "`teacher`"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MatTA(mlp(), [0.25, 0.5], **kwargs)


def test_teacher_with_other_classes_fails_at_construction():
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)], name="big_teacher")
    with pytest.raises(ValueError, match=r"'big_teacher' outputs shape \(None, 4\).*\(None, 3\)"):
        MatTA(mlp(), [0.5], teacher=teacher)
    ta = mlp()
    with pytest.raises(ValueError, match="not the TA itself"):
        MatTA(ta, [0.5], teacher=ta)


def compiled(**kwargs):
    mat_ta = MatTA(mlp(), [0.5], **kwargs)
    mat_ta.compile("sgd", sparse_ce())
    return mat_ta


def test_teacher_outputs_with_another_vocabulary_fail_before_any_step():
    x, labels, _ = batch()
    mat_ta = compiled(teacher="dataset")
    weights = [np.array(w) for w in mat_ta.get_weights()]
    y = {"labels": labels, "teacher_logits": np.zeros((6, 5), "float32")}
    match = r"dataset have shape \((6|None), 5\) but the TA's outputs have shape \((6|None), 3\)"
    with pytest.raises(ValueError, match=match):
        mat_ta.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=match):
        mat_ta.evaluate(x, y, verbose=0)
    # No step ran, and the model keeps its weights (JAX's fit purges them before the first step).
    for before, after in zip(weights, mat_ta.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_targets_and_teacher_source_must_agree():
    x, labels, teacher = batch()
    with pytest.raises(ValueError, match="pass teacher='dataset'"):
        compiled().fit(x, {"labels": labels, "teacher_logits": teacher}, verbose=0)
    with pytest.raises(ValueError, match="targets must be a dict"):
        compiled(teacher="dataset").fit(x, labels, verbose=0)
    with pytest.raises(ValueError, match="exactly one of"):
        compiled(teacher="dataset").fit(
            x, {"labels": labels, "teacher_logits": teacher, "teacher_probabilities": teacher},
            verbose=0)


def test_compile_errors():
    mat_ta = MatTA(mlp(), [0.5])
    with pytest.raises(ValueError, match="needs `loss`"):
        mat_ta.compile("sgd")
    with pytest.raises(ValueError, match="does not take `loss_weights`"):
        mat_ta.compile("sgd", sparse_ce(), loss_weights=[1.0])
    with pytest.raises(ValueError, match="Cannot choose a distillation loss"):
        mat_ta.compile("sgd", keras.losses.Hinge())
    with pytest.raises(ValueError, match="Cannot resolve 'accuracy'"):
        MatTA(mlp(), [0.5], distillation="mse").compile("sgd", "mse", metrics=["accuracy"])
    with pytest.raises(TypeError, match="must be a list"):
        mat_ta.compile("sgd", sparse_ce(), metrics="accuracy")
    x, labels, _ = batch()
    with pytest.raises(ValueError, match="compile"):
        MatTA(mlp(), [0.5]).compute_loss(x, labels)
