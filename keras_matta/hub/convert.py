"""`from_keras_hub`: grow a TA around a pretrained keras-hub backbone; `extract` gives it back."""

import numpy as np

from keras_matta._validation import is_int
from keras_matta.hub import weights as weights_lib

SUPPORTED = {
    "GPT2Backbone": "keras_matta.hub.gpt2.MatGPT2Backbone",
    "LlamaBackbone": "keras_matta.hub.llama.MatLlamaBackbone",
    "Llama3Backbone": "keras_matta.hub.llama.MatLlamaBackbone",
    "QwenBackbone": "keras_matta.hub.llama.MatLlamaBackbone",
    "GemmaBackbone": "keras_matta.hub.gemma.MatGemmaBackbone",
    "Gemma3Backbone": "keras_matta.hub.gemma3.MatGemma3Backbone",
}


def from_keras_hub(backbone, ta_intermediate_dim=None, ta_num_heads=None,
                   new_neurons="zero_output", seed=None, name=None):
    """A Mat backbone around a pretrained `backbone`: grown into a wider TA, or as the TA itself.

    With `ta_intermediate_dim=None` (or the backbone's own size) the pretrained model *is* the
    TA and its Students are prefixes of it: the way to shrink a checkpoint. Run
    `keras_matta.reorder` first so that each prefix holds the most important neurons (a raw
    prefix is an arbitrary subset of them), then heal the family with `keras_matta.MatTA` and a
    frozen copy of the original as the Teacher. Pass `ta_num_heads` equal to the backbone's
    heads to nest the heads too.

    With a larger `ta_intermediate_dim` the pretrained model is the Student (the paper's set-up):

    Every decoder block's FFN grows from the backbone's `intermediate_dim` to
    `ta_intermediate_dim` (and, with `ta_num_heads`, its attention from the backbone's heads
    to `ta_num_heads`). The pretrained weights become the nested prefix:

        W_in[:, :k] = W_in_pretrained,  b_in[:k] = b_in_pretrained,  W_out[:k, :] = W_out_pretrained

    (for Llama's gated FFN the gate and up kernels are both `W_in`), so at the Student width the
    model's outputs equal `backbone`'s. The new TA neurons get `N(0, std^2)` input weights
    (`std` of the pretrained kernel they extend) and zero input biases; their output rows
    are zeros with `new_neurons="zero_output"` (the TA starts as an exact copy of the Student)
    or `N(0, std^2)` with `"random"`.

    Args:
        backbone: a `keras_hub.models.GPT2Backbone`, `Llama3Backbone`, `LlamaBackbone`,
            `QwenBackbone`, `GemmaBackbone` or text-only `Gemma3Backbone` (or a keras-hub
            CausalLM holding one).
        ta_intermediate_dim: the TA's FFN width in units, at least the backbone's
            (`backbone.intermediate_dim`; for Gemma 1/2, whose `intermediate_dim` counts the
            gate and up columns together, `backbone.intermediate_dim // 2`). Defaults to the
            backbone's (the backbone is the TA).
        ta_num_heads: the TA's (query) heads, at least the backbone's; `None` (default)
            keeps the heads un-nested. For Llama, Qwen and Gemma a multiple of the query heads
            per key/value head; the TA's key/value heads keep that ratio.
        new_neurons: `"zero_output"` (default) or `"random"`.
        seed: seed of the new neurons' initial weights.
        name: name of the Mat model (default `"mat_<backbone name>"`).

    Returns:
        A `MatGPT2Backbone`, `MatLlamaBackbone`, `MatGemmaBackbone` or `MatGemma3Backbone` (a
        Functional model with the backbone's inputs and outputs; its decoder blocks are Mat
        layers named like keras-hub's, `"transformer_layer_<i>"`).

    Example:

    ```python
    import keras_hub

    # Real use: gpt2 = keras_hub.models.GPT2Backbone.from_preset("gpt2_medium_en").
    gpt2 = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32,
                                         max_sequence_length=16)
    ta = keras_matta.hub.from_keras_hub(gpt2, ta_intermediate_dim=64)   # FFNs: 32 -> 64
    inputs = {"token_ids": np.random.randint(0, 50, size=(2, 8)),
              "padding_mask": np.ones((2, 8), "int32")}
    with keras_matta.WidthScope(ta, gpt2.intermediate_dim):
        hidden = ta(inputs)                   # equals gpt2(inputs)
    np.testing.assert_allclose(ops.convert_to_numpy(hidden),
                               ops.convert_to_numpy(gpt2(inputs)), atol=1e-5)

    # Shrinking instead: gpt2 is the TA, ordered so that its prefixes keep the best neurons.
    ta = keras_matta.hub.from_keras_hub(gpt2)
    keras_matta.reorder(ta, inputs, verbose=0)
    half = keras_matta.extract(ta, 16)
    assert isinstance(half, keras_hub.models.GPT2Backbone) and half.intermediate_dim == 16
    ```
    """
    backbone = getattr(backbone, "backbone", backbone)  # a CausalLM: its backbone
    mat_class = _mat_class(backbone)
    groups = _heads_per_group(backbone)
    student_heads = getattr(backbone, "num_heads", None) or backbone.num_query_heads
    student_units = mat_class.source_intermediate_dim(backbone)
    if ta_intermediate_dim is None:
        ta_intermediate_dim = student_units
    _check_size("ta_intermediate_dim", ta_intermediate_dim, student_units,
                "the backbone's FFN units")
    if ta_num_heads is not None:
        _check_size("ta_num_heads", ta_num_heads, student_heads, "the backbone's heads")
        if ta_num_heads % groups:
            raise ValueError(
                f"`ta_num_heads`={ta_num_heads} must be a multiple of the backbone's {groups} "
                "query heads per key/value head, so the TA's heads form whole groups."
            )
    if new_neurons not in weights_lib.NEW_NEURONS:
        raise ValueError(
            f"`new_neurons` must be one of {weights_lib.NEW_NEURONS}; got {new_neurons!r}."
        )
    mat = mat_class.from_source(backbone, ta_intermediate_dim, ta_num_heads, name=name)
    weights_lib.widen_from_stock(mat.source_links(backbone), new_neurons,
                                 np.random.default_rng(seed))
    return mat


def _mat_class(backbone):
    import importlib

    import keras_hub

    for class_name, path in SUPPORTED.items():
        if type(backbone) is getattr(keras_hub.models, class_name):
            module, attribute = path.rsplit(".", 1)
            return getattr(importlib.import_module(module), attribute)
    raise TypeError(
        "`backbone` must be one of keras_hub.models."
        f"{{{', '.join(SUPPORTED)}}} (or a CausalLM holding one); got "
        f"{type(backbone).__module__}.{type(backbone).__name__}."
    )


def _heads_per_group(backbone):
    if hasattr(backbone, "num_key_value_heads"):
        return backbone.num_query_heads // backbone.num_key_value_heads
    return 1


def _check_size(arg, value, minimum, what):
    if not is_int(value):
        raise TypeError(f"`{arg}` must be an int; got {value!r} of type {type(value).__name__}.")
    if value < minimum:
        raise ValueError(
            f"`{arg}`={value} is smaller than {what} ({minimum}): the TA must contain the "
            "pretrained Student."
        )
