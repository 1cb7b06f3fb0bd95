"""MatGroupedQueryAttention: the rotary GQA that keras-hub's Llama, Qwen and Gemma share."""

import math

import keras
from keras import ops

from keras_matta._initializers import clone_initializer
from keras_matta.layers.mat_layer import MatLayer
from keras_matta.layers.nesting import Nested
from keras_matta.layers.sampled_width import split_width


class MatGroupedQueryAttention(MatLayer, keras.layers.Layer):
    """Grouped-query attention with rotary embeddings on a nested prefix of whole groups.

    The base of `MatLlamaAttention` and `MatGemmaAttention`, which differ only in the kernel
    layout (`kernel_layout`: where the heads axis sits), the rotary embedding (`_rotary`),
    query/key/value biases (`use_bias`), an optional soft cap on the logits and where dropout
    applies. With `g = H / H_kv` query heads per key/value head (query head `i` reads key/value
    head `i // g`), run at `h` query heads (a multiple of `g`, so `h_kv = h / g`):

        q = RoPE(x W_q[:h]),  k = RoPE(x W_k[:h_kv]),  v = x W_v[:h_kv]
        s_i = cap(q_i k_{i // g}^T / sqrt(h_d))                     for i < h
        a_i = softmax(s_i, mask), with 0 where the mask allows no key
        y   = sum_{i < h} (a_i v_{i // g}) W_o[i]

    with `cap(s) = c tanh(s / c)` for a soft cap `c` (else the identity). Whole groups nest:
    the first `h` query heads and their `h / g` key/value heads are exactly the stock layer with
    `num_query_heads=h, num_key_value_heads=h / g`.

    Args:
        num_query_heads: the full (TA) number of query heads `H`.
        num_key_value_heads: the full number of key/value heads `H_kv` (divides `H`).
        head_dim: the size of every head `h_d`.
        kernel_initializer: initializer of the four kernels.
        dropout: attention dropout rate (on the context or the weights, per subclass).
        nested_heads: whether the number of query heads is nested. Defaults to `True`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.
        attention_mask: optional bool `(B, T, T)`, `True` where attention is allowed.
        training: whether dropout is active.
        width: optional width spec (`{"num_query_heads": h}`, an int or a fraction).

    Example:

    ```python
    from keras_matta.hub import MatLlamaAttention   # a MatGroupedQueryAttention

    attention = MatLlamaAttention(num_query_heads=4, num_key_value_heads=2, head_dim=8)
    y = attention(np.random.rand(2, 5, 32).astype("float32"), width=2)   # 1 group of 2 heads
    assert tuple(y.shape) == (2, 5, 32)
    ```

    Reference:
        Ainslie et al., "GQA", 2023; Su et al., "RoFormer", 2021; Verma et al., "Matryoshka
        Model Learning for Improved Elastic Student Models", KDD 2025 (arXiv 2505.23337).
    """

    #: einsum subscripts of the query/key/value kernels: `d` features, `n` heads, `h` head size.
    kernel_layout = "dnh"
    #: whether dropout applies to the attention weights (Gemma) or the context (Llama).
    dropout_on_weights = False

    def __init__(self, num_query_heads, num_key_value_heads, head_dim,
                 kernel_initializer="glorot_uniform", dropout=0.0, nested_heads=True, **kwargs):
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
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dropout = dropout
        self.nested_heads = nested_heads
        self.use_bias = False
        self.logit_soft_cap = None
        self._dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, inputs_shape):
        d, h, h_kv = inputs_shape[-1], self.num_query_heads, self.num_key_value_heads
        self.query_kernel = self._kernel("query_kernel", self._shape(d, h))
        self.key_kernel = self._kernel("key_kernel", self._shape(d, h_kv))
        self.value_kernel = self._kernel("value_kernel", self._shape(d, h_kv))
        self.output_kernel = self._kernel("output_kernel", (h, self.head_dim, d))
        if self.use_bias:
            for part, heads in (("query", h), ("key", h_kv), ("value", h_kv)):
                bias = self.add_weight(name=f"{part}_bias", shape=(heads, self.head_dim),
                                       initializer="zeros")
                setattr(self, f"{part}_bias", bias)

    def _shape(self, d, heads):
        sizes = {"d": d, "n": heads, "h": self.head_dim}
        return tuple(sizes[axis] for axis in self.kernel_layout)

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
        heads_axis = self.kernel_layout.index("n") - len(self.kernel_layout)
        heads, kv_heads = {heads_axis: "num_query_heads"}, {heads_axis: "num_key_value_heads"}
        entries = []
        for part, axes in (("query", heads), ("key", kv_heads), ("value", kv_heads)):
            entries.append(Nested(f"{part}_kernel", getattr(self, f"{part}_kernel"),
                                  produces=axes))
            if self.use_bias:
                entries.append(Nested(f"{part}_bias", getattr(self, f"{part}_bias"),
                                      produces={-2: axes[heads_axis]}, bias=True))
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
        if self.logit_soft_cap is not None:
            cap = self.logit_soft_cap
            scores = ops.multiply(ops.tanh(ops.divide(scores, cap)), cap)
        weights = ops.softmax(scores if attention_mask is None else
                              ops.where(_heads_mask(attention_mask), scores, -1e9), axis=-1)
        if attention_mask is not None:  # a query with no key to see attends to nothing
            weights = ops.where(_heads_mask(attention_mask), weights, 0.0)
        weights = ops.cast(weights, self.compute_dtype)
        if self.dropout_on_weights:
            weights = self._dropout_layer(weights, training=training)
        context = ops.einsum("bnqk,bknh->bqnh", weights, v)  # (B, T, h, h_d)
        if not self.dropout_on_weights:
            context = self._dropout_layer(context, training=training)
        if sampled is not None:  # query heads past the drawn count contribute nothing
            context = ops.multiply(context, sampled.mask(h, context.dtype)[:, None])
        self._observe("output_kernel", context, -2)
        output_kernel = self._slice("output_kernel", heads)
        return ops.einsum("bqnh,nhd->bqd", context, output_kernel)  # (B, T, d)

    def _project(self, inputs, part, heads):
        equation = f"btd,{self.kernel_layout}->btnh"
        y = ops.einsum(equation, inputs, self._slice(f"{part}_kernel", heads))
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
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "dropout": self.dropout,
            "nested_heads": self.nested_heads,
        }


def _heads_mask(attention_mask):
    return ops.expand_dims(ops.cast(attention_mask, "bool"), 1)  # (B, 1, T, T)


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


def causal_mask(inputs, padding_mask=None, window=None):
    """`(B|1, T, T)` bool: query `t` sees key `s <= t` (only real keys; `t - s < window`)."""
    t = ops.shape(inputs)[1]
    rows = ops.expand_dims(ops.arange(t), -1)  # (T, 1)
    cols = ops.expand_dims(ops.arange(t), 0)  # (1, T)
    mask = ops.greater_equal(rows, cols)  # (T, T)
    if window is not None:  # Gemma 2's local layers: the last `window` positions only
        mask = ops.logical_and(mask, ops.less(ops.subtract(rows, cols), window))
    mask = ops.expand_dims(mask, 0)  # (1, T, T)
    if padding_mask is not None:
        keys = ops.expand_dims(ops.cast(padding_mask, "bool"), 1)  # (B, 1, T)
        mask = ops.logical_and(mask, keys)
    return mask
