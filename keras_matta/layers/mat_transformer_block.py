"""MatTransformerBlock: a pre-LayerNorm transformer block with a nested FFN (and heads)."""

import keras
from keras import ops

from keras_matta._initializers import clone_initializer
from keras_matta._validation import is_int
from keras_matta.layer_width import is_dropped
from keras_matta.layers import majority as majority_lib
from keras_matta.layers import nesting as nesting_lib
from keras_matta.layers.mat_attention import MatMultiHeadAttention
from keras_matta.layers.mat_attention import attention_matmul_flops
from keras_matta.layers.mat_dense import MatDense
from keras_matta.layers.mat_layer import MatLayer

PLACEMENTS = ("all", "ffn", "attention")


@keras.saving.register_keras_serializable(package="keras_matta")
class MatTransformerBlock(MatLayer, keras.layers.Layer):
    """A pre-LayerNorm transformer block whose FFN width (and optionally heads) is nested.

    For an input `x` of shape `(B, T, d)`, run at FFN width `k <= I` and `h <= H` heads:

        u = x + dropout(MHA_h(LN_1(x), masks))
        y = u + dropout(act(LN_2(u) W_in[:, :k] + b_in[:k]) W_out[:k, :] + b_out)

    `MHA_h` is a `MatMultiHeadAttention` on its first `h` heads (all `H` unless `nested_heads`).
    The FFN hidden width is the primary nested dimension (MatFormer); `W_out`, `b_out`, the
    layer norms and, without `nested_heads`, the attention are shared in full.

    Masking: `padding_mask` `(B, S)` masks keys (like `keras_hub.layers.TransformerDecoder`);
    it is AND-ed with `attention_mask` `(B, T, S)` and the causal mask. A Keras mask on
    `inputs` (e.g. `Embedding(mask_zero=True)`) reaches the attention through `LN_1` and masks
    queries and keys, as in a stock `MultiHeadAttention`; the output keeps it.

    Args:
        intermediate_dim: the full (TA) FFN hidden width `I`.
        num_heads: the full number of attention heads `H`.
        dropout: rate of the attention-weight, attention-output and FFN-output dropouts.
        activation: FFN activation. Defaults to `"relu"`.
        layer_norm_epsilon: epsilon of both layer norms. Defaults to `1e-5`.
        kernel_initializer: initializer of the attention and FFN kernels.
        bias_initializer: initializer of the attention and FFN biases.
        key_dim: size of each attention head. Defaults to `d // num_heads`, which must divide.
        nested_heads: whether the number of heads is nested too. Defaults to `False`.
        causal: the default of `use_causal_mask`. Defaults to `False`.
        majority, majority_combine, majority_seed, majority_init: majority kernels, as in
            `MatDense`. Defaults to 1 (plain kernels).
        majority_placement: which kernels hold `majority` copies: `"all"` (default: the four
            attention projections and both FFN kernels), `"ffn"` or `"attention"`; biases and
            norms stay single.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(B, T, d)`.
        padding_mask: optional `(B, T)` bool/int, `True`/1 for real tokens.
        attention_mask: optional `(B, T, T)` bool, `True` where attention is allowed.
        use_causal_mask: overrides `causal` for this call.
        training: whether dropout is active.
        width: optional width spec for this call: an int FFN width, a fraction (of every nested
            dimension) or `{"intermediate_dim": k, "num_heads": h}`; by default the
            `WidthScope` selection, else the full width.

    Example:

    ```python
    block = keras_matta.MatTransformerBlock(intermediate_dim=256, num_heads=4, causal=True)
    x = np.random.rand(2, 10, 32).astype("float32")      # (batch, time, d_model)
    mask = np.array([[1] * 10, [1] * 7 + [0] * 3])       # the second sequence is padded
    y = block(x, padding_mask=mask)                      # (2, 10, 32), TA: 256 hidden units
    y_student = block(x, padding_mask=mask, width=64)    # (2, 10, 32), FFN W_in[:, :64]
    ```

    Reference:
        Devvrit et al., "MatFormer: Nested Transformer for Elastic Inference", 2023;
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025 (arXiv 2505.23337).
    """

    def __init__(
        self,
        intermediate_dim,
        num_heads,
        dropout=0.0,
        activation="relu",
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        key_dim=None,
        nested_heads=False,
        causal=False,
        majority=1,
        majority_combine=majority_lib.DEFAULT_COMBINE,
        majority_seed=None,
        majority_init="independent",
        majority_placement="all",
        **kwargs,
    ):
        majority_lib.validate_majority(majority, majority_combine, majority_init)
        if majority_placement not in PLACEMENTS:
            raise ValueError(
                f"`majority_placement` must be one of {PLACEMENTS}; got {majority_placement!r}."
            )
        positive_ints = {"intermediate_dim": intermediate_dim, "num_heads": num_heads}
        if key_dim is not None:
            positive_ints["key_dim"] = key_dim
        for arg, value in positive_ints.items():
            if not is_int(value) or value <= 0:
                raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1); got {dropout}.")
        if not layer_norm_epsilon > 0:
            raise ValueError(f"`layer_norm_epsilon` must be positive; got {layer_norm_epsilon}.")
        for arg, value in (("nested_heads", nested_heads), ("causal", causal)):
            if not isinstance(value, bool):
                raise TypeError(f"`{arg}` must be a bool; got {value!r}.")
        super().__init__(**kwargs)
        self.supports_masking = True
        # NumPy integers pass the checks above; sizes are stored as Python ints, which the stock
        # sublayers (`Dense` rejects `np.int64` units) and JSON configs require.
        self.intermediate_dim = int(intermediate_dim)
        self.num_heads = int(num_heads)
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.key_dim = None if key_dim is None else int(key_dim)
        self.nested_heads = nested_heads
        self.causal = causal
        self.majority = majority
        self.majority_combine = majority_combine
        self.majority_seed = majority_seed
        self.majority_init = majority_init
        self.majority_placement = majority_placement

    def build(self, inputs_shape):
        d_model = inputs_shape[-1]
        # Sublayers are named after the block: `export` reuses their names for the stock layers,
        # which must be unique when several blocks are extracted into one model.
        name = lambda part: f"{self.name}_{part}"  # noqa: E731
        common = {"dtype": self.dtype_policy}
        init = lambda: {  # noqa: E731 (fresh initializers: unseeded ones would repeat values)
            "kernel_initializer": clone_initializer(self.kernel_initializer),
            "bias_initializer": clone_initializer(self.bias_initializer),
        }
        def majority(offset, part):  # each sublayer draws its own majorities
            placed = self.majority_placement in ("all", part)
            seed = self.majority_seed
            return {
                "majority": self.majority if placed else 1,
                "majority_combine": self.majority_combine,
                "majority_seed": None if seed is None else seed + offset,
                "majority_init": self.majority_init,
            }

        # === Attention ===
        self._attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name=name("attention_norm"), **common
        )
        self._attention_norm.build(inputs_shape)
        self._attention = MatMultiHeadAttention(
            self.num_heads,
            self._key_dim(d_model),
            dropout=self.dropout,
            nested_heads=self.nested_heads,
            name=name("attention"),
            **init(),
            **majority(0, "attention"),
            **common,
        )
        self._attention.build(inputs_shape)
        self._attention_dropout = keras.layers.Dropout(
            self.dropout, name=name("attention_dropout"), **common
        )
        # === Feedforward ===
        self._ffn_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name=name("ffn_norm"), **common
        )
        self._ffn_norm.build(inputs_shape)
        self._ffn_intermediate = MatDense(
            self.intermediate_dim,
            activation=self.activation,
            name=name("ffn_intermediate"),
            **init(),
            **majority(1, "ffn"),
            **common,
        )
        self._ffn_intermediate.build(inputs_shape)
        self._ffn_output = MatDense(
            d_model, nested=False, name=name("ffn_output"), **init(), **majority(2, "ffn"), **common
        )
        self._ffn_output.build(tuple(inputs_shape[:-1]) + (self.intermediate_dim,))
        self._ffn_dropout = keras.layers.Dropout(self.dropout, name=name("ffn_dropout"), **common)

    def _key_dim(self, d_model):
        if self.key_dim is not None:
            return self.key_dim
        if d_model % self.num_heads:
            raise ValueError(
                f"Layer '{self.name}': the model dimension {d_model} is not divisible by "
                f"num_heads={self.num_heads}; pass `key_dim` or use a divisor of {d_model}."
            )
        return d_model // self.num_heads

    droppable = True

    def nested_dims(self):
        dims = {"intermediate_dim": self.intermediate_dim}
        if self.nested_heads:
            dims["num_heads"] = self.num_heads
        return dims

    def nesting(self):
        input_ = nesting_lib.INPUT
        return [
            *nesting_lib.shared(self._attention_norm, "attention_norm"),
            *nesting_lib.rename(self._attention.nesting(), {}, "attention"),
            *nesting_lib.shared(self._ffn_norm, "ffn_norm"),
            *nesting_lib.rename(
                self._ffn_intermediate.nesting(),
                {"units": "intermediate_dim", input_: None},
                "ffn_intermediate",
            ),
            *nesting_lib.rename(
                self._ffn_output.nesting(), {input_: "intermediate_dim"}, "ffn_output"
            ),
        ]

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        use_causal_mask=None,
        training=None,
        width=None,
    ):
        width = self._active_width(width)
        if is_dropped(width):  # elastic depth: the residual stream passes the block untouched
            return inputs
        causal = self.causal if use_causal_mask is None else use_causal_mask
        mask = self._merge_masks(padding_mask, attention_mask)  # (B, 1|T, T) or None
        x = self._attention_norm(inputs)  # (B, T, d), keeps the Keras mask of `inputs`
        x = self._attention(
            x,
            attention_mask=mask,
            use_causal_mask=causal,
            training=training,
            width=width.get("num_heads"),  # None without nested heads: all heads
        )  # (B, T, d)
        x = ops.add(inputs, self._attention_dropout(x, training=training))  # (B, T, d)
        y = self._ffn_norm(x)  # (B, T, d)
        y = self._ffn_intermediate(y, width=width["intermediate_dim"])  # (B, T, k)
        y = self._ffn_output(y)  # (B, T, d): the input rows follow the width, W_out[:k, :]
        outputs = ops.add(x, self._ffn_dropout(y, training=training))  # (B, T, d)
        self._observe("residual", (inputs, outputs), None)  # block importance
        return outputs

    def _merge_masks(self, padding_mask, attention_mask):
        # Works on eager, traced and symbolic (KerasTensor) masks: `export` uses it too.
        mask = None
        if padding_mask is not None:
            if len(padding_mask.shape) != 2:
                raise ValueError(
                    f"Layer '{self.name}': `padding_mask` must have shape (batch, seq); got "
                    f"{tuple(padding_mask.shape)}."
                )
            mask = ops.expand_dims(ops.cast(padding_mask, "bool"), axis=1)  # (B, 1, S)
        if attention_mask is not None:
            attention_mask = ops.cast(attention_mask, "bool")  # (B, T, S)
            mask = attention_mask if mask is None else ops.logical_and(mask, attention_mask)
        return mask

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    # === Extraction ===

    def export(
        self,
        inputs,
        width,
        padding_mask=None,
        attention_mask=None,
        use_causal_mask=None,
        training=None,
        **unused_call_kwargs,
    ):
        kwargs = {} if training is None else {"training": training}
        causal = self.causal if use_causal_mask is None else use_causal_mask
        mask = self._merge_masks(padding_mask, attention_mask)  # keras.ops on KerasTensors
        heads = {"num_heads": width.get("num_heads", self.num_heads)}
        units = {"units": width.get("intermediate_dim", self.intermediate_dim)}

        x = _export_norm(self._attention_norm, inputs)
        x = self._attention.export(x, heads, attention_mask=mask, use_causal_mask=causal, **kwargs)
        x = _export_dropout(self._attention_dropout, x, **kwargs)
        x = keras.layers.Add(name=f"{self.name}_attention_residual")([inputs, x])

        y = _export_norm(self._ffn_norm, x)
        y = self._ffn_intermediate.export(y, units)
        y = self._ffn_output.export(y, {})
        y = _export_dropout(self._ffn_dropout, y, **kwargs)
        return keras.layers.Add(name=f"{self.name}_ffn_residual")([x, y])

    def inference_tensors(self, width):
        """What one inference call at `width` materialises, for `keras_matta.peak_memory`:
        the attention's heads and head sizes and the FFN's hidden units (one hidden tensor)."""
        heads = width.get("num_heads", self.num_heads)
        key_dim = self._attention.key_dim
        return {"heads": heads, "key_dim": key_dim,
                "value_dim": self._attention.value_dim or key_dim,
                "ffn_units": width["intermediate_dim"], "gated": False}

    def matmul_flops(self, width, input_shape):
        """FLOPs (2 per multiply-add) of every matmul for an input `(batch, T, d)`.

        The Q/K/V/output projections, `QK^T` and `AV` over the full `T x T` scores (masked or
        causal scores are computed and then masked, so they count), and the two FFN matmuls.
        Layer norms, softmax, bias adds and activations are not counted.
        """
        batch, t, d = input_shape
        k = width.get("intermediate_dim", self.intermediate_dim)
        key_dim = self._key_dim(d)
        heads = width.get("num_heads", self.num_heads)
        attention = attention_matmul_flops(heads, key_dim, key_dim, batch, t, t, d, d, d, d)
        return attention + 2 * batch * t * (d * k + k * d)

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "activation": keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "key_dim": self.key_dim,
            "nested_heads": self.nested_heads,
            "causal": self.causal,
            "majority": self.majority,
            "majority_combine": self.majority_combine,
            "majority_seed": self.majority_seed,
            "majority_init": self.majority_init,
            "majority_placement": self.majority_placement,
        }


def _export_norm(norm, inputs):
    stock = keras.layers.LayerNormalization.from_config(norm.get_config())
    outputs = stock(inputs)
    stock.set_weights(norm.get_weights())
    return outputs


def _export_dropout(dropout, inputs, **kwargs):
    return keras.layers.Dropout.from_config(dropout.get_config())(inputs, **kwargs)
