"""MatDense: a Dense layer whose units are a nested prefix of one shared kernel."""

import math

import keras
from keras import ops

from keras_matta.layers import majority as majority_lib
from keras_matta.layers.mat_layer import MatLayer
from keras_matta.layers.nesting import INPUT
from keras_matta.layers.nesting import Nested
from keras_matta.layers.sampled_width import split_width


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

    With `majority=k > 1` the kernel is stored as `k` copies, combined in weight space into one
    `(d_in, units)` kernel before slicing (combine, then slice; see
    `keras_matta.layers.majority`); serving costs one kernel.

    Args:
        units: the full (TA) number of output units.
        nested: whether the output width is nested. Defaults to `True`.
        majority: number of stored kernel copies. Defaults to 1 (a plain kernel).
        majority_combine: how the copies are combined, one of
            `keras_matta.layers.majority.COMBINES` (the module docstring gives the math and
            the study behind the default): `"learned"` (default: a softmax of trained
            per-copy logits weights the copies, in training and serving),
            `"random_majority"` (average a random strict majority of the copies each training
            step, all copies at inference; at `majority=2` that is both copies, the mean),
            `"unit_majority"` and `"element_majority"` (a fresh majority per output unit or per
            kernel element), `"random_convex"` (Dirichlet weights per step), `"median"` (odd
            `majority`) or `"mean"` (the control: equal to a rescaled learning rate).
        majority_init: `"independent"` (default: copy `i` is drawn with seed `seed + i`) or
            `"identical"` (every copy starts as the plain kernel).
        majority_seed: seed of the random draws of the combine.
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
    x = np.random.rand(2, 32).astype("float32")
    y_full = layer(x)             # (2, 64)
    y_small = layer(x, width=16)  # (2, 16), uses W[:, :16] and b[:16]
    # The narrow output is the prefix of the full one: the same kernel, sliced.
    np.testing.assert_allclose(ops.convert_to_numpy(y_small),
                               ops.convert_to_numpy(y_full)[:, :16], rtol=1e-6)
    ```

    Reference:
        Devvrit et al., "MatFormer: Nested Transformer for Elastic Inference", 2023;
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025.
    """

    def __init__(
        self,
        units,
        nested=True,
        majority=1,
        majority_combine=majority_lib.DEFAULT_COMBINE,
        majority_seed=None,
        majority_init="independent",
        **kwargs,
    ):
        if not isinstance(nested, bool):
            raise TypeError(f"`nested` must be a bool; got {nested!r}.")
        majority_lib.validate_majority(majority, majority_combine, majority_init)
        if majority > 1 and kwargs.get("lora_rank"):
            raise ValueError("MatDense does not combine `lora_rank` with `majority > 1`.")
        if kwargs.get("quantization_config") is not None:
            raise ValueError(
                "MatDense does not support `quantization_config`: extract a width with "
                "`keras_matta.extract` and quantize the stock `Dense` layers of the result."
            )
        super().__init__(units, **kwargs)
        self.nested = nested
        self.majority = majority
        self.majority_combine = majority_combine
        self.majority_seed = majority_seed
        self.majority_init = majority_init
        if majority > 1:
            self._majority_seed_generator = keras.random.SeedGenerator(majority_seed)

    def build(self, input_shape):
        if self.majority == 1:
            super().build(input_shape)
        else:
            self._kernel = majority_lib.add_majority_kernel(
                self,
                "kernel",
                (input_shape[-1], self.units),
                self.majority,
                initializer=self.kernel_initializer,
                majority_init=self.majority_init,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
            self._kernel_mixture = majority_lib.add_mixture(
                self, "kernel", self.majority, self.majority_combine
            )
            self.bias = None
            if self.use_bias:
                self.bias = self.add_weight(
                    name="bias",
                    shape=(self.units,),
                    initializer=self.bias_initializer,
                    regularizer=self.bias_regularizer,
                    constraint=self.bias_constraint,
                )
            self.built = True
        # Any prefix of the built input dimension is a valid input.
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    @property
    def kernel(self):
        """The effective `(d_in, units)` kernel (copies combined for inference)."""
        if self.majority > 1:
            return self._combined_kernel(training=False)
        if self.lora_enabled:
            return super().kernel  # the LoRA factors merged in
        # What `Dense.kernel` returns without LoRA or quantization (MatDense refuses the latter),
        # read directly: torch.compile cannot trace `super().kernel` and runs the layer eagerly.
        return self._kernel

    def _combined_kernel(self, training):
        return majority_lib.combine_copies(
            self._kernel,
            self.majority,
            self.majority_combine,
            training=training,
            seed_generator=getattr(self, "_majority_seed_generator", None),
            mixture=getattr(self, "_kernel_mixture", None),
        )

    def save_own_variables(self, store):
        # Dense saves the *effective* kernel; majority copies must be saved as stored.
        if self.majority == 1:
            return super().save_own_variables(store)
        return keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        if self.majority == 1:
            return super().load_own_variables(store)
        return keras.layers.Layer.load_own_variables(self, store)

    @property
    def input_dim(self):
        return self._kernel.shape[-2]

    def nested_dims(self):
        return {"units": self.units} if self.nested else {}

    def output_dimension(self):
        return "units" if self.nested else None

    def nesting(self):
        units = {-1: "units"} if self.nested else {}
        entries = [
            Nested("kernel", self._kernel, produces=units, consumes={-2: INPUT},
                   copies=self.majority > 1, value=lambda: self.kernel),
        ]
        if self.bias is not None:
            entries.append(Nested("bias", self.bias, produces=units, bias=True))
        if getattr(self, "_kernel_mixture", None) is not None:  # folded into `self.kernel`
            entries.append(Nested("kernel_mixture", self._kernel_mixture, served=False))
        if self.lora_enabled:  # merged into `self.kernel` when served
            entries += [
                Nested("lora_kernel_a", self.lora_kernel_a, consumes={-2: INPUT}, served=False),
                Nested("lora_kernel_b", self.lora_kernel_b, produces=units, served=False),
            ]
        return entries

    def _output_units(self, width=None):
        return self._active_width(width).get("units", self.units)

    def call(self, inputs, width=None, training=None):
        input_dim = inputs.shape[-1]
        if input_dim > self.input_dim:
            raise ValueError(
                f"Layer '{self.name}' was built for {self.input_dim} input features; "
                f"got an input with {input_dim}."
            )
        self._observe("kernel", inputs, -1)
        units = self._output_units(width)
        units, sampled = split_width(units, self.units)
        kernel = self.kernel if self.majority == 1 else self._combined_kernel(training)
        width = {INPUT: input_dim, "units": units}
        outputs = ops.matmul(inputs, self._slice("kernel", width, kernel))
        if self.bias is not None:
            outputs = ops.add(outputs, self._slice("bias", width))
        if self.activation is not None:
            outputs = self.activation(outputs)
        if sampled is not None:
            outputs = ops.multiply(outputs, sampled.mask(units, outputs.dtype))
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (split_width(self._output_units(), self.units)[0],)

    def compute_output_spec(self, inputs, width=None, training=None):
        units, _ = split_width(self._output_units(width), self.units)
        shape = tuple(inputs.shape[:-1]) + (units,)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def quantize(self, mode=None, type_check=True, config=None):
        raise NotImplementedError(
            "MatDense cannot be quantized in place: extract a width with "
            "`keras_matta.extract` and quantize the resulting stock model."
        )

    # === Extraction ===

    def export(self, inputs, width, **call_kwargs):
        config = self.get_config()
        for key in (
            "nested",
            "majority",
            "majority_combine",
            "majority_seed",
            "majority_init",
            "lora_rank",
            "lora_alpha",
            "quantization_config",
        ):
            config.pop(key, None)
        config["units"] = width.get("units", self.units)
        dense = keras.layers.Dense.from_config(config)
        outputs = dense(inputs)
        dense.set_weights(self.sliced_weights(width, inputs.shape[-1]))
        return outputs

    def matmul_flops(self, width, input_shape):
        rows = math.prod(input_shape[:-1])
        return 2 * rows * input_shape[-1] * width.get("units", self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "nested": self.nested,
            "majority": self.majority,
            "majority_combine": self.majority_combine,
            "majority_seed": self.majority_seed,
            "majority_init": self.majority_init,
        }
