import keras
import numpy as np
import pytest
from helpers import to_numpy

import keras_matta
from keras_matta import MatDense


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
    layer = MatDense(4, majority=5, majority_seed=0)
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
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MatDense(4, **kwargs)


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
