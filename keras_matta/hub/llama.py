"""MatLlamaBackbone: keras-hub's Llama / Llama 3 with nested gated-FFN widths (and heads)."""

import keras

from keras_matta.hub.backbone import MatBackbone
from keras_matta.hub.llama_decoder import MatLlamaDecoder
from keras_matta.hub.weights import Link


@keras.saving.register_keras_serializable(package="keras_matta")
class MatLlamaBackbone(MatBackbone):
    """`keras_hub.models.Llama3Backbone` (or `LlamaBackbone`, `QwenBackbone`) with Mat blocks.

    The graph is Llama's: a token embedding, `num_layers` `MatLlamaDecoder` blocks (RMSNorm,
    rotary grouped-query attention, a SiLU-gated FFN) and a final RMSNorm. Run at FFN width `k`
    and `h` query heads (whole groups of `g = H / H_kv`), every block computes

        u = x + GQA_h(RMSNorm_1(x))
        y = u + (RMSNorm_2(u) W_up[:, :k] * silu(RMSNorm_2(u) W_gate[:, :k])) W_down[:k, :]

    and at the Student's `k = student_intermediate_dim`, `h = student_num_query_heads` the model
    is exactly the source backbone. Build one with `keras_matta.hub.from_keras_hub`; extract a
    width with `keras_matta.extract(model, width)`.

    Args:
        vocabulary_size, num_layers, hidden_dim, rope_*, layer_norm_epsilon, dropout,
            tie_word_embeddings: as in `keras_hub.models.LlamaBackbone`.
        intermediate_dim: the TA's FFN width.
        num_query_heads, num_key_value_heads: the TA's head counts.
        student_intermediate_dim: the source backbone's FFN width (default: the TA's).
        student_num_query_heads: the source backbone's query heads; the head size is
            `hidden_dim // student_num_query_heads` (default: the TA's).
        nested_heads: whether whole head groups are nested. Defaults to
            `num_query_heads > student_num_query_heads`.
        source_class: `"Llama3Backbone"` (default), `"LlamaBackbone"` or `"QwenBackbone"`
            (Qwen 1.5 / 2: Llama's blocks with query, key and value biases; its
            `rope_scaling_factor` is `rope_position_scaling_factor` here).
        dtype: dtype policy.

    Example:

    ```python
    import keras_hub

    # Real use: a pretrained Llama, e.g. SmolLM2-135M (FFN width 1536) with
    #   llama = keras_matta.hub.load_gguf_llama("SmolLM2-135M-Instruct.Q4_1.gguf")
    #   ta = keras_matta.hub.from_keras_hub(llama, ta_intermediate_dim=3072)
    llama = keras_hub.models.Llama3Backbone(vocabulary_size=50, num_layers=2,
                                            num_query_heads=4, num_key_value_heads=2,
                                            hidden_dim=16, intermediate_dim=32)
    ta = keras_matta.hub.from_keras_hub(llama, ta_intermediate_dim=64)   # a MatLlamaBackbone
    student = keras_matta.extract(ta, 48)
    assert isinstance(student, keras_hub.models.Llama3Backbone) and student.intermediate_dim == 48
    ```

    Reference:
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025 (arXiv 2505.23337); Touvron et al., "Llama 2", 2023.
    """

    source_classes = ("Llama3Backbone", "LlamaBackbone", "QwenBackbone")

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_query_heads,
        hidden_dim,
        intermediate_dim,
        num_key_value_heads,
        student_intermediate_dim=None,
        student_num_query_heads=None,
        nested_heads=None,
        rope_max_wavelength=10000,
        rope_position_scaling_factor=1.0,
        rope_frequency_adjustment_factor=None,
        rope_low_freq_factor=None,
        rope_high_freq_factor=None,
        rope_pretraining_sequence_length=None,
        layer_norm_epsilon=1e-6,
        dropout=0,
        tie_word_embeddings=False,
        source_class="Llama3Backbone",
        dtype=None,
        **kwargs,
    ):
        from keras_hub.layers import ReversibleEmbedding
        from keras_hub.src.models.llama.llama_layernorm import LlamaLayerNorm

        student_intermediate_dim = student_intermediate_dim or intermediate_dim
        student_num_query_heads = student_num_query_heads or num_query_heads
        if hidden_dim % student_num_query_heads:
            raise ValueError(
                f"`hidden_dim`={hidden_dim} must be divisible by the Student's "
                f"`student_num_query_heads`={student_num_query_heads}."
            )
        if nested_heads is None:
            nested_heads = num_query_heads > student_num_query_heads
        rope = {
            "rope_max_wavelength": rope_max_wavelength,
            "rope_position_scaling_factor": rope_position_scaling_factor,
            "rope_frequency_adjustment_factor": rope_frequency_adjustment_factor,
            "rope_low_freq_factor": rope_low_freq_factor,
            "rope_high_freq_factor": rope_high_freq_factor,
            "rope_pretraining_sequence_length": rope_pretraining_sequence_length,
        }
        # === Layers ===
        self.token_embedding = ReversibleEmbedding(
            vocabulary_size, hidden_dim, tie_weights=tie_word_embeddings,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01), dtype=dtype,
            name="token_embedding",
        )
        self.transformer_layers = [
            MatLlamaDecoder(
                intermediate_dim, num_query_heads, num_key_value_heads,
                head_dim=hidden_dim // student_num_query_heads, **rope,
                layer_norm_epsilon=layer_norm_epsilon,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                dropout=dropout, nested_heads=nested_heads,
                family="qwen" if source_class == "QwenBackbone" else "llama", dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.layer_norm = LlamaLayerNorm(layer_norm_epsilon, dtype=dtype,
                                         name="sequence_output_layernorm")
        # === Functional model ===
        inputs, outputs = self._decoder_graph(self.token_embedding)
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
        self.student_intermediate_dim = student_intermediate_dim
        self.student_num_query_heads = student_num_query_heads
        self.nested_heads = nested_heads
        self.rope = rope
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.tie_word_embeddings = tie_word_embeddings

    @property
    def student_num_heads(self):
        return self.student_num_query_heads

    def _heads_dimension(self):
        return "num_query_heads"

    # === Extraction ===

    def _stock_config(self, width):
        heads, kv_heads = self.transformer_layers[0].stock_heads(width)
        if self.source_class == "QwenBackbone":
            rope = {"rope_max_wavelength": self.rope["rope_max_wavelength"],
                    "rope_scaling_factor": self.rope["rope_position_scaling_factor"]}
        else:
            rope = self.rope
        return {
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_query_heads": heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": width["intermediate_dim"],
            "num_key_value_heads": kv_heads,
            **rope,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "dropout": self.dropout,
            "tie_word_embeddings": self.tie_word_embeddings,
            "dtype": self.dtype_policy,
        }

    def _stock_width_error(self, block, width):
        return block.stock_width_error(width, self.hidden_dim)

    def _embedding_links(self, stock):
        links = [
            Link(self.token_embedding.embeddings, stock.token_embedding.embeddings),
            Link(self.layer_norm.scale, stock.layer_norm.scale),
        ]
        if not self.tie_word_embeddings:
            links.append(Link(self.token_embedding.reverse_embeddings,
                              stock.token_embedding.reverse_embeddings))
        return links

    def _block_links(self, block, stock_block):
        return block.links(stock_block)

    # === Conversion ===

    @classmethod
    def from_source(cls, backbone, ta_intermediate_dim, ta_num_heads=None, name=None):
        """An unconverted (randomly initialised) Mat backbone shaped around `backbone`.

        `ta_num_heads` counts query heads; the TA's key/value heads keep the source's ratio.
        """
        groups = backbone.num_query_heads // backbone.num_key_value_heads
        heads = ta_num_heads or backbone.num_query_heads
        if getattr(backbone, "use_sliding_window_attention", False):
            raise ValueError(
                f"'{backbone.name}' uses sliding-window attention, which Mat Llama blocks do not "
                "implement; convert a backbone with `use_sliding_window_attention=False`."
            )
        # Qwen names Llama's `rope_position_scaling_factor` `rope_scaling_factor`, and has no
        # Llama 3.1 frequency adjustment.
        scaling = getattr(backbone, "rope_scaling_factor", 1.0)
        rope = {"rope_position_scaling_factor": getattr(
            backbone, "rope_position_scaling_factor", scaling)}
        for key in ("rope_frequency_adjustment_factor", "rope_low_freq_factor",
                    "rope_high_freq_factor", "rope_pretraining_sequence_length"):
            rope[key] = getattr(backbone, key, None)
        return cls(
            vocabulary_size=backbone.vocabulary_size,
            num_layers=backbone.num_layers,
            num_query_heads=heads,
            hidden_dim=backbone.hidden_dim,
            intermediate_dim=ta_intermediate_dim,
            num_key_value_heads=heads // groups,
            student_intermediate_dim=backbone.intermediate_dim,
            student_num_query_heads=backbone.num_query_heads,
            nested_heads=ta_num_heads is not None,
            rope_max_wavelength=backbone.rope_max_wavelength,
            **rope,
            layer_norm_epsilon=backbone.layer_norm_epsilon,
            dropout=backbone.dropout,
            tie_word_embeddings=backbone.token_embedding.tie_weights,
            source_class=type(backbone).__name__,
            dtype=backbone.dtype_policy,
            name=name or f"mat_{backbone.name}",
        )

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_query_heads": self.num_query_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "num_key_value_heads": self.num_key_value_heads,
            "student_intermediate_dim": self.student_intermediate_dim,
            "student_num_query_heads": self.student_num_query_heads,
            "nested_heads": self.nested_heads,
            **self.rope,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "dropout": self.dropout,
            "tie_word_embeddings": self.tie_word_embeddings,
        }
