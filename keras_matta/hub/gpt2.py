"""MatGPT2Backbone: keras-hub's GPT-2 with nested FFN widths (and optionally heads)."""

import keras

from keras_matta.hub import weights as weights_lib
from keras_matta.hub.backbone import MatBackbone
from keras_matta.hub.weights import Link
from keras_matta.layers.mat_transformer_block import MatTransformerBlock


@keras.saving.register_keras_serializable(package="keras_matta")
def gelu_approximate(x):
    """GPT-2's tanh-approximated GELU (keras-hub's, registered so Mat blocks serialize)."""
    return keras.activations.gelu(x, approximate=True)


@keras.saving.register_keras_serializable(package="keras_matta")
class MatGPT2Backbone(MatBackbone):
    """`keras_hub.models.GPT2Backbone` with Mat decoder blocks: a TA with a Student inside.

    The graph is GPT-2's: token + position embeddings, `num_layers` pre-LayerNorm decoder
    blocks, a final LayerNorm. Each block is a `keras_matta.layers.MatTransformerBlock` of TA
    width; run at FFN width `k` and `h` heads of size `head_dim` it computes

        u = x + MHA_h(LN_1(x), causal & padding mask)
        y = u + gelu_tanh(LN_2(u) W_in[:, :k] + b_in[:k]) W_out[:k, :] + b_out

    which at the Student's `k = student_intermediate_dim`, `h = student_num_heads` is exactly
    the source `GPT2Backbone`. Build one from a pretrained backbone with
    `keras_matta.hub.from_keras_hub`; `keras_matta.extract(model, width)` gives a
    `GPT2Backbone` back.

    Args:
        vocabulary_size, num_layers, hidden_dim, dropout, max_sequence_length: as in
            `GPT2Backbone`.
        intermediate_dim: the TA's FFN width.
        num_heads: the TA's number of heads.
        student_intermediate_dim: the FFN width of the source backbone. Defaults to
            `intermediate_dim`.
        student_num_heads: the heads of the source backbone; the head size is
            `hidden_dim // student_num_heads`. Defaults to `num_heads`.
        nested_heads: whether heads are nested. Defaults to `num_heads > student_num_heads`.
        source_class: `"GPT2Backbone"`.
        dtype: dtype policy, as in keras-hub.

    Example:

    ```python
    import keras_hub

    # Usually grown around a pretrained GPT-2 (the Student):
    #   gpt2 = keras_hub.models.GPT2Backbone.from_preset("gpt2_medium_en")
    #   ta = keras_matta.hub.from_keras_hub(gpt2, ta_intermediate_dim=8192)
    # Built directly, it starts from random weights:
    ta = keras_matta.hub.MatGPT2Backbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=64,
        student_intermediate_dim=32, max_sequence_length=16)
    inputs = {"token_ids": np.random.randint(0, 50, size=(2, 8)),
              "padding_mask": np.ones((2, 8), "int32")}
    hidden = ta(inputs)                                  # (2, 8, 16), FFNs at 64 units
    student = keras_matta.extract(ta, 32)
    assert isinstance(student, keras_hub.models.GPT2Backbone) and student.intermediate_dim == 32
    ```

    Reference:
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025 (arXiv 2505.23337); Radford et al., "Language Models are Unsupervised
        Multitask Learners", 2019.
    """

    source_classes = ("GPT2Backbone",)

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        student_intermediate_dim=None,
        student_num_heads=None,
        nested_heads=None,
        dropout=0.1,
        max_sequence_length=1024,
        source_class="GPT2Backbone",
        dtype=None,
        **kwargs,
    ):
        from keras_hub.layers import PositionEmbedding
        from keras_hub.layers import ReversibleEmbedding

        student_intermediate_dim = student_intermediate_dim or intermediate_dim
        student_num_heads = student_num_heads or num_heads
        _check_student_sizes(intermediate_dim, student_intermediate_dim, num_heads,
                             student_num_heads, hidden_dim)
        if nested_heads is None:
            nested_heads = num_heads > student_num_heads
        normal = lambda stddev: keras.initializers.RandomNormal(stddev=stddev)  # noqa: E731
        # === Layers ===
        self.token_embedding = ReversibleEmbedding(
            vocabulary_size, hidden_dim, embeddings_initializer=normal(0.01), dtype=dtype,
            name="token_embedding",
        )
        self.position_embedding = PositionEmbedding(
            max_sequence_length, initializer=normal(0.02), dtype=dtype, name="position_embedding"
        )
        self.embeddings_add = keras.layers.Add(dtype=dtype, name="embeddings_add")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype,
                                                       name="embeddings_dropout")
        self.transformer_layers = [
            MatTransformerBlock(
                intermediate_dim,
                num_heads,
                dropout=dropout,
                activation=gelu_approximate,
                layer_norm_epsilon=1e-5,
                kernel_initializer=normal(0.02),
                key_dim=hidden_dim // student_num_heads,
                nested_heads=nested_heads,
                causal=True,
                dtype=dtype,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.layer_norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=dtype,
                                                          name="layer_norm")
        # === Functional model ===
        def embed(token_ids):
            tokens = self.token_embedding(token_ids)  # (B, T, d)
            x = self.embeddings_add((tokens, self.position_embedding(tokens)))  # (B, T, d)
            return self.embeddings_dropout(x)

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
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.student_intermediate_dim = student_intermediate_dim
        self.student_num_heads = student_num_heads
        self.nested_heads = nested_heads
        self.dropout = dropout
        self.max_sequence_length = max_sequence_length

    # === Extraction ===

    def _stock_config(self, width):
        return {
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_heads": width.get("num_heads", self.num_heads),
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": width["intermediate_dim"],
            "dropout": self.dropout,
            "max_sequence_length": self.max_sequence_length,
            "dtype": self.dtype_policy,
        }

    def _stock_width_error(self, block, width):
        heads = width.get("num_heads", self.num_heads)
        if heads != self.student_num_heads:
            head_size = self.hidden_dim // self.student_num_heads
            return (
                f"GPT2Backbone derives the head size as hidden_dim // num_heads, so only "
                f"{self.student_num_heads} heads of size {head_size} are expressible; "
                f"'{block.name}' runs {heads}."
            )
        return None

    def _embedding_links(self, stock):
        return [
            Link(self.token_embedding.embeddings, stock.token_embedding.embeddings),
            Link(self.position_embedding.position_embeddings,
                 stock.position_embedding.position_embeddings),
            Link(self.layer_norm.gamma, stock.layer_norm.gamma),
            Link(self.layer_norm.beta, stock.layer_norm.beta),
        ]

    def _block_links(self, block, stock_block):
        """Links of a `MatTransformerBlock` and a keras-hub `TransformerDecoder`."""
        attention = stock_block._self_attention_layer
        stock = {
            "attention_norm/gamma": stock_block._self_attention_layer_norm.gamma,
            "attention_norm/beta": stock_block._self_attention_layer_norm.beta,
            "attention/output_kernel": attention._output_dense.kernel,
            "attention/output_bias": attention._output_dense.bias,
            "ffn_norm/gamma": stock_block._feedforward_layer_norm.gamma,
            "ffn_norm/beta": stock_block._feedforward_layer_norm.beta,
            "ffn_intermediate/kernel": stock_block._feedforward_intermediate_dense.kernel,
            "ffn_intermediate/bias": stock_block._feedforward_intermediate_dense.bias,
            "ffn_output/kernel": stock_block._feedforward_output_dense.kernel,
            "ffn_output/bias": stock_block._feedforward_output_dense.bias,
        }
        for part in ("query", "key", "value"):
            dense = getattr(attention, f"_{part}_dense")
            stock[f"attention/{part}_kernel"] = dense.kernel
            stock[f"attention/{part}_bias"] = dense.bias
        return weights_lib.links(block, stock)

    # === Conversion ===

    @classmethod
    def from_source(cls, backbone, ta_intermediate_dim, ta_num_heads=None, name=None):
        """An unconverted (randomly initialised) Mat backbone shaped around `backbone`."""
        return cls(
            vocabulary_size=backbone.vocabulary_size,
            num_layers=backbone.num_layers,
            num_heads=ta_num_heads or backbone.num_heads,
            hidden_dim=backbone.hidden_dim,
            intermediate_dim=ta_intermediate_dim,
            student_intermediate_dim=backbone.intermediate_dim,
            student_num_heads=backbone.num_heads,
            nested_heads=ta_num_heads is not None,
            dropout=backbone.dropout,
            max_sequence_length=backbone.max_sequence_length,
            source_class=type(backbone).__name__,
            dtype=backbone.dtype_policy,
            name=name or f"mat_{backbone.name}",
        )

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "student_intermediate_dim": self.student_intermediate_dim,
            "student_num_heads": self.student_num_heads,
            "nested_heads": self.nested_heads,
            "dropout": self.dropout,
            "max_sequence_length": self.max_sequence_length,
        }


def _check_student_sizes(intermediate_dim, student_intermediate_dim, num_heads,
                         student_num_heads, hidden_dim):
    if student_intermediate_dim > intermediate_dim:
        raise ValueError(
            f"`student_intermediate_dim`={student_intermediate_dim} exceeds the TA's "
            f"`intermediate_dim`={intermediate_dim}."
        )
    if student_num_heads > num_heads:
        raise ValueError(
            f"`student_num_heads`={student_num_heads} exceeds the TA's `num_heads`={num_heads}."
        )
    if hidden_dim % student_num_heads:
        raise ValueError(
            f"`hidden_dim`={hidden_dim} must be divisible by the Student's number of heads "
            f"({student_num_heads}): keras-hub derives the head size from it."
        )
