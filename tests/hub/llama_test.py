"""Llama / Llama 3 (gated FFN, RMSNorm, rotary GQA) as the nested Student of a Mat TA."""

import keras
import numpy as np
import pytest
from helpers import NOT_ON_JAX_EAGER
from helpers import to_numpy

import keras_matta

keras_hub = pytest.importorskip("keras_hub")
hub = pytest.importorskip("keras_matta.hub")
pytestmark = NOT_ON_JAX_EAGER

VOCAB, LAYERS, HEADS, KV_HEADS, HIDDEN, FFN = 37, 2, 6, 2, 12, 10  # 3 query heads per group
TA_FFN, TA_HEADS = 16, 9


def _backbone(cls_name="Llama3Backbone", tie=True, seed=1):
    keras.utils.set_random_seed(seed)
    backbone = getattr(keras_hub.models, cls_name)(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_query_heads=HEADS,
        num_key_value_heads=KV_HEADS, hidden_dim=HIDDEN, intermediate_dim=FFN,
        rope_max_wavelength=500, layer_norm_epsilon=1e-5, tie_word_embeddings=tie,
    )
    rng = np.random.default_rng(seed)  # norms away from 1, so a wrong slice cannot pass
    for variable in backbone.weights:
        if len(variable.shape) == 1:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    return backbone


def _inputs(batch=2, length=7):
    rng = np.random.default_rng(0)
    mask = np.ones((batch, length), "int32")
    mask[0, length - 3:] = 0
    return {"token_ids": rng.integers(0, VOCAB, (batch, length)).astype("int32"),
            "padding_mask": mask}


# Converted once per module (the tests only read them): conversions dominate the run time.


@pytest.fixture(scope="module")
def backbone():
    return _backbone()


@pytest.fixture(scope="module")
def ta(backbone):
    """FFN and head groups widened (9 query / 3 key-value heads), zero output rows."""
    return hub.from_keras_hub(backbone, TA_FFN, ta_num_heads=TA_HEADS)


def _run(model, x, widths=None):
    if widths is None:
        return to_numpy(model(x))
    with keras_matta.WidthScope(model, widths):
        return to_numpy(model(x))


def test_student_width_reproduces_the_pretrained_llama(backbone, ta):
    x = _inputs()
    expected = to_numpy(backbone(x))
    assert isinstance(ta, hub.MatLlamaBackbone) and ta.num_key_value_heads == 3
    assert ta.source_widths()["transformer_layer_0"] == {
        "intermediate_dim": FFN, "num_query_heads": HEADS}
    np.testing.assert_allclose(_run(ta, x, ta.source_widths()), expected, atol=1e-4)
    np.testing.assert_allclose(_run(ta, x), expected, atol=1e-4)  # zero_output: a copy
    block, stock = ta.transformer_layers[1], backbone.transformer_layers[1]
    for mat, ref in ((block._ffn_gate, stock._feedforward_gate_dense),
                     (block._ffn_up, stock._feedforward_intermediate_dense)):
        np.testing.assert_array_equal(to_numpy(mat.kernel)[:, :FFN], to_numpy(ref.kernel))
    np.testing.assert_array_equal(to_numpy(block._ffn_down.kernel)[FFN:], 0.0)
    key = to_numpy(block._attention.key_kernel)
    np.testing.assert_array_equal(key[:, :KV_HEADS],
                                  to_numpy(stock._self_attention_layer._key_dense.kernel))
    np.testing.assert_array_equal(to_numpy(block._attention.output_kernel)[HEADS:], 0.0)


def test_left_padded_inputs_match_keras_hub_at_every_unpadded_position(backbone, ta):
    # A query at a left-padded position sees no key. What keras-hub returns there differs by
    # backend (its masked softmax zeroes the row, the fused attention does not) and nothing
    # reads it; every unpadded position must match, at the Student's width and the TA's.
    x = _inputs()
    x["padding_mask"][-1, :2] = 0
    unpadded = x["padding_mask"].astype(bool)
    expected = to_numpy(backbone(x))[unpadded]
    np.testing.assert_allclose(_run(ta, x, ta.source_widths())[unpadded], expected, atol=1e-4)
    np.testing.assert_allclose(_run(ta, x)[unpadded], expected, atol=1e-4)


def test_random_new_neurons_and_ffn_only_widening(backbone):
    x = _inputs()
    ta = hub.from_keras_hub(backbone, TA_FFN, new_neurons="random", seed=0)
    expected = to_numpy(backbone(x))
    assert ta.transformer_layers[0].nested_dims() == {"intermediate_dim": TA_FFN}
    np.testing.assert_allclose(_run(ta, x, FFN), expected, atol=1e-4)
    assert np.abs(_run(ta, x) - expected).max() > 1e-4


def test_gqa_widths_must_keep_whole_groups(backbone, ta):
    with pytest.raises(ValueError, match="transformer_layer_1.*num_query_heads=7.*"
                                         r"allowed: \[3, 6, 9\]"):
        keras_matta.resolve_widths(ta, {"transformer_layer_1": {"num_query_heads": 7}})
    with pytest.raises(ValueError, match="ta_num_heads.*multiple"):
        hub.from_keras_hub(backbone, TA_FFN, ta_num_heads=8)
    with pytest.raises(ValueError, match="ta_num_heads.*smaller"):
        hub.from_keras_hub(backbone, TA_FFN, ta_num_heads=3)
    with pytest.raises(ValueError, match="ta_intermediate_dim.*smaller"):
        hub.from_keras_hub(backbone, FFN - 2)
    # 3 heads of size 2 is a valid runtime width but no keras-hub Llama (head size 12 / 3).
    with pytest.raises(ValueError, match="transformer_layer_0.*head size"):
        keras_matta.extract(ta, ta.width_spec(FFN, 3))


@pytest.mark.parametrize("cls_name", ["Llama3Backbone", "LlamaBackbone"])
def test_extract_gives_back_the_source_class(cls_name):
    backbone, x = _backbone(cls_name, seed=2), _inputs()
    ta = hub.from_keras_hub(backbone, TA_FFN, ta_num_heads=TA_HEADS, new_neurons="random")
    student = keras_matta.extract(ta, ta.source_widths())
    assert type(student) is getattr(keras_hub.models, cls_name)
    config, original = student.get_config(), backbone.get_config()
    config.pop("name"), original.pop("name")
    assert config == original
    assert student.token_embedding.tie_weights
    for got, want in zip(student.weights, backbone.weights):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))
    np.testing.assert_allclose(to_numpy(student(x)), to_numpy(backbone(x)), atol=1e-4)
    with pytest.raises(ValueError, match="head size"):  # the TA: 9 heads of size 2 in 12
        keras_matta.extract(ta, None)


def test_untied_student_generates_and_saves_to_preset(tmp_path):
    backbone, x = _backbone(tie=False), _inputs(batch=1, length=8)
    ta = hub.from_keras_hub(backbone, TA_FFN, new_neurons="random")
    student = keras_matta.extract(ta, FFN)
    assert not student.token_embedding.tie_weights
    causal_lm = keras_hub.models.Llama3CausalLM(backbone=student, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    prompt = {"token_ids": x["token_ids"] * np.array([[1] * 3 + [0] * 5]),
              "padding_mask": np.array([[1] * 3 + [0] * 5], "int32")}
    generated = to_numpy(causal_lm.generate(prompt, stop_token_ids=None)["token_ids"])
    full = {"token_ids": generated.astype("int32"), "padding_mask": np.ones_like(generated)}
    logits = to_numpy(backbone.token_embedding(backbone(full), reverse=True))
    np.testing.assert_array_equal(generated[0, 3:], logits[0, 2:-1].argmax(-1))
    student.save_to_preset(str(tmp_path))
    reloaded = keras_hub.models.Llama3Backbone.from_preset(str(tmp_path))
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(backbone(x)), atol=1e-4)


def test_mix_and_match_extracts_and_costs_what_it_runs(ta):
    x = _inputs()
    spec = {"transformer_layer_0": {"intermediate_dim": 4, "num_query_heads": HEADS},
            "transformer_layer_1": {"intermediate_dim": 14, "num_query_heads": HEADS}}
    mix = keras_matta.extract(ta, spec)
    np.testing.assert_allclose(to_numpy(mix(x)), _run(ta, x, spec), atol=1e-4)
    cost = keras_matta.cost(ta, spec, input_shape=[(7,), (7,)])
    assert cost["params"] == mix.count_params()
    student = keras_matta.extract(ta, ta.source_widths())
    cost = keras_matta.cost(ta, ta.source_widths(), input_shape=[(7,), (7,)])
    assert cost["params"] == student.count_params()
    # FLOPs per block (T = 7, head size 2): Q/K/V/O projections, QK^T and AV, three FFN matmuls.
    t, d, h, h_kv, h_d = 7, HIDDEN, HEADS, KV_HEADS, HIDDEN // HEADS
    block = 2 * (t * d * h_d * (2 * h + 2 * h_kv) + 2 * h * t * t * h_d + 3 * t * d * FFN)
    assert cost["flops"] == LAYERS * block


def test_keras_round_trip(ta, tmp_path):
    x = _inputs()
    ta = hub.LogitsModel(ta)
    path = str(tmp_path / "ta.keras")
    ta.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.backbone.get_config() == ta.backbone.get_config()
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(ta(x)), atol=1e-6)
    widths = ta.backbone.source_widths()
    np.testing.assert_allclose(_run(reloaded, x, widths), _run(ta, x, widths), atol=1e-6)


def test_drawn_widths_equal_the_sliced_widths(ta):
    """MatTA's drawn sub-networks (masks, whole GQA groups) compute what slicing computes."""
    from keras_matta.layers.sampled_width import SampledWidth

    x = _inputs()
    blocks = keras_matta.widths.mat_layers(ta)
    assert all(b.width_multiple("num_query_heads") == 3 for b in blocks)
    widths = [{"intermediate_dim": 5, "num_query_heads": 3},
              {"intermediate_dim": 16, "num_query_heads": 6}]
    for block, width in zip(blocks, widths):
        block._select_width({dim: SampledWidth(keras.ops.convert_to_tensor(value, "int32"))
                             for dim, value in width.items()})
    try:
        drawn = to_numpy(ta(x))
    finally:
        for block in blocks:
            block._select_width(None)
    sliced = _run(ta, x, {b.name: w for b, w in zip(blocks, widths)})
    np.testing.assert_allclose(drawn, sliced, rtol=1e-5, atol=1e-5)


def test_matta_draws_whole_query_head_groups(ta):
    from keras_matta.training import WidthDraws

    student = {"intermediate_dim": 4, "num_query_heads": 3}
    draws = WidthDraws(ta, [{b.name: student for b in keras_matta.widths.mat_layers(ta)}])
    seeds = keras.random.SeedGenerator(0)
    heads = set()
    for _ in range(30):
        with draws.scope(seeds) as selection:
            for width in selection.values():
                heads.add(int(keras.ops.convert_to_numpy(width["num_query_heads"].count)))
    assert heads == {3, 6, 9}


@pytest.mark.parametrize("method", ["activation", "taylor"])
def test_pretrained_llama_as_the_ta_reorders_whole_groups_and_keeps_its_function(method):
    backbone = _backbone(seed=2)
    ta = hub.from_keras_hub(backbone, ta_num_heads=HEADS)  # the pretrained model is the TA
    model = hub.LogitsModel(ta)
    x = _inputs()
    y = np.roll(x["token_ids"], -1, axis=1)
    before = to_numpy(model(x))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    result = keras_matta.reorder(model, (x, y, x["padding_mask"]), method=method, loss=loss,
                                 verbose=0)
    np.testing.assert_allclose(to_numpy(model(x)), before, rtol=1e-4, atol=1e-4)
    block = result.scores["transformer_layer_0"]
    assert len(block["intermediate_dim"]) == FFN
    assert len(block["num_query_heads"]) == KV_HEADS  # one score per group of 3 query heads
    # A uniform prefix extracts into the source class, equal to the Mat model at that width.
    width = {"intermediate_dim": FFN // 2}
    stock = keras_matta.extract(ta, ta.width_spec(**width))
    assert type(stock) is type(backbone) and stock.intermediate_dim == FFN // 2
    with keras_matta.WidthScope(ta, ta.width_spec(**width)):
        np.testing.assert_allclose(to_numpy(stock(x)), to_numpy(ta(x)), rtol=1e-4, atol=1e-4)


def test_dropped_blocks_extract_into_a_shallower_llama(backbone):
    ta = hub.from_keras_hub(backbone)  # the pretrained model as the TA
    x = _inputs()
    scores = keras_matta.block_importance(ta, x)
    assert set(scores) == {"transformer_layer_0", "transformer_layer_1"}
    weakest = min(scores, key=scores.get)
    spec = ta.width_spec(intermediate_dim=FFN // 2, drop=[weakest])
    shallow = keras_matta.extract(ta, spec)
    assert type(shallow) is type(backbone) and shallow.num_layers == LAYERS - 1
    with keras_matta.WidthScope(ta, spec):
        np.testing.assert_allclose(to_numpy(shallow(x)), to_numpy(ta(x)), atol=1e-5)
    assert keras_matta.cost(ta, spec, input_shape=[(7,), (7,)])["params"] == shallow.count_params()
    with pytest.raises(ValueError, match="`drop` must hold block names or indices"):
        ta.width_spec(drop=[LAYERS])
