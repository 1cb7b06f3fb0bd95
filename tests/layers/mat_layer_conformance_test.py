"""The conformance test every Mat layer goes through.

Each case wraps one Mat layer in a small model (`input -> layer -> output`); the same checks run
for every case: config round trip, serialization registration, `.keras` round trip, a model
saved under another backend, compiled predict and fit at several widths, mixed precision,
and extraction to stock layers. A new Mat layer adds one `Case`.
"""

import dataclasses
import os
from collections.abc import Callable

import keras
import numpy as np
import pytest
from helpers import other_backend
from helpers import run_python
from helpers import to_numpy

import keras_matta


@dataclasses.dataclass
class Case:
    name: str
    make_layer: Callable  # () -> Mat layer
    input_shape: tuple  # per example
    widths: tuple  # width specs exercised at call time
    input_dtype: str = "float32"
    # `cost` counts the FLOPs of Keras' own layers; keras-hub's blocks extract into its layers.
    stock_flops_counted: bool = True
    # torch.compile costs a minute or more per case on CI's shared cores; a case whose call is
    # code another case already compiles skips it (MatGemmaDecoder and MatGemma3Decoder run
    # MatLlamaDecoder's; MatTransformerBlock compiles MatMultiHeadAttention's call, and with
    # MatDense_majority's combine, that of MatTransformerBlock_majority; MatTransformerBlock's FFN
    # compiles MatDense's call, also at nested input widths, and MatDense_head is that call at
    # full width; tests/layers/mat_dense_test.py compiles it alone, as one graph).
    torch_compiled: bool = True

    def model(self):
        inputs = keras.Input(self.input_shape, dtype=self.input_dtype)
        return keras.Model(inputs, self.make_layer()(inputs))

    def data(self, batch=3):
        return np.random.RandomState(1).randn(batch, *self.input_shape).astype(self.input_dtype)


CASES = [
    Case(
        "MatDense",
        lambda: keras_matta.MatDense(8, activation="gelu", bias_initializer="random_normal"),
        (5,),
        (0.5, 3, {"units": 1}),
        torch_compiled=False,
    ),
    Case(
        "MatDense_majority",
        lambda: keras_matta.MatDense(6, majority=3, bias_initializer="random_normal"),
        (4,),
        (0.5, None),
    ),
    Case(
        "MatTransformerBlock",
        lambda: keras_matta.MatTransformerBlock(
            intermediate_dim=16, num_heads=4, nested_heads=True, causal=True,
            activation="gelu", bias_initializer="random_normal",
        ),
        (5, 8),
        (0.5, {"intermediate_dim": 3}, {"intermediate_dim": 8, "num_heads": 1}),
    ),
    Case(
        "MatTransformerBlock_majority",
        lambda: keras_matta.MatTransformerBlock(
            intermediate_dim=8, num_heads=2, nested_heads=True, majority=3, majority_seed=1
        ),
        (4, 6),
        (0.5, None),
        torch_compiled=False,
    ),
    Case(
        "MatMultiHeadAttention",
        lambda: keras_matta.MatMultiHeadAttention(
            num_heads=4, key_dim=3, bias_initializer="random_normal"
        ),
        (5, 8),
        (0.5, 1),
        torch_compiled=False,
    ),
    Case(
        "MatLlamaDecoder",
        lambda: _hub().MatLlamaDecoder(
            intermediate_dim=8, num_query_heads=4, num_key_value_heads=2, nested_heads=True
        ),
        (5, 8),
        # One width: each width is one more compiled trace, and the full width is the same
        # code (tests/hub/llama_test.py runs it against keras-hub).
        ({"intermediate_dim": 3},),
        stock_flops_counted=False,
    ),
    Case(  # Gemma 2's options and a free head size (4 * 4 != 8); without the post-FFN norm,
        # which rescales the FFN's bfloat16 rounding past this test's tolerance (the float32
        # tests/hub/gemma_test.py checks it against keras-hub)
        "MatGemmaDecoder",
        lambda: _hub().MatGemmaDecoder(
            intermediate_dim=6, num_query_heads=4, num_key_value_heads=2, head_dim=4,
            use_post_attention_norm=True, logit_soft_cap=2.0, sliding_window_size=2,
            nested_heads=True,
        ),
        (4, 8),
        ({"intermediate_dim": 2, "num_query_heads": 2},),  # one width, as MatLlamaDecoder
        stock_flops_counted=False,
        torch_compiled=False,
    ),
    Case(  # Gemma 3's query/key norms and a global block's rotary settings; one width and no
        # post-FFN norm, as MatGemmaDecoder (tests/hub/gemma3_test.py checks all against keras-hub)
        "MatGemma3Decoder",
        lambda: _hub().MatGemma3Decoder(
            intermediate_dim=6, num_query_heads=4, num_key_value_heads=2, head_dim=4,
            rope_wavelength=1e6, rope_scaling_factor=8.0, sliding_window_size=2,
            nested_heads=True,
        ),
        (4, 8),
        ({"intermediate_dim": 2, "num_query_heads": 2},),
        stock_flops_counted=False,
        # Its call is MatLlamaDecoder's, which compiles, plus two stock keras-hub RMS norms:
        # compiling it again would cost minutes and cover no Mat code that is not compiled.
        torch_compiled=False,
    ),
    Case(
        "MatDense_head",
        lambda: keras_matta.MatDense(4, nested=False, bias_initializer="random_normal"),
        (6,),
        (None,),
        torch_compiled=False,
    ),
]


def _hub():
    # keras-hub (and with it TensorFlow) only when a hub case runs.
    return pytest.importorskip("keras_matta.hub")


def layer_of(model):
    return next(layer for layer in model.layers if isinstance(layer, keras_matta.MatLayer))


def outputs_at(model, x, width):
    layer = layer_of(model)
    with keras_matta.WidthScope(model, None if width is None else {layer.name: width}):
        return to_numpy(model(x))


def spec_for(model, width):
    return None if width is None else {layer_of(model).name: width}


@pytest.fixture(params=CASES, ids=lambda case: case.name)
def case(request):
    return request.param


def test_config_round_trip(case):
    layer = case.make_layer()
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    name = f"keras_matta>{type(layer).__name__}"
    assert keras.saving.get_registered_object(name) is type(layer)


def test_keras_file_round_trip(case, tmp_path):
    model = case.model()
    x = case.data()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for width in case.widths:
        np.testing.assert_allclose(
            outputs_at(loaded, x, width), outputs_at(model, x, width), atol=1e-6
        )


@pytest.fixture(scope="module")
def saved_under_another_backend(tmp_path_factory):
    """Every case's model, saved by one fresh interpreter running another backend.

    One interpreter for all cases: its start-up (importing Keras, the backend and keras-hub)
    costs more than saving the small models, and it used to be paid once per case. A case that
    fails to save leaves its traceback in `<case>.error`, so the other cases still run.
    """
    folder = str(tmp_path_factory.mktemp("saved_under_another_backend"))
    here = os.path.dirname(__file__)  # this module, and tests/ for `helpers`
    run_python(
        f"""
        import os, sys, traceback
        sys.path[:0] = [{here!r}, {os.path.dirname(here)!r}]
        import keras
        from mat_layer_conformance_test import CASES
        for case in CASES:
            keras.utils.set_random_seed(0)
            path = os.path.join({folder!r}, case.name)
            try:
                case.model().save(path + ".keras")
            except BaseException:  # pytest's Skipped included: the test reports it
                with open(path + ".error", "w") as f:
                    f.write(traceback.format_exc())
        """,
        backend=other_backend(),
        timeout=400,
    )
    return folder


@pytest.mark.slow
def test_model_saved_under_another_backend_loads_here(case, saved_under_another_backend):
    fresh = case.model()  # first: it imports the layer's module, which registers its class
    path = os.path.join(saved_under_another_backend, case.name)
    if os.path.exists(path + ".error"):
        with open(path + ".error") as f:
            pytest.fail(f"saving under {other_backend()} failed:\n{f.read()}")
    loaded = keras.saving.load_model(path + ".keras")
    x = case.data()
    fresh.set_weights(loaded.get_weights())
    for width in case.widths:
        np.testing.assert_allclose(
            outputs_at(loaded, x, width), outputs_at(fresh, x, width), atol=1e-6
        )


def widths_to_compile(case, jit_compile):
    """The widths a compiled predict is checked at: every one, where tracing is cheap.

    torch.compile traces Keras' whole predict step again for every width (tens of seconds for a
    transformer block on one core) and JAX without jit runs op by op; there one nested width
    proves the sliced path runs compiled, and the width-change tests (e.g. `mat_dense_test`)
    prove a compiled step is never reused at another width.
    """
    backend = keras.backend.backend()
    if not ((backend == "torch" and jit_compile) or (backend == "jax" and not jit_compile)):
        return case.widths
    return [next((width for width in case.widths if width is not None), None)]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_compiled_predict_and_fit(case, jit_compile):
    backend = keras.backend.backend()
    if jit_compile and backend == "torch" and not case.torch_compiled:
        pytest.skip(f"{case.name}'s call is compiled by another case; torch.compile is slow")
    if not jit_compile and backend == "jax" and case.name != "MatDense":
        # Without jit, JAX runs the same step op by op (20 s for a block): code that traces
        # under jit runs eagerly too, and every other test here calls the layers eagerly.
        pytest.skip("JAX's eager step is checked on MatDense; the jit step on every case")
    model = case.model()
    x = case.data(batch=4)
    widths = widths_to_compile(case, jit_compile)
    for width in widths:
        expected = outputs_at(model, x, width)
        with keras_matta.WidthScope(model, spec_for(model, width)):
            model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
            np.testing.assert_allclose(
                model.predict(x, verbose=0), expected, atol=1e-5, rtol=1e-5
            )
    # Training at the last width lowers its inference-mode loss (majority layers train on random
    # copies, so the logged training loss is not comparable). An eager call measures it: the
    # compiled predict is checked above, and after `fit` torch.compile traces it again (a guard on
    # Keras' global state), tens of seconds for a transformer block.
    with keras_matta.WidthScope(model, spec_for(model, widths[-1])):
        model.fit(x, np.zeros_like(expected), epochs=3, batch_size=4, verbose=0)
    assert np.mean(outputs_at(model, x, widths[-1]) ** 2) < np.mean(expected**2)


def test_mixed_bfloat16(case):
    reference = case.model()
    x = case.data()
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = case.model()
    model.set_weights(reference.get_weights())
    for width in case.widths:
        y = outputs_at(model, x, width)
        assert keras.backend.standardize_dtype(model(x).dtype) == "bfloat16"
        np.testing.assert_allclose(
            y.astype("float32"), outputs_at(reference, x, width), atol=0.1, rtol=0.05
        )
    assert all(w.dtype == "float32" for w in model.weights)


def test_extract_matches_and_counts(case):
    model = case.model()
    x = case.data()
    for width in case.widths:
        spec = spec_for(model, width)
        stock = keras_matta.extract(model, spec)
        assert not any(isinstance(layer, keras_matta.MatLayer) for layer in stock.layers)
        np.testing.assert_allclose(
            to_numpy(stock(x)), outputs_at(model, x, width), atol=1e-5
        )
        assert stock.count_params() == keras_matta.cost(model, spec)["params"]
        if case.stock_flops_counted:
            assert keras_matta.cost(stock) == keras_matta.cost(model, spec)


def test_nesting_declares_every_weight_once_and_counts_the_stock_parameters(case):
    """The declaration (`MatLayer.nesting()`) is the one source of slicing: it must be whole."""
    model = case.model()
    layer = layer_of(model)
    entries = layer.nesting()
    declared = [id(entry.variable) for entry in entries]
    assert len(declared) == len(set(declared))
    weights = {id(w) for w in layer.weights if "seed_generator" not in w.path}
    assert set(declared) == weights
    input_dim = case.input_shape[-1]
    for width in case.widths:
        resolved = layer.resolve_width(width)
        stock = keras_matta.extract(model, spec_for(model, width))
        assert layer.param_count(resolved, input_dim) == stock.count_params()


def test_drawn_width_equals_the_sliced_width(case):
    """MatTA's drawn sub-networks run a width as a mask: the same outputs, zeros past it."""
    from keras_matta.layers.sampled_width import SampledWidth

    model = case.model()
    x = case.data()
    layer = layer_of(model)
    for width in case.widths:
        resolved = layer.resolve_width(width)
        if not resolved:
            continue
        expected = outputs_at(model, x, width)
        layer._select_width({dim: SampledWidth(keras.ops.convert_to_tensor(value, "int32"))
                             for dim, value in resolved.items()})
        try:
            drawn = to_numpy(model(x))
        finally:
            layer._select_width(None)
        np.testing.assert_allclose(drawn[..., :expected.shape[-1]], expected, atol=1e-5)
        assert not drawn[..., expected.shape[-1]:].any()
