"""MatMultiHeadAttention: multi-head attention whose heads are a nested prefix."""

import math

import keras
from keras import ops
from keras.src.backend import get_keras_mask

from keras_matta._initializers import clone_initializer
from keras_matta._validation import is_int
from keras_matta.layers import majority as majority_lib
from keras_matta.layers.mat_layer import MatLayer
from keras_matta.layers.nesting import Nested
from keras_matta.layers.sampled_width import split_width


@keras.saving.register_keras_serializable(package="keras_matta")
class MatMultiHeadAttention(MatLayer, keras.layers.Layer):
    """Multi-head attention that can run on any prefix of its heads.

    The weights are laid out exactly like `keras.layers.MultiHeadAttention`: projection kernels
    `W_q, W_k` of shape `(d, H, key_dim)`, `W_v` of shape `(d, H, value_dim)`, biases
    `(H, key_dim)` / `(H, value_dim)`, an output kernel `W_o` of shape `(H, value_dim, d_out)`
    and an output bias `(d_out,)`. Run at `h <= H` heads it computes

        q_i = x_q W_q[:, i] + b_q[i],  k_i = x_v W_k[:, i] + b_k[i],  v_i = x_v W_v[:, i] + b_v[i]
        a_i = dropout(softmax(q_i k_i^T / sqrt(key_dim), masked))
        y   = sum_{i < h} (a_i v_i) W_o[i] + b_o

    which is exactly a stock `MultiHeadAttention(num_heads=h)` holding `W[:, :h]`, `b[:h]`,
    `W_o[:h]` and the full output bias. Whole heads nest, so the Student's heads are the TA's
    first `h` heads.

    Masks follow `keras.layers.MultiHeadAttention`: the Keras masks of `query` and `value`
    (e.g. from `Embedding(mask_zero=True)`), an explicit `attention_mask` and the causal mask
    are AND-ed into one `(B, T, S)` mask. A query row with no key left (a padded query) gets the
    same output as in the stock layer: uniform weights when `dropout == 0` (its fused kernel),
    zero weights when `dropout > 0` (its `Softmax` layer), so extraction is exact everywhere.
    The softmax runs in float32 under mixed precision, like the fused kernels.

    Args:
        num_heads: the full (TA) number of heads `H`.
        key_dim: size of each query/key head.
        value_dim: size of each value head. Defaults to `key_dim`.
        dropout: dropout rate on the attention weights.
        use_bias: whether the projections have biases.
        output_shape: output feature size `d_out` (an int or a 1-tuple). Defaults to the last
            dimension of the query.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
            kernel_constraint, bias_constraint: as in `keras.layers.MultiHeadAttention`.
        nested_heads: whether the number of heads is nested. Defaults to `True`.
        seed: seed of the attention dropout.
        majority, majority_combine, majority_seed, majority_init: majority kernels for the
            four projection kernels (biases stay single), as in `MatDense`. Defaults to 1
            (plain kernels).
        **kwargs: base layer arguments (`name`, `dtype`, `activity_regularizer`, ...).

    Call arguments:
        query: `(B, T, d_q)`.
        value: `(B, S, d_v)`; defaults to `query` (self-attention).
        key: `(B, S, d_k)`; defaults to `value`.
        query_mask, value_mask, key_mask: Keras masks, filled in from the inputs by Keras.
        attention_mask: boolean `(B, T, S)` (or broadcastable), `True` where attention is allowed.
        use_causal_mask: whether query `t` may only attend to keys `s <= t`.
        training: whether attention dropout is active.
        width: optional width spec for this call (an int number of heads, a fraction, or
            `{"num_heads": h}`); by default the `WidthScope` selection, else all heads.

    Example:

    ```python
    layer = keras_matta.layers.MatMultiHeadAttention(num_heads=8, key_dim=16)
    x = np.random.rand(2, 10, 64).astype("float32")     # (batch, time, features)
    y = layer(x, use_causal_mask=True)                  # (2, 10, 64): all 8 heads
    y_small = layer(x, use_causal_mask=True, width=2)   # (2, 10, 64): heads 0 and 1 only
    ```

    Reference:
        Devvrit et al., "MatFormer: Nested Transformer for Elastic Inference", 2023;
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025 (arXiv 2505.23337).
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        nested_heads=True,
        seed=None,
        majority=1,
        majority_combine=majority_lib.DEFAULT_COMBINE,
        majority_seed=None,
        majority_init="independent",
        **kwargs,
    ):
        value_dim = key_dim if value_dim is None else value_dim
        majority_lib.validate_majority(majority, majority_combine, majority_init)
        positive_ints = {"num_heads": num_heads, "key_dim": key_dim, "value_dim": value_dim}
        for arg, value in positive_ints.items():
            if not is_int(value) or value <= 0:
                raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1); got {dropout}.")
        if not isinstance(nested_heads, bool):
            raise TypeError(f"`nested_heads` must be a bool; got {nested_heads!r}.")
        if isinstance(output_shape, (tuple, list)):
            if len(output_shape) != 1:
                raise ValueError(
                    f"`output_shape` must be an int or a 1-tuple; got {output_shape!r}."
                )
            output_shape = output_shape[0]
        if output_shape is not None and (not is_int(output_shape) or output_shape <= 0):
            raise ValueError(f"`output_shape` must be a positive integer; got {output_shape!r}.")
        super().__init__(**kwargs)
        self.supports_masking = True
        # NumPy integers pass the checks above; sizes are stored as Python ints, which Keras'
        # stock layers (built by `export`) and JSON configs require.
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim)
        self.dropout = dropout
        self.use_bias = use_bias
        # Not `self.output_shape`: `summary()` would read it as the layer's output shape.
        self._output_dim = None if output_shape is None else int(output_shape)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.nested_heads = nested_heads
        self.seed = seed
        self._dropout_layer = keras.layers.Dropout(dropout, seed=seed, dtype=self.dtype_policy)
        self.majority = majority
        self.majority_combine = majority_combine
        self.majority_seed = majority_seed
        self.majority_init = majority_init
        if majority > 1:
            self._majority_seed_generator = keras.random.SeedGenerator(majority_seed)

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        for arg, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if len(shape) != 3:
                raise ValueError(
                    f"Layer '{self.name}' expects `{arg}` of rank 3 (batch, seq, features); "
                    f"got shape {tuple(shape)}."
                )
        H, dk, dv = self.num_heads, self.key_dim, self.value_dim
        d_out = self._output_dim or query_shape[-1]
        add = self._add_weight
        # Same order as `MultiHeadAttention.get_weights()`: q, k, v, output (kernel, bias).
        self.query_kernel = add("query_kernel", (query_shape[-1], H, dk), "kernel")
        self.query_bias = add("query_bias", (H, dk), "bias")
        self.key_kernel = add("key_kernel", (key_shape[-1], H, dk), "kernel")
        self.key_bias = add("key_bias", (H, dk), "bias")
        self.value_kernel = add("value_kernel", (value_shape[-1], H, dv), "kernel")
        self.value_bias = add("value_bias", (H, dv), "bias")
        self.output_kernel = add("output_kernel", (H, dv, d_out), "kernel")
        self.output_bias = add("output_bias", (d_out,), "bias")

    def _add_weight(self, name, shape, kind):
        if kind == "bias" and not self.use_bias:
            return None
        # A fresh initializer per weight: one unseeded instance would repeat its values.
        weight_kwargs = {
            "initializer": clone_initializer(getattr(self, f"{kind}_initializer")),
            "regularizer": getattr(self, f"{kind}_regularizer"),
            "constraint": getattr(self, f"{kind}_constraint"),
        }
        if kind == "bias":
            return self.add_weight(name=name, shape=shape, **weight_kwargs)
        # `query_kernel_mixture`, ...: the `learned` combine's logits (else None).
        setattr(self, f"{name}_mixture", majority_lib.add_mixture(
            self, name, self.majority, self.majority_combine
        ))
        return majority_lib.add_majority_kernel(
            self, name, shape, self.majority, majority_init=self.majority_init, **weight_kwargs
        )

    def _kernels(self, training=False):
        """The query, key, value and output kernels, majority copies combined."""
        return [
            majority_lib.combine_copies(
                kernel,
                self.majority,
                self.majority_combine,
                training=training,
                seed_generator=getattr(self, "_majority_seed_generator", None),
                mixture=getattr(self, f"{part}_kernel_mixture", None),
            )
            for part in ("query", "key", "value", "output")
            for kernel in (getattr(self, f"{part}_kernel"),)
        ]

    def nested_dims(self):
        return {"num_heads": self.num_heads} if self.nested_heads else {}

    def nesting(self):
        # Heads are declared whether or not they are nested: a width leaves an un-nested
        # dimension whole, and layouts still split attention by heads.
        heads = "num_heads"
        copies = self.majority > 1
        entries = []
        for index, part in enumerate(("query", "key", "value")):
            entries.append(Nested(
                f"{part}_kernel", getattr(self, f"{part}_kernel"), produces={-2: heads},
                copies=copies, value=lambda index=index: self._kernels()[index],
            ))
            if self.use_bias:
                entries.append(Nested(f"{part}_bias", getattr(self, f"{part}_bias"),
                                      produces={-2: heads}, bias=True))
        entries.append(Nested("output_kernel", self.output_kernel, consumes={-3: heads},
                              copies=copies, value=lambda: self._kernels()[3]))
        if self.use_bias:
            entries.append(Nested("output_bias", self.output_bias, bias=True))
        for part in ("query", "key", "value", "output"):  # folded into the served kernels
            mixture = getattr(self, f"{part}_kernel_mixture", None)
            if mixture is not None:
                entries.append(Nested(f"{part}_kernel_mixture", mixture, served=False))
        return entries

    def call(
        self,
        query,
        value=None,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        training=None,
        width=None,
    ):
        h = self._active_width(width).get("num_heads", self.num_heads)
        h, sampled = split_width(h, self.num_heads)
        # Like `MultiHeadAttention`: the query's Keras mask is read from the tensor; the value's
        # and key's come in as arguments (Keras fills them in when they are separate inputs).
        query_mask = get_keras_mask(query)
        if value is None:
            value = query
            value_mask = query_mask if value_mask is None else value_mask
        key = value if key is None else key
        mask = self._compute_attention_mask(
            query, value, (query_mask, value_mask, key_mask), attention_mask, use_causal_mask
        )  # (B|1, T|1, S) bool, or None
        query_kernel, key_kernel, value_kernel, output_kernel = self._kernels(training)
        heads = {"num_heads": h}
        q = self._project(query, "query", query_kernel, heads)  # (B, T, h, key_dim)
        k = self._project(key, "key", key_kernel, heads)  # (B, S, h, key_dim)
        v = self._project(value, "value", value_kernel, heads)  # (B, S, h, value_dim)
        q = ops.multiply(q, ops.cast(1.0 / math.sqrt(self.key_dim), q.dtype))
        scores = ops.einsum("bsnk,btnk->bnts", k, q)  # (B, h, T, S)
        weights = self._masked_softmax(scores, mask)  # (B, h, T, S)
        if self.dropout > 0:
            weights = self._dropout_layer(weights, training=training)
        context = ops.einsum("bnts,bsnv->btnv", weights, v)  # (B, T, h, value_dim)
        if sampled is not None:  # heads past the drawn count contribute nothing
            context = ops.multiply(context, sampled.mask(h, context.dtype)[:, None])
        self._observe("output_kernel", context, -2)
        output_kernel = self._slice("output_kernel", heads, output_kernel)
        outputs = ops.einsum("btnv,nvo->bto", context, output_kernel)  # (B, T, d_out)
        if self.use_bias:
            outputs = ops.add(outputs, self.output_bias)
        return outputs

    def _compute_attention_mask(self, query, value, keras_masks, attention_mask, causal):
        """AND of every mask source, as `MultiHeadAttention._compute_attention_mask` does."""
        query_mask, value_mask, key_mask = keras_masks
        masks = []
        if query_mask is not None:
            masks.append(ops.expand_dims(ops.cast(query_mask, "bool"), -1))  # (B, T, 1)
        for keys_mask in (value_mask, key_mask):
            if keys_mask is not None:
                masks.append(ops.expand_dims(ops.cast(keys_mask, "bool"), -2))  # (B, 1, S)
        if causal:
            rows = ops.expand_dims(ops.arange(ops.shape(query)[1]), -1)  # (T, 1)
            cols = ops.expand_dims(ops.arange(ops.shape(value)[1]), 0)  # (1, S)
            masks.append(ops.expand_dims(ops.greater_equal(rows, cols), 0))  # (1, T, S)
        if attention_mask is not None:
            masks.append(ops.cast(attention_mask, "bool"))  # (B, T, S)
        mask = masks[0] if masks else None
        for other in masks[1:]:
            mask = ops.logical_and(mask, other)
        return mask

    def _project(self, x, part, kernel, heads):
        y = ops.einsum("bsd,dnk->bsnk", x, self._slice(f"{part}_kernel", heads, kernel))
        return ops.add(y, self._slice(f"{part}_bias", heads)) if self.use_bias else y

    def _masked_softmax(self, scores, mask):
        scores = ops.cast(scores, "float32")
        if mask is not None:
            while len(mask.shape) < 4:
                mask = ops.expand_dims(mask, axis=-3)  # (B, 1, T, S): shared by all heads
            scores = ops.where(mask, scores, -1e9)
        weights = ops.softmax(scores, axis=-1)
        if mask is not None and self.dropout > 0:
            # Stock MHA's dropout path (keras.layers.Softmax) zeroes rows with no key left; its
            # fused path (dropout == 0) leaves them uniform. Mirror both: export stays exact.
            weights = ops.where(mask, weights, 0.0)
        return ops.cast(weights, self.compute_dtype)

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return tuple(query_shape[:-1]) + (self._output_dim or query_shape[-1],)

    # === Extraction ===

    def to_stock(self, width, name=None):
        """An unbuilt `keras.layers.MultiHeadAttention` equal to this layer at `width`.

        Note: in Keras 3.15 on JAX, the stock layer fails when `value_dim != key_dim` and
        `dropout == 0` (its fused kernel needs equal head sizes); this layer does not.
        """
        return keras.layers.MultiHeadAttention(
            num_heads=width.get("num_heads", self.num_heads),
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            dropout=self.dropout,
            use_bias=self.use_bias,
            output_shape=self.output_kernel.shape[-1],
            seed=self.seed,
            name=name or self.name,
            dtype=self.dtype_policy,
            **self._weight_config(),
        )

    def export(self, inputs, width, value=None, key=None, training=None, **call_kwargs):
        if isinstance(inputs, (list, tuple)):  # positional `(query, value[, key])`
            inputs, value, key = (list(inputs) + [value, key])[:3]
        call_kwargs.pop("query_mask", None)  # the stock layer reads it from the tensor
        call_kwargs.pop("width", None)
        if training is not None:
            call_kwargs["training"] = training
        attention = self.to_stock(width)
        outputs = attention(inputs, inputs if value is None else value, key=key, **call_kwargs)
        attention.set_weights(self.sliced_weights(width))
        return outputs

    def matmul_flops(self, width, input_shape, value_shape=None):
        """FLOPs of the projections, `QK^T` and `AV` (see `attention_matmul_flops`).

        `value_shape` (batch, S, d_v) defaults to self-attention over the query.
        """
        batch, t, d_q = input_shape
        s = t if value_shape is None else value_shape[1]
        _, d_k, d_v, d_out = self._feature_dims(d_q)
        heads = width.get("num_heads", self.num_heads)
        return attention_matmul_flops(
            heads, self.key_dim, self.value_dim, batch, t, s, d_q, d_k, d_v, d_out
        )

    def _feature_dims(self, input_dim):
        # Built layers know their key/value/output sizes; before build, assume self-attention.
        if not self.built:
            return input_dim, input_dim, input_dim, self._output_dim or input_dim
        return (
            input_dim,
            self.key_kernel.shape[-3],  # majority copies, if any, stack in front
            self.value_kernel.shape[-3],
            self.output_kernel.shape[-1],
        )

    def _weight_config(self):
        return {
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_shape": self._output_dim,
            **self._weight_config(),
            "nested_heads": self.nested_heads,
            "seed": self.seed,
            "majority": self.majority,
            "majority_combine": self.majority_combine,
            "majority_seed": self.majority_seed,
            "majority_init": self.majority_init,
        }


# === FLOPs, shared with MatTransformerBlock ===


def attention_matmul_flops(heads, key_dim, value_dim, batch, t, s, d_q, d_k, d_v, d_out):
    """Matmul FLOPs (2 per multiply-add) of multi-head attention, summed over the batch.

    Counts the Q/K/V/output projections, `QK^T` and `AV`. `QK^T` and `AV` are counted over the
    full `T x S` score matrix whether or not a causal mask is applied: the dense kernels compute
    every score and then mask it. Softmax, scaling, bias adds and dropout are not matmuls.
    """
    projections = t * d_q * heads * key_dim + s * (d_k * heads * key_dim + d_v * heads * value_dim)
    attention = heads * t * s * (key_dim + value_dim)
    output = t * heads * value_dim * d_out
    return 2 * batch * (projections + attention + output)
