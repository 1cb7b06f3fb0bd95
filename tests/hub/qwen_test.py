"""Qwen (Llama's blocks with query/key/value biases): as the TA, reordered, and extracted back."""

import keras
import numpy as np
import pytest
from helpers import NOT_ON_JAX_EAGER
from helpers import to_numpy

import keras_matta

keras_hub = pytest.importorskip("keras_hub")
hub = pytest.importorskip("keras_matta.hub")
pytestmark = NOT_ON_JAX_EAGER

VOCAB, LAYERS, HEADS, KV_HEADS, HIDDEN, FFN = 31, 2, 4, 2, 16, 12


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A random QwenBackbone written with save_to_preset: the offline `from_preset` path."""
    keras.utils.set_random_seed(2)
    backbone = keras_hub.models.QwenBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_query_heads=HEADS,
        num_key_value_heads=KV_HEADS, hidden_dim=HIDDEN, intermediate_dim=FFN,
        rope_max_wavelength=500, rope_scaling_factor=2.0, tie_word_embeddings=False,
    )
    rng = np.random.default_rng(2)  # biases and norms away from their initial values
    for variable in backbone.weights:
        if len(variable.shape) <= 2 and variable.shape[-1] != HIDDEN or len(variable.shape) == 1:
            variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))
    path = str(tmp_path_factory.mktemp("qwen_preset"))
    backbone.save_to_preset(path)
    return path


def _inputs():
    rng = np.random.default_rng(0)
    mask = np.ones((2, 6), "int32")
    mask[0, -2:] = 0
    return {"token_ids": rng.integers(0, VOCAB, (2, 6)).astype("int32"), "padding_mask": mask}


def test_qwen_grows_into_a_ta_whose_student_is_the_pretrained_model(preset):
    backbone = keras_hub.models.QwenBackbone.from_preset(preset)
    ta = hub.from_keras_hub(backbone, ta_intermediate_dim=2 * FFN, ta_num_heads=2 * HEADS)
    x = _inputs()
    with keras_matta.WidthScope(ta, ta.source_widths()):
        np.testing.assert_allclose(to_numpy(ta(x)), to_numpy(backbone(x)), atol=1e-5)
    student = keras_matta.extract(ta, ta.source_widths())
    assert type(student) is keras_hub.models.QwenBackbone
    np.testing.assert_allclose(to_numpy(student(x)), to_numpy(backbone(x)), atol=1e-5)


def test_qwen_as_the_ta_reorders_and_extracts_a_smaller_qwen(preset, tmp_path):
    backbone = keras_hub.models.QwenBackbone.from_preset(preset)
    ta = hub.from_keras_hub(backbone, ta_num_heads=HEADS)
    x = _inputs()
    before = to_numpy(ta(x))
    result = keras_matta.reorder(ta, x, verbose=0)
    np.testing.assert_allclose(to_numpy(ta(x)), before, atol=1e-4)
    assert len(result.scores["transformer_layer_0"]["num_query_heads"]) == KV_HEADS
    half = keras_matta.extract(ta, FFN // 2)
    assert type(half) is keras_hub.models.QwenBackbone and half.intermediate_dim == FFN // 2
    with keras_matta.WidthScope(ta, FFN // 2):
        np.testing.assert_allclose(to_numpy(half(x)), to_numpy(ta(x)), atol=1e-5)
    half.save_to_preset(str(tmp_path / "half"))
    reloaded = keras_hub.models.QwenBackbone.from_preset(str(tmp_path / "half"))
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(half(x)), atol=1e-6)


def test_sliding_window_qwen_is_refused():
    backbone = keras_hub.models.QwenBackbone(
        vocabulary_size=VOCAB, num_layers=1, num_query_heads=HEADS, num_key_value_heads=KV_HEADS,
        hidden_dim=HIDDEN, intermediate_dim=FFN, use_sliding_window_attention=True,
    )
    with pytest.raises(ValueError, match="sliding-window attention"):
        hub.from_keras_hub(backbone)
