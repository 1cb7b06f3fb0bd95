"""Majority kernels (`keras_matta.layers.majority`): every combine against NumPy, in layers."""

import keras
import numpy as np
import pytest
from helpers import to_numpy
from keras import ops

import keras_matta
from keras_matta import MatDense
from keras_matta.layers.majority import COMBINES
from keras_matta.layers.majority import combine_copies


def mlp(majority=1, combine="random_majority", use_bias=True, hidden=12):
    return keras.Sequential(
        [
            keras.Input((6,)),
            MatDense(hidden, activation="tanh", majority=majority, majority_combine=combine,
                     use_bias=use_bias, majority_seed=3, name="hidden"),
            MatDense(3, nested=False, majority=majority, majority_combine=combine,
                     use_bias=use_bias, majority_seed=4, name="head"),
        ]
    )


def data(n=32):
    rng = np.random.RandomState(0)
    return rng.randn(n, 6).astype("float32"), rng.randn(n, 3).astype("float32")


def sgd_fit(model, learning_rate, steps=5):
    x, y = data()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)


def test_majority_one_is_the_plain_layer_bit_for_bit():
    keras.utils.set_random_seed(1)
    plain = mlp()
    keras.utils.set_random_seed(1)
    explicit = mlp(majority=1, combine="mean")
    x, _ = data()
    np.testing.assert_array_equal(to_numpy(plain(x)), to_numpy(explicit(x)))
    assert [w.shape for w in plain.weights] == [w.shape for w in explicit.weights]
    sgd_fit(plain, 0.1)
    sgd_fit(explicit, 0.1)
    for a, b in zip(plain.weights, explicit.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_copies_are_stored_and_combined_before_slicing():
    layer = MatDense(8, majority=3, majority_combine="median", bias_initializer="ones")
    layer.build((None, 5))
    copies = to_numpy(layer._kernel)
    assert copies.shape == (3, 5, 8)
    assert not np.allclose(copies[0], copies[1])  # independent draws
    x = np.random.randn(2, 4).astype("float32")
    expected = x @ np.median(copies, axis=0)[:4, :3] + 1.0
    np.testing.assert_allclose(to_numpy(layer(x, width=3)), expected, atol=1e-5)


def test_mean_with_sgd_is_the_small_model_at_a_rescaled_learning_rate():
    """SPEC §3: with a plain mean, every copy gets g / k: the mean moves by lr * g / k."""
    k, learning_rate = 4, 0.2
    majority = mlp(majority=k, combine="mean", use_bias=False)
    small = mlp(use_bias=False)
    small.set_weights([to_numpy(layer.kernel) for layer in majority.layers])  # the mean init

    sgd_fit(majority, learning_rate)
    sgd_fit(small, learning_rate / k)

    for layer, reference in zip(majority.layers, small.layers):
        np.testing.assert_allclose(
            to_numpy(layer.kernel), to_numpy(reference.kernel), atol=2e-6
        )
    # ... and a no-op it is not: the weights moved.
    assert not np.allclose(
        to_numpy(small.layers[0].kernel), to_numpy(majority.layers[0]._kernel[0])
    )


def test_random_majority_copies_diverge_and_inference_is_deterministic():
    model = mlp(majority=3)
    copies_before = to_numpy(model.layers[0]._kernel)
    offsets_before = copies_before - copies_before.mean(axis=0)
    sgd_fit(model, 0.5, steps=8)
    copies_after = to_numpy(model.layers[0]._kernel)
    offsets_after = copies_after - copies_after.mean(axis=0)
    # Under a symmetric combine every copy gets the same update and the offsets never change.
    assert np.abs(offsets_after - offsets_before).max() > 1e-3

    x, _ = data(5)
    first, second = to_numpy(model(x)), to_numpy(model(x))
    np.testing.assert_array_equal(first, second)
    stock = keras_matta.extract(model, 0.5)
    with keras_matta.WidthScope(model, 0.5):
        np.testing.assert_allclose(to_numpy(stock(x)), to_numpy(model(x)), atol=1e-5)
    assert stock.count_params() == (6 + 1) * 6 + (6 + 1) * 3


def test_training_draws_differ_between_steps():
    layer = MatDense(4, majority=5, majority_combine="random_majority", majority_seed=0)
    layer.build((None, 3))
    draws = {tuple(to_numpy(layer._combined_kernel(training=True)).ravel().round(6))
             for _ in range(6)}
    assert len(draws) > 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"majority": 0}, "`majority` must be an int >= 1; got 0"),
        ({"majority": 2.0}, "`majority` must be an int >= 1; got 2.0"),
        ({"majority": 2, "majority_combine": "vote"}, "`majority_combine` must be one of"),
        ({"majority": 4, "majority_combine": "median"}, "needs an odd `majority`; got majority=4"),
        ({"majority": 2, "majority_init": "same"},
         r"`majority_init` must be one of \('independent', 'identical'\); got 'same'"),
    ],
)
@pytest.mark.parametrize("layer", ["MatDense", "MatMultiHeadAttention", "MatTransformerBlock"])
def test_bad_arguments(kwargs, message, layer):
    make = {"MatDense": lambda **kw: MatDense(4, **kw),
            "MatMultiHeadAttention": lambda **kw: keras_matta.MatMultiHeadAttention(2, 3, **kw),
            "MatTransformerBlock": lambda **kw: keras_matta.MatTransformerBlock(8, 2, **kw)}
    with pytest.raises(ValueError, match=message):
        make[layer](**kwargs)


def test_bad_placement():
    with pytest.raises(ValueError, match=r"`majority_placement` must be one of \('all', 'ffn', "
                                         r"'attention'\); got 'head'"):
        keras_matta.MatTransformerBlock(8, 2, majority=3, majority_placement="head")


@pytest.mark.parametrize("placement, attention, ffn", [
    ("all", 3, 3), ("ffn", 1, 3), ("attention", 3, 1),
])
def test_block_placement_and_config_round_trip(placement, attention, ffn):
    block = keras_matta.MatTransformerBlock(
        8, 2, majority=3, majority_combine="learned", majority_init="identical",
        majority_placement=placement, majority_seed=4,
    )
    block.build((None, 4, 6))
    assert block._attention.majority == attention and block._ffn_intermediate.majority == ffn
    assert block._ffn_output.majority == ffn
    assert block._ffn_intermediate.majority_init == "identical"
    mixtures = [w for w in block.weights if w.name.endswith("_mixture")]
    assert len(mixtures) == 4 * (attention > 1) + 2 * (ffn > 1)
    clone = keras_matta.MatTransformerBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    assert clone.majority_placement == placement and clone.majority_init == "identical"


@pytest.mark.parametrize("layer", [
    lambda: MatDense(4, majority=3, majority_combine="element_majority",
                     majority_init="identical"),
    lambda: keras_matta.MatMultiHeadAttention(2, 3, majority=3, majority_combine="learned",
                                              majority_init="identical"),
])
def test_config_round_trip_keeps_combine_and_init(layer):
    layer = layer()
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.majority_combine, clone.majority_init) == (
        layer.majority_combine, layer.majority_init)


def test_block_with_majority_one_is_the_plain_block_bit_for_bit():
    x = np.random.RandomState(2).randn(2, 4, 6).astype("float32")
    keras.utils.set_random_seed(5)
    plain = keras_matta.MatTransformerBlock(8, 2, nested_heads=True)
    plain_out = to_numpy(plain(x, width=0.5))
    keras.utils.set_random_seed(5)
    explicit = keras_matta.MatTransformerBlock(8, 2, nested_heads=True, majority=1)
    np.testing.assert_array_equal(to_numpy(explicit(x, width=0.5)), plain_out)


def test_block_majority_copies_every_kernel_and_collapses_on_extract():
    block = keras_matta.MatTransformerBlock(8, 2, nested_heads=True, majority=3, name="block")
    inputs = keras.Input((4, 6))
    model = keras.Model(inputs, block(inputs))
    kernels = [w for w in block.weights if w.name.endswith("kernel")]
    assert len(kernels) == 6 and all(w.shape[0] == 3 for w in kernels)
    assert all(len(w.shape) == 1 or w.shape[0] != 3 for w in block.weights if "bias" in w.name)

    x = np.random.RandomState(3).randn(2, 4, 6).astype("float32")
    stock = keras_matta.extract(model, 0.5)
    with keras_matta.WidthScope(model, 0.5):
        np.testing.assert_allclose(to_numpy(stock(x)), to_numpy(model(x)), atol=1e-5)
    plain = keras_matta.MatTransformerBlock(8, 2, nested_heads=True)
    plain_inputs = keras.Input((4, 6))
    assert stock.count_params() == keras_matta.cost(
        keras.Model(plain_inputs, plain(plain_inputs)), 0.5
    )["params"]


# === The combines against NumPy, at a forced draw ===
#
# An int seed makes `keras.random.uniform` repeat its draw, so the test redraws the scores the
# combine used and computes the combined kernel from them in NumPy: ranks by `argsort`, the
# Dirichlet weights by normalizing `-log U`, the median by `np.median`.

K, SHAPE, SEED = 5, (3, 2, 4), 11  # five copies of a rank-3 kernel (like an attention kernel)


def copies_and_weight():
    rng = np.random.RandomState(0)
    return rng.randn(K, *SHAPE).astype("float32"), rng.randn(*SHAPE).astype("float32")


def reference_combine(combine, copies, mixture=None, training=True):
    """`(combined kernel, d combined / d copy_i as per-copy weights)` in NumPy."""
    k, chosen = copies.shape[0], copies.shape[0] // 2 + 1
    if combine == "median":
        middle = np.argsort(np.argsort(copies, axis=0, kind="stable"), axis=0) == k // 2
        weights = middle.astype("float64")
        np.testing.assert_allclose((weights * copies).sum(0), np.median(copies, axis=0))
    elif combine == "learned":
        weights = np.exp(mixture) / np.exp(mixture).sum()
    elif combine == "mean" or not training:
        weights = np.full(k, 1.0 / k)
    elif combine == "random_convex":
        uniform = to_numpy(keras.random.uniform((k,), minval=1e-7, seed=SEED))
        weights = -np.log(uniform.astype("float64")) / -np.log(uniform.astype("float64")).sum()
    else:
        shape = {"random_majority": (k,),
                 "unit_majority": (k,) + (1,) * (copies.ndim - 2) + copies.shape[-1:],
                 "element_majority": copies.shape}[combine]
        scores = to_numpy(keras.random.uniform(shape, seed=SEED))
        ranks = np.argsort(np.argsort(scores, axis=0, kind="stable"), axis=0)
        weights = (ranks < chosen) / chosen
    weights = np.broadcast_to(np.reshape(weights, weights.shape + (1,) * (copies.ndim
                                                                         - weights.ndim)),
                              copies.shape)
    return (weights * copies).sum(0), weights


def value_and_gradients(fn, *arrays):
    """`fn(*arrays)` (a scalar) and its gradients with respect to each array, via the backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variables = [tf.Variable(a) for a in arrays]
        with tf.GradientTape() as tape:
            value = fn(*variables)
        grads = tape.gradient(value, variables)
    elif backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        value = fn(*tensors)
        value.backward()
        grads = [t.grad for t in tensors]
    else:
        import jax

        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(arrays))))(*arrays)
    return to_numpy(value), [None if g is None else to_numpy(g) for g in grads]


@pytest.mark.parametrize("combine", COMBINES)
def test_combine_forward_and_gradient_match_numpy(combine):
    copies, weight = copies_and_weight()
    mixture = np.array([0.3, -1.0, 0.0, 2.0, 0.5], "float32")
    expected, per_copy = reference_combine(combine, copies, mixture)

    def loss(copies, mixture):
        combined = combine_copies(copies, K, combine, training=True, seed_generator=SEED,
                                  mixture=mixture)
        return ops.sum(ops.multiply(combined, weight))

    value, (grad_copies, grad_mixture) = value_and_gradients(loss, copies, mixture)
    np.testing.assert_allclose(value, (expected * weight).sum(), rtol=1e-5, atol=1e-5)
    # d/dW_i sum(W * G) = w_i * G: the draw is a constant of the step, the weights are not
    # differentiated (the median's rank is piecewise constant).
    np.testing.assert_allclose(grad_copies, per_copy * weight, rtol=1e-5, atol=1e-6)
    if combine == "learned":
        # d/da_j = p_j (<W_j, G> - sum_i p_i <W_i, G>), the softmax Jacobian.
        p = np.exp(mixture) / np.exp(mixture).sum()
        inner = (copies * weight).reshape(K, -1).sum(1)
        np.testing.assert_allclose(grad_mixture, p * (inner - p @ inner), rtol=1e-4, atol=1e-5)
    else:
        assert grad_mixture is None or not np.any(grad_mixture)


@pytest.mark.parametrize("combine", COMBINES)
def test_inference_combine_is_the_mean_or_the_combine_itself(combine):
    copies, _ = copies_and_weight()
    mixture = np.array([0.3, -1.0, 0.0, 2.0, 0.5], "float32")
    expected, _ = reference_combine(combine, copies, mixture, training=False)
    if combine not in ("median", "learned"):
        np.testing.assert_allclose(expected, copies.mean(0), rtol=1e-6)
    combined = combine_copies(copies, K, combine, training=False, seed_generator=SEED,
                              mixture=mixture)
    np.testing.assert_allclose(to_numpy(combined), expected, rtol=1e-5, atol=1e-6)


def test_majority_draws_select_exactly_a_strict_majority_per_group():
    """Each unit (element) takes its own majority: counts are exact, draws differ by group."""
    ones = np.ones((4, 3, 16), "float32")
    for combine, distinct_axis in (("unit_majority", -1), ("element_majority", None)):
        weights = to_numpy(value_and_gradients(
            lambda c, combine=combine: ops.sum(combine_copies(c, 4, combine, training=True,
                                                              seed_generator=SEED)), ones)[1][0])
        np.testing.assert_allclose(weights.sum(0), 1.0, rtol=1e-6)  # 3 copies of 1/3 each
        np.testing.assert_allclose(np.unique(weights), [0.0, 1.0 / 3], rtol=1e-6)
        columns = weights.reshape(4, -1) if distinct_axis is None else weights[:, 0, :]
        assert len({tuple(c) for c in columns.T}) > 1  # not one draw for the whole kernel
        if distinct_axis == -1:  # a unit's rows share its draw
            np.testing.assert_array_equal(weights, np.broadcast_to(weights[:, :1], weights.shape))


def test_random_convex_weights_are_a_dirichlet_draw():
    """Dirichlet(1, 1, 1, 1): on the simplex, each weight with mean 1/4 and variance 3/80."""
    basis = np.eye(4, dtype="float32")  # copy i is e_i: the combined kernel is the weights
    draws = np.stack([
        to_numpy(combine_copies(basis, 4, "random_convex", training=True, seed_generator=s))
        for s in range(400)
    ])  # (400, 4)
    np.testing.assert_allclose(draws.sum(1), 1.0, rtol=1e-5)
    assert draws.min() >= 0.0
    np.testing.assert_allclose(draws.mean(0), 0.25, atol=0.03)
    np.testing.assert_allclose(draws.var(0).mean(), 3.0 / 80, rtol=0.2)


# === Initialisation, Adam and the served model ===


def test_identical_init_starts_every_copy_as_the_plain_kernel():
    init = keras.initializers.GlorotUniform(seed=5)
    plain = MatDense(8, kernel_initializer=init)
    plain.build((None, 5))
    layer = MatDense(8, majority=3, majority_init="identical", kernel_initializer=init)
    layer.build((None, 5))
    copies = to_numpy(layer._kernel)
    for copy in copies:
        np.testing.assert_array_equal(copy, to_numpy(plain.kernel))
    independent = MatDense(8, majority=3, kernel_initializer=init)
    independent.build((None, 5))
    np.testing.assert_array_equal(to_numpy(independent._kernel)[0], to_numpy(plain.kernel))
    assert not np.allclose(to_numpy(independent._kernel)[1], to_numpy(plain.kernel))


def test_identical_mean_with_adam_is_the_plain_model_with_k_times_epsilon():
    """The k-fold reparameterisation needs no learning-rate compensation under Adam.

    Each of `k` identical copies gets `g / k`; Adam's step `m / (sqrt(v) + eps)` scales `m` and
    `sqrt(v)` by `1/k`, so it is the plain step with `eps` replaced by `k * eps` (biases are
    single, so they have none: the layers here have no bias).
    """
    k, x, y = 4, *data()

    def fit(majority, epsilon):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([
            keras.Input((6,)),
            MatDense(12, activation="tanh", majority=majority, majority_combine="mean",
                     majority_init="identical", use_bias=False,
                     kernel_initializer=keras.initializers.GlorotUniform(seed=1)),
            MatDense(3, nested=False, majority=majority, majority_combine="mean",
                     majority_init="identical", use_bias=False,
                     kernel_initializer=keras.initializers.GlorotUniform(seed=2)),
        ])
        model.compile(optimizer=keras.optimizers.Adam(0.05, epsilon=epsilon), loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return model

    majority, plain = fit(k, 1e-3), fit(1, k * 1e-3)
    for layer, reference in zip(majority.layers, plain.layers):
        np.testing.assert_allclose(to_numpy(layer.kernel), to_numpy(reference.kernel),
                                   atol=2e-5)
    moved = fit(1, 1e-3)  # a no-op it is not: epsilon matters at this scale, the weights moved
    assert not np.allclose(to_numpy(moved.layers[0].kernel), to_numpy(plain.layers[0].kernel),
                           atol=1e-4)


@pytest.mark.parametrize("combine", COMBINES)
def test_compiled_fit_then_extract_collapses_as_numpy(combine):
    """Every combine trains compiled (`jit_compile=True`; on torch only `random_majority`, the
    others eagerly) and collapses as its NumPy reference."""
    majority = 3  # odd, for the median
    model = keras.Sequential([
        keras.Input((6,)),
        MatDense(5, activation="tanh", majority=majority, majority_combine=combine,
                 majority_seed=1, name="hidden"),
        MatDense(3, nested=False, majority=majority, majority_combine=combine,
                 majority_seed=2, name="head"),
    ])
    x, y = data()
    # torch.compile takes one to two minutes per combine on CI's machine: the compiled graph of
    # every combine is checked on JAX and TensorFlow; on torch, the shared conformance test
    # compiles the default combine (its MatDense_majority case) and this one the random draws.
    jit_compile = keras.backend.backend() != "torch" or combine == "random_majority"
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    served = keras_matta.extract(model, None)
    assert served.count_params() == (6 + 1) * 5 + (5 + 1) * 3
    hidden = x
    for layer in model.layers:
        mixture = None if combine != "learned" else to_numpy(layer._kernel_mixture)
        kernel, _ = reference_combine(combine, to_numpy(layer._kernel), mixture, training=False)
        hidden = hidden @ kernel + to_numpy(layer.bias)
        hidden = np.tanh(hidden) if layer.name == "hidden" else hidden
    np.testing.assert_allclose(to_numpy(served(x)), hidden, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.predict(x, verbose=0), hidden, rtol=1e-4, atol=1e-5)
    if combine == "learned":  # the logits trained
        assert np.any(to_numpy(model.layers[0]._kernel_mixture) != 0.0)


def test_keras_file_round_trip_keeps_the_copies_and_the_learned_mixtures(tmp_path):
    inputs = keras.Input((4, 6))
    block = keras_matta.MatTransformerBlock(8, 2, majority=3, majority_combine="learned",
                                            majority_seed=1, name="block")
    model = keras.Model(inputs, block(inputs))
    for weight in model.weights:  # mixtures away from their zero init, so loading must read them
        if weight.name.endswith("_mixture"):
            weight.assign(np.random.RandomState(len(weight.path)).randn(3).astype("float32"))
    x = np.random.RandomState(2).randn(2, 4, 6).astype("float32")
    model.save(tmp_path / "block.keras")
    loaded = keras.saving.load_model(tmp_path / "block.keras")
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)
    np.testing.assert_allclose(to_numpy(keras_matta.extract(loaded, None)(x)),
                               to_numpy(model(x)), atol=1e-5)
