"""MatTransformerBlock against a NumPy reference and against its extracted stock subgraph."""

import math
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

import keras_matta
from keras_matta.layers.mat_transformer_block import MatTransformerBlock

B, T, D, I, H, VOCAB = 2, 5, 8, 12, 4, 11  # key_dim = D // H = 2
PADDING = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype="int32")


def _np(x):
    return ops.convert_to_numpy(x)


def _block(name="block", **kwargs):
    block = MatTransformerBlock(I, H, name=name, **kwargs)
    block.build((B, T, D))
    rng = np.random.default_rng(1)  # non-zero biases and norms: wrong slices cannot pass
    block.set_weights([0.5 * rng.standard_normal(w.shape).astype("float32") for w in block.weights])
    return block


def _x():
    return np.random.default_rng(0).standard_normal((B, T, D)).astype("float32")


# === NumPy reference ===


def _np_layer_norm(x, gamma, beta, epsilon):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0))),
}


def _np_block(block, x, k, h, mask, activation):
    """x + MHA_h(LN1 x); then + W_out[:k] act(W_in[:, :k] LN2 .) with hand-sliced weights."""
    w = lambda v: _np(v).astype("float64")  # noqa: E731
    att, eps = block._attention, block.layer_norm_epsilon
    x = x.astype("float64")
    n = _np_layer_norm(x, w(block._attention_norm.gamma), w(block._attention_norm.beta), eps)
    q = np.einsum("btd,dnk->btnk", n, w(att.query_kernel)[:, :h]) + w(att.query_bias)[:h]
    kk = np.einsum("btd,dnk->btnk", n, w(att.key_kernel)[:, :h]) + w(att.key_bias)[:h]
    v = np.einsum("btd,dnk->btnk", n, w(att.value_kernel)[:, :h]) + w(att.value_bias)[:h]
    scores = np.einsum("btnk,bsnk->bnts", q, kk) / math.sqrt(att.key_dim)
    if mask is not None:
        scores = np.where(mask[:, None], scores, -1e9)
    context = np.einsum("bnts,bsnk->btnk", _np_softmax(scores), v)
    x = x + np.einsum("btnk,nko->bto", context, w(att.output_kernel)[:h]) + w(att.output_bias)
    n = _np_layer_norm(x, w(block._ffn_norm.gamma), w(block._ffn_norm.beta), eps)
    hidden = n @ w(block._ffn_intermediate.kernel)[:, :k] + w(block._ffn_intermediate.bias)[:k]
    hidden = _ACTIVATIONS[activation](hidden)
    return x + hidden @ w(block._ffn_output.kernel)[:k, :] + w(block._ffn_output.bias)


def _np_mask(padding, causal):
    mask = np.ones((B, T, T), dtype=bool)
    if padding is not None:
        mask &= padding.astype(bool)[:, None, :]
    if causal:
        mask &= np.tril(np.ones((T, T), dtype=bool))
    return mask


@pytest.mark.parametrize(
    "activation, nested_heads, width, k, h, padding, causal",
    [
        ("relu", False, None, I, H, None, False),  # full width (TA)
        ("relu", False, 5, 5, H, PADDING, False),  # int: the FFN width
        ("gelu", False, {"intermediate_dim": 3}, 3, H, None, True),
        ("gelu", True, {"intermediate_dim": 4, "num_heads": 1}, 4, 1, PADDING, True),
        ("relu", True, 0.5, 6, 2, PADDING, True),  # a fraction of every nested dimension
    ],
)
def test_block_equals_numpy_reference(activation, nested_heads, width, k, h, padding, causal):
    block = _block(activation=activation, nested_heads=nested_heads, causal=causal)
    x = _x()
    got = _np(block(x, padding_mask=padding, width=width))
    want = _np_block(block, x, k, h, _np_mask(padding, causal), activation)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_attention_mask_and_causal_override():
    block = _block(causal=True)
    x = _x()
    attention_mask = np.random.default_rng(2).random((B, T, T)) > 0.3
    attention_mask |= np.eye(T, dtype=bool)  # every query keeps a key
    got = _np(block(x, attention_mask=attention_mask, use_causal_mask=False, width=7))
    want = _np_block(block, x, 7, H, attention_mask, "relu")
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_dropout_only_in_training():
    block = _block(dropout=0.5)
    x = _x()
    inference = _np(block(x, width=6, training=False))
    np.testing.assert_allclose(inference, _np_block(block, x, 6, H, None, "relu"), atol=1e-5)
    assert not np.allclose(_np(block(x, width=6, training=True)), inference)


# === Widths ===


def test_nested_dims_and_width_specs():
    assert _block().nested_dims() == {"intermediate_dim": I}
    block = _block(nested_heads=True)
    assert block.nested_dims() == {"intermediate_dim": I, "num_heads": H}
    assert block.resolve_width(0.3) == {"intermediate_dim": 4, "num_heads": 1}  # rounds
    assert block.resolve_width(7) == {"intermediate_dim": 7, "num_heads": H}


def test_width_scope_equals_explicit_width():
    inputs = keras.Input((T, D))
    padding = keras.Input((T,), dtype="int32")
    block = _block(nested_heads=True, causal=True)
    model = keras.Model([inputs, padding], block(inputs, padding_mask=padding))
    x, spec = _x(), {"intermediate_dim": 3, "num_heads": 2}
    with keras_matta.WidthScope(model, {"block": spec}):
        scoped = model.predict([x, PADDING], verbose=0)
    np.testing.assert_allclose(scoped, _np(block(x, padding_mask=PADDING, width=spec)), atol=1e-5)
    with keras_matta.WidthScope(model, 0.25):  # I: 3, H: 1
        scoped = _np(model([x, PADDING]))
    want = _np(block(x, padding_mask=PADDING, width={"intermediate_dim": 3, "num_heads": 1}))
    np.testing.assert_allclose(scoped, want, atol=1e-5)


@pytest.mark.parametrize(
    "nested_heads, width, match",
    [
        (False, 0, "intermediate_dim.*must be in \\[1, 12\\]; got 0"),
        (False, I + 1, "intermediate_dim.*must be in \\[1, 12\\]; got 13"),
        (True, {"num_heads": H + 1}, "num_heads.*must be in \\[1, 4\\]; got 5"),
        (False, {"num_heads": 2}, "Unknown nested dimension"),
    ],
)
def test_invalid_widths_raise_naming_the_layer(nested_heads, width, match):
    block = _block(name="my_block", nested_heads=nested_heads)
    with pytest.raises(ValueError, match="my_block") as error:
        block(_x(), width=width)
    assert error.match(match)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"intermediate_dim": 0}, "intermediate_dim"),
        ({"num_heads": 2.5}, "num_heads"),
        ({"num_heads": True}, "num_heads"),  # a bool is no count, although `True == 1`
        ({"key_dim": -1}, "key_dim"),
        ({"dropout": -0.1}, "dropout"),
        ({"layer_norm_epsilon": 0.0}, "layer_norm_epsilon"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MatTransformerBlock(**{"intermediate_dim": I, "num_heads": H, **kwargs})


def test_numpy_integer_sizes_build_like_python_ints():
    block = MatTransformerBlock(np.int64(I), np.int32(H), key_dim=np.int64(3))
    assert [type(size) for size in (block.intermediate_dim, block.num_heads, block.key_dim)] \
        == [int] * 3
    block.build((B, T, D))  # its stock sublayers (`Dense`) reject NumPy integer sizes
    assert block.nested_dims() == {"intermediate_dim": I}


def test_key_dim_must_divide_unless_given():
    with pytest.raises(ValueError, match="my_block.*8 is not divisible by num_heads=3"):
        MatTransformerBlock(I, 3, name="my_block").build((B, T, D))
    block = MatTransformerBlock(I, 3, key_dim=5)
    block.build((B, T, D))
    assert tuple(block._attention.query_kernel.shape) == (D, 3, 5)


# === Extraction and costs ===


def _lm(block, mask_zero=False, padding_input=True):
    tokens = keras.Input((T,), dtype="int32", name="tokens")
    inputs = [tokens]
    x = keras.layers.Embedding(VOCAB, D, mask_zero=mask_zero, name="embedding")(tokens)
    kwargs = {}
    if padding_input:
        inputs.append(keras.Input((T,), dtype="int32", name="padding_mask"))
        kwargs["padding_mask"] = inputs[-1]
    x = block(x, **kwargs)
    inputs = inputs if padding_input else tokens
    return keras.Model(inputs, keras.layers.Dense(VOCAB, name="head")(x))


def _extract(model, block, width):
    """A hand-written walk: stock copies around `block.export`."""
    tokens = keras.Input((T,), dtype="int32", name="tokens")
    inputs = [tokens]
    embedding, head = model.get_layer("embedding"), model.get_layer("head")
    stock_embedding = keras.layers.Embedding.from_config(embedding.get_config())
    x = stock_embedding(tokens)
    stock_embedding.set_weights(embedding.get_weights())
    kwargs = {}
    if len(model.inputs) == 2:
        inputs.append(keras.Input((T,), dtype="int32", name="padding_mask"))
        kwargs["padding_mask"] = inputs[-1]
    x = block.export(x, width, **kwargs)
    stock_head = keras.layers.Dense.from_config(head.get_config())
    outputs = stock_head(x)
    stock_head.set_weights(head.get_weights())
    return keras.Model(inputs if len(inputs) == 2 else tokens, outputs)


_TOKENS = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 2]], dtype="int32")  # 0: padding


@pytest.mark.parametrize(
    "nested_heads, width",
    [(False, {"intermediate_dim": 5}), (True, {"intermediate_dim": 3, "num_heads": 2})],
)
def test_export_with_padding_mask_input(nested_heads, width):
    block = _block(nested_heads=nested_heads, causal=True)
    model = _lm(block)
    stock = _extract(model, block, width)
    assert not any(isinstance(layer, keras_matta.layers.MatLayer) for layer in stock.layers)
    with keras_matta.WidthScope(model, {"block": width}):
        want = _np(model([_TOKENS, PADDING]))
    np.testing.assert_allclose(_np(stock([_TOKENS, PADDING])), want, atol=1e-5)
    stock_block = keras.Model(inputs := keras.Input((T, D)), block.export(inputs, width))
    assert stock_block.count_params() == block.param_count(width, D)
    head_and_embedding = 2 * VOCAB * D + VOCAB
    assert stock.count_params() == head_and_embedding + block.param_count(width, D)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_export_with_implicit_mask(dropout):
    """Embedding(mask_zero=True): padded queries have no key left; still equal everywhere."""
    block = _block(nested_heads=True, dropout=dropout)
    model = _lm(block, mask_zero=True, padding_input=False)
    width = {"intermediate_dim": 6, "num_heads": 3}
    stock = _extract(model, block, width)
    with keras_matta.WidthScope(model, {"block": width}):
        want = _np(model(_TOKENS, training=False))
    np.testing.assert_allclose(_np(stock(_TOKENS, training=False)), want, atol=1e-5)


@pytest.mark.slow
def test_exported_model_loads_without_keras_matta(tmp_path):
    block = _block(nested_heads=True, causal=True)
    model = _lm(block)
    width = {"intermediate_dim": 4, "num_heads": 1}
    stock = _extract(model, block, width)
    path, expected = tmp_path / "student.keras", tmp_path / "expected.npy"
    stock.save(path)
    np.save(expected, _np(stock([_TOKENS, PADDING])))
    code = textwrap.dedent(
        f"""
        import sys, keras, numpy as np
        model = keras.saving.load_model({str(path)!r})
        tokens = np.array({_TOKENS.tolist()}, dtype="int32")
        padding = np.array({PADDING.tolist()}, dtype="int32")
        got = model.predict([tokens, padding], verbose=0)  # one compiled call: fast on JAX
        np.testing.assert_allclose(got, np.load({str(expected)!r}), atol=1e-6)
        assert "keras_matta" not in sys.modules
        """
    )
    env = {"KERAS_BACKEND": keras.backend.backend(), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_param_count_and_matmul_flops_by_hand():
    block = _block(nested_heads=True)
    assert block.param_count(block.nested_dims(), D) == block.count_params()
    k, h, key_dim = 5, 2, D // H
    attention = 2 * B * (3 * T * D * h * key_dim + 2 * h * T * T * key_dim + T * h * key_dim * D)
    ffn = 2 * B * T * (D * k + k * D)
    assert block.matmul_flops({"intermediate_dim": k, "num_heads": h}, (B, T, D)) == attention + ffn


# === Serialization, compilation, mixed precision ===


def test_config_and_keras_file_round_trip(tmp_path):
    block = _block(activation="gelu", nested_heads=True, causal=True, dropout=0.1, key_dim=3)
    config = block.get_config()
    assert MatTransformerBlock.from_config(config).get_config() == config
    model = _lm(block)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_block = loaded.get_layer("block")
    assert isinstance(loaded_block, MatTransformerBlock) and loaded_block.causal
    np.testing.assert_allclose(
        _np(loaded([_TOKENS, PADDING])), _np(model([_TOKENS, PADDING])), atol=1e-6
    )


# torch.compile (inductor) takes minutes on CPU: its variant is `large`, run with --run-large.
@pytest.mark.parametrize("torch_compile", [False, pytest.param(True, marks=pytest.mark.large)])
def test_compiled_predict_and_fit_step_train_only_the_prefix(torch_compile):
    if torch_compile and keras.backend.backend() != "torch":
        pytest.skip("the torch.compile variant")
    block = _block(activation="gelu", causal=True)  # gelu: no dead unit with zero gradient
    model = _lm(block)
    jit = keras.backend.backend() != "torch" or torch_compile
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=jit)
    kernel = block._ffn_intermediate.kernel
    before = _np(kernel).copy()
    with keras_matta.WidthScope(model, {"block": 3}):
        model.fit([_TOKENS, PADDING], _TOKENS, epochs=1, verbose=0)
        predicted = model.predict([_TOKENS, PADDING], verbose=0)
        np.testing.assert_allclose(predicted, _np(model([_TOKENS, PADDING])), atol=1e-5)
    changed = np.abs(_np(kernel) - before).max(axis=0)  # per hidden unit
    assert np.all(changed[:3] > 0) and np.all(changed[3:] == 0)


def test_mixed_bfloat16_forward():
    keras.config.set_dtype_policy("mixed_bfloat16")
    block = MatTransformerBlock(I, H, nested_heads=True, causal=True)
    outputs = block(_x(), padding_mask=PADDING, width={"intermediate_dim": 6, "num_heads": 2})
    assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
    assert all(w.dtype == "float32" for w in block.weights)
    assert np.all(np.isfinite(_np(ops.cast(outputs, "float32"))))
