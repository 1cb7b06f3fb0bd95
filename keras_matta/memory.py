"""`peak_memory`: the bytes a served forward pass of a nested width needs, counted."""

import math

import keras
import numpy as np

from keras_matta.cost import trace
from keras_matta.layers.mat_attention import MatMultiHeadAttention

# Stock layers that return their input unchanged at inference: no new buffer.
_IDENTITY_AT_INFERENCE = (
    keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D, keras.layers.GaussianDropout, keras.layers.GaussianNoise,
    keras.layers.AlphaDropout, keras.layers.ActivityRegularization, keras.layers.Identity,
)


def peak_memory(model, widths=None, batch_size=1, input_shape=None):
    """Bytes that one inference call of `keras_matta.extract(model, widths)` holds at its peak.

    Counted from the width spec, like `keras_matta.cost`: nothing is built or run. The peak is

        peak = weights + max_i live_i
        weights = sum over layers of params * bytes per element of the layer's variable dtype
        live_i = sum of bytes(t) over the tensors t alive while node i runs

    over the nodes `i` of the forward pass in the order `keras_matta.cost.trace` replays them
    (topological). A tensor is alive from the node that writes it to the last node that reads
    it (the graph's inputs from the start; its outputs, the tensors no node reads, to the end);
    while node `i` runs, its inputs, its outputs and its own intermediates are alive together.
    `bytes(t)` is `batch_size * prod(per-example shape) * itemsize(dtype)`. Intermediates:

    - attention (`MatMultiHeadAttention`, `keras.layers.MultiHeadAttention`) with `h` heads,
      query length `T`, key length `S`: the projections `Q (B, T, h, key_dim)`,
      `K (B, S, h, key_dim)`, `V (B, S, h, value_dim)` and the scores `(B, h, T, S)` (softmax
      taken in place);
    - a `MatTransformerBlock` at FFN width `k` is counted as the stock layers `extract` turns
      it into, one after another: `LN_1`, attention (as above), the residual add, `LN_2`, the
      FFN hidden `(B, T, k)`, its output, the residual add. So
      `peak_memory(extract(model, w)) == peak_memory(model, w)`;
    - a keras-hub Mat decoder block (`MatLlamaDecoder`, `MatGemmaDecoder`, ...) in the same
      order, with its `h` query heads (keys and values repeated to `h` heads, as computed) and
      a gated FFN: gate and up `(B, T, k)` alive together with `u` and `N_2(u)`, then
      `act(gate) * up` (the activation in place) with `u`, gate and up. Its stock keras-hub
      block, in an extracted model, counts as any other layer (as `cost`, which counts no
      FLOPs in it);
    - dropout and other layers that are the identity at inference write no new tensor;
    - any other layer: its inputs and outputs only.

    This is a model of a simple allocator that frees a tensor after its last reader, without
    in-place updates or operator fusion: XLA (JAX, `jit_compile` on TensorFlow) may fuse and
    reuse buffers below it, eager execution adds framework overhead above it, and masks built
    inside attention are not counted. No backend measures the peak of one CPU forward pass
    cheaply (`tf.config.experimental.get_memory_info` and `torch.cuda.max_memory_allocated`
    are for accelerators only), so no measured counterpart is offered.

    Args:
        model: a Sequential or Functional model (Mat layers optional), or a `MatTA`.
        widths: a width spec (float, int, `{layer_name: spec}` dict) or `None` (full width).
        batch_size: the batch served (a positive int).
        input_shape: per-example input shape, where the model's has unknown dimensions.

    Returns:
        `{"peak_bytes": int, "weight_bytes": int, "activation_bytes": int}`, where
        `activation_bytes` is the largest live set (`max_i live_i`) and `peak_bytes` the sum.

    Example:

    ```python
    model = keras.Sequential([keras.Input((16,)),
                              keras_matta.MatDense(64, activation="relu", name="hidden"),
                              keras_matta.MatDense(10, nested=False, name="logits")])
    memory = keras_matta.peak_memory(model, 0.25, batch_size=8)
    # float32: 442 params; the largest live set is the input (8, 16) with the hidden (8, 16).
    assert memory == {"weight_bytes": 4 * 442, "activation_bytes": 4 * (8 * 16 + 8 * 16),
                      "peak_bytes": 4 * 442 + 4 * 256}
    assert keras_matta.peak_memory(keras_matta.extract(model, 0.25), batch_size=8) == memory
    ```

    Reference:
        Chen et al., "Training Deep Nets with Sublinear Memory Cost", 2016 (liveness of a
        computation graph's tensors); Lin et al., "MCUNet: Tiny Deep Learning on IoT
        Devices", NeurIPS 2020 (peak activation memory as a search constraint).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
    steps = trace(model, widths, input_shape, batch_size)

    # === Buffers: a tensor, or the tensor an identity layer passed through ===
    buffer = {}  # id(tensor) -> id of the tensor that owns its memory
    size = {}  # owner id -> bytes
    born, last_read = {}, {}
    keep = []  # the tensors themselves, so that no id is reused while this runs
    for i, step in enumerate(steps):
        for tensor in step.inputs:
            owner = buffer.setdefault(id(tensor), id(tensor))
            if owner not in born:  # a graph input: alive from the start
                born[owner], size[owner] = -1, _bytes(tensor)
                keep.append(tensor)
            last_read[owner] = i
        alias = isinstance(step.operation, _IDENTITY_AT_INFERENCE) and step.inputs
        for tensor in step.outputs:
            keep.append(tensor)
            if alias:
                buffer[id(tensor)] = buffer[id(step.inputs[0])]
            else:
                buffer[id(tensor)] = id(tensor)
                born[id(tensor)], size[id(tensor)] = i, _bytes(tensor)
    end = len(steps)
    dies = {owner: last_read.get(owner, end) for owner in born}  # unread: an output

    # === The live set of each node ===
    activation_bytes = 0
    for i, step in enumerate(steps):
        own_inputs = {buffer[id(t)] for t in step.inputs}
        own_outputs = {buffer[id(t)] for t in step.outputs} - own_inputs
        # Inputs read again later stay alive across the node, like any other tensor.
        dying = {owner for owner in own_inputs if dies[owner] == i}
        others = sum(size[o] for o in born
                     if born[o] < i <= dies[o] and o not in dying and o not in own_outputs)
        inputs = sum(size[o] for o in dying)
        outputs = sum(size[o] for o in own_outputs)
        activation_bytes = max(activation_bytes,
                               others + _node_peak(step, inputs, outputs))
    weight_bytes = sum(step.params * _itemsize(getattr(step.operation, "variable_dtype",
                                                       "float32")) for step in steps)
    return {"peak_bytes": weight_bytes + activation_bytes, "weight_bytes": weight_bytes,
            "activation_bytes": activation_bytes}


def _node_peak(step, inputs, outputs):
    """The most bytes of the node's own tensors alive at once: `inputs` (bytes of the inputs
    it reads last) and `outputs` (bytes it writes), plus its intermediates."""
    operation = step.operation
    if step.width is not None and hasattr(operation, "inference_tensors"):
        return _block_peak(operation.inference_tensors(step.width), step, inputs)
    if isinstance(operation, (MatMultiHeadAttention, keras.layers.MultiHeadAttention)):
        heads = (step.width or {}).get("num_heads", operation.num_heads)
        query = step.inputs[0]
        value = step.inputs[1] if len(step.inputs) > 1 else query
        return inputs + outputs + _attention_bytes(
            heads, operation.key_dim, operation.value_dim or operation.key_dim, query, value)
    return inputs + outputs


def _block_peak(tensors, step, inputs):
    """A pre-norm residual block (the layer's `inference_tensors(width)`), step by step.

    `X` is one `(B, T, d)` tensor; `inputs` holds the block input's bytes when no later node
    reads it (else it is counted outside, alive throughout). Post-norms (Gemma 2) add no
    peak: each replaces a tensor that dies with it.
    """
    x = step.inputs[0]
    big_x = _bytes(x)
    attention = _attention_bytes(tensors["heads"], tensors["key_dim"], tensors["value_dim"],
                                 x, x)
    hidden = big_x // x.shape[-1] * tensors["ffn_units"]  # (B, T, k)
    ffn = ((2 * big_x + 2 * hidden,  # gate and up: u, N_2(u), gate, up
            big_x + 3 * hidden)  # act(gate) * up: u, gate, up, their product
           if tensors["gated"] else
           (2 * big_x + hidden,))  # FFN in: u, LN_2(u), hidden; FFN out: u, hidden, f
    return max(
        inputs + big_x,  # LN_1: x, n1
        inputs + 2 * big_x + attention,  # attention: x, n1, Q, K, V, scores, its output
        inputs + 2 * big_x,  # residual: x, the attention output, u
        *ffn,
        3 * big_x,  # residual: u, f, y
    )


def _attention_bytes(heads, key_dim, value_dim, query, value):
    """Bytes of `Q`, `K`, `V` and the scores of `heads` heads of attention."""
    batch, target, source = query.shape[0], math.prod(query.shape[1:-1]), \
        math.prod(value.shape[1:-1])
    elements = heads * (batch * target * key_dim + batch * source * (key_dim + value_dim)
                        + batch * target * source)
    return elements * _itemsize(query.dtype)


def _bytes(tensor):
    return math.prod(tensor.shape) * _itemsize(tensor.dtype)


def _itemsize(dtype):
    dtype = keras.backend.standardize_dtype(dtype)
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
