"""MatGemma3Decoder: a Gemma 3 decoder block with a nested gated FFN and head groups."""

import keras

from keras_matta.hub.gemma3_attention import MatGemma3Attention
from keras_matta.hub.gemma_decoder import MatGemmaDecoder


@keras.saving.register_keras_serializable(package="keras_matta")
class MatGemma3Decoder(MatGemmaDecoder):
    """keras-hub's `Gemma3DecoderBlock` (text only) whose gated FFN and head groups are nested.

    A `MatGemmaDecoder` (the call, widths and nesting live there) whose attention is a
    `MatGemma3Attention`: RMS-normed queries and keys and the block's own rotary settings. Run
    at `k` FFN units and `h` query heads:

        u = x + N_a(GQA_h(N_1(x), mask))      (GQA_h with N_q, N_k and RoPE(wavelength, scale))
        y = u + N_f((N_2(u) W_up[:, :k] * gelu(N_2(u) W_gate[:, :k])) W_down[:k, :])

    **Units.** keras-hub builds Gemma 3's blocks with `gate_dim_reduction=1`, so its
    `intermediate_dim` counts FFN units (gate columns) as every Mat layer does: a width of `k`
    units extracts into `Gemma3DecoderBlock(intermediate_dim=k)` (Gemma 1/2: `2 * k`).

    Args:
        intermediate_dim: the full (TA) number of FFN units `I`.
        num_query_heads, num_key_value_heads: the full (TA) head counts.
        head_dim: the size of every head.
        use_query_key_norm: whether queries and keys are RMS-normed. Defaults to True.
        rope_wavelength: the rotary wavelength (keras-hub: 10,000 for local blocks, 1,000,000
            for global ones). Defaults to 10,000.
        rope_scaling_factor: the rotary position scaling. Defaults to 1.
        **kwargs: `MatGemmaDecoder`'s (post-norms, `logit_soft_cap`, `sliding_window_size`,
            `layer_norm_epsilon`, `kernel_initializer`, `dropout`, `nested_heads`) and the
            base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.
        padding_mask: optional `(B, T)`, 1 for real tokens.
        training: whether dropout is active.
        width: optional width spec: an int number of FFN units, a fraction, or
            `{"intermediate_dim": k, "num_query_heads": h}`.

    Example:

    ```python
    from keras_matta.hub import MatGemma3Decoder

    block = MatGemma3Decoder(intermediate_dim=8, num_query_heads=4, num_key_value_heads=2,
                             head_dim=6, sliding_window_size=3, nested_heads=True)
    x = np.random.rand(2, 5, 16).astype("float32")       # (batch, time, d)
    y = block(x, width={"intermediate_dim": 4, "num_query_heads": 2})
    assert tuple(y.shape) == (2, 5, 16)   # 4 FFN units: a Gemma3DecoderBlock of intermediate 4
    ```

    Reference:
        Gemma Team, "Gemma 3 Technical Report", 2025 (arXiv 2503.19786); Verma et al.,
        "Matryoshka Model Learning for Improved Elastic Student Models", KDD 2025
        (arXiv 2505.23337).
    """

    def __init__(self, intermediate_dim, num_query_heads, num_key_value_heads, head_dim=None,
                 use_query_key_norm=True, rope_wavelength=10_000.0, rope_scaling_factor=1.0,
                 **kwargs):
        super().__init__(intermediate_dim, num_query_heads, num_key_value_heads, head_dim,
                         **kwargs)
        self.use_query_key_norm = use_query_key_norm
        self.rope_wavelength = rope_wavelength
        self.rope_scaling_factor = rope_scaling_factor

    def _make_attention(self, kernel_initializer, name):
        # keras-hub's Gemma3DecoderBlock leaves the query/key norms at epsilon 1e-6.
        return MatGemma3Attention(
            self.num_query_heads, self.num_key_value_heads, self.head_dim,
            use_query_key_norm=self.use_query_key_norm, layer_norm_epsilon=1e-6,
            logit_soft_cap=self.logit_soft_cap, rope_wavelength=self.rope_wavelength,
            rope_scaling_factor=self.rope_scaling_factor, kernel_initializer=kernel_initializer,
            dropout=self.dropout, nested_heads=self.nested_heads, name=name,
            dtype=self.dtype_policy,
        )

    # === Extraction ===

    def _stock_decoder(self, width):
        from keras_hub.src.models.gemma3.gemma3_decoder_block import Gemma3DecoderBlock

        return Gemma3DecoderBlock(**self._stock_kwargs(width))

    def _stock_kwargs(self, width):
        return {
            **super()._stock_kwargs(width),
            "intermediate_dim": width["intermediate_dim"],  # gate columns: units
            "gate_dim_reduction": 1,
            "use_query_key_norm": self.use_query_key_norm,
            "rope_wavelength": self.rope_wavelength,
            "rope_scaling_factor": self.rope_scaling_factor,
        }

    def _stock_variables(self, stock):
        variables = super()._stock_variables(stock)
        if self.use_query_key_norm:
            variables["attention/query_norm/scale"] = stock.attention.query_norm.scale
            variables["attention/key_norm/scale"] = stock.attention.key_norm.scale
        return variables

    def get_config(self):
        return {
            **super().get_config(),
            "use_query_key_norm": self.use_query_key_norm,
            "rope_wavelength": self.rope_wavelength,
            "rope_scaling_factor": self.rope_scaling_factor,
        }
