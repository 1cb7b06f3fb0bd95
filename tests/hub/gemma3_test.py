"""Gemma 3 (text-only Gemma3Backbone) as the nested Student of a Mat TA, or as the TA itself.

Every backbone comes from a random configuration written with `save_to_preset` (the offline
`from_preset` path). References are stock keras-hub models: the pretrained backbone, and a
`Gemma3Backbone` of a smaller width whose weights are cut by hand with NumPy from the Mat
variables (not through the `Link` tables that `extract` uses).
"""

import keras
import numpy as np
import pytest
from helpers import NOT_ON_JAX_EAGER
from helpers import to_numpy
from hub.gemma_reference import check_soft_capped_logits
from hub.gemma_reference import gemma_inputs
from hub.gemma_reference import run_at
from hub.gemma_reference import sliced_by_hand

import keras_matta

keras_hub = pytest.importorskip("keras_hub")
hub = pytest.importorskip("keras_matta.hub")
pytestmark = NOT_ON_JAX_EAGER

VOCAB, HEADS, KV_HEADS, HIDDEN, HEAD_DIM = 64, 4, 2, 16, 6  # 6 * 4 != 16: a free head size
UNITS = 12  # Gemma 3's intermediate_dim counts FFN units (gate_dim_reduction=1)
GLOBAL_ONLY = dict(  # no sliding windows: every block global (wavelength 1e6, its scaling)
    num_layers=2, global_rope_scaling_factor=8.0, local_rope_scaling_factor=3.0,
    final_logit_soft_cap=3.0,
)
LOCAL_AND_GLOBAL = dict(  # every option, at values where a wrong implementation shows
    num_layers=6,  # keras-hub's pattern: blocks 0-4 local, block 5 global
    use_sliding_window_attention=True, sliding_window_size=2, local_rope_scaling_factor=2.0,
    global_rope_scaling_factor=8.0, use_post_ffw_norm=True, use_post_attention_norm=True,
    attention_logit_soft_cap=2.0, final_logit_soft_cap=3.0, query_head_dim_normalize=False,
    layer_norm_epsilon=0.1,
)
# Six blocks of float32 norms (keras-hub computes them in float32 whatever the dtype) in
# another matmul order than keras-hub's: up to 2e-5 apart on some backends (3e-6 with float64
# weights, so rounding, not a different function).
ATOL = 5e-5


def _gemma3(image_size=None, **options):
    return keras_hub.models.Gemma3Backbone(
        vocabulary_size=VOCAB, image_size=image_size, num_query_heads=HEADS,
        num_key_value_heads=KV_HEADS, hidden_dim=HIDDEN, intermediate_dim=UNITS,
        head_dim=HEAD_DIM, **options,
    )


def _write_preset(path, seed, **options):
    keras.utils.set_random_seed(seed)
    backbone = _gemma3(**options)
    rng = np.random.default_rng(seed)  # norm scales (query/key norms too) start at 0: move them
    for variable in backbone.weights:
        if len(variable.shape) == 1:
            variable.assign(rng.uniform(-0.5, 0.5, variable.shape).astype("float32"))
    backbone.save_to_preset(str(path))
    return str(path)


@pytest.fixture(scope="module")
def global_only(tmp_path_factory):
    return _write_preset(tmp_path_factory.mktemp("gemma3_global"), seed=1, **GLOBAL_ONLY)


@pytest.fixture(scope="module")
def local_and_global(tmp_path_factory):
    return _write_preset(tmp_path_factory.mktemp("gemma3_local"), seed=2, **LOCAL_AND_GLOBAL)


def _inputs():
    return gemma_inputs(VOCAB)


_run = run_at


def _by_hand(ta, units, heads):
    """A stock Gemma3Backbone at `units`, `heads`, its weights sliced with NumPy."""
    return sliced_by_hand(keras_hub.models.Gemma3Backbone, ta, (
        "vocabulary_size", "image_size", "num_layers", "hidden_dim", "head_dim",
        "query_head_dim_normalize", "use_query_key_norm", "use_post_ffw_norm",
        "use_post_attention_norm", "attention_logit_soft_cap", "final_logit_soft_cap",
        "use_sliding_window_attention", "sliding_window_size", "local_rope_scaling_factor",
        "global_rope_scaling_factor", "layer_norm_epsilon"), units, units, heads)


def test_gemma3_grows_into_a_ta_whose_student_is_the_pretrained_model(global_only):
    backbone = keras_hub.models.Gemma3Backbone.from_preset(global_only)
    ta = hub.from_keras_hub(backbone, ta_intermediate_dim=UNITS + 4, ta_num_heads=2 * HEADS)
    x = _inputs()
    expected = to_numpy(backbone(x))
    assert isinstance(ta, hub.MatGemma3Backbone) and ta.num_key_value_heads == 2 * KV_HEADS
    assert ta.source_widths()["transformer_layer_0"] == {
        "intermediate_dim": UNITS, "num_query_heads": HEADS}
    assert [block.rope_scaling_factor for block in ta.transformer_layers] == [8.0, 8.0]
    np.testing.assert_allclose(_run(ta, x, ta.source_widths()), expected, atol=1e-5)
    np.testing.assert_allclose(_run(ta, x), expected, atol=1e-5)  # zero_output: a copy
    student = keras_matta.extract(ta, ta.source_widths())
    assert type(student) is keras_hub.models.Gemma3Backbone
    config, original = student.get_config(), backbone.get_config()
    config.pop("name"), original.pop("name")
    assert config == original
    for got, want in zip(student.weights, backbone.weights):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))


def test_gemma3_as_the_ta_reorders_and_extracts_a_hand_sliced_gemma3(local_and_global,
                                                                     tmp_path):
    backbone = keras_hub.models.Gemma3Backbone.from_preset(local_and_global)
    ta = hub.from_keras_hub(backbone, ta_num_heads=HEADS)  # the pretrained model is the TA
    assert [block.rope_wavelength for block in ta.transformer_layers] == [1e4] * 5 + [1e6]
    x = _inputs()
    before = to_numpy(ta(x))
    np.testing.assert_allclose(before, to_numpy(backbone(x)), atol=ATOL)
    query_norm = to_numpy(ta.transformer_layers[5]._attention.query_norm.scale)
    result = keras_matta.reorder(ta, x, verbose=0)
    np.testing.assert_allclose(to_numpy(ta(x)), before, atol=ATOL)
    # Shared by every head: reordering heads leaves it as it was.
    np.testing.assert_array_equal(
        to_numpy(ta.transformer_layers[5]._attention.query_norm.scale), query_norm)
    scores = result.scores["transformer_layer_5"]
    assert len(scores["intermediate_dim"]) == UNITS and len(scores["num_query_heads"]) == KV_HEADS
    spec = ta.width_spec(intermediate_dim=UNITS // 3, num_heads=HEADS // 2)
    small = keras_matta.extract(ta, spec)
    assert type(small) is keras_hub.models.Gemma3Backbone
    assert (small.intermediate_dim, small.num_query_heads, small.num_key_value_heads) == (
        UNITS // 3, HEADS // 2, KV_HEADS // 2)
    reference = to_numpy(_by_hand(ta, UNITS // 3, HEADS // 2)(x))
    np.testing.assert_allclose(_run(ta, x, spec), reference, atol=ATOL)
    np.testing.assert_allclose(to_numpy(small(x)), reference, atol=ATOL)
    small.save_to_preset(str(tmp_path / "small"))
    reloaded = keras_hub.models.Gemma3Backbone.from_preset(str(tmp_path / "small"))
    np.testing.assert_allclose(to_numpy(reloaded(x)), reference, atol=1e-6)


def test_logits_keep_the_final_soft_cap_and_the_keras_file_round_trips(global_only, tmp_path):
    backbone = keras_hub.models.Gemma3Backbone.from_preset(global_only)
    check_soft_capped_logits(backbone, UNITS + 4, GLOBAL_ONLY["final_logit_soft_cap"], _inputs(),
                             str(tmp_path / "gemma3.keras"))


def test_dropped_blocks_keep_the_five_local_one_global_pattern(local_and_global):
    x = _inputs()
    ta = hub.from_keras_hub(keras_hub.models.Gemma3Backbone.from_preset(local_and_global))
    # Dropping the global block 5 leaves blocks 0-4 local, as a 5-block Gemma3Backbone has
    # them; dropping block 0 would move the global block to index 4, which keras-hub makes
    # local: a Functional model of keras-hub blocks instead.
    for drop, stock in ((5, True), (0, False)):
        spec = ta.width_spec(intermediate_dim=UNITS // 2, drop=[drop])
        shallow = keras_matta.extract(ta, spec)
        assert (type(shallow) is keras_hub.models.Gemma3Backbone) is stock
        np.testing.assert_allclose(to_numpy(shallow(x)), _run(ta, x, spec), atol=ATOL)
        cost = keras_matta.cost(ta, spec, input_shape=[(6,), (6,)])
        assert cost["params"] == shallow.count_params()


def test_cost_counts_the_extracted_gemma3_and_widths_keep_whole_groups(global_only):
    ta = hub.from_keras_hub(keras_hub.models.Gemma3Backbone.from_preset(global_only),
                            ta_num_heads=HEADS)
    spec = ta.width_spec(intermediate_dim=5, num_heads=2)
    cost = keras_matta.cost(ta, spec, input_shape=[(7,), (7,)])
    assert cost["params"] == keras_matta.extract(ta, spec).count_params()
    # FLOPs per block (T = 7): Q/K/V/O projections, QK^T and AV, three FFN matmuls of 5 units;
    # the query/key norms are elementwise.
    t, d, h, h_kv, h_d = 7, HIDDEN, 2, 1, HEAD_DIM
    block = 2 * (t * d * h_d * (2 * h + 2 * h_kv) + 2 * h * t * t * h_d + 3 * t * d * 5)
    assert cost["flops"] == GLOBAL_ONLY["num_layers"] * block
    with pytest.raises(ValueError, match=r"num_query_heads=3 .*allowed: \[2, 4\]"):
        keras_matta.resolve_widths(ta, {"transformer_layer_0": {"num_query_heads": 3}})


def test_unsupported_gemma3_options_are_refused_by_name():
    from keras_hub.src.models.gemma3.gemma3_vision_encoder import Gemma3VisionEncoder

    vision = Gemma3VisionEncoder(image_size=8, patch_size=4, num_heads=1, hidden_dim=4,
                                 num_layers=1, intermediate_dim=4, output_dim=HIDDEN,
                                 pool_size=1)
    refused = [
        ("vision_encoder.*None; got <Gemma3VisionEncoder",
         dict(vision_encoder=vision, image_size=8)),
        ("use_bidirectional_attention.*False; got True",
         dict(use_bidirectional_attention=True)),
        ("is_embedding_model.*False; got True",
         dict(is_embedding_model=True, pooling_intermediate_dim=4, embedding_dim=4)),
    ]
    for message, options in refused:
        backbone = _gemma3(num_layers=1, **options)
        with pytest.raises(ValueError, match=message):
            hub.from_keras_hub(backbone)
    with pytest.raises(ValueError, match="source_class.*Gemma3Backbone.*GemmaBackbone"):
        hub.MatGemma3Backbone(VOCAB, 1, 2, 1, 8, 4, 4, source_class="GemmaBackbone")
