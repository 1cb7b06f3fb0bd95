"""GPT-2: a pretrained keras-hub backbone as the nested Student of a Mat TA, and back."""

import keras
import numpy as np
import pytest
from helpers import NOT_ON_JAX_EAGER
from helpers import to_numpy

import keras_matta

keras_hub = pytest.importorskip("keras_hub")
hub = pytest.importorskip("keras_matta.hub")
pytestmark = NOT_ON_JAX_EAGER

VOCAB, LAYERS, HEADS, HIDDEN, FFN = 37, 2, 2, 8, 12
TA_FFN = 20


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A random GPT2Backbone written with save_to_preset: the offline `from_preset` path."""
    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
        intermediate_dim=FFN, max_sequence_length=16,
    )
    # Non-zero biases and norms, so a wrong slice cannot pass.
    rng = np.random.default_rng(1)
    for variable in backbone.weights:
        if len(variable.shape) == 1:
            variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))
    path = str(tmp_path_factory.mktemp("gpt2_preset"))
    backbone.save_to_preset(path)
    return path


def _backbone(preset):
    return keras_hub.models.GPT2Backbone.from_preset(preset)


def _inputs(batch=2, length=7):
    rng = np.random.default_rng(0)
    mask = np.ones((batch, length), "int32")
    mask[0, length - 2:] = 0  # right padding, as keras-hub's preprocessors pad
    return {"token_ids": rng.integers(0, VOCAB, (batch, length)).astype("int32"),
            "padding_mask": mask}


# Converted once per module (the tests only read them): conversions dominate the run time.


@pytest.fixture(scope="module")
def backbone(preset):
    return _backbone(preset)


@pytest.fixture(scope="module")
def ta(backbone):
    """The FFN widened, new neurons with zero output rows."""
    return hub.from_keras_hub(backbone, ta_intermediate_dim=TA_FFN)


@pytest.fixture(scope="module")
def ta_heads(backbone):
    """FFN and heads widened, random new neurons: a TA that differs from the Student."""
    return hub.from_keras_hub(backbone, TA_FFN, ta_num_heads=2 * HEADS, new_neurons="random",
                              seed=3)


def _run(model, x, widths=None):
    if widths is None:
        return to_numpy(model(x))
    with keras_matta.WidthScope(model, widths):
        return to_numpy(model(x))


def test_student_width_reproduces_the_pretrained_backbone(backbone, ta):
    x = _inputs()
    expected = to_numpy(backbone(x))
    assert isinstance(ta, hub.MatGPT2Backbone)
    np.testing.assert_allclose(_run(ta, x, FFN), expected, atol=1e-4)
    # zero_output: the new neurons are computed but read by zero rows, so the TA is a copy.
    np.testing.assert_allclose(_run(ta, x), expected, atol=1e-4)
    block, stock = ta.transformer_layers[0], backbone.transformer_layers[0]
    w_in = to_numpy(block._ffn_intermediate.kernel)
    np.testing.assert_array_equal(
        w_in[:, :FFN], to_numpy(stock._feedforward_intermediate_dense.kernel)
    )
    new_columns = w_in[:, FFN:]
    assert 0.3 < new_columns.std() / w_in[:, :FFN].std() < 3.0  # pretrained scale, not dead
    np.testing.assert_array_equal(to_numpy(block._ffn_output.kernel)[FFN:], 0.0)


def test_nested_heads_and_random_new_neurons_keep_the_student_exact(backbone, ta_heads):
    x = _inputs()
    expected = to_numpy(backbone(x))
    assert ta_heads.transformer_layers[0].nested_dims() == {
        "intermediate_dim": TA_FFN, "num_heads": 2 * HEADS}
    np.testing.assert_allclose(_run(ta_heads, x, ta_heads.source_widths()), expected, atol=1e-4)
    assert np.abs(_run(ta_heads, x) - expected).max() > 1e-4  # new output rows ~ N(0, std^2)
    attention = ta_heads.transformer_layers[1]._attention
    stock = backbone.transformer_layers[1]._self_attention_layer
    np.testing.assert_array_equal(
        to_numpy(attention.query_kernel)[:, :HEADS], to_numpy(stock._query_dense.kernel)
    )
    again = hub.from_keras_hub(backbone, TA_FFN, ta_num_heads=2 * HEADS, new_neurons="random",
                               seed=3)
    np.testing.assert_array_equal(_run(again, x), _run(ta_heads, x))  # the seed fixes the TA


def test_extract_gives_back_the_original_gpt2_backbone(backbone, ta, ta_heads):
    x = _inputs()
    for model in (ta, ta_heads):
        student = keras_matta.extract(model, model.source_widths())
        assert type(student) is keras_hub.models.GPT2Backbone
        config, original = student.get_config(), backbone.get_config()
        config.pop("name"), original.pop("name")
        assert config == original
        for got, want in zip(student.weights, backbone.weights):
            assert got.path.split("/", 1)[1] == want.path.split("/", 1)[1]
            np.testing.assert_array_equal(to_numpy(got), to_numpy(want))
        np.testing.assert_allclose(to_numpy(student(x)), to_numpy(backbone(x)), atol=1e-4)
    # The int spec of the issue: the backbone's own intermediate_dim.
    student = keras_matta.extract(ta, backbone.intermediate_dim)
    assert student.intermediate_dim == FFN and student.count_params() == backbone.count_params()


def test_extracted_student_generates_and_saves_to_preset(backbone, ta_heads, tmp_path):
    x = _inputs(batch=1, length=8)
    student = keras_matta.extract(ta_heads, ta_heads.source_widths())
    causal_lm = keras_hub.models.GPT2CausalLM(backbone=student, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    prompt = {"token_ids": x["token_ids"] * np.array([[1] * 3 + [0] * 5]),
              "padding_mask": np.array([[1] * 3 + [0] * 5], "int32")}
    generated = to_numpy(causal_lm.generate(prompt, stop_token_ids=None)["token_ids"])
    np.testing.assert_array_equal(generated[:, :3], prompt["token_ids"][:, :3])
    # Greedy: every new token is the argmax of the *original* backbone's next-token logits.
    full = {"token_ids": generated.astype("int32"), "padding_mask": np.ones_like(generated)}
    logits = to_numpy(backbone.token_embedding(backbone(full), reverse=True))
    np.testing.assert_array_equal(generated[0, 3:], logits[0, 2:-1].argmax(-1))
    student.save_to_preset(str(tmp_path))
    reloaded = keras_hub.models.GPT2Backbone.from_preset(str(tmp_path))
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(backbone(x)), atol=1e-4)


def test_ta_width_extracts_as_a_wider_gpt2(ta, ta_heads):
    x = _inputs()
    wide = keras_matta.extract(ta, None, name="wide")
    assert type(wide) is keras_hub.models.GPT2Backbone and wide.intermediate_dim == TA_FFN
    assert wide.name == "wide"
    np.testing.assert_allclose(to_numpy(wide(x)), _run(ta, x), atol=1e-4)
    # 4 heads of size 4 in a hidden size of 8: not a GPT2Backbone, a Functional model.
    wide_heads = keras_matta.extract(ta_heads, None)
    assert not isinstance(wide_heads, keras_hub.models.GPT2Backbone)
    np.testing.assert_allclose(to_numpy(wide_heads(x)), _run(ta_heads, x), atol=1e-4)


def test_mix_and_match_extracts_a_functional_model(ta_heads):
    x = _inputs()
    spec = {"transformer_layer_0": 6, "transformer_layer_1": {"intermediate_dim": 16,
                                                                "num_heads": 3}}
    mix = keras_matta.extract(ta_heads, spec)
    assert not isinstance(mix, keras_hub.models.GPT2Backbone)
    np.testing.assert_allclose(to_numpy(mix(x)), _run(ta_heads, x, spec), atol=1e-4)
    logits = hub.LogitsModel(mix)  # a Mix'n'Match extraction still gives logits
    assert tuple(logits(x).shape) == (2, 7, VOCAB)


def test_cost_counts_the_extracted_parameters(ta, ta_heads):
    for model, spec in ((ta, {"transformer_layer_0": 6}), (ta, FFN),
                        (ta_heads, ta_heads.source_widths())):
        counted = keras_matta.cost(model, spec, input_shape=[(7,), (7,)])["params"]
        assert counted == keras_matta.extract(model, spec).count_params()


def test_keras_round_trip(backbone, ta_heads, tmp_path):
    x = _inputs()
    ta = hub.LogitsModel(ta_heads)
    path = str(tmp_path / "ta.keras")
    ta.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, hub.LogitsModel)
    assert isinstance(reloaded.backbone, hub.MatGPT2Backbone)
    assert reloaded.backbone.get_config() == ta.backbone.get_config()
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(ta(x)), atol=1e-6)
    widths = ta.backbone.source_widths()
    np.testing.assert_allclose(_run(reloaded, x, widths), _run(ta, x, widths), atol=1e-6)
    student = keras_matta.extract(reloaded, widths)  # LogitsModel in, LogitsModel out
    assert type(student.backbone) is keras_hub.models.GPT2Backbone
    expected = to_numpy(backbone.token_embedding(backbone(x), reverse=True))
    np.testing.assert_allclose(to_numpy(student(x)), expected, atol=1e-4)


def test_mix_and_match_with_a_dropped_block_extracts_what_it_runs(ta_heads):
    # One kept block at 3 heads of size 4 fits no GPT2Backbone: the Functional rebuild, which
    # must skip the dropped block as the uniform path and `cost` do.
    x = _inputs()
    spec = {"transformer_layer_0": {"depth": 0},
            "transformer_layer_1": {"intermediate_dim": 16, "num_heads": 3}}
    mix = keras_matta.extract(ta_heads, spec)
    assert not isinstance(mix, keras_hub.models.GPT2Backbone)
    assert not [layer.name for layer in mix.layers if layer.name.startswith("transformer_layer_0")]
    np.testing.assert_allclose(to_numpy(mix(x)), _run(ta_heads, x, spec), atol=1e-4)
    counted = keras_matta.cost(ta_heads, spec, input_shape=[(7,), (7,)])["params"]
    assert counted == mix.count_params()


def test_bad_arguments_name_the_argument(backbone, ta):
    with pytest.raises(ValueError, match="ta_intermediate_dim.*smaller"):
        hub.from_keras_hub(backbone, ta_intermediate_dim=FFN - 1)
    with pytest.raises(TypeError, match="ta_intermediate_dim"):
        hub.from_keras_hub(backbone, ta_intermediate_dim=20.0)
    with pytest.raises(ValueError, match="ta_num_heads"):
        hub.from_keras_hub(backbone, TA_FFN, ta_num_heads=1)
    with pytest.raises(ValueError, match="new_neurons.*'zeros'"):
        hub.from_keras_hub(backbone, TA_FFN, new_neurons="zeros")
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match="GPT2Backbone.*Sequential"):
        hub.from_keras_hub(plain, TA_FFN)
    with pytest.raises(ValueError, match="no Mat layer"):  # a stock backbone
        keras_matta.extract(backbone, FFN)
    with pytest.raises(ValueError, match="transformer_layer_0"):
        keras_matta.extract(ta, {"transformer_layer_0": TA_FFN + 1})


@pytest.mark.large
def test_gpt2_medium_dimensions(tmp_path):
    """GPT-2 Medium's shapes (24 layers, 1024 hidden, 16 heads, 4096 FFN): ~1.4 GB float32."""
    medium = keras_hub.models.GPT2Backbone(
        vocabulary_size=50257, num_layers=24, num_heads=16, hidden_dim=1024,
        intermediate_dim=4096, max_sequence_length=1024,
    )
    medium.save_to_preset(str(tmp_path))
    del medium
    backbone = keras_hub.models.GPT2Backbone.from_preset(str(tmp_path))
    x = {"token_ids": np.arange(16, dtype="int32")[None] * 97,
         "padding_mask": np.ones((1, 16), "int32")}
    expected = to_numpy(backbone(x))
    ta = hub.from_keras_hub(backbone, ta_intermediate_dim=8192)
    np.testing.assert_allclose(_run(ta, x, 4096), expected, atol=1e-4)
    student = keras_matta.extract(ta, 4096)
    assert student.count_params() == backbone.count_params()
    np.testing.assert_allclose(to_numpy(student(x)), expected, atol=1e-4)


def test_pretrained_gpt2_as_the_ta_reorders_and_keeps_its_function(preset):
    backbone = _backbone(preset)
    ta = hub.from_keras_hub(backbone, ta_num_heads=HEADS)  # the pretrained model is the TA
    x = _inputs()
    before = to_numpy(ta(x))
    result = keras_matta.reorder(ta, x, verbose=0)
    np.testing.assert_allclose(to_numpy(ta(x)), before, rtol=1e-4, atol=1e-4)
    assert set(result.scores["transformer_layer_1"]) == {"intermediate_dim", "num_heads"}
    half = keras_matta.extract(ta, FFN // 2)
    assert isinstance(half, keras_hub.models.GPT2Backbone) and half.intermediate_dim == FFN // 2
