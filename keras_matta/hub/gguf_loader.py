"""Loading llama.cpp GGUF checkpoints (e.g. SmolLM2) into keras-hub's `Llama3Backbone`.

GGUF stores a Llama as 2-D matrices in PyTorch's `(out, in)` layout, quantized (Q4_1, Q8_0, ...)
or not; `gguf.quants.dequantize` returns float32. Two llama.cpp conventions are undone here:

- the query and key rows of each head are permuted: llama.cpp's converter reorders a head's
  rows `[r_0..r_{h/2-1}, r_{h/2}..r_{h-1}]` into interleaved pairs `(r_0, r_{h/2}), (r_1, ...)`
  so its rotary kernel can rotate adjacent elements; keras-hub rotates the two halves
  (`rotate_half`), so the permutation is inverted:
  `W.reshape(heads, h/2, 2, d).swapaxes(1, 2).reshape(heads * h, d)`;
- a model without an `output.weight` tensor ties its output projection to the token
  embedding (`tie_word_embeddings=True`).

Requires the pure-Python `gguf` package (`pip install gguf`).
"""

import os

import numpy as np

GGUF_MAGIC = b"GGUF"


class GGUFFile:
    """An open GGUF file: its metadata, and its tensors dequantized to float32 on demand.

    Args:
        path: a GGUF file.
        cache: keep every dequantized tensor in memory (float32: about 4 bytes per parameter),
            so repeated reads (a loader and a reference implementation) dequantize once.
            Defaults to `False`.

    Attributes:
        metadata: `{key: value}` (strings, numbers, lists; the `GGUF.*` header keys left out).

    Raises:
        TypeError: `path` is not a str or `os.PathLike`.
        ValueError: `path` is not an existing file, or not a GGUF file.

    Example:

    ```python
    gguf_file = keras_matta.hub.GGUFFile("SmolLM2-135M-Instruct.Q4_1.gguf")
    gguf_file.metadata["llama.block_count"]         # 30
    gguf_file.tensor_shape("token_embd.weight")     # (49152, 576), read without dequantizing
    gguf_file.tensor("blk.0.attn_q.weight").shape   # (576, 576): (out, in), llama.cpp's rows
    ```
    """

    def __init__(self, path, cache=False):
        import gguf

        _check_path(path)
        self.path = os.fspath(path)
        self._cache = {} if cache else None
        self._reader = gguf.GGUFReader(self.path)
        self._tensors = {tensor.name: tensor for tensor in self._reader.tensors}
        self.metadata = {
            key: field.contents()
            for key, field in self._reader.fields.items()
            if not key.startswith("GGUF.")
        }

    @property
    def tensor_names(self):
        return list(self._tensors)

    def tensor_shape(self, name):
        """The shape `tensor(name)` will have, without dequantizing it."""
        return tuple(int(n) for n in reversed(self._tensors[name].shape))

    def tensor(self, name):
        """The tensor `name` as float32, in GGUF's layout (2-D weights are `(out, in)`)."""
        import gguf

        if name not in self._tensors:
            raise KeyError(f"GGUF file {self.path!r} has no tensor {name!r}.")
        if self._cache is not None and name in self._cache:
            return self._cache[name]
        tensor = self._tensors[name]
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        # GGUF lists the fastest-varying axis first.
        values = np.asarray(values, dtype="float32").reshape(self.tensor_shape(name))
        if self._cache is not None:
            values.setflags(write=False)  # shared between readers
            self._cache[name] = values
        return values


def _open(path_or_file):
    return path_or_file if isinstance(path_or_file, GGUFFile) else GGUFFile(path_or_file)


def load_gguf_llama(path, num_layers=None, tie_word_embeddings=None, dtype=None):
    """A `keras_hub.models.Llama3Backbone` holding the weights of a GGUF Llama checkpoint.

    Args:
        path: a GGUF file (or an open `GGUFFile`) of architecture `"llama"` (Llama 2/3,
            SmolLM, SmolLM2, TinyLlama, ...).
        num_layers: load only the first `num_layers` blocks (a truncated model, for tests and
            quick experiments). Defaults to all of them.
        tie_word_embeddings: `None` (default): tied when the file has no `output.weight`.
            `False` unties a tied checkpoint (the output projection becomes a copy of the
            embedding); keras-hub 0.32's `LlamaBackbone.get_config` drops this argument, so
            only an untied backbone survives `save_to_preset` / `from_preset`.
        dtype: dtype policy of the backbone. Defaults to Keras' global policy.

    Returns:
        A built `Llama3Backbone` with the checkpoint's weights.

    Raises:
        ValueError: `path` is not an existing GGUF file, or its architecture is not Llama.

    Example:

    ```python
    gguf_file = keras_matta.hub.GGUFFile("SmolLM2-135M-Instruct.Q4_1.gguf")   # read once
    tokenizer = keras_matta.hub.load_gguf_tokenizer(gguf_file)
    # The first 2 of the 30 blocks, quick to load; without `num_layers`, the whole model.
    backbone = keras_matta.hub.load_gguf_llama(gguf_file, num_layers=2)   # a Llama3Backbone
    token_ids = ops.convert_to_numpy(tokenizer("The capital of France is"))[None]
    hidden = backbone({"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)})
    # (1, 5, 576). The whole model's next-token logits, `LogitsModel(backbone)` of these
    # inputs, continue the prompt with " Paris".
    ```
    """
    import keras_hub

    gguf_file = _open(path)
    architecture = gguf_file.metadata.get("general.architecture")
    if architecture != "llama":
        raise ValueError(
            f"`path`={gguf_file.path!r} holds a GGUF model of architecture {architecture!r}; "
            "load_gguf_llama loads architecture 'llama' only."
        )
    config = llama_config(gguf_file)
    if num_layers is not None:
        if not 1 <= num_layers <= config["num_layers"]:
            raise ValueError(
                f"`num_layers` must be in [1, {config['num_layers']}]; got {num_layers}."
            )
        config["num_layers"] = num_layers
    tied = "output.weight" not in gguf_file.tensor_names
    if tie_word_embeddings is None:
        tie_word_embeddings = tied
    elif tie_word_embeddings and not tied:
        raise ValueError(
            f"`tie_word_embeddings`=True but {gguf_file.path!r} has a separate output.weight."
        )
    backbone = keras_hub.models.Llama3Backbone(
        **config, tie_word_embeddings=tie_word_embeddings, dtype=dtype
    )
    _load_weights(backbone, gguf_file, config, tie_word_embeddings)
    return backbone


def llama_config(gguf_file):
    """`Llama3Backbone` arguments from a `GGUFFile`'s metadata."""
    metadata = gguf_file.metadata
    rope_scaling = metadata.get("llama.rope.scaling.type", "none")
    if rope_scaling not in ("none", None):
        raise ValueError(
            f"GGUF rope scaling {rope_scaling!r} is not supported by load_gguf_llama."
        )
    hidden = int(metadata["llama.embedding_length"])
    heads = int(metadata["llama.attention.head_count"])
    return {
        "vocabulary_size": gguf_file.tensor_shape("token_embd.weight")[0],
        "num_layers": int(metadata["llama.block_count"]),
        "num_query_heads": heads,
        "hidden_dim": hidden,
        "intermediate_dim": int(metadata["llama.feed_forward_length"]),
        "num_key_value_heads": int(metadata.get("llama.attention.head_count_kv", heads)),
        "rope_max_wavelength": float(metadata.get("llama.rope.freq_base", 10000.0)),
        "layer_norm_epsilon": float(metadata["llama.attention.layer_norm_rms_epsilon"]),
    }


def unpermute_rows(weight, num_heads):
    """Inverts llama.cpp's query/key row permutation (see the module docstring)."""
    rows, cols = weight.shape
    return (weight.reshape(num_heads, rows // num_heads // 2, 2, cols)
            .swapaxes(1, 2).reshape(rows, cols))


def _load_weights(backbone, gguf_file, config, tie_word_embeddings):
    d, heads = config["hidden_dim"], config["num_query_heads"]
    kv_heads, head_dim = config["num_key_value_heads"], d // heads
    assign = lambda variable, value: variable.assign(  # noqa: E731
        np.ascontiguousarray(value).astype(_dtype(variable))
    )
    embedding = gguf_file.tensor("token_embd.weight")  # (V, d)
    assign(backbone.token_embedding.embeddings, embedding)
    if not tie_word_embeddings:
        if "output.weight" in gguf_file.tensor_names:
            embedding = gguf_file.tensor("output.weight")  # (V, d)
        assign(backbone.token_embedding.reverse_embeddings, embedding.T)
    assign(backbone.layer_norm.scale, gguf_file.tensor("output_norm.weight"))
    for i, block in enumerate(backbone.transformer_layers):
        t = lambda name, i=i: gguf_file.tensor(f"blk.{i}.{name}.weight")  # noqa: E731
        attention = block._self_attention_layer
        q = unpermute_rows(t("attn_q"), heads)  # (heads * h_d, d)
        k = unpermute_rows(t("attn_k"), kv_heads)  # (kv_heads * h_d, d)
        assign(attention._query_dense.kernel, q.T.reshape(d, heads, head_dim))
        assign(attention._key_dense.kernel, k.T.reshape(d, kv_heads, head_dim))
        assign(attention._value_dense.kernel, t("attn_v").T.reshape(d, kv_heads, head_dim))
        assign(attention._output_dense.kernel, t("attn_output").T.reshape(heads, head_dim, d))
        assign(block._self_attention_layernorm.scale, t("attn_norm"))
        assign(block._feedforward_layernorm.scale, t("ffn_norm"))
        assign(block._feedforward_gate_dense.kernel, t("ffn_gate").T)  # (d, I)
        assign(block._feedforward_intermediate_dense.kernel, t("ffn_up").T)  # (d, I)
        assign(block._feedforward_output_dense.kernel, t("ffn_down").T)  # (I, d)


def load_gguf_tokenizer(path):
    """The GGUF file's byte-level BPE tokenizer as a `keras_hub.tokenizers.BytePairTokenizer`.

    Uses the vocabulary and merges stored in the metadata (`tokenizer.ggml.model == "gpt2"`);
    control tokens (`<|im_start|>`, ...) are kept whole. The pre-tokenizer is keras-hub's
    GPT-2 split, which matches SmolLM2's on ordinary English text.

    Args:
        path: a GGUF file or an open `GGUFFile`.

    Returns:
        A `keras_hub.tokenizers.BytePairTokenizer`.

    Raises:
        ValueError: the file's tokenizer is not byte-level BPE.

    Example:

    ```python
    tokenizer = keras_matta.hub.load_gguf_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")
    token_ids = tokenizer("The capital of France is")   # [504, 3575, 282, 4649, 314]
    tokenizer.detokenize(token_ids)                      # "The capital of France is"
    tokenizer("<|im_start|>user")                        # [1, 4093]: a control token, whole
    ```
    """
    import keras_hub

    gguf_file = _open(path)
    metadata = gguf_file.metadata
    if metadata.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(
            f"`path`={gguf_file.path!r} has tokenizer model "
            f"{metadata.get('tokenizer.ggml.model')!r}; only byte-level BPE ('gpt2') is read."
        )
    tokens = list(metadata["tokenizer.ggml.tokens"])
    types = list(metadata.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    special = [token for token, kind in zip(tokens, types) if kind == 3]  # CONTROL tokens
    return keras_hub.tokenizers.BytePairTokenizer(
        vocabulary={token: i for i, token in enumerate(tokens)},
        merges=list(metadata["tokenizer.ggml.merges"]),
        unsplittable_tokens=special or None,
    )


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike; got {type(path).__name__}.")
    if not os.path.isfile(path):
        raise ValueError(f"`path`={os.fspath(path)!r} is not an existing file.")
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(
            f"`path`={os.fspath(path)!r} is not a GGUF file (it starts with {magic!r}, not "
            f"{GGUF_MAGIC!r})."
        )


def _dtype(variable):
    from keras import backend

    return backend.standardize_dtype(variable.dtype)
