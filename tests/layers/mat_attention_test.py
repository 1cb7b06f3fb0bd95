"""MatMultiHeadAttention against stock `keras.layers.MultiHeadAttention` holding sliced kernels."""

import json

import keras
import numpy as np
import pytest
from keras import ops

import keras_matta
from keras_matta.layers.mat_attention import MatMultiHeadAttention

B, T, S, D, H, KEY_DIM = 2, 5, 4, 8, 4, 3
VALUE_DIM = KEY_DIM  # see test_cross_attention_with_value_dim_and_masks


def _np(x):
    return ops.convert_to_numpy(x)


def _randomize(layer, seed=1):
    """Non-zero biases too, so that a wrong bias slice cannot pass."""
    rng = np.random.default_rng(seed)
    layer.set_weights([0.5 * rng.standard_normal(w.shape).astype("float32") for w in layer.weights])


def _built_layer(cross=False, **kwargs):
    layer = MatMultiHeadAttention(H, KEY_DIM, value_dim=VALUE_DIM, **kwargs)
    value_shape = (B, S, D + 2) if cross else None
    layer.build((B, T, D), value_shape)
    _randomize(layer)
    return layer


def _stock(layer, heads, query, value, key=None, **kwargs):
    stock = layer.to_stock({"num_heads": heads})
    stock(query, value, key=key)
    stock.set_weights(layer.sliced_weights({"num_heads": heads}))
    return _np(stock(query, value, key=key, **kwargs))


def _inputs(cross):
    rng = np.random.default_rng(0)
    query = rng.standard_normal((B, T, D)).astype("float32")
    value = rng.standard_normal((B, S, D + 2)).astype("float32") if cross else query
    return query, value


# === Equality with stock MultiHeadAttention ===


@pytest.mark.parametrize("heads", [1, H])
@pytest.mark.parametrize("masking", ["none", "causal", "padding", "causal+padding"])
def test_nested_heads_equal_stock_mha_with_sliced_kernels(heads, masking):
    layer = _built_layer()
    query, _ = _inputs(cross=False)
    padding = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    kwargs = {"use_causal_mask": "causal" in masking}
    if "padding" in masking:
        kwargs["attention_mask"] = padding[:, None, :]  # (B, 1, S): keys only
    got = _np(layer(query, width=heads, **kwargs))
    want = _stock(layer, heads, query, query, **kwargs)
    np.testing.assert_allclose(got, want, atol=1e-5)
    if heads == H:  # the default width is all heads
        np.testing.assert_allclose(_np(layer(query, **kwargs)), want, atol=1e-5)


def _np_attention(layer, heads, query, value, key, mask):
    """float64 reference: softmax(q k^T / sqrt(key_dim)) v, masked, on the first `heads` heads."""
    weights = layer.sliced_weights({"num_heads": heads})
    wq, bq, wk, bk, wv, bv, wo, bo = [w.astype("float64") for w in weights]
    q = np.einsum("btd,dnk->btnk", query, wq) + bq
    k = np.einsum("bsd,dnk->bsnk", key, wk) + bk
    v = np.einsum("bsd,dnv->bsnv", value, wv) + bv
    scores = np.einsum("btnk,bsnk->bnts", q, k) / np.sqrt(layer.key_dim)
    scores = np.where(mask[:, None], scores, -1e9)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("btnv,nvo->bto", np.einsum("bnts,bsnv->btnv", weights, v), wo) + bo


def test_cross_attention_with_value_dim_and_masks():
    heads = 2
    layer = MatMultiHeadAttention(H, KEY_DIM, value_dim=5, output_shape=6)
    query, value = _inputs(cross=True)
    key = np.random.default_rng(3).standard_normal((B, S, 7)).astype("float32")
    layer.build((B, T, D), (B, S, D + 2), (B, S, 7))
    _randomize(layer)
    value_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=bool)
    got = _np(layer(query, value, key, value_mask=value_mask, width=heads))
    assert got.shape == (B, T, 6)
    mask = np.broadcast_to(value_mask[:, None, :], (B, T, S))
    want = _np_attention(layer, heads, query, value, key, mask)
    np.testing.assert_allclose(got, want, atol=1e-5)
    if keras.backend.backend() != "jax":
        # Keras 3.15 on JAX: stock MultiHeadAttention's fused kernel rejects value_dim != key_dim.
        want = _stock(layer, heads, query, value, key, value_mask=value_mask)
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_implicit_masks_match_stock_mha_including_padded_queries(dropout):
    """Keras masks (Embedding(mask_zero=True)) mask queries and keys; rows with no key left
    follow the stock layer (uniform without dropout, zero with dropout) so that export is exact."""
    tokens = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 2]])
    embedding = keras.layers.Embedding(10, D, mask_zero=True)
    layer = MatMultiHeadAttention(H, KEY_DIM, dropout=dropout)
    layer(embedding(tokens))
    _randomize(layer)
    stock = layer.to_stock({"num_heads": 2})
    stock(embedding(tokens), embedding(tokens))
    stock.set_weights(layer.sliced_weights({"num_heads": 2}))
    for causal in (False, True):
        x = embedding(tokens)
        got = _np(layer(x, width=2, use_causal_mask=causal, training=False))
        x = embedding(tokens)
        want = _np(stock(x, x, use_causal_mask=causal, training=False))
        np.testing.assert_allclose(got, want, atol=1e-5)


# === Widths ===


def test_nested_dims_and_width_resolution():
    layer = _built_layer()
    assert layer.nested_dims() == {"num_heads": H}
    assert layer.resolve_width(0.5) == {"num_heads": 2}
    assert layer.resolve_width({"num_heads": 3}) == {"num_heads": 3}
    fixed = MatMultiHeadAttention(H, KEY_DIM, nested_heads=False)
    assert fixed.nested_dims() == {}


@pytest.mark.parametrize("width", [0, H + 1, {"num_heads": 0}, {"units": 2}, 1.5])
def test_invalid_widths_raise_naming_the_layer(width):
    layer = MatMultiHeadAttention(H, KEY_DIM, name="my_attention")
    query, _ = _inputs(cross=False)
    with pytest.raises(ValueError, match="my_attention"):
        layer(query, width=width)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"num_heads": True}, "num_heads"),  # a bool is no count, although `True == 1`
        ({"key_dim": 2.0}, "key_dim"),
        ({"key_dim": None}, "key_dim"),
        ({"value_dim": 0}, "value_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"output_shape": (2, 3)}, "output_shape"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MatMultiHeadAttention(**{"num_heads": H, "key_dim": KEY_DIM, **kwargs})


def test_numpy_integer_sizes_are_stored_as_python_ints():
    layer = MatMultiHeadAttention(np.int64(H), np.int32(KEY_DIM), output_shape=np.int64(6))
    sizes = (layer.num_heads, layer.key_dim, layer.value_dim, layer._output_dim)
    assert [type(size) for size in sizes] == [int] * 4
    json.dumps(layer.get_config())  # a NumPy integer in the config would not serialize


def test_width_scope_selects_heads():
    inputs = keras.Input((T, D))
    layer = MatMultiHeadAttention(H, KEY_DIM, name="attention")
    model = keras.Model(inputs, layer(inputs))
    _randomize(layer)
    query, _ = _inputs(cross=False)
    with keras_matta.WidthScope(model, {"attention": 2}):
        scoped = _np(model.predict(query, verbose=0))
    np.testing.assert_allclose(scoped, _np(layer(query, width=2)), atol=1e-6)
    np.testing.assert_allclose(_np(model(query)), _np(layer(query, width=H)), atol=1e-6)


# === Extraction and costs ===


@pytest.mark.parametrize("heads", [1, H])
def test_export_matches_and_counts(heads):
    layer = _built_layer()
    query, _ = _inputs(cross=False)
    inputs = keras.Input((T, D))
    model = keras.Model(inputs, layer.export(inputs, {"num_heads": heads}, use_causal_mask=True))
    assert isinstance(model.layers[-1], keras.layers.MultiHeadAttention)
    np.testing.assert_allclose(
        _np(model(query)), _np(layer(query, use_causal_mask=True, width=heads)), atol=1e-5
    )
    assert model.count_params() == layer.param_count({"num_heads": heads}, D)


def test_matmul_flops_by_hand():
    layer = MatMultiHeadAttention(H, KEY_DIM, value_dim=VALUE_DIM)
    h = 2
    projections = T * D * h * KEY_DIM * 2 + T * D * h * VALUE_DIM  # q, k | v
    scores_and_mix = h * T * T * (KEY_DIM + VALUE_DIM)  # QK^T, AV (full T x T)
    output = T * h * VALUE_DIM * D
    want = 2 * B * (projections + scores_and_mix + output)
    assert layer.matmul_flops({"num_heads": h}, (B, T, D)) == want


# === Serialization, compilation, mixed precision ===


def test_config_and_keras_file_round_trip(tmp_path):
    inputs = keras.Input((T, D))
    layer = MatMultiHeadAttention(
        H, KEY_DIM, dropout=0.1, output_shape=(6,), kernel_regularizer="l2", seed=3
    )
    model = keras.Model(inputs, layer(inputs, use_causal_mask=True))
    _randomize(layer)
    clone = MatMultiHeadAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    path = str(tmp_path / "attention.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    query, _ = _inputs(cross=False)
    np.testing.assert_allclose(_np(loaded(query)), _np(model(query)), atol=1e-6)


# torch.compile (inductor) takes minutes on CPU: its variant is `large`, run with --run-large.
@pytest.mark.parametrize("torch_compile", [False, pytest.param(True, marks=pytest.mark.large)])
def test_compiled_predict_and_fit_step(torch_compile):
    if torch_compile and keras.backend.backend() != "torch":
        pytest.skip("the torch.compile variant")
    inputs = keras.Input((T, D))
    layer = MatMultiHeadAttention(H, KEY_DIM, dropout=0.1, name="attention")
    model = keras.Model(inputs, layer(inputs, use_causal_mask=True))
    jit = keras.backend.backend() != "torch" or torch_compile
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit)
    query, _ = _inputs(cross=False)
    before = _np(layer.query_kernel).copy()
    with keras_matta.WidthScope(model, {"attention": 2}):
        model.fit(query, np.zeros((B, T, D), "float32"), epochs=1, verbose=0)
        predicted = model.predict(query, verbose=0)
    want = _np(layer(query, use_causal_mask=True, width=2))
    np.testing.assert_allclose(predicted, want, atol=1e-5)
    changed = np.abs(_np(layer.query_kernel) - before).max(axis=(0, 2))  # per head
    assert np.all(changed[:2] > 0) and np.all(changed[2:] == 0)  # only the Student's heads


def test_mixed_bfloat16_forward():
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = MatMultiHeadAttention(H, KEY_DIM)
    query, _ = _inputs(cross=False)
    outputs = layer(query, use_causal_mask=True, width=2)
    assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
    assert layer.query_kernel.dtype == "float32"
    assert np.all(np.isfinite(_np(ops.cast(outputs, "float32"))))
