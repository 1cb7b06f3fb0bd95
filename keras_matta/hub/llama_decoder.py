"""MatLlamaDecoder: a Llama decoder block with a nested gated FFN (and nested head groups)."""

import keras
from keras import ops

from keras_matta._initializers import clone_initializer
from keras_matta.hub import weights as weights_lib
from keras_matta.hub.llama_attention import FAMILIES
from keras_matta.hub.llama_attention import MatLlamaAttention
from keras_matta.hub.llama_attention import check_whole_groups
from keras_matta.layer_width import is_dropped
from keras_matta.layers import nesting as nesting_lib
from keras_matta.layers.mat_dense import MatDense
from keras_matta.layers.mat_layer import MatLayer


@keras.saving.register_keras_serializable(package="keras_matta")
class MatLlamaDecoder(MatLayer, keras.layers.Layer):
    """keras-hub's `LlamaTransformerDecoder` whose gated FFN width (and heads) is nested.

    For `x` of shape `(B, T, d)`, run at FFN width `k <= I` and `h` query heads:

        u = x + dropout(GQA_h(RMSNorm_1(x), causal & padding mask))
        y = u + (RMSNorm_2(u) W_up[:, :k] * silu(RMSNorm_2(u) W_gate[:, :k])) W_down[:k, :]

    with `RMSNorm(x) = x / sqrt(mean(x^2) + eps) * scale` and `GQA_h` a `MatLlamaAttention` on
    its first `h` query heads (all of them unless `nested_heads`). The FFN kernels are
    `MatDense` layers (no biases): the gate and up projections nest their output units, the
    down projection its input rows. At the Student's widths it equals the source block exactly.

    Args:
        intermediate_dim: the full (TA) FFN width `I`.
        num_query_heads, num_key_value_heads: the full (TA) head counts.
        head_dim: the size of every head. Defaults to `d // num_query_heads`.
        rope_*: the rotary embedding, as in `keras_hub.models.LlamaBackbone`.
        layer_norm_epsilon: epsilon of both RMS norms. Defaults to `1e-6`.
        kernel_initializer: initializer of every kernel.
        dropout: attention dropout rate.
        nested_heads: whether the query heads (in whole groups) are nested. Defaults to False.
        family: `"llama"` (default) or `"qwen"`: Qwen's block is Llama's with query, key and
            value biases, and extracts into keras-hub's `QwenTransformerDecoder`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.
        padding_mask: optional `(B, T)`, 1 for real tokens.
        training: whether dropout is active.
        width: optional width spec: an int FFN width, a fraction, or
            `{"intermediate_dim": k, "num_query_heads": h}`.

    Example:

    ```python
    from keras_matta.hub import MatLlamaDecoder

    block = MatLlamaDecoder(intermediate_dim=128, num_query_heads=4, num_key_value_heads=2)
    x = np.random.rand(2, 5, 32).astype("float32")    # (batch, time, d): heads of 32 / 4
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])   # 1 for real tokens
    y = block(x, padding_mask=mask)                   # (2, 5, 32), FFN at 128 units
    y_student = block(x, padding_mask=mask, width=64)   # the Student's FFN: its first 64
    ```

    Reference:
        Touvron et al., "Llama 2", 2023; Verma et al., "Matryoshka Model Learning for Improved
        Elastic Student Models", KDD 2025 (arXiv 2505.23337).
    """

    def __init__(
        self,
        intermediate_dim,
        num_query_heads,
        num_key_value_heads,
        head_dim=None,
        rope_max_wavelength=10000,
        rope_position_scaling_factor=1.0,
        rope_frequency_adjustment_factor=None,
        rope_low_freq_factor=None,
        rope_high_freq_factor=None,
        rope_pretraining_sequence_length=None,
        layer_norm_epsilon=1e-6,
        kernel_initializer="glorot_uniform",
        dropout=0.0,
        nested_heads=False,
        family="llama",
        **kwargs,
    ):
        if family not in FAMILIES:
            raise ValueError(f"`family` must be one of {FAMILIES}; got {family!r}.")
        super().__init__(**kwargs)
        self.supports_masking = True
        self.intermediate_dim = intermediate_dim
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.rope = {
            "rope_max_wavelength": rope_max_wavelength,
            "rope_position_scaling_factor": rope_position_scaling_factor,
            "rope_frequency_adjustment_factor": rope_frequency_adjustment_factor,
            "rope_low_freq_factor": rope_low_freq_factor,
            "rope_high_freq_factor": rope_high_freq_factor,
            "rope_pretraining_sequence_length": rope_pretraining_sequence_length,
        }
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dropout = dropout
        self.nested_heads = nested_heads
        self.family = family

    def build(self, inputs_shape):
        from keras_hub.src.models.llama.llama_layernorm import LlamaLayerNorm

        d = inputs_shape[-1]
        self.head_dim = self.head_dim or d // self.num_query_heads
        common = {"dtype": self.dtype_policy}
        init = lambda: clone_initializer(self.kernel_initializer)  # noqa: E731 (one per kernel)
        name = lambda part: f"{self.name}_{part}"  # noqa: E731
        self._attention_norm = LlamaLayerNorm(self.layer_norm_epsilon,
                                              name=name("attention_norm"), **common)
        self._attention_norm.build(inputs_shape)
        self._attention = MatLlamaAttention(
            self.num_query_heads, self.num_key_value_heads, self.head_dim, **self.rope,
            kernel_initializer=init(), dropout=self.dropout, nested_heads=self.nested_heads,
            family=self.family, name=name("attention"), **common,
        )
        self._attention.build(inputs_shape)
        self._attention_dropout = keras.layers.Dropout(self.dropout, **common)
        self._ffn_norm = LlamaLayerNorm(self.layer_norm_epsilon, name=name("ffn_norm"), **common)
        self._ffn_norm.build(inputs_shape)
        dense = lambda units, part, **kw: MatDense(  # noqa: E731
            units, use_bias=False, kernel_initializer=init(), name=name(part), **kw, **common
        )
        self._ffn_gate = dense(self.intermediate_dim, "ffn_gate")
        self._ffn_gate.build(inputs_shape)
        self._ffn_up = dense(self.intermediate_dim, "ffn_up")
        self._ffn_up.build(inputs_shape)
        self._ffn_down = dense(d, "ffn_down", nested=False)
        self._ffn_down.build(tuple(inputs_shape[:-1]) + (self.intermediate_dim,))

    droppable = True

    def nested_dims(self):
        dims = {"intermediate_dim": self.intermediate_dim}
        if self.nested_heads:
            dims["num_query_heads"] = self.num_query_heads
        return dims

    def resolve_width(self, spec):
        width = super().resolve_width(spec)
        check_whole_groups(self.name, width, self.num_query_heads, self.num_key_value_heads)
        return width

    def nesting(self):
        input_ = nesting_lib.INPUT
        ffn_in = {"units": "intermediate_dim", input_: None}
        return [
            *nesting_lib.shared(self._attention_norm, "attention_norm"),
            *nesting_lib.rename(self._attention.nesting(), {}, "attention"),
            *nesting_lib.shared(self._ffn_norm, "ffn_norm"),
            *nesting_lib.rename(self._ffn_gate.nesting(), ffn_in, "ffn_gate"),
            *nesting_lib.rename(self._ffn_up.nesting(), ffn_in, "ffn_up"),
            *nesting_lib.rename(self._ffn_down.nesting(), {input_: "intermediate_dim"},
                                "ffn_down"),
        ]

    def coupled_dims(self):
        return self._attention.coupled_dims()

    def call(self, inputs, padding_mask=None, training=None, width=None):
        width = self._active_width(width)
        if is_dropped(width):  # elastic depth: the residual stream passes the block untouched
            return inputs
        mask = causal_mask(inputs, padding_mask)  # (B|1, T, T) bool
        x = self._attention_norm(inputs)
        x = self._attention(x, attention_mask=mask, training=training,
                            width=width.get("num_query_heads"))
        x = ops.add(inputs, self._attention_dropout(x, training=training))  # (B, T, d)
        y = self._ffn_norm(x)
        k = width["intermediate_dim"]
        gate = ops.cast(ops.silu(ops.cast(self._ffn_gate(y, width=k), "float32")),
                        self.compute_dtype)  # (B, T, k)
        y = self._ffn_down(ops.multiply(self._ffn_up(y, width=k), gate))  # (B, T, d)
        outputs = ops.add(x, y)
        self._observe("residual", (inputs, outputs), None)  # block importance
        return outputs

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    # === Extraction ===

    def stock_heads(self, width):
        """`(num_query_heads, num_key_value_heads)` of the stock block at `width`."""
        heads = width.get("num_query_heads", self.num_query_heads)
        return heads, heads * self.num_key_value_heads // self.num_query_heads

    def stock_width_error(self, width, hidden_dim):
        heads, _ = self.stock_heads(width)
        if heads * self.head_dim != hidden_dim:
            return (
                f"keras-hub's Llama blocks derive the head size as hidden_dim // "
                f"num_query_heads, so only {hidden_dim // self.head_dim} query heads of size "
                f"{self.head_dim} are expressible; '{self.name}' runs {heads}."
            )
        return None

    def export(self, inputs, width, padding_mask=None, training=None, **unused_call_kwargs):
        error = self.stock_width_error(width, inputs.shape[-1])
        if error:
            raise ValueError(f"Cannot export '{self.name}' at {width}: {error}")
        heads, kv_heads = self.stock_heads(width)
        stock = self._stock_decoder(
            intermediate_dim=width["intermediate_dim"], num_query_heads=heads,
            num_key_value_heads=kv_heads, activation="silu",
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            dropout=self.dropout, dtype=self.dtype_policy, name=self.name,
        )
        kwargs = {} if training is None else {"training": training}
        outputs = stock(inputs, decoder_padding_mask=padding_mask, **kwargs)
        weights_lib.slice_into_stock(self.links(stock), self.complete_width(width))
        return outputs

    def _stock_decoder(self, **kwargs):
        if self.family == "qwen":
            from keras_hub.src.models.qwen.qwen_decoder import QwenTransformerDecoder

            return QwenTransformerDecoder(
                rope_max_wavelength=self.rope["rope_max_wavelength"],
                rope_scaling_factor=self.rope["rope_position_scaling_factor"], **kwargs,
            )
        from keras_hub.src.models.llama.llama_decoder import LlamaTransformerDecoder

        return LlamaTransformerDecoder(**self.rope, **kwargs)

    def links(self, stock):
        """`Link`s to a keras-hub `LlamaTransformerDecoder` (see `keras_matta.hub.weights`)."""
        attention = stock._self_attention_layer
        return weights_lib.links(self, {
            "attention_norm/scale": stock._self_attention_layernorm.scale,
            "attention/query_kernel": attention._query_dense.kernel,
            "attention/key_kernel": attention._key_dense.kernel,
            "attention/value_kernel": attention._value_dense.kernel,
            "attention/output_kernel": attention._output_dense.kernel,
            "ffn_norm/scale": stock._feedforward_layernorm.scale,
            "ffn_gate/kernel": stock._feedforward_gate_dense.kernel,
            "ffn_up/kernel": stock._feedforward_intermediate_dense.kernel,
            "ffn_down/kernel": stock._feedforward_output_dense.kernel,
            **({
                f"attention/{part}_bias": getattr(attention, f"_{part}_dense").bias
                for part in ("query", "key", "value")
            } if self.family == "qwen" else {}),
        })

    def matmul_flops(self, width, input_shape):
        batch, t, d = input_shape
        k = width.get("intermediate_dim", self.intermediate_dim)
        return self._attention.matmul_flops(width, input_shape) + 2 * batch * t * 3 * d * k

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "num_query_heads": self.num_query_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            **self.rope,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "dropout": self.dropout,
            "nested_heads": self.nested_heads,
            "family": self.family,
        }


def causal_mask(inputs, padding_mask=None):
    """`(B|1, T, T)` bool: query `t` sees key `s <= t` (and only real keys)."""
    t = ops.shape(inputs)[1]
    rows = ops.expand_dims(ops.arange(t), -1)  # (T, 1)
    cols = ops.expand_dims(ops.arange(t), 0)  # (1, T)
    mask = ops.expand_dims(ops.greater_equal(rows, cols), 0)  # (1, T, T)
    if padding_mask is not None:
        keys = ops.expand_dims(ops.cast(padding_mask, "bool"), 1)  # (B, 1, T)
        mask = ops.logical_and(mask, keys)
    return mask
