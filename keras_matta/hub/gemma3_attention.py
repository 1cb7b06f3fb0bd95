"""MatGemma3Attention: Gemma 3's attention (RMS-normed queries and keys) on nested head groups."""

import keras

from keras_matta.hub.gemma_attention import MatGemmaAttention
from keras_matta.layers import nesting as nesting_lib


@keras.saving.register_keras_serializable(package="keras_matta")
class MatGemma3Attention(MatGemmaAttention):
    """keras-hub's `CachedGemma3Attention` that can run on any prefix of whole head groups.

    A `MatGemmaAttention` whose queries and keys pass an RMS norm over each head's features
    before the rotary embedding (`use_query_key_norm`), with Gemma 3's per-block rotary
    settings (local blocks: wavelength 10,000; global blocks: 1,000,000 and a position scaling).
    Run at `h` query heads (whole groups of `g = H / H_kv`):

        q_i = RoPE(N_q(x W_q[i])),  k_j = RoPE(N_k(x W_k[j])),  v_j = x W_v[j]
        y   = sum_{i < h} (softmax(cap(q_i k_{i // g}^T / sqrt(h_d)), mask) v_{i // g}) W_o[i]

    with `N(z) = z / sqrt(mean(z^2) + eps) * (1 + s)` over the `h_d` features of one head. The
    norm scales `s` (shape `(h_d,)`) are shared by every head, so they are not nested: every
    group prefix reads them whole, and reordering heads leaves them unchanged.

    Args:
        num_query_heads: the full (TA) number of query heads `H`.
        num_key_value_heads: the full number of key/value heads `H_kv` (divides `H`).
        head_dim: the size of every head `h_d`.
        use_query_key_norm: whether queries and keys are RMS-normed. Defaults to True.
        layer_norm_epsilon: epsilon of the query/key norms. Defaults to `1e-6`.
        **kwargs: `MatGemmaAttention`'s (`logit_soft_cap`, `rope_wavelength`,
            `rope_scaling_factor`, `kernel_initializer`, `dropout`, `nested_heads`) and the
            base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.
        attention_mask: optional bool `(B, T, T)`, `True` where attention is allowed.
        training: whether dropout is active.
        width: optional width spec (`{"num_query_heads": h}`, an int or a fraction).

    Example:

    ```python
    from keras_matta.hub import MatGemma3Attention

    attention = MatGemma3Attention(num_query_heads=4, num_key_value_heads=2, head_dim=6,
                                   rope_wavelength=1e6, rope_scaling_factor=8.0)
    x = np.random.rand(2, 5, 16).astype("float32")          # (batch, time, d)
    assert tuple(attention(x, width=2).shape) == (2, 5, 16)  # the first group only
    assert tuple(attention.query_norm.scale.shape) == (6,)   # one scale per head feature
    ```

    Reference:
        Gemma Team, "Gemma 3 Technical Report", 2025 (arXiv 2503.19786); Verma et al.,
        "Matryoshka Model Learning for Improved Elastic Student Models", KDD 2025
        (arXiv 2505.23337).
    """

    def __init__(self, num_query_heads, num_key_value_heads, head_dim, use_query_key_norm=True,
                 layer_norm_epsilon=1e-6, **kwargs):
        super().__init__(num_query_heads, num_key_value_heads, head_dim, **kwargs)
        self.use_query_key_norm = use_query_key_norm
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, inputs_shape):
        super().build(inputs_shape)
        if self.use_query_key_norm:
            from keras_hub.src.models.gemma3.gemma3_layers import RMSNormalization

            for part in ("query", "key"):
                norm = RMSNormalization(epsilon=self.layer_norm_epsilon, name=f"{part}_norm",
                                        dtype=self.dtype_policy)
                norm.build((None, None, None, self.head_dim))
                setattr(self, f"{part}_norm", norm)

    def _project(self, inputs, part, heads):
        y = super()._project(inputs, part, heads)  # (B, T, heads, h_d)
        if self.use_query_key_norm and part in ("query", "key"):
            y = getattr(self, f"{part}_norm")(y)  # per head, before the rotary embedding
        return y

    def nesting(self):
        entries = super().nesting()
        if self.use_query_key_norm:
            entries += [*nesting_lib.shared(self.query_norm, "query_norm"),
                        *nesting_lib.shared(self.key_norm, "key_norm")]
        return entries

    def get_config(self):
        return {
            **super().get_config(),
            "use_query_key_norm": self.use_query_key_norm,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
