"""The study's models: a Teacher, a TA with the Student nested in it, and the lone Student.

Every model is Functional, so `keras_matta.extract` and `keras_matta.cost` can walk it.

- Digits (and user classification data): an MLP `784 -> hidden -> hidden -> 10`. The TA's two
  hidden layers are `MatDense` (named `hidden_1`, `hidden_2`), so a Student is the TA at a
  fraction of its units and a Mix'n'Match model picks a width per layer. The Teacher is a
  wider stock MLP.
- Language model: a byte-level decoder-only transformer: token and learned position embeddings,
  `MatTransformerBlock`s (causal; nested FFN width and heads, named `block_1`, ...), a final
  layer norm and a 256-way projection. Positions are computed from the input with `keras.ops`
  (`cumsum` of ones), so the model has a single token input and saves and extracts as is.

The Student trained alone is built by the same function at the Student's size, so it is the
same architecture as the Student nested in the TA (and is a Mat model at full width).
"""

import math

import keras
from keras import ops

from keras_matta.layers.mat_dense import MatDense
from keras_matta.layers.mat_transformer_block import MatTransformerBlock

VOCABULARY_SIZE = 256


def mlp_classifier(hidden_units, num_layers=2, nested=True, input_shape=(784,), num_classes=10,
                   majority=1, name="mlp"):
    """An MLP classifier (the digits model); `nested=False` gives stock `Dense` layers.

    Args:
        hidden_units: units of every hidden layer.
        num_layers: number of hidden layers (named `hidden_1`, ...).
        nested: Mat layers (a TA or a Student) or stock `Dense` layers (the Teacher).
        input_shape: per-example input shape; inputs of rank > 1 are flattened first.
        num_classes: number of output logits.
        majority: copies of every kernel (`MatDense(majority=...)`, the library's default
            combine); 1 is a plain model. Needs `nested=True`.
        name: the model's name.

    Returns:
        A Functional model mapping `(batch, *input_shape)` to `(batch, num_classes)` logits.

    Example:

    ```python
    ta = mlp_classifier(256)                    # TA; its Student: keras_matta.extract(ta, 1/16)
    teacher = mlp_classifier(1024, nested=False)
    ```
    """
    if majority != 1 and not nested:
        raise ValueError(f"`majority` needs `nested=True` (Mat layers); got majority={majority!r}.")
    dense = MatDense if nested else keras.layers.Dense
    copies = {"majority": majority} if nested else {}
    head = {"nested": False, **copies} if nested else {}
    inputs = keras.Input(tuple(input_shape), name="features")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for i in range(1, num_layers + 1):
        x = dense(hidden_units, activation="relu", name=f"hidden_{i}", **copies)(x)  # (B, hidden)
    outputs = dense(num_classes, name="logits", **head)(x)  # (B, classes)
    return keras.Model(inputs, outputs, name=name)


def byte_lm(sequence_length, model_dim, num_layers, num_heads, intermediate_dim,
            nested_heads=True, key_dim=None, dropout=0.0, majority=1, name="byte_lm"):
    """A causal byte-level transformer language model.

    Args:
        sequence_length: `T`, the fixed input length (the position table's size).
        model_dim: `d`, the embedding and residual width (shared by all nested widths).
        num_layers: number of transformer blocks (named `block_1`, ...).
        num_heads: attention heads per block (nested when `nested_heads`).
        intermediate_dim: FFN hidden width of every block (always nested).
        nested_heads: whether a Student also uses a prefix of the heads.
        key_dim: size of each head. Defaults to `model_dim // num_heads`.
        dropout: dropout rate in the blocks.
        majority: copies of every kernel of the blocks (`MatTransformerBlock(majority=...)`,
            the library's default combine); 1 is a plain model.
        name: the model's name.

    Returns:
        A Functional model mapping `(batch, T)` `int32` bytes to `(batch, T, 256)` logits of
        the next byte.

    Example:

    ```python
    ta = byte_lm(64, model_dim=64, num_layers=2, num_heads=4, intermediate_dim=256)
    ```
    """
    tokens = keras.Input((sequence_length,), dtype="int32", name="bytes")
    x = keras.layers.Embedding(VOCABULARY_SIZE, model_dim, name="token_embedding")(tokens)
    positions = ops.cumsum(ops.ones_like(tokens), axis=1) - 1  # (B, T): 0, 1, ..., T - 1
    x = ops.add(
        x, keras.layers.Embedding(sequence_length, model_dim, name="position_embedding")(positions)
    )  # (B, T, d)
    for i in range(1, num_layers + 1):
        x = MatTransformerBlock(
            intermediate_dim, num_heads, dropout=dropout, causal=True, nested_heads=nested_heads,
            key_dim=key_dim, activation="gelu", majority=majority, name=f"block_{i}",
        )(x)  # (B, T, d)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = keras.layers.Dense(VOCABULARY_SIZE, name="logits")(x)  # (B, T, 256)
    return keras.Model(tokens, logits, name=name)


def build(kind, name, **kwargs):
    """`mlp_classifier(**kwargs)` for `kind="digits"`, `byte_lm(**kwargs)` for `kind="lm"`."""
    builders = {"digits": mlp_classifier, "lm": byte_lm}
    if kind not in builders:
        raise ValueError(f"Unknown model kind {kind!r}; expected one of {sorted(builders)}.")
    return builders[kind](name=name, **kwargs)


def student_kwargs(ta_kwargs, kind, fraction):
    """The builder arguments of a lone model equal in shape to the TA at `fraction`.

    Every nested dimension is scaled the way a float width spec scales it (`fraction * full`
    rounded half up), so the lone model and the nested one match parameter for parameter.

    Args:
        ta_kwargs: the TA's builder arguments (`TaskConfig.ta`).
        kind: `"digits"` or `"lm"`.
        fraction: a width in (0, 1].

    Returns:
        Builder arguments for `build(kind, ...)`.

    Example:

    ```python
    ta = dict(sequence_length=64, model_dim=64, num_layers=2, num_heads=4, intermediate_dim=256)
    kwargs = student_kwargs(ta, "lm", 0.25)   # intermediate_dim 64, 1 head of size 16
    lone = build("lm", name="separate_0_25", **kwargs)
    ```
    """
    def scaled(full):
        # Half up, as the width specs resolve (Python's round() halves to even: 2.5 -> 2).
        return math.floor(fraction * full + 0.5)

    kwargs = dict(ta_kwargs)
    if kind == "digits":
        kwargs["hidden_units"] = scaled(ta_kwargs["hidden_units"])
    else:
        kwargs["intermediate_dim"] = scaled(ta_kwargs["intermediate_dim"])
        if ta_kwargs.get("nested_heads", True):
            kwargs["num_heads"] = scaled(ta_kwargs["num_heads"])
            # Nested heads keep the TA's head size, d / H: so does the lone Student.
            kwargs["key_dim"] = ta_kwargs.get("key_dim") or (
                ta_kwargs["model_dim"] // ta_kwargs["num_heads"]
            )
    return kwargs
