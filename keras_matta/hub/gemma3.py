"""MatGemma3Backbone: keras-hub's text-only Gemma 3 with nested gated-FFN units and head groups."""

import keras

from keras_matta.hub.gemma import MatGemmaBackbone
from keras_matta.hub.gemma3_decoder import MatGemma3Decoder

#: Gemma 3's options beyond Gemma 2's, named as `keras_hub.models.Gemma3Backbone`'s arguments.
GEMMA3_OPTIONS = (
    "use_query_key_norm", "local_rope_scaling_factor", "global_rope_scaling_factor", "image_size",
)
#: keras-hub's rotary wavelengths of local (sliding-window) and global blocks.
LOCAL_WAVELENGTH, GLOBAL_WAVELENGTH = 10_000.0, 1_000_000.0


@keras.saving.register_keras_serializable(package="keras_matta")
class MatGemma3Backbone(MatGemmaBackbone):
    """`keras_hub.models.Gemma3Backbone` (text only) with Mat blocks.

    A `MatGemmaBackbone` (embedding, final norm, widths, extraction and conversion live there)
    of `MatGemma3Decoder` blocks: queries and keys RMS-normed per head, and with sliding
    windows on, keras-hub's pattern of five local blocks to one global (block `i` is local iff
    `i % 6 < 5`). Local blocks use the rotary wavelength 10,000 and
    `local_rope_scaling_factor`, global ones 1,000,000 and `global_rope_scaling_factor`. Run at
    `k` FFN units and `h` query heads (whole groups), every block computes

        u = x + N_a(GQA_h(N_1(x)))            (queries, keys: RoPE(N_q(x W_q)), RoPE(N_k(x W_k)))
        y = u + N_f((N_2(u) W_up[:, :k] * gelu(N_2(u) W_gate[:, :k])) W_down[:k, :])

    and at the Student's `k`, `h` the model is exactly the source backbone; every uniform width
    extracts into a stock `Gemma3Backbone`. Widths and `intermediate_dim` count FFN units, as
    keras-hub's Gemma 3 does (`gate_dim_reduction=1`; Gemma 1/2 count twice as many).

    The query/key norm scales have one entry per head feature and are shared by every head:
    they are copied whole into every extraction and untouched by `keras_matta.reorder`.

    Only the text decoder is supported: `from_keras_hub` refuses a backbone with a vision
    encoder, bidirectional attention or an embedding (pooling) head. As for Gemma 1/2,
    keras-hub 0.32 keeps its blocks' norms at epsilon `1e-6` (the final norm uses
    `layer_norm_epsilon`) and scales queries by `1 / sqrt(head_dim)` whatever
    `query_head_dim_normalize` says; the final logit soft cap is applied by
    `keras_matta.hub.LogitsModel`.

    Args:
        vocabulary_size, num_layers, hidden_dim, head_dim, use_query_key_norm,
            local_rope_scaling_factor, global_rope_scaling_factor, image_size,
            sliding_window_size: as in `keras_hub.models.Gemma3Backbone` (`image_size` is
            only carried to the extracted backbone, which has no vision encoder).
        num_query_heads, num_key_value_heads, intermediate_dim, student_intermediate_dim,
            student_num_query_heads, nested_heads: as in `MatGemmaBackbone` (FFN units).
        source_class: `"Gemma3Backbone"`.
        **kwargs: `MatGemmaBackbone`'s Gemma 2 options (`use_post_ffw_norm`,
            `use_post_attention_norm`, soft caps, `use_sliding_window_attention`,
            `query_head_dim_normalize`, `layer_norm_epsilon`, `dropout`), `dtype`, `name`.

    Example:

    ```python
    import keras_hub

    # Real use: keras_hub.models.Gemma3Backbone.from_preset("gemma3_1b").
    gemma3 = keras_hub.models.Gemma3Backbone(
        vocabulary_size=50, image_size=None, num_layers=2, num_query_heads=4,
        num_key_value_heads=2, hidden_dim=16, intermediate_dim=16, head_dim=8)
    ta = keras_matta.hub.from_keras_hub(gemma3)      # the pretrained model is the TA: 16 units
    assert ta.source_widths()["transformer_layer_0"] == {"intermediate_dim": 16}
    half = keras_matta.extract(ta, 8)
    assert isinstance(half, keras_hub.models.Gemma3Backbone) and half.intermediate_dim == 8
    ```

    Reference:
        Gemma Team, "Gemma 3 Technical Report", 2025 (arXiv 2503.19786); Verma et al.,
        "Matryoshka Model Learning for Improved Elastic Student Models", KDD 2025
        (arXiv 2505.23337).
    """

    source_classes = ("Gemma3Backbone",)
    decoder_class = MatGemma3Decoder
    stock_columns_per_unit = 1  # Gemma 3's blocks: gate_dim_reduction=1

    def __init__(self, vocabulary_size, num_layers, num_query_heads, num_key_value_heads,
                 hidden_dim, intermediate_dim, head_dim, use_query_key_norm=True,
                 local_rope_scaling_factor=1.0, global_rope_scaling_factor=1.0,
                 image_size=None, sliding_window_size=1024, source_class="Gemma3Backbone",
                 **kwargs):
        # Read by `_decoder_kwargs` while the parent builds the blocks, so set first.
        self.gemma3_options = dict(zip(GEMMA3_OPTIONS, (
            use_query_key_norm, local_rope_scaling_factor, global_rope_scaling_factor,
            image_size,
        )))
        super().__init__(vocabulary_size, num_layers, num_query_heads, num_key_value_heads,
                         hidden_dim, intermediate_dim, head_dim,
                         sliding_window_size=sliding_window_size, source_class=source_class,
                         **kwargs)

    @staticmethod
    def local_block(index):
        """Whether block `index` is local when sliding windows are on: 5 local, 1 global."""
        return index % 6 < 5

    def _decoder_kwargs(self, local):
        options = self.gemma3_options
        return {
            "use_query_key_norm": options["use_query_key_norm"],
            "rope_wavelength": LOCAL_WAVELENGTH if local else GLOBAL_WAVELENGTH,
            "rope_scaling_factor": options[
                "local_rope_scaling_factor" if local else "global_rope_scaling_factor"],
        }

    def _stock_config(self, width):
        return {**super()._stock_config(width), **self.gemma3_options}

    @classmethod
    def _source_options(cls, backbone):
        # (option, value, what converts): the image encoder and the embedding model's
        # bidirectional mask and pooling head are not part of the nested text decoder.
        for option, value, allowed in (
            ("vision_encoder", backbone.vision_encoder, None),
            ("use_bidirectional_attention", backbone.use_bidirectional_attention, False),
            ("is_embedding_model", backbone.is_embedding_model, False),
        ):
            if value is not allowed and value != allowed:
                raise ValueError(
                    f"Only text-only causal Gemma3Backbones convert: `{option}` must be "
                    f"{allowed}; got {value!r}."
                )
        return {**super()._source_options(backbone),
                **{key: getattr(backbone, key) for key in GEMMA3_OPTIONS}}

    def get_config(self):
        return {**super().get_config(), **self.gemma3_options}
