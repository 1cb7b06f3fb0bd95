"""`keras_matta.peak_memory` against byte counts done by hand."""

import keras
import pytest

import keras_matta

F32 = 4  # bytes per float32


def mlp():
    return keras.Sequential([keras.Input((6,)),
                             keras_matta.MatDense(16, activation="relu", name="hidden_1"),
                             keras_matta.MatDense(8, activation="relu", name="hidden_2"),
                             keras_matta.MatDense(3, nested=False, name="logits")])


def transformer(intermediate_dim=16):
    inputs = keras.Input((5, 8))  # T = 5 tokens of d = 8
    x = keras_matta.MatTransformerBlock(intermediate_dim, 2, nested_heads=True,
                                        name="block")(inputs)  # 2 heads of key_dim 4
    return keras.Model(inputs, keras_matta.MatDense(3, nested=False, name="logits")(x))


def test_mlp_by_hand():
    memory = keras_matta.peak_memory(mlp(), {"hidden_1": 4, "hidden_2": 8}, batch_size=4)
    # Weights: 6*4+4 + 4*8+8 + 8*3+3 = 28 + 40 + 27 = 95 float32.
    # Tensors at batch 4: x (4, 6) = 24, h1 (4, 4) = 16, h2 (4, 8) = 32, logits (4, 3) = 12.
    # Each layer holds its input (read for the last time) and its output:
    # hidden_1: 24 + 16 = 40; hidden_2: 16 + 32 = 48 (x freed); logits: 32 + 12 = 44.
    assert memory == {"weight_bytes": 95 * F32, "activation_bytes": 48 * F32,
                      "peak_bytes": (95 + 48) * F32}


def test_transformer_block_by_hand():
    model = transformer()
    memory = keras_matta.peak_memory(model, {"block": {"intermediate_dim": 4}}, batch_size=2)
    # Weights: LN_1 and LN_2 2*8 each; Q, K, V kernels 8*2*4 + bias 2*4 = 72 each; output
    # kernel 2*4*8 + bias 8 = 72; FFN 8*4+4 = 36 and 4*8+8 = 40; logits 8*3+3 = 27.
    weights = 16 + 3 * 72 + 72 + 16 + 36 + 40 + 27
    assert weights == keras_matta.cost(model, {"block": {"intermediate_dim": 4}})["params"]
    # At batch 2, one (B, T, d) tensor X is 2*5*8 = 80 floats. Attention: Q, K, V
    # (B, T, h, key_dim) = 2*5*2*4 = 80 each, the scores (B, h, T, T) = 2*2*5*5 = 100.
    # While attention runs: x (kept for the residual), LN_1(x), Q, K, V, scores, its output
    # = 80 + 80 + 3*80 + 100 + 80 = 580; the FFN phase holds u, LN_2(u) and the hidden
    # (B, T, 4) = 40, 200 in all; the logits layer y + (2, 5, 3) = 110.
    assert memory == {"weight_bytes": weights * F32, "activation_bytes": 580 * F32,
                      "peak_bytes": (weights + 580) * F32}
    # One head: Q, K, V 40 each and scores 50, so attention holds 240 + 170 = 410.
    one_head = keras_matta.peak_memory(model, {"block": {"intermediate_dim": 4, "num_heads": 1}},
                                       batch_size=2)
    assert one_head["activation_bytes"] == 410 * F32


def test_a_wide_ffn_hidden_sets_the_peak():
    memory = keras_matta.peak_memory(transformer(intermediate_dim=64), batch_size=2)
    # The FFN hidden (2, 5, 64) = 640 floats, with u and LN_2(u) (80 each): 800 > 580.
    assert memory["activation_bytes"] == 800 * F32


def llama_block_model(intermediate_dim):
    hub = pytest.importorskip("keras_matta.hub")
    inputs = keras.Input((5, 8))  # T = 5 tokens of d = 8
    x = hub.MatLlamaDecoder(intermediate_dim, num_query_heads=4, num_key_value_heads=2,
                            nested_heads=True, name="block")(inputs)  # heads of size 8/4 = 2
    return keras.Model(inputs, keras_matta.MatDense(3, nested=False, name="logits")(x))


def test_llama_decoder_block_by_hand():
    model = llama_block_model(16)
    spec = {"block": {"intermediate_dim": 4, "num_query_heads": 2}}
    memory = keras_matta.peak_memory(model, spec, batch_size=2)
    assert memory["weight_bytes"] == keras_matta.cost(model, spec)["params"] * F32
    # At batch 2, X = 2*5*8 = 80 floats. Two query heads of size 2 (one key/value head,
    # repeated to two): Q, K, V (B, T, 2, 2) = 40 each, scores (B, 2, T, T) = 100. Attention
    # holds x, N_1(x), Q, K, V, the scores and its output: 80 + 80 + 120 + 100 + 80 = 460. The
    # gated FFN at 4 units (hidden (B, T, 4) = 40): u, N_2(u), gate, up = 240; u, gate, up
    # and their product = 200; the residual u, f, y = 240. The logits: 80 + 30.
    assert memory["activation_bytes"] == 460 * F32


def test_a_wide_gated_ffn_sets_the_peak_with_three_hidden_tensors():
    memory = keras_matta.peak_memory(llama_block_model(64), batch_size=2)
    # Full width: hidden (B, T, 64) = 640. u, gate, up and act(gate) * up: 80 + 3*640 = 2000,
    # above u, N_2(u), gate, up (1440) and attention with 4 heads (80 + 160 + 440 = 680).
    assert memory["activation_bytes"] == 2000 * F32


@pytest.mark.parametrize("spec", [0.25, 0.5, {"hidden_1": 0.25, "hidden_2": 1.0}])
def test_the_extracted_model_counts_the_same(spec):
    model = mlp()
    assert (keras_matta.peak_memory(keras_matta.extract(model, spec), batch_size=3)
            == keras_matta.peak_memory(model, spec, batch_size=3))


def test_the_extracted_transformer_counts_the_same_layer_by_layer():
    # The stock model has LayerNormalization, MultiHeadAttention, Dropout, Add, Dense layers:
    # the block's count is theirs, in the same order.
    model = transformer(intermediate_dim=64)
    for spec in (0.25, {"block": {"intermediate_dim": 16, "num_heads": 1}}, 1.0):
        assert (keras_matta.peak_memory(keras_matta.extract(model, spec), batch_size=2)
                == keras_matta.peak_memory(model, spec, batch_size=2))


def test_peak_memory_grows_with_every_width_and_the_batch():
    model = mlp()
    choices = (4, 8, 16)
    peaks = {(a, b): keras_matta.peak_memory(model, {"hidden_1": a, "hidden_2": b // 2},
                                             batch_size=4)["peak_bytes"]
             for a in choices for b in choices}
    for (a, b), peak in peaks.items():
        for (a2, b2), other in peaks.items():
            if a <= a2 and b <= b2 and (a, b) != (a2, b2):
                assert peak < other, ((a, b), (a2, b2))
    assert (keras_matta.peak_memory(model, 0.5, batch_size=8)["activation_bytes"]
            == 2 * keras_matta.peak_memory(model, 0.5, batch_size=4)["activation_bytes"])


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, None])
def test_a_bad_batch_size_is_named(batch_size):
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive int; got"):
        keras_matta.peak_memory(mlp(), 0.5, batch_size=batch_size)
