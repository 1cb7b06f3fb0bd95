"""MatGemmaBackbone: keras-hub's Gemma (1 and 2) with nested gated-FFN units and head groups."""

import keras
from keras import ops

from keras_matta.hub.backbone import MatBackbone
from keras_matta.hub.gemma_decoder import MatGemmaDecoder
from keras_matta.hub.weights import Link

#: the options Gemma 1 and 2 (and Gemma 3) backbones share, named as keras-hub's arguments.
GEMMA_OPTIONS = (
    "query_head_dim_normalize", "use_post_ffw_norm", "use_post_attention_norm",
    "attention_logit_soft_cap", "final_logit_soft_cap", "use_sliding_window_attention",
    "sliding_window_size",
)


@keras.saving.register_keras_serializable(package="keras_matta")
class MatGemmaBackbone(MatBackbone):
    """`keras_hub.models.GemmaBackbone` (Gemma 1 and 2) with Mat blocks.

    The graph is Gemma's: a tied token embedding scaled by `sqrt(d)`, `num_layers`
    `MatGemmaDecoder` blocks (RMS norms, rotary grouped-query attention with free head size, a
    GELU-gated FFN; Gemma 2's post-norms, logit soft caps and alternating sliding-window
    blocks) and a final RMS norm. Run at `k` FFN units and `h` query heads (whole groups of
    `g = H / H_kv`), every block computes

        u = x + N_a(GQA_h(N_1(x)))
        y = u + N_f((N_2(u) W_up[:, :k] * gelu(N_2(u) W_gate[:, :k])) W_down[:k, :])

    and at the Student's `k`, `h` the model is exactly the source backbone. Every width is
    expressible as a `GemmaBackbone` (its head size is a free argument), so `extract` gives one
    at any uniform width.

    **Units.** Widths and `intermediate_dim` here count FFN units (the gate's columns), as for
    every Mat model; keras-hub's `GemmaBackbone.intermediate_dim` counts gate and up columns
    together: `k` units extract into `GemmaBackbone(intermediate_dim=2 * k)`, and
    `from_keras_hub` reads a `GemmaBackbone(intermediate_dim=I)` as `I // 2` units.

    What keras-hub 0.32 computes, and this model with it: `GemmaBackbone` does not hand
    `layer_norm_epsilon` to its blocks (their norms use `1e-6`, the final norm the argument),
    and `GemmaDecoderBlock` scales queries by `1 / sqrt(head_dim)` whatever
    `query_head_dim_normalize` says (the option is kept in the config and extracted as given).
    The final logit soft cap lives in the token embedding, so `keras_matta.hub.LogitsModel`
    applies it.

    Args:
        vocabulary_size, num_layers, hidden_dim, head_dim, query_head_dim_normalize,
            use_post_ffw_norm, use_post_attention_norm, attention_logit_soft_cap,
            final_logit_soft_cap, use_sliding_window_attention, sliding_window_size,
            layer_norm_epsilon, dropout: as in `keras_hub.models.GemmaBackbone`.
        num_query_heads, num_key_value_heads: the TA's head counts.
        intermediate_dim: the TA's FFN units (half keras-hub's `intermediate_dim`).
        student_intermediate_dim: the source backbone's FFN units (default: the TA's).
        student_num_query_heads: the source backbone's query heads (default: the TA's).
        nested_heads: whether whole head groups are nested. Defaults to
            `num_query_heads > student_num_query_heads`.
        source_class: `"GemmaBackbone"`.
        dtype: dtype policy.

    Example:

    ```python
    import keras_hub

    # Real use: keras_hub.models.GemmaBackbone.from_preset("gemma2_2b_en").
    gemma = keras_hub.models.GemmaBackbone(vocabulary_size=50, num_layers=2,
                                           num_query_heads=4, num_key_value_heads=2,
                                           hidden_dim=16, intermediate_dim=32, head_dim=8)
    ta = keras_matta.hub.from_keras_hub(gemma)       # the pretrained model is the TA: 16 units
    assert ta.source_widths()["transformer_layer_0"] == {"intermediate_dim": 16}
    half = keras_matta.extract(ta, 8)                # 8 units: GemmaBackbone(intermediate 16)
    assert isinstance(half, keras_hub.models.GemmaBackbone) and half.intermediate_dim == 16
    ```

    Reference:
        Gemma Team, "Gemma", 2024, and "Gemma 2", 2024; Verma et al., "Matryoshka Model
        Learning for Improved Elastic Student Models", KDD 2025 (arXiv 2505.23337).
    """

    source_classes = ("GemmaBackbone",)
    #: the Mat block class (Gemma 3 swaps in its own).
    decoder_class = MatGemmaDecoder
    #: keras-hub's `intermediate_dim` per FFN unit: Gemma 1/2 count gate and up columns.
    stock_columns_per_unit = 2

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_query_heads,
        num_key_value_heads,
        hidden_dim,
        intermediate_dim,
        head_dim,
        student_intermediate_dim=None,
        student_num_query_heads=None,
        nested_heads=None,
        query_head_dim_normalize=True,
        use_post_ffw_norm=False,
        use_post_attention_norm=False,
        attention_logit_soft_cap=None,
        final_logit_soft_cap=None,
        use_sliding_window_attention=False,
        sliding_window_size=4096,
        layer_norm_epsilon=1e-6,
        dropout=0,
        source_class="GemmaBackbone",
        dtype=None,
        **kwargs,
    ):
        from keras_hub.layers import ReversibleEmbedding
        from keras_hub.src.models.gemma.rms_normalization import RMSNormalization

        student_intermediate_dim = student_intermediate_dim or intermediate_dim
        student_num_query_heads = student_num_query_heads or num_query_heads
        if nested_heads is None:
            nested_heads = num_query_heads > student_num_query_heads
        # === Layers ===
        self.token_embedding = ReversibleEmbedding(
            vocabulary_size, hidden_dim, tie_weights=True,
            embeddings_initializer=keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="untruncated_normal"),
            logit_soft_cap=final_logit_soft_cap, dtype=dtype, name="token_embedding",
        )
        locals_ = [use_sliding_window_attention and self.local_block(i)
                   for i in range(num_layers)]
        self.transformer_layers = [
            self.decoder_class(
                intermediate_dim, num_query_heads, num_key_value_heads, head_dim=head_dim,
                use_post_attention_norm=use_post_attention_norm,
                use_post_ffw_norm=use_post_ffw_norm, logit_soft_cap=attention_logit_soft_cap,
                sliding_window_size=sliding_window_size if local else None,
                layer_norm_epsilon=1e-6,  # keras-hub's blocks keep their default epsilon
                dropout=dropout, nested_heads=nested_heads, dtype=dtype,
                name=f"transformer_layer_{i}", **self._decoder_kwargs(local),
            )
            for i, local in enumerate(locals_)
        ]
        # By name: keras-hub's RMSNormalization has no get_config of its own, and Keras' automatic
        # one (which a Mix'n'Match extraction clones it with) refuses a policy object.
        norm_dtype = dtype.name if isinstance(dtype, keras.dtype_policies.DTypePolicy) else dtype
        self.layer_norm = RMSNormalization(epsilon=layer_norm_epsilon, dtype=norm_dtype,
                                           name="final_normalization")

        # === Functional model ===
        def embed(token_ids):
            x = self.token_embedding(token_ids)  # (B, T, d)
            return x * ops.cast(ops.sqrt(hidden_dim), x.dtype)  # Gemma's embedding scale

        inputs, outputs = self._decoder_graph(embed)
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            source_class=source_class,
            dtype=dtype,
            **kwargs,
        )
        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.num_layers = num_layers
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.head_dim = head_dim
        self.student_intermediate_dim = student_intermediate_dim
        self.student_num_query_heads = student_num_query_heads
        self.nested_heads = nested_heads
        self.gemma_options = dict(zip(GEMMA_OPTIONS, (
            query_head_dim_normalize, use_post_ffw_norm, use_post_attention_norm,
            attention_logit_soft_cap, final_logit_soft_cap, use_sliding_window_attention,
            sliding_window_size,
        )))
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout

    @staticmethod
    def local_block(index):
        """Whether block `index` is local when sliding windows are on (Gemma 2: even blocks)."""
        return index % 2 == 0

    def _decoder_kwargs(self, local):
        """Further arguments of a (`local` or global) block: none for Gemma 1 and 2."""
        return {}

    @property
    def student_num_heads(self):
        return self.student_num_query_heads

    def _heads_dimension(self):
        return "num_query_heads"

    # === Extraction ===

    def _stock_config(self, width):
        heads, kv_heads = self.transformer_layers[0].stock_heads(width)
        return {
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_query_heads": heads,
            "num_key_value_heads": kv_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.stock_columns_per_unit * width["intermediate_dim"],
            "head_dim": self.head_dim,
            **self.gemma_options,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "dropout": self.dropout,
            "dtype": self.dtype_policy,
        }

    def _stock_width_error(self, block, width):
        return None  # the head size is an argument of GemmaBackbone: every width fits

    def _stock_depth_error(self, kept):
        # The source class makes blocks local by index: the kept blocks, renumbered, must agree.
        for i, block in enumerate(kept):
            local = self.gemma_options["use_sliding_window_attention"] and self.local_block(i)
            if (block.sliding_window_size is not None) != local:
                return (f"'{block.name}' would become block {i} of a {self.source_class}, "
                        f"which makes it {'local' if local else 'global'}")
        return None

    def _embedding_links(self, stock):
        return [
            Link(self.token_embedding.embeddings, stock.token_embedding.embeddings),
            Link(self.layer_norm.scale, stock.layer_norm.scale),
        ]

    def _block_links(self, block, stock_block):
        return block.links(stock_block)

    # === Conversion ===

    @classmethod
    def source_intermediate_dim(cls, backbone):
        return backbone.intermediate_dim // cls.stock_columns_per_unit

    @classmethod
    def from_source(cls, backbone, ta_intermediate_dim, ta_num_heads=None, name=None):
        """An unconverted (randomly initialised) Mat backbone shaped around `backbone`.

        `ta_intermediate_dim` counts FFN units; `ta_num_heads` query heads (the TA's
        key/value heads keep the source's ratio).
        """
        groups = backbone.num_query_heads // backbone.num_key_value_heads
        heads = ta_num_heads or backbone.num_query_heads
        return cls(
            vocabulary_size=backbone.vocabulary_size,
            num_layers=backbone.num_layers,
            num_query_heads=heads,
            num_key_value_heads=heads // groups,
            hidden_dim=backbone.hidden_dim,
            intermediate_dim=ta_intermediate_dim,
            head_dim=backbone.head_dim,
            student_intermediate_dim=cls.source_intermediate_dim(backbone),
            student_num_query_heads=backbone.num_query_heads,
            nested_heads=ta_num_heads is not None,
            **cls._source_options(backbone),
            layer_norm_epsilon=backbone.layer_norm_epsilon,
            dropout=backbone.dropout,
            source_class=type(backbone).__name__,
            dtype=backbone.dtype_policy,
            name=name or f"mat_{backbone.name}",
        )

    @classmethod
    def _source_options(cls, backbone):
        """The family's options of a source `backbone`, as this class' arguments."""
        return {key: getattr(backbone, key) for key in GEMMA_OPTIONS}

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_query_heads": self.num_query_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "head_dim": self.head_dim,
            "student_intermediate_dim": self.student_intermediate_dim,
            "student_num_query_heads": self.student_num_query_heads,
            "nested_heads": self.nested_heads,
            **self.gemma_options,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "dropout": self.dropout,
        }
