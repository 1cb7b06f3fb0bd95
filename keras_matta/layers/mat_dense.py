"""MatDense: a Dense layer whose units are a nested prefix of one shared kernel."""

import math

import keras
from keras import ops

from keras_matta.layers.mat_layer import MatLayer


@keras.saving.register_keras_serializable(package="keras_matta")
class MatDense(MatLayer, keras.layers.Dense):
    """A `Dense` layer that can run at any prefix of its units.

    The layer stores one full kernel `W` of shape `(d_in, units)` and bias `b` of shape
    `(units,)`. Run at output width `k` on an input carrying `m <= d_in` features it computes

        y = activation(x @ W[:m, :k] + b[:k])

    so stacked `MatDense` layers nest: a narrower layer feeds a narrower input to the next one,
    which slices the matching rows of its kernel. With `nested=False` the output keeps all
    `units` (a classifier head after nested layers) while the input still follows the incoming
    width.

    Args:
        units: the full (TA) number of output units.
        nested: whether the output width is nested. Defaults to `True`.
        **kwargs: every argument of `keras.layers.Dense` (activation, use_bias, initializers,
            regularizers, constraints, `lora_rank`, `lora_alpha`, `name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor of shape `(..., m)` with `m` at most the built input dimension.
        width: optional width spec for this call (an int, a float fraction, or
            `{"units": k}`); by default the width selected by `keras_matta.WidthScope`, else
            the full width.

    Example:

    ```python
    layer = keras_matta.MatDense(64, activation="relu")
    y_full = layer(x)             # (batch, 64)
    y_small = layer(x, width=16)  # (batch, 16), uses W[:, :16] and b[:16]
    ```

    Reference:
        Devvrit et al., "MatFormer: Nested Transformer for Elastic Inference", 2023;
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025.
    """

    def __init__(self, units, nested=True, **kwargs):
        if not isinstance(nested, bool):
            raise TypeError(f"`nested` must be a bool; got {nested!r}.")
        if kwargs.get("quantization_config") is not None:
            raise ValueError(
                "MatDense does not support `quantization_config`: extract a width with "
                "`keras_matta.extract` and quantize the stock `Dense` layers of the result."
            )
        super().__init__(units, **kwargs)
        self.nested = nested

    def build(self, input_shape):
        super().build(input_shape)
        # Any prefix of the built input dimension is a valid input.
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def nested_dims(self):
        return {"units": self.units} if self.nested else {}

    def _output_units(self, width=None):
        return self._active_width(width).get("units", self.units)

    def call(self, inputs, width=None, training=None):
        input_dim = inputs.shape[-1]
        if input_dim > self._kernel.shape[0]:
            raise ValueError(
                f"Layer '{self.name}' was built for {self._kernel.shape[0]} input features; "
                f"got an input with {input_dim}."
            )
        units = self._output_units(width)
        outputs = ops.matmul(inputs, self.kernel[:input_dim, :units])
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias[:units])
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self._output_units(),)

    def quantize(self, mode=None, type_check=True, config=None):
        raise NotImplementedError(
            "MatDense cannot be quantized in place: extract a width with "
            "`keras_matta.extract` and quantize the resulting stock model."
        )

    # === Extraction ===

    def export(self, inputs, width, **call_kwargs):
        config = self.get_config()
        for key in ("nested", "lora_rank", "lora_alpha", "quantization_config"):
            config.pop(key, None)
        config["units"] = width.get("units", self.units)
        dense = keras.layers.Dense.from_config(config)
        outputs = dense(inputs)
        dense.set_weights(self.sliced_weights(width, inputs.shape[-1]))
        return outputs

    def sliced_weights(self, width, input_dim):
        units = width.get("units", self.units)
        # `self.kernel` is the effective kernel (LoRA merged in).
        weights = [ops.convert_to_numpy(self.kernel)[:input_dim, :units]]
        if self.bias is not None:
            weights.append(ops.convert_to_numpy(self.bias)[:units])
        return weights

    def param_count(self, width, input_dim):
        units = width.get("units", self.units)
        return input_dim * units + (units if self.use_bias else 0)

    def matmul_flops(self, width, input_shape):
        rows = math.prod(input_shape[:-1])
        return 2 * rows * input_shape[-1] * width.get("units", self.units)

    def get_config(self):
        return {**super().get_config(), "nested": self.nested}
