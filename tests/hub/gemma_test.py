"""Gemma 1 and 2 (GemmaBackbone) as the nested Student of a Mat TA, or as the TA itself.

Every backbone comes from a random configuration written with `save_to_preset` (the offline
`from_preset` path). References are stock keras-hub models: the pretrained backbone, and a
`GemmaBackbone` of a smaller width whose weights are cut by hand with NumPy from the Mat
variables (not through the `Link` tables that `extract` uses).
"""

import keras
import numpy as np
import pytest
from helpers import to_numpy
from hub.gemma_reference import check_soft_capped_logits
from hub.gemma_reference import gemma_inputs
from hub.gemma_reference import run_at
from hub.gemma_reference import sliced_by_hand

import keras_matta

keras_hub = pytest.importorskip("keras_hub")
hub = pytest.importorskip("keras_matta.hub")

VOCAB, LAYERS, HEADS, KV_HEADS, HIDDEN, HEAD_DIM = 64, 2, 4, 2, 16, 6  # 6 * 4 != 16: free
INTERMEDIATE = 24  # keras-hub's count (gate + up columns): 12 FFN units
UNITS = INTERMEDIATE // 2
GEMMA2 = dict(  # every Gemma 2 option, at values where a wrong implementation shows
    use_post_ffw_norm=True, use_post_attention_norm=True, attention_logit_soft_cap=2.0,
    final_logit_soft_cap=3.0, use_sliding_window_attention=True, sliding_window_size=2,
    query_head_dim_normalize=False, layer_norm_epsilon=0.1,
)


def _write_preset(path, seed, **options):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_query_heads=HEADS,
        num_key_value_heads=KV_HEADS, hidden_dim=HIDDEN, intermediate_dim=INTERMEDIATE,
        head_dim=HEAD_DIM, **options,
    )
    rng = np.random.default_rng(seed)  # norm scales start at 0 (1 + scale): move them
    for variable in backbone.weights:
        if len(variable.shape) == 1:
            variable.assign(rng.uniform(-0.5, 0.5, variable.shape).astype("float32"))
    backbone.save_to_preset(str(path))
    return str(path)


@pytest.fixture(scope="module")
def gemma1(tmp_path_factory):
    return _write_preset(tmp_path_factory.mktemp("gemma1"), seed=1)


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory):
    return _write_preset(tmp_path_factory.mktemp("gemma2"), seed=2, **GEMMA2)


def _inputs():
    return gemma_inputs(VOCAB)


_run = run_at


def _by_hand(ta, units, heads):
    """A stock GemmaBackbone at `units`, `heads`, its weights sliced with NumPy."""
    return sliced_by_hand(keras_hub.models.GemmaBackbone, ta, (
        "vocabulary_size", "num_layers", "hidden_dim", "head_dim", "query_head_dim_normalize",
        "use_post_ffw_norm", "use_post_attention_norm", "attention_logit_soft_cap",
        "final_logit_soft_cap", "use_sliding_window_attention", "sliding_window_size",
        "layer_norm_epsilon"), 2 * units, units, heads)


def test_gemma1_grows_into_a_ta_whose_student_is_the_pretrained_model(gemma1):
    backbone = keras_hub.models.GemmaBackbone.from_preset(gemma1)
    ta = hub.from_keras_hub(backbone, ta_intermediate_dim=2 * UNITS, ta_num_heads=2 * HEADS)
    x = _inputs()
    expected = to_numpy(backbone(x))
    assert isinstance(ta, hub.MatGemmaBackbone) and ta.num_key_value_heads == 2 * KV_HEADS
    assert ta.source_widths()["transformer_layer_0"] == {
        "intermediate_dim": UNITS, "num_query_heads": HEADS}
    np.testing.assert_allclose(_run(ta, x, ta.source_widths()), expected, atol=1e-5)
    np.testing.assert_allclose(_run(ta, x), expected, atol=1e-5)  # zero_output: a copy
    student = keras_matta.extract(ta, ta.source_widths())
    assert type(student) is keras_hub.models.GemmaBackbone
    config, original = student.get_config(), backbone.get_config()
    config.pop("name"), original.pop("name")
    assert config == original
    for got, want in zip(student.weights, backbone.weights):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))


def test_gemma2_as_the_ta_reorders_and_extracts_a_hand_sliced_gemma(gemma2, tmp_path):
    backbone = keras_hub.models.GemmaBackbone.from_preset(gemma2)
    ta = hub.from_keras_hub(backbone, ta_num_heads=HEADS)  # the pretrained model is the TA
    x = _inputs()
    before = to_numpy(ta(x))
    np.testing.assert_allclose(before, to_numpy(backbone(x)), atol=1e-5)
    result = keras_matta.reorder(ta, x, verbose=0)
    np.testing.assert_allclose(to_numpy(ta(x)), before, atol=1e-5)
    scores = result.scores["transformer_layer_1"]
    assert len(scores["intermediate_dim"]) == UNITS and len(scores["num_query_heads"]) == KV_HEADS
    spec = ta.width_spec(intermediate_dim=UNITS // 3, num_heads=HEADS // 2)
    small = keras_matta.extract(ta, spec)
    assert type(small) is keras_hub.models.GemmaBackbone
    assert (small.intermediate_dim, small.num_query_heads, small.num_key_value_heads) == (
        2 * (UNITS // 3), HEADS // 2, KV_HEADS // 2)
    reference = to_numpy(_by_hand(ta, UNITS // 3, HEADS // 2)(x))
    np.testing.assert_allclose(_run(ta, x, spec), reference, atol=1e-5)
    np.testing.assert_allclose(to_numpy(small(x)), reference, atol=1e-5)
    small.save_to_preset(str(tmp_path / "small"))
    reloaded = keras_hub.models.GemmaBackbone.from_preset(str(tmp_path / "small"))
    np.testing.assert_allclose(to_numpy(reloaded(x)), reference, atol=1e-6)


def test_logits_keep_the_final_soft_cap_and_the_keras_file_round_trips(gemma2, tmp_path):
    backbone = keras_hub.models.GemmaBackbone.from_preset(gemma2)
    check_soft_capped_logits(backbone, UNITS + 4, GEMMA2["final_logit_soft_cap"], _inputs(),
                             str(tmp_path / "gemma.keras"))


def test_dropped_blocks_keep_sliding_windows_where_gemma_puts_them(gemma1, gemma2):
    x = _inputs()
    ta1 = hub.from_keras_hub(keras_hub.models.GemmaBackbone.from_preset(gemma1))
    spec = ta1.width_spec(intermediate_dim=UNITS // 2, drop=[0])
    shallow = keras_matta.extract(ta1, spec)
    assert type(shallow) is keras_hub.models.GemmaBackbone and shallow.num_layers == LAYERS - 1
    np.testing.assert_allclose(to_numpy(shallow(x)), _run(ta1, x, spec), atol=1e-5)
    cost = keras_matta.cost(ta1, spec, input_shape=[(6,), (6,)])
    assert cost["params"] == shallow.count_params()
    ta2 = hub.from_keras_hub(keras_hub.models.GemmaBackbone.from_preset(gemma2))
    # Block 1 (global) would become block 0 of a GemmaBackbone, which is local: a Functional
    # model of keras-hub blocks instead; dropping block 1 keeps block 0 local, as Gemma's.
    for drop, stock in ((0, False), (1, True)):
        spec = ta2.width_spec(intermediate_dim=UNITS // 2, drop=[drop])
        shallow = keras_matta.extract(ta2, spec)
        assert (type(shallow) is keras_hub.models.GemmaBackbone) is stock
        np.testing.assert_allclose(to_numpy(shallow(x)), _run(ta2, x, spec), atol=1e-5)


def test_cost_counts_the_extracted_gemma_and_widths_keep_whole_groups(gemma1):
    ta = hub.from_keras_hub(keras_hub.models.GemmaBackbone.from_preset(gemma1),
                            ta_num_heads=HEADS)
    spec = ta.width_spec(intermediate_dim=5, num_heads=2)
    cost = keras_matta.cost(ta, spec, input_shape=[(7,), (7,)])
    assert cost["params"] == keras_matta.extract(ta, spec).count_params()
    # FLOPs per block (T = 7): Q/K/V/O projections, QK^T and AV, three FFN matmuls of 5 units.
    t, d, h, h_kv, h_d = 7, HIDDEN, 2, 1, HEAD_DIM
    block = 2 * (t * d * h_d * (2 * h + 2 * h_kv) + 2 * h * t * t * h_d + 3 * t * d * 5)
    assert cost["flops"] == LAYERS * block
    with pytest.raises(ValueError, match=r"num_query_heads=3 .*allowed: \[2, 4\]"):
        keras_matta.resolve_widths(ta, {"transformer_layer_0": {"num_query_heads": 3}})


def test_bad_arguments_name_the_argument_and_what_is_allowed(gemma1):
    backbone = keras_hub.models.GemmaBackbone.from_preset(gemma1)
    with pytest.raises(ValueError, match=r"ta_intermediate_dim`=10.*FFN units \(12\)"):
        hub.from_keras_hub(backbone, ta_intermediate_dim=UNITS - 2)
    with pytest.raises(ValueError, match="ta_num_heads`=5 must be a multiple of the .* 2"):
        hub.from_keras_hub(backbone, ta_num_heads=5)
    with pytest.raises(ValueError, match="sliding_window_size.*positive int or None.*0"):
        hub.MatGemmaDecoder(8, 2, 1, sliding_window_size=0)
    with pytest.raises(ValueError, match="logit_soft_cap.*positive number or None.*-1"):
        hub.MatGemmaAttention(2, 1, 4, logit_soft_cap=-1.0)
    with pytest.raises(ValueError, match="source_class.*GemmaBackbone.*Gemma3Backbone"):
        hub.MatGemmaBackbone(VOCAB, 1, 2, 1, 8, 4, 4, source_class="Gemma3Backbone")
