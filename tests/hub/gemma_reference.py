"""References shared by the Gemma tests: inputs, a run at a width, a stock backbone by hand."""

import keras
import numpy as np
from helpers import to_numpy

import keras_matta


def gemma_inputs(vocabulary_size):
    rng = np.random.default_rng(0)
    # Left padding too: the first query of row 0 sees no key, which Gemma zeroes.
    mask = np.array([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], "int32")
    return {"token_ids": rng.integers(0, vocabulary_size, (2, 6)).astype("int32"),
            "padding_mask": mask}


def run_at(model, x, widths=None):
    with keras_matta.WidthScope(model, widths):
        return to_numpy(model(x))


def sliced_by_hand(stock_class, ta, config_keys, intermediate_dim, units, heads):
    """A stock `stock_class` at `units` FFN units and `heads` query heads (keras-hub's
    `intermediate_dim` given), every weight cut from the Mat TA with NumPy."""
    groups = ta.num_query_heads // ta.num_key_value_heads
    config = {key: ta.get_config()[key] for key in config_keys}
    stock = stock_class(**config, intermediate_dim=intermediate_dim, num_query_heads=heads,
                        num_key_value_heads=heads // groups, name="by_hand")
    pairs = [(stock.token_embedding.embeddings, to_numpy(ta.token_embedding.embeddings)),
             (stock.layer_norm.scale, to_numpy(ta.layer_norm.scale))]
    for block, ref in zip(ta.transformer_layers, stock.transformer_layers):
        attention = block._attention
        pairs += [
            (ref.pre_attention_norm.scale, to_numpy(block._attention_norm.scale)),
            (ref.attention.query_dense.kernel, to_numpy(attention.query_kernel)[:heads]),
            (ref.attention.key_dense.kernel, to_numpy(attention.key_kernel)[:heads // groups]),
            (ref.attention.value_dense.kernel,
             to_numpy(attention.value_kernel)[:heads // groups]),
            (ref.attention.output_dense.kernel, to_numpy(attention.output_kernel)[:heads]),
            (ref.pre_ffw_norm.scale, to_numpy(block._ffn_norm.scale)),
            (ref.gating_ffw.kernel, to_numpy(block._ffn_gate.kernel)[:, :units]),
            (ref.gating_ffw_2.kernel, to_numpy(block._ffn_up.kernel)[:, :units]),
            (ref.ffw_linear.kernel, to_numpy(block._ffn_down.kernel)[:units]),
        ]
        if hasattr(ref.attention, "query_norm"):
            # Gemma 3: one scale per head feature, shared by all heads: whole at every width.
            pairs += [(ref.attention.query_norm.scale, to_numpy(attention.query_norm.scale)),
                      (ref.attention.key_norm.scale, to_numpy(attention.key_norm.scale))]
        if ref.use_post_attention_norm:
            pairs.append((ref.post_attention_norm.scale,
                          to_numpy(block._post_attention_norm.scale)))
        if ref.use_post_ffw_norm:
            pairs.append((ref.post_ffw_norm.scale, to_numpy(block._post_ffn_norm.scale)))
    for variable, value in pairs:
        variable.assign(value)
    assert len(pairs) == len(stock.weights)  # every stock weight was set
    return stock


def check_soft_capped_logits(backbone, ta_intermediate_dim, cap, x, path):
    """`LogitsModel` of the grown TA, at the Student's widths, equals NumPy's tied,
    soft-capped logits of the pretrained `backbone`, and round-trips through `path`."""
    from keras_matta import hub  # here: the test modules skip first when keras-hub is missing

    model = hub.LogitsModel(hub.from_keras_hub(backbone, ta_intermediate_dim=ta_intermediate_dim))
    hidden = to_numpy(backbone(x))
    embeddings = to_numpy(backbone.token_embedding.embeddings)
    expected = cap * np.tanh(hidden @ embeddings.T / cap)
    np.testing.assert_allclose(run_at(model, x, model.backbone.source_widths()), expected,
                               atol=1e-4)
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.backbone.get_config() == model.backbone.get_config()
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(model(x)), atol=1e-6)
