"""MatGatedDecoder: the pre-norm GQA + gated-FFN block keras-hub's Llama, Qwen and Gemma share."""

import keras
from keras import ops

from keras_matta._initializers import clone_initializer
from keras_matta.hub import weights as weights_lib
from keras_matta.hub.grouped_attention import causal_mask
from keras_matta.hub.grouped_attention import check_whole_groups
from keras_matta.layer_width import is_dropped
from keras_matta.layers import nesting as nesting_lib
from keras_matta.layers.mat_dense import MatDense
from keras_matta.layers.mat_layer import MatLayer


class MatGatedDecoder(MatLayer, keras.layers.Layer):
    """A decoder block with a nested gated FFN and grouped-query attention on whole groups.

    The base of `MatLlamaDecoder` and `MatGemmaDecoder`. For `x` of shape `(B, T, d)`, run at
    FFN width `k <= I` and `h` query heads:

        u = x + dropout(N_a(GQA_h(N_1(x), causal & padding mask)))
        y = u + N_f((N_2(u) W_up[:, :k] * act(N_2(u) W_gate[:, :k])) W_down[:k, :])

    with `N_1, N_2` the family's RMS norms, `N_a, N_f` optional post-norms (Gemma 2; the
    identity otherwise), `act` the gate's activation and `GQA_h` a `MatGroupedQueryAttention`
    on its first `h` query heads. The FFN kernels are `MatDense` layers without biases: gate
    and up nest their output units, down its input rows.

    Subclasses set `activation` (a function of a float32 tensor) and implement
    `_make_norm(name)`, `_make_attention(kernel_initializer, name)`, `_stock_decoder(width)`,
    `_stock_call(stock, inputs, padding_mask, kwargs)` and `_stock_variables(stock)`, and may
    override `_mask_window()` and `stock_width_error`.

    Args:
        intermediate_dim: the full (TA) FFN width `I` (its units: the gate's columns).
        num_query_heads, num_key_value_heads: the full (TA) head counts.
        head_dim: the size of every head. Defaults to `d // num_query_heads`.
        layer_norm_epsilon: epsilon of the RMS norms. Defaults to `1e-6`.
        kernel_initializer: initializer of every kernel.
        dropout: attention dropout rate.
        nested_heads: whether the query heads (in whole groups) are nested. Defaults to False.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(B, T, d)`.
        padding_mask: optional `(B, T)`, 1 for real tokens.
        training: whether dropout is active.
        width: optional width spec: an int FFN width, a fraction, or
            `{"intermediate_dim": k, "num_query_heads": h}` (or `{"depth": 0}`: skip the block).

    Example:

    ```python
    from keras_matta.hub import MatLlamaDecoder   # a MatGatedDecoder

    block = MatLlamaDecoder(intermediate_dim=16, num_query_heads=2, num_key_value_heads=1)
    y = block(np.random.rand(2, 5, 8).astype("float32"), width=4)   # the first 4 FFN units
    assert tuple(y.shape) == (2, 5, 8)
    ```

    Reference:
        Shazeer, "GLU Variants Improve Transformer", 2020; Verma et al., "Matryoshka Model
        Learning for Improved Elastic Student Models", KDD 2025 (arXiv 2505.23337).
    """

    droppable = True
    #: whether post-attention and post-FFN norms exist (Gemma 2 sets them per instance).
    use_post_attention_norm = False
    use_post_ffw_norm = False

    def __init__(self, intermediate_dim, num_query_heads, num_key_value_heads, head_dim=None,
                 layer_norm_epsilon=1e-6, kernel_initializer="glorot_uniform", dropout=0.0,
                 nested_heads=False, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True
        self.intermediate_dim = intermediate_dim
        self.num_query_heads = num_query_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dropout = dropout
        self.nested_heads = nested_heads

    def build(self, inputs_shape):
        d = inputs_shape[-1]
        self.head_dim = self.head_dim or d // self.num_query_heads
        common = {"dtype": self.dtype_policy}
        init = lambda: clone_initializer(self.kernel_initializer)  # noqa: E731 (one per kernel)
        name = lambda part: f"{self.name}_{part}"  # noqa: E731
        # Creation order is the order of `weights` (and of `.keras` files saved before).
        self._attention_norm = self._make_norm(name("attention_norm"))
        self._attention_norm.build(inputs_shape)
        self._attention = self._make_attention(init(), name("attention"))
        self._attention.build(inputs_shape)
        if self.use_post_attention_norm:
            self._post_attention_norm = self._make_norm(name("post_attention_norm"))
            self._post_attention_norm.build(inputs_shape)
        self._attention_dropout = keras.layers.Dropout(self.dropout, **common)
        self._ffn_norm = self._make_norm(name("ffn_norm"))
        self._ffn_norm.build(inputs_shape)
        dense = lambda units, part, **kw: MatDense(  # noqa: E731
            units, use_bias=False, kernel_initializer=init(), name=name(part), **kw, **common
        )
        self._ffn_gate = dense(self.intermediate_dim, "ffn_gate")
        self._ffn_gate.build(inputs_shape)
        self._ffn_up = dense(self.intermediate_dim, "ffn_up")
        self._ffn_up.build(inputs_shape)
        self._ffn_down = dense(d, "ffn_down", nested=False)
        self._ffn_down.build(tuple(inputs_shape[:-1]) + (self.intermediate_dim,))
        if self.use_post_ffw_norm:
            self._post_ffn_norm = self._make_norm(name("post_ffn_norm"))
            self._post_ffn_norm.build(inputs_shape)

    def nested_dims(self):
        dims = {"intermediate_dim": self.intermediate_dim}
        if self.nested_heads:
            dims["num_query_heads"] = self.num_query_heads
        return dims

    def resolve_width(self, spec):
        width = super().resolve_width(spec)
        check_whole_groups(self.name, width, self.num_query_heads, self.num_key_value_heads)
        return width

    def nesting(self):
        input_ = nesting_lib.INPUT
        ffn_in = {"units": "intermediate_dim", input_: None}
        return [
            *nesting_lib.shared(self._attention_norm, "attention_norm"),
            *nesting_lib.rename(self._attention.nesting(), {}, "attention"),
            *self._post_norms("attention"),
            *nesting_lib.shared(self._ffn_norm, "ffn_norm"),
            *nesting_lib.rename(self._ffn_gate.nesting(), ffn_in, "ffn_gate"),
            *nesting_lib.rename(self._ffn_up.nesting(), ffn_in, "ffn_up"),
            *nesting_lib.rename(self._ffn_down.nesting(), {input_: "intermediate_dim"},
                                "ffn_down"),
            *self._post_norms("ffn"),
        ]

    def _post_norms(self, part):
        used = self.use_post_attention_norm if part == "attention" else self.use_post_ffw_norm
        if not used:
            return []
        return nesting_lib.shared(getattr(self, f"_post_{part}_norm"), f"post_{part}_norm")

    def coupled_dims(self):
        return self._attention.coupled_dims()

    def call(self, inputs, padding_mask=None, training=None, width=None):
        width = self._active_width(width)
        if is_dropped(width):  # elastic depth: the residual stream passes the block untouched
            return inputs
        mask = causal_mask(inputs, padding_mask, self._mask_window())  # (B|1, T, T) bool
        x = self._attention_norm(inputs)
        x = self._attention(x, attention_mask=mask, training=training,
                            width=width.get("num_query_heads"))
        if self.use_post_attention_norm:
            x = self._post_attention_norm(x)
        x = ops.add(inputs, self._attention_dropout(x, training=training))  # (B, T, d)
        y = self._ffn_norm(x)
        k = width["intermediate_dim"]
        gate = ops.cast(self.activation(ops.cast(self._ffn_gate(y, width=k), "float32")),
                        self.compute_dtype)  # (B, T, k)
        y = self._ffn_down(ops.multiply(self._ffn_up(y, width=k), gate))  # (B, T, d)
        if self.use_post_ffw_norm:
            y = self._post_ffn_norm(y)
        outputs = ops.add(x, y)
        self._observe("residual", (inputs, outputs), None)  # block importance
        return outputs

    def _mask_window(self):
        """The sliding attention window (`None`: every earlier position)."""
        return None

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    # === Extraction ===

    def stock_heads(self, width):
        """`(num_query_heads, num_key_value_heads)` of the stock block at `width`."""
        heads = width.get("num_query_heads", self.num_query_heads)
        return heads, heads * self.num_key_value_heads // self.num_query_heads

    def stock_width_error(self, width, hidden_dim):
        """`None` if the stock block can hold `width` on `hidden_dim` features, else why."""
        return None

    def export(self, inputs, width, padding_mask=None, training=None, **unused_call_kwargs):
        error = self.stock_width_error(width, inputs.shape[-1])
        if error:
            raise ValueError(f"Cannot export '{self.name}' at {width}: {error}")
        stock = self._stock_decoder(width)
        kwargs = {} if training is None else {"training": training}
        outputs = self._stock_call(stock, inputs, padding_mask, kwargs)
        weights_lib.slice_into_stock(self.links(stock), self.complete_width(width))
        return outputs

    def links(self, stock):
        """`Link`s to the family's keras-hub decoder block (see `keras_matta.hub.weights`)."""
        return weights_lib.links(self, self._stock_variables(stock))

    def inference_tensors(self, width):
        """What one inference call at `width` materialises, for `keras_matta.peak_memory`:
        `h` query heads (keys and values repeated to `h` heads, as keras-hub does too) and a
        gated FFN (gate and up: two hidden tensors)."""
        head_dim = self._attention.head_dim
        return {"heads": width.get("num_query_heads", self.num_query_heads),
                "key_dim": head_dim, "value_dim": head_dim,
                "ffn_units": width["intermediate_dim"], "gated": True}

    def matmul_flops(self, width, input_shape):
        batch, t, d = input_shape
        k = width.get("intermediate_dim", self.intermediate_dim)
        return self._attention.matmul_flops(width, input_shape) + 2 * batch * t * 3 * d * k

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "num_query_heads": self.num_query_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "dropout": self.dropout,
            "nested_heads": self.nested_heads,
        }
