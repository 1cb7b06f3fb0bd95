"""MatLlamaDecoder: a Llama decoder block with a nested gated FFN (and nested head groups)."""

import keras
from keras import ops

from keras_matta.hub.gated_decoder import MatGatedDecoder
from keras_matta.hub.llama_attention import FAMILIES
from keras_matta.hub.llama_attention import MatLlamaAttention


@keras.saving.register_keras_serializable(package="keras_matta")
class MatLlamaDecoder(MatGatedDecoder):
    """keras-hub's `LlamaTransformerDecoder` whose gated FFN width (and heads) is nested.

    For `x` of shape `(B, T, d)`, run at FFN width `k <= I` and `h` query heads:

        u = x + dropout(GQA_h(RMSNorm_1(x), causal & padding mask))
        y = u + (RMSNorm_2(u) W_up[:, :k] * silu(RMSNorm_2(u) W_gate[:, :k])) W_down[:k, :]

    with `RMSNorm(x) = x / sqrt(mean(x^2) + eps) * scale` and `GQA_h` a `MatLlamaAttention` on
    its first `h` query heads (all of them unless `nested_heads`). The FFN kernels are
    `MatDense` layers (no biases): the gate and up projections nest their output units, the
    down projection its input rows. At the Student's widths it equals the source block exactly.
    A `MatGatedDecoder` (the call, widths and nesting live there) with Llama's norms and SiLU.

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

    activation = staticmethod(ops.silu)

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
        super().__init__(intermediate_dim, num_query_heads, num_key_value_heads, head_dim,
                         layer_norm_epsilon=layer_norm_epsilon,
                         kernel_initializer=kernel_initializer, dropout=dropout,
                         nested_heads=nested_heads, **kwargs)
        self.rope = {
            "rope_max_wavelength": rope_max_wavelength,
            "rope_position_scaling_factor": rope_position_scaling_factor,
            "rope_frequency_adjustment_factor": rope_frequency_adjustment_factor,
            "rope_low_freq_factor": rope_low_freq_factor,
            "rope_high_freq_factor": rope_high_freq_factor,
            "rope_pretraining_sequence_length": rope_pretraining_sequence_length,
        }
        self.family = family

    def _make_norm(self, name):
        from keras_hub.src.models.llama.llama_layernorm import LlamaLayerNorm

        return LlamaLayerNorm(self.layer_norm_epsilon, name=name, dtype=self.dtype_policy)

    def _make_attention(self, kernel_initializer, name):
        return MatLlamaAttention(
            self.num_query_heads, self.num_key_value_heads, self.head_dim, **self.rope,
            kernel_initializer=kernel_initializer, dropout=self.dropout,
            nested_heads=self.nested_heads, family=self.family, name=name,
            dtype=self.dtype_policy,
        )

    # === Extraction ===

    def stock_width_error(self, width, hidden_dim):
        heads, _ = self.stock_heads(width)
        if heads * self.head_dim != hidden_dim:
            return (
                f"keras-hub's Llama blocks derive the head size as hidden_dim // "
                f"num_query_heads, so only {hidden_dim // self.head_dim} query heads of size "
                f"{self.head_dim} are expressible; '{self.name}' runs {heads}."
            )
        return None

    def _stock_decoder(self, width):
        heads, kv_heads = self.stock_heads(width)
        kwargs = dict(
            intermediate_dim=width["intermediate_dim"], num_query_heads=heads,
            num_key_value_heads=kv_heads, activation="silu",
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            dropout=self.dropout, dtype=self.dtype_policy, name=self.name,
        )
        if self.family == "qwen":
            from keras_hub.src.models.qwen.qwen_decoder import QwenTransformerDecoder

            return QwenTransformerDecoder(
                rope_max_wavelength=self.rope["rope_max_wavelength"],
                rope_scaling_factor=self.rope["rope_position_scaling_factor"], **kwargs,
            )
        from keras_hub.src.models.llama.llama_decoder import LlamaTransformerDecoder

        return LlamaTransformerDecoder(**self.rope, **kwargs)

    def _stock_call(self, stock, inputs, padding_mask, kwargs):
        return stock(inputs, decoder_padding_mask=padding_mask, **kwargs)

    def _stock_variables(self, stock):
        attention = stock._self_attention_layer
        return {
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
        }

    def get_config(self):
        return {**super().get_config(), **self.rope, "family": self.family}
