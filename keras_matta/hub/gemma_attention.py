"""MatGemmaAttention: Gemma's soft-capped rotary grouped-query attention on nested head groups."""

import keras

from keras_matta.hub.grouped_attention import MatGroupedQueryAttention


@keras.saving.register_keras_serializable(package="keras_matta")
class MatGemmaAttention(MatGroupedQueryAttention):
    """keras-hub's `CachedGemmaAttention` that can run on any prefix of whole head groups.

    A `MatGroupedQueryAttention` (the call lives there) with Gemma's weights and options:
    kernels laid out as keras-hub's `W_q (H, d, h_d)`, `W_k, W_v (H_kv, d, h_d)`,
    `W_o (H, h_d, d)` (heads first, unlike Llama), the rotary embedding (wavelength 10,000 and
    no position scaling in Gemma 1 and 2; Gemma 3's global blocks change both), the Gemma 2
    soft cap on the logits and dropout on the attention weights. Run at `h` query heads (whole
    groups of `g = H / H_kv`):

        s_i = c tanh(q_i k_{i // g}^T / (sqrt(h_d) c))      (no cap: q_i k_{i // g}^T / sqrt(h_d))
        y   = sum_{i < h} (softmax(s_i, mask) v_{i // g}) W_o[i]

    The head size `h_d` is free (Gemma 7B: 16 heads of 256 on `d = 3072`), so every group
    prefix is a stock `CachedGemmaAttention(num_query_heads=h, num_key_value_heads=h / g)`.
    keras-hub also interleaves the two rotary halves of every query and key; that permutes the
    head features of `q` and `k` alike, which leaves every `q . k` unchanged, so it is left out.

    Args:
        num_query_heads: the full (TA) number of query heads `H`.
        num_key_value_heads: the full number of key/value heads `H_kv` (divides `H`).
        head_dim: the size of every head `h_d`.
        logit_soft_cap: the cap `c` of the attention logits (Gemma 2: 50), or `None`.
        rope_wavelength: the rotary embedding's maximum wavelength. Defaults to 10,000.
        rope_scaling_factor: the rotary embedding's position scaling. Defaults to 1.
        kernel_initializer: initializer of the four kernels.
        dropout: dropout rate on the attention weights.
        nested_heads: whether the number of query heads is nested. Defaults to `True`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.
        attention_mask: optional bool `(B, T, T)`, `True` where attention is allowed.
        training: whether dropout is active.
        width: optional width spec (`{"num_query_heads": h}`, an int or a fraction).

    Example:

    ```python
    from keras_matta.hub import MatGemmaAttention

    attention = MatGemmaAttention(num_query_heads=4, num_key_value_heads=2, head_dim=6,
                                  logit_soft_cap=50.0)
    x = np.random.rand(2, 5, 16).astype("float32")         # (batch, time, d): h_d * H != d
    assert tuple(attention(x).shape) == (2, 5, 16)          # 4 query, 2 key/value heads
    assert tuple(attention(x, width=2).shape) == (2, 5, 16)   # the first group only
    ```

    Reference:
        Gemma Team, "Gemma 2: Improving Open Language Models at a Practical Size", 2024;
        Ainslie et al., "GQA", 2023; Verma et al., "Matryoshka Model Learning for Improved
        Elastic Student Models", KDD 2025 (arXiv 2505.23337).
    """

    kernel_layout = "ndh"
    dropout_on_weights = True

    def __init__(self, num_query_heads, num_key_value_heads, head_dim, logit_soft_cap=None,
                 rope_wavelength=10_000.0, rope_scaling_factor=1.0,
                 kernel_initializer="glorot_uniform", dropout=0.0, nested_heads=True,
                 **kwargs):
        from keras_hub.layers import RotaryEmbedding

        if logit_soft_cap is not None and not logit_soft_cap > 0:
            raise ValueError(
                f"`logit_soft_cap` must be a positive number or None; got {logit_soft_cap!r}."
            )
        super().__init__(num_query_heads, num_key_value_heads, head_dim,
                         kernel_initializer=kernel_initializer, dropout=dropout,
                         nested_heads=nested_heads, **kwargs)
        self.logit_soft_cap = logit_soft_cap
        self.rope_wavelength = rope_wavelength
        self.rope_scaling_factor = rope_scaling_factor
        self._rotary = RotaryEmbedding(max_wavelength=rope_wavelength,
                                       scaling_factor=rope_scaling_factor,
                                       dtype=self.dtype_policy)

    def get_config(self):
        return {
            **super().get_config(),
            "logit_soft_cap": self.logit_soft_cap,
            "rope_wavelength": self.rope_wavelength,
            "rope_scaling_factor": self.rope_scaling_factor,
        }
