"""MatTA on a converted keras-hub backbone, distilled from a keras-hub Teacher."""

import keras
import numpy as np
import pytest
from helpers import NOT_ON_JAX_EAGER
from helpers import to_numpy

import keras_matta
from keras_matta.training import MatTA

keras_hub = pytest.importorskip("keras_hub")
hub = pytest.importorskip("keras_matta.hub")
pytestmark = NOT_ON_JAX_EAGER

VOCAB, FFN, TA_FFN = 29, 12, 24


def _student_backbone():
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=FFN,
        max_sequence_length=16,
    )


def _teacher_backbone(vocabulary_size=VOCAB):
    """A different, larger architecture with the same vocabulary."""
    return keras_hub.models.Llama3Backbone(
        vocabulary_size=vocabulary_size, num_layers=2, num_query_heads=4, num_key_value_heads=2,
        hidden_dim=16, intermediate_dim=32,
    )


def _data(n=8, length=6):
    tokens = np.random.default_rng(0).integers(0, VOCAB, (n, length + 1)).astype("int32")
    mask = np.ones((n, length), "int32")
    mask[::2, -2:] = 0
    x = {"token_ids": tokens[:, :-1] * mask, "padding_mask": mask}
    return x, tokens[:, 1:], mask.astype("float32")


def test_logits_model_equals_the_keras_hub_causal_lm():
    teacher = _teacher_backbone()
    x, _, _ = _data()
    causal_lm = keras_hub.models.Llama3CausalLM(backbone=teacher, preprocessor=None)
    logits = hub.LogitsModel(teacher)
    np.testing.assert_allclose(to_numpy(logits(x)), to_numpy(causal_lm(x)), atol=1e-5)
    assert tuple(logits.output_shape) == (None, None, VOCAB)


@pytest.mark.slow
# An end-to-end fit (44 s on TensorFlow, 3 s on torch): the Mat hub blocks' compiled fit,
# save/load and bfloat16 run on every backend in the layer conformance test.
@pytest.mark.runs_on("torch")
def test_matta_trains_a_converted_gpt2_with_a_keras_hub_teacher():
    student = _student_backbone()
    teacher = hub.LogitsModel(_teacher_backbone())
    teacher_before = [to_numpy(w) for w in teacher.weights]
    ta = hub.LogitsModel(hub.from_keras_hub(student, TA_FFN))
    mat_ta = MatTA(ta, student_widths=[FFN, FFN // 2], teacher=teacher, kd_warmup_steps=2)
    mat_ta.compile(keras.optimizers.Adam(1e-2),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    x, y, weights = _data()
    history = mat_ta.fit(x, y, sample_weight=weights, batch_size=4, epochs=2, verbose=0).history
    for key in ("loss", "ta_kd_teacher_loss", f"student_{FFN}_kd_teacher_loss",
                f"student_{FFN}_kd_ta_loss", f"student_{FFN // 2}_accuracy"):
        assert np.all(np.isfinite(history[key])), key
    assert history["loss"][-1] < history["loss"][0]
    for before, after in zip(teacher_before, teacher.weights):  # the Teacher is frozen
        np.testing.assert_array_equal(before, to_numpy(after))
    # Training moved the Student: it is no longer the pretrained backbone, and it extracts.
    extracted = keras_matta.extract(ta, FFN)
    assert type(extracted.backbone) is keras_hub.models.GPT2Backbone
    with keras_matta.WidthScope(ta, FFN):
        expected = to_numpy(ta(x))
    np.testing.assert_allclose(to_numpy(extracted(x)), expected, atol=1e-4)
    assert np.abs(to_numpy(extracted.backbone(x)) - to_numpy(student(x))).max() > 1e-3


def test_teacher_with_another_vocabulary_is_refused():
    ta = hub.LogitsModel(hub.from_keras_hub(_student_backbone(), TA_FFN))
    with pytest.raises(ValueError, match="vocabulary"):
        MatTA(ta, student_widths=[FFN], teacher=hub.LogitsModel(_teacher_backbone(VOCAB + 1)))
