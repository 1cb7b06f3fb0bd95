"""MatLlamaAttention: Llama's rotary grouped-query attention on a nested prefix of heads."""

import keras

from keras_matta.hub.grouped_attention import MatGroupedQueryAttention

# The keras-hub models whose attention this is; they differ in the query/key/value biases.
FAMILIES = ("llama", "qwen")


@keras.saving.register_keras_serializable(package="keras_matta")
class MatLlamaAttention(MatGroupedQueryAttention):
    """Grouped-query attention with rotary embeddings that can run on any group prefix.

    A `MatGroupedQueryAttention` (the call lives there) with Llama's rotary embedding.
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
        super().__init__(num_query_heads, num_key_value_heads, head_dim,
                         kernel_initializer=kernel_initializer, dropout=dropout,
                         nested_heads=nested_heads, **kwargs)
        self.rope_max_wavelength = rope_max_wavelength
        self.rope_position_scaling_factor = rope_position_scaling_factor
        self.rope_frequency_adjustment_factor = rope_frequency_adjustment_factor
        self.rope_low_freq_factor = rope_low_freq_factor
        self.rope_high_freq_factor = rope_high_freq_factor
        self.rope_pretraining_sequence_length = rope_pretraining_sequence_length
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

    def get_config(self):
        return {
            **super().get_config(),
            "rope_max_wavelength": self.rope_max_wavelength,
            "rope_position_scaling_factor": self.rope_position_scaling_factor,
            "rope_frequency_adjustment_factor": self.rope_frequency_adjustment_factor,
            "rope_low_freq_factor": self.rope_low_freq_factor,
            "rope_high_freq_factor": self.rope_high_freq_factor,
            "rope_pretraining_sequence_length": self.rope_pretraining_sequence_length,
            "family": self.family,
        }

