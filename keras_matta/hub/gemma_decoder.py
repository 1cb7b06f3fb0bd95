"""MatGemmaDecoder: a Gemma (1 or 2) decoder block with a nested gated FFN and head groups."""

import keras
from keras import ops

from keras_matta.hub.gated_decoder import MatGatedDecoder
from keras_matta.hub.gemma_attention import MatGemmaAttention


def gelu_tanh(x):
    """GELU's tanh approximation, Gemma's gate activation."""
    return ops.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package="keras_matta")
class MatGemmaDecoder(MatGatedDecoder):
    """keras-hub's `GemmaDecoderBlock` whose gated FFN width (and head groups) is nested.

    A `MatGatedDecoder` (the call, widths and nesting live there) with Gemma's parts: RMS norms
    `x / sqrt(mean(x^2) + eps) * (1 + scale)`, a `MatGemmaAttention`, a GELU (tanh) gate and,
    for Gemma 2, norms after the attention and after the FFN. Run at `k` FFN units and `h`
    query heads:

        u = x + N_a(GQA_h(N_1(x), mask))
        y = u + N_f((N_2(u) W_up[:, :k] * gelu(N_2(u) W_gate[:, :k])) W_down[:k, :])

    with `N_a, N_f` the identity unless `use_post_attention_norm` / `use_post_ffw_norm`, and
    `mask` causal and padding, limited to the last `sliding_window_size` positions for a local
    (sliding-window) block.

    **Units.** `intermediate_dim` and every FFN width count units (the gate's columns), as in
    every Mat layer; keras-hub's `GemmaBackbone` / `GemmaDecoderBlock` count the gate and up
    columns together, so a width of `k` units extracts into `intermediate_dim=2 * k`.

    Args:
        intermediate_dim: the full (TA) number of FFN units `I`.
        num_query_heads, num_key_value_heads: the full (TA) head counts.
        head_dim: the size of every head (free: Gemma's `h_d * H` need not be `d`).
        use_post_attention_norm, use_post_ffw_norm: Gemma 2's post-norms. Default False.
        logit_soft_cap: the attention logits' soft cap (Gemma 2: 50), or `None`.
        sliding_window_size: the local attention window, or `None` (default) for global
            attention.
        layer_norm_epsilon: epsilon of the RMS norms. Defaults to `1e-6`.
        kernel_initializer: initializer of every kernel.
        dropout: attention dropout rate.
        nested_heads: whether the query heads (in whole groups) are nested. Defaults to False.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.
        padding_mask: optional `(B, T)`, 1 for real tokens.
        training: whether dropout is active.
        width: optional width spec: an int number of FFN units, a fraction, or
            `{"intermediate_dim": k, "num_query_heads": h}`.

    Example:

    ```python
    from keras_matta.hub import MatGemmaDecoder

    block = MatGemmaDecoder(intermediate_dim=32, num_query_heads=4, num_key_value_heads=2,
                            head_dim=8, use_post_attention_norm=True, use_post_ffw_norm=True,
                            logit_soft_cap=50.0, sliding_window_size=3, nested_heads=True)
    x = np.random.rand(2, 5, 16).astype("float32")       # (batch, time, d)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])   # 1 for real tokens
    y = block(x, padding_mask=mask, width={"intermediate_dim": 8, "num_query_heads": 2})
    assert tuple(y.shape) == (2, 5, 16)   # 8 FFN units: a GemmaDecoderBlock of intermediate 16
    ```

    Reference:
        Gemma Team, "Gemma: Open Models Based on Gemini Research and Technology", 2024, and
        "Gemma 2", 2024; Verma et al., "Matryoshka Model Learning for Improved Elastic Student
        Models", KDD 2025 (arXiv 2505.23337).
    """

    activation = staticmethod(gelu_tanh)

    def __init__(self, intermediate_dim, num_query_heads, num_key_value_heads, head_dim=None,
                 use_post_attention_norm=False, use_post_ffw_norm=False, logit_soft_cap=None,
                 sliding_window_size=None, layer_norm_epsilon=1e-6,
                 kernel_initializer="glorot_uniform", dropout=0.0, nested_heads=False,
                 **kwargs):
        if sliding_window_size is not None and (
            not isinstance(sliding_window_size, int) or sliding_window_size < 1
        ):
            raise ValueError(
                "`sliding_window_size` must be a positive int or None (global attention); got "
                f"{sliding_window_size!r}."
            )
        super().__init__(intermediate_dim, num_query_heads, num_key_value_heads, head_dim,
                         layer_norm_epsilon=layer_norm_epsilon,
                         kernel_initializer=kernel_initializer, dropout=dropout,
                         nested_heads=nested_heads, **kwargs)
        self.use_post_attention_norm = use_post_attention_norm
        self.use_post_ffw_norm = use_post_ffw_norm
        self.logit_soft_cap = logit_soft_cap
        self.sliding_window_size = sliding_window_size

    def _make_norm(self, name):
        from keras_hub.src.models.gemma.rms_normalization import RMSNormalization

        return RMSNormalization(epsilon=self.layer_norm_epsilon, name=name,
                                dtype=self.dtype_policy)

    def _make_attention(self, kernel_initializer, name):
        return MatGemmaAttention(
            self.num_query_heads, self.num_key_value_heads, self.head_dim,
            logit_soft_cap=self.logit_soft_cap, kernel_initializer=kernel_initializer,
            dropout=self.dropout, nested_heads=self.nested_heads, name=name,
            dtype=self.dtype_policy,
        )

    def _mask_window(self):
        return self.sliding_window_size

    # === Extraction ===

    def _stock_decoder(self, width):
        from keras_hub.src.models.gemma.gemma_decoder_block import GemmaDecoderBlock

        return GemmaDecoderBlock(**self._stock_kwargs(width))

    def _stock_kwargs(self, width):
        """The arguments of the stock block at `width` (Gemma 3's block takes them and more)."""
        heads, kv_heads = self.stock_heads(width)
        local = self.sliding_window_size is not None
        return dict(
            hidden_dim=self._ffn_down.units, intermediate_dim=2 * width["intermediate_dim"],
            head_dim=self.head_dim, num_query_heads=heads, num_key_value_heads=kv_heads,
            use_post_ffw_norm=self.use_post_ffw_norm,
            use_post_attention_norm=self.use_post_attention_norm,
            logit_soft_cap=self.logit_soft_cap, use_sliding_window_attention=local,
            sliding_window_size=self.sliding_window_size if local else 4096,
            layer_norm_epsilon=self.layer_norm_epsilon, dropout=self.dropout,
            dtype=self.dtype_policy, name=self.name,
        )

    def _stock_call(self, stock, inputs, padding_mask, kwargs):
        return stock(inputs, padding_mask=padding_mask, **kwargs)

    def _stock_variables(self, stock):
        attention = stock.attention
        variables = {
            "attention_norm/scale": stock.pre_attention_norm.scale,
            "attention/query_kernel": attention.query_dense.kernel,
            "attention/key_kernel": attention.key_dense.kernel,
            "attention/value_kernel": attention.value_dense.kernel,
            "attention/output_kernel": attention.output_dense.kernel,
            "ffn_norm/scale": stock.pre_ffw_norm.scale,
            "ffn_gate/kernel": stock.gating_ffw.kernel,
            "ffn_up/kernel": stock.gating_ffw_2.kernel,
            "ffn_down/kernel": stock.ffw_linear.kernel,
        }
        if self.use_post_attention_norm:
            variables["post_attention_norm/scale"] = stock.post_attention_norm.scale
        if self.use_post_ffw_norm:
            variables["post_ffn_norm/scale"] = stock.post_ffw_norm.scale
        return variables

    def get_config(self):
        return {
            **super().get_config(),
            "use_post_attention_norm": self.use_post_attention_norm,
            "use_post_ffw_norm": self.use_post_ffw_norm,
            "logit_soft_cap": self.logit_soft_cap,
            "sliding_window_size": self.sliding_window_size,
        }
