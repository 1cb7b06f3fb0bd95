"""LogitsModel: next-token logits from a keras-hub (or Mat) backbone, for MatTA and teachers."""

import keras

from keras_matta.extract import extract


@keras.saving.register_keras_serializable(package="keras_matta")
class LogitsModel(keras.Model):
    """`{token_ids, padding_mask}` -> next-token logits through the backbone's token embedding.

    For hidden states `H = backbone(inputs)` of shape `(B, T, d)` and the embedding matrix
    `E` of shape `(V, d)`:

        logits = H E^T                      (tied embeddings, as GPT-2 and SmolLM2)
        logits = H E_out                    (untied: the backbone's reverse embeddings)

    the forward pass of a keras-hub `CausalLM` without its sampler or preprocessor. Around a
    `MatGPT2Backbone` / `MatLlamaBackbone` it is the model `keras_matta.MatTA` trains (one
    logits output, the Students selected by width); around a stock keras-hub backbone of the
    same vocabulary it is a Teacher (`MatTA(..., teacher=LogitsModel(teacher_backbone))`).

    Args:
        backbone: a keras-hub backbone, a Mat backbone, or a Functional model whose inputs are
            `token_ids` and `padding_mask` and which holds a layer named `"token_embedding"`
            (a `keras.layers.ReversibleEmbedding`), such as a Mix'n'Match extraction.
        **kwargs: `name` and other `keras.Model` arguments.

    Example:

    ```python
    import keras_hub

    # Real use: backbones of one vocabulary, e.g. from_preset("gpt2_base_en") as the Student
    # and from_preset("gpt2_large_en") as the Teacher.
    gpt2 = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32,
                                         max_sequence_length=16)
    gpt2_large = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=4, num_heads=2,
                                               hidden_dim=16, intermediate_dim=64,
                                               max_sequence_length=16)
    ta = keras_matta.hub.LogitsModel(keras_matta.hub.from_keras_hub(gpt2, 64))
    teacher = keras_matta.hub.LogitsModel(gpt2_large)
    mat_ta = keras_matta.MatTA(ta, student_widths=[gpt2.intermediate_dim], teacher=teacher)
    mat_ta.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs = {"token_ids": np.random.randint(0, 50, size=(2, 8)),
              "padding_mask": np.ones((2, 8), "int32")}
    logits = ta(inputs)   # (2, 8, 50): next-token logits
    # mat_ta.fit(inputs, next_token_ids, sample_weight=inputs["padding_mask"]) trains the TA
    # and its Student, each also distilled from the teacher
    ```

    Reference:
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025 (arXiv 2505.23337).
    """

    def __init__(self, backbone, **kwargs):
        if not isinstance(backbone, keras.Model):
            raise TypeError(
                f"`backbone` must be a keras.Model (a keras-hub or Mat backbone); got "
                f"{type(backbone).__name__}."
            )
        embedding = token_embedding(backbone)
        inputs = {
            "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
        }
        hidden = backbone(inputs)  # (B, T, d)
        logits = embedding(hidden, reverse=True)  # (B, T, V)
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone

    def extract_stock(self, widths=None, name=None):
        """A `LogitsModel` around `keras_matta.extract(self.backbone, widths)`.

        The hook `keras_matta.extract` dispatches to, so a logits model extracts as one.
        """
        stock = extract(self.backbone, widths)
        return LogitsModel(stock, name=name or f"{self.name}_{stock.name}")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def token_embedding(backbone):
    """The backbone's token embedding layer (a `ReversibleEmbedding`)."""
    layer = getattr(backbone, "token_embedding", None)
    if layer is None:
        try:
            layer = backbone.get_layer("token_embedding")
        except ValueError:
            layer = None
    if not isinstance(layer, keras.layers.ReversibleEmbedding):
        raise ValueError(
            f"Backbone '{backbone.name}' has no reversible `token_embedding` layer to compute "
            "logits with: pass a keras-hub or keras_matta Mat backbone."
        )
    return layer
