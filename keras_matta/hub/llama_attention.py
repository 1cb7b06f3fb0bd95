"""MatLlamaAttention: Llama's rotary grouped-query attention on a nested prefix of heads."""

import math

import keras
from keras import ops

from keras_matta._initializers import clone_initializer
from keras_matta.layers.mat_layer import MatLayer
from keras_matta.layers.nesting import Nested
from keras_matta.layers.sampled_width import split_width

# The keras-hub models whose attention this is; they differ in the query/key/value biases.
FAMILIES = ("llama", "qwen")


@keras.saving.register_keras_serializable(package="keras_matta")
class MatLlamaAttention(MatLayer, keras.layers.Layer):
    """Grouped-query attention with rotary embeddings that can run on any group prefix.

    Weights are laid out like keras-hub's `LlamaAttention` (no biases): `W_q (d, H, h_d)`,
    `W_k, W_v (d, H_kv, h_d)`, `W_o (H, h_d, d)`, with `g = H / H_kv` query heads per key/value
    head (query head `i` reads key/value head `i // g`). Run at `h` query heads (a multiple of
    `g`, so `h_kv = h / g`):

        q = RoPE(x W_q[:, :h]),  k = RoPE(x W_k[:, :h_kv]),  v = x W_v[:, :h_kv]
        a_i = softmax(q_i k_{i // g}^T / sqrt(h_d), mask)          for i < h
        y   = sum_{i < h} dropout(a_i v_{i // g}) W_o[i]

    Whole groups nest: the first `h` query heads and their `h / g` key/value heads are exactly
    a `LlamaAttention(num_query_heads=h, num_key_value_heads=h / g)` when `h * h_d = d`.

    Args:
        num_query_heads: the full (TA) number of query heads `H`.
        num_key_value_heads: the full number of key/value heads `H_kv` (divides `H`).
        head_dim: the size of every head `h_d`.
        rope_max_wavelength, rope_position_scaling_factor, rope_frequency_adjustment_factor,
            rope_low_freq_factor, rope_high_freq_factor, rope_pretraining_sequence_length:
            the rotary embedding, as in `keras_hub.models.LlamaBackbone`.
        kernel_initializer: initializer of the four kernels.
        dropout: dropout on the attention context, as in keras-hub.
        nested_heads: whether the number of query heads is nested. Defaults to `True`.
        family: `"llama"` (default) or `"qwen"`: Qwen adds biases `(heads, h_d)` to the query,
            key and value projections before the rotary embedding, and scales rotary positions
            as keras-hub's `RotaryEmbedding(scaling_factor=rope_position_scaling_factor)`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.
        attention_mask: optional bool `(B, T, T)`, `True` where attention is allowed.
        training: whether dropout is active.
        width: optional width spec (`{"num_query_heads": h}`, an int or a fraction).

    Example:

    ```python
    from keras_matta.hub import MatLlamaAttention

    attention = MatLlamaAttention(num_query_heads=6, num_key_value_heads=2, head_dim=8)
    x = np.random.rand(2, 5, 48).astype("float32")             # (batch, time, 6 heads * 8)
    causal = np.tril(np.ones((5, 5), bool))[None].repeat(2, axis=0)   # (batch, time, time)
    y = attention(x, attention_mask=causal)              # (2, 5, 48): 6 query, 2 k/v heads
    y_small = attention(x, attention_mask=causal, width=3)   # 3 query heads, 1 k/v head
    ```

    Reference:
        Ainslie et al., "GQA", 2023; Su et al., "RoFormer", 2021; Verma et al., "Matryoshka
        Model Learning for Improved Elastic Student Models", KDD 2025 (arXiv 2505.23337).
    """

    def __init__(
        self,
        num_query_heads,
        num_key_value_heads,
        head_dim,
        rope_max_wavelength=10000,
        rope_position_scaling_factor=1.0,
        rope_frequency_adjustment_factor=None,
        rope_low_freq_factor=None,
        rope_high_freq_factor=None,
        rope_pretraining_sequence_length=None,
        kernel_initializer="glorot_uniform",
        dropout=0.0,
        nested_heads=True,
        family="llama",
        **kwargs,
    ):
        from keras_hub.layers import RotaryEmbedding
        from keras_hub.src.models.llama.llama_rotary_embedding import LlamaRotaryEmbedding

        if family not in FAMILIES:
            raise ValueError(f"`family` must be one of {FAMILIES}; got {family!r}.")
        if num_query_heads % num_key_value_heads:
            raise ValueError(
                f"`num_query_heads`={num_query_heads} must be a multiple of "
                f"`num_key_value_heads`={num_key_value_heads}."
            )
        super().__init__(**kwargs)
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.groups = num_query_heads // num_key_value_heads
        self.head_dim = head_dim
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_position_scaling_factor = rope_position_scaling_factor
        self.rope_frequency_adjustment_factor = rope_frequency_adjustment_factor
        self.rope_low_freq_factor = rope_low_freq_factor
        self.rope_high_freq_factor = rope_high_freq_factor
        self.rope_pretraining_sequence_length = rope_pretraining_sequence_length
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dropout = dropout
        self.nested_heads = nested_heads
        self.family = family
        self.use_bias = family == "qwen"
        if family == "qwen":
            self._rotary = RotaryEmbedding(
                max_wavelength=rope_max_wavelength, scaling_factor=rope_position_scaling_factor,
                dtype=self.dtype_policy,
            )
        else:
            self._rotary = LlamaRotaryEmbedding(
                max_wavelength=rope_max_wavelength,
                position_scaling_factor=rope_position_scaling_factor,
                frequency_adjustment_factor=rope_frequency_adjustment_factor,
                low_freq_factor=rope_low_freq_factor,
                high_freq_factor=rope_high_freq_factor,
                pretraining_sequence_length=rope_pretraining_sequence_length,
                dtype=self.dtype_policy,
            )
        self._dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, inputs_shape):
        d, h, h_kv, h_d = inputs_shape[-1], self.num_query_heads, self.num_key_value_heads, \
            self.head_dim
        self.query_kernel = self._kernel("query_kernel", (d, h, h_d))
        self.key_kernel = self._kernel("key_kernel", (d, h_kv, h_d))
        self.value_kernel = self._kernel("value_kernel", (d, h_kv, h_d))
        self.output_kernel = self._kernel("output_kernel", (h, h_d, d))
        if self.use_bias:
            for part, heads in (("query", h), ("key", h_kv), ("value", h_kv)):
                bias = self.add_weight(name=f"{part}_bias", shape=(heads, h_d),
                                       initializer="zeros")
                setattr(self, f"{part}_bias", bias)

    def _kernel(self, name, shape):
        # One instance per kernel: an unseeded initializer repeats its values on every call.
        initializer = clone_initializer(self.kernel_initializer)
        return self.add_weight(name=name, shape=shape, initializer=initializer)

    def nested_dims(self):
        return {"num_query_heads": self.num_query_heads} if self.nested_heads else {}

    def resolve_width(self, spec):
        width = super().resolve_width(spec)
        check_whole_groups(self.name, width, self.num_query_heads, self.num_key_value_heads)
        return width

    def nesting(self):
        heads, kv_heads = {-2: "num_query_heads"}, {-2: "num_key_value_heads"}
        entries = []
        for part, axes in (("query", heads), ("key", kv_heads), ("value", kv_heads)):
            entries.append(Nested(f"{part}_kernel", getattr(self, f"{part}_kernel"),
                                  produces=axes))
            if self.use_bias:
                entries.append(Nested(f"{part}_bias", getattr(self, f"{part}_bias"),
                                      produces=axes, bias=True))
        entries.append(
            Nested("output_kernel", self.output_kernel, consumes={-3: "num_query_heads"})
        )
        return entries

    def coupled_dims(self):
        return {"num_key_value_heads": ("num_query_heads", self.groups)}

    def call(self, inputs, attention_mask=None, training=None, width=None):
        h = self._active_width(width).get("num_query_heads", self.num_query_heads)
        h, sampled = split_width(h, self.num_query_heads)
        heads = {"num_query_heads": h}  # and h / g key/value heads, coupled
        q = self._project(inputs, "query", heads)  # (B, T, h, h_d)
        k = self._project(inputs, "key", heads)  # (B, T, h_kv, h_d)
        v = self._project(inputs, "value", heads)
        q, k = self._rotary(q), self._rotary(k)
        k = ops.repeat(k, self.groups, axis=2)  # (B, T, h, h_d): query head i reads i // g
        v = ops.repeat(v, self.groups, axis=2)
        scores = ops.einsum("bqnh,bknh->bnqk", q, k)  # (B, h, T, T)
        scores = ops.multiply(scores, ops.cast(1.0 / math.sqrt(self.head_dim), scores.dtype))
        scores = ops.cast(scores, "float32")
        if attention_mask is not None:
            mask = ops.expand_dims(ops.cast(attention_mask, "bool"), 1)  # (B, 1, T, T)
            scores = ops.where(mask, scores, -1e9)
        weights = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        context = ops.einsum("bnqk,bknh->bqnh", weights, v)  # (B, T, h, h_d)
        context = self._dropout_layer(context, training=training)
        if sampled is not None:  # query heads past the drawn count contribute nothing
            context = ops.multiply(context, sampled.mask(h, context.dtype)[:, None])
        self._observe("output_kernel", context, -2)
        output_kernel = self._slice("output_kernel", heads)
        return ops.einsum("bqnh,nhd->bqd", context, output_kernel)  # (B, T, d)

    def _project(self, inputs, part, heads):
        y = ops.einsum("btd,dnh->btnh", inputs, self._slice(f"{part}_kernel", heads))
        return ops.add(y, self._slice(f"{part}_bias", heads)) if self.use_bias else y

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def matmul_flops(self, width, input_shape):
        batch, t, d = input_shape
        h = width.get("num_query_heads", self.num_query_heads)
        projections = t * d * self.head_dim * (2 * h + 2 * (h // self.groups))
        attention = 2 * h * t * t * self.head_dim  # QK^T and AV over the full T x T scores
        return 2 * batch * (projections + attention)

    def get_config(self):
        return {
            **super().get_config(),
            "num_query_heads": self.num_query_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rope_max_wavelength": self.rope_max_wavelength,
            "rope_position_scaling_factor": self.rope_position_scaling_factor,
            "rope_frequency_adjustment_factor": self.rope_frequency_adjustment_factor,
            "rope_low_freq_factor": self.rope_low_freq_factor,
            "rope_high_freq_factor": self.rope_high_freq_factor,
            "rope_pretraining_sequence_length": self.rope_pretraining_sequence_length,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "dropout": self.dropout,
            "nested_heads": self.nested_heads,
            "family": self.family,
        }


def check_whole_groups(layer_name, width, num_query_heads, num_key_value_heads):
    """Raises unless `width` keeps whole groups of query heads per key/value head."""
    heads = width.get("num_query_heads", num_query_heads)
    groups = num_query_heads // num_key_value_heads
    if heads % groups:
        raise ValueError(
            f"Layer '{layer_name}': num_query_heads={heads} is not a multiple of the {groups} "
            f"query heads per key/value head ({num_query_heads} query / {num_key_value_heads} "
            f"key-value heads); allowed: {list(range(groups, num_query_heads + 1, groups))}."
        )
