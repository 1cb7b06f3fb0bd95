import keras
import numpy as np
import pytest
from helpers import run_python
from helpers import to_numpy

import keras_matta
from keras_matta import MatDense
from keras_matta import graph as graph_lib


def mlp(sequential):
    layers = [
        MatDense(32, activation="relu", bias_initializer="random_normal", name="hidden_1"),
        keras.layers.Dropout(0.2, name="dropout"),
        MatDense(24, activation="relu", bias_initializer="random_normal", name="hidden_2"),
        MatDense(5, nested=False, bias_initializer="random_normal", name="logits"),
    ]
    if sequential:
        return keras.Sequential([keras.Input((10,))] + layers, name="mlp")
    inputs = keras.Input((10,), name="features")
    x = keras.layers.LayerNormalization(name="norm")(inputs)
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name="mlp")


def mlp_params(d_in, h1, h2, classes, with_norm):
    return (2 * d_in if with_norm else 0) + (d_in + 1) * h1 + (h1 + 1) * h2 + (h2 + 1) * classes


def mlp_flops(d_in, h1, h2, classes):
    return 2 * (d_in * h1 + h1 * h2 + h2 * classes)


SPECS = [
    (0.25, (8, 6)),
    (4, (4, 4)),
    ({"hidden_1": 16}, (16, 24)),
    ({"hidden_1": 0.5, "hidden_2": 3}, (16, 3)),
    (None, (32, 24)),
]


@pytest.mark.parametrize("sequential", [True, False], ids=["sequential", "functional"])
@pytest.mark.parametrize("spec, hidden", SPECS, ids=[str(s[0]) for s in SPECS])
def test_outputs_params_and_flops_match_closed_forms(sequential, spec, hidden):
    model = mlp(sequential)
    x = np.random.randn(7, 10).astype("float32")
    with keras_matta.WidthScope(model, spec):
        expected = to_numpy(model(x))

    stock = keras_matta.extract(model, spec)

    assert {type(layer).__name__ for layer in stock.layers} <= {
        "InputLayer", "Dense", "Dropout", "LayerNormalization"
    }
    np.testing.assert_allclose(to_numpy(stock(x)), expected, atol=1e-5)
    params = mlp_params(10, *hidden, 5, with_norm=not sequential)
    assert stock.count_params() == params
    assert keras_matta.cost(model, spec) == {"params": params, "flops": mlp_flops(10, *hidden, 5)}


def test_extracted_model_is_independent_of_the_original():
    model = mlp(sequential=False)
    stock = keras_matta.extract(model, 0.5)
    before = [to_numpy(w) for w in stock.weights]
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, weight.dtype))
    for old, new in zip(before, stock.weights):
        np.testing.assert_array_equal(old, to_numpy(new))


def test_weights_are_the_sliced_prefixes():
    model = mlp(sequential=True)
    stock = keras_matta.extract(model, {"hidden_1": 3})
    kernel = to_numpy(model.get_layer("hidden_1").kernel)
    np.testing.assert_array_equal(to_numpy(stock.get_layer("hidden_1").kernel), kernel[:, :3])
    next_kernel = to_numpy(model.get_layer("hidden_2").kernel)
    np.testing.assert_array_equal(to_numpy(stock.get_layer("hidden_2").kernel), next_kernel[:3])


@pytest.mark.slow
def test_saved_student_loads_without_keras_matta(tmp_path):
    model = mlp(sequential=False)
    x = np.random.randn(3, 10).astype("float32")
    stock = keras_matta.extract(model, 0.25)
    path = tmp_path / "student.keras"
    stock.save(path)
    np.save(tmp_path / "x.npy", x)
    out = run_python(
        f"""
        import sys
        import keras, numpy as np
        model = keras.saving.load_model({str(path)!r})
        y = keras.ops.convert_to_numpy(model(np.load({str(tmp_path / 'x.npy')!r})))
        np.save({str(tmp_path / 'y.npy')!r}, y)
        print("imported keras_matta:", any(m.startswith("keras_matta") for m in sys.modules))
        """
    )
    assert "imported keras_matta: False" in out
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), to_numpy(stock(x)), atol=1e-6)


def test_nested_functional_submodel_is_inlined():
    inner_in = keras.Input((6,))
    inner = keras.Model(inner_in, MatDense(12, activation="relu", name="inner_dense")(inner_in))
    inputs = keras.Input((6,))
    outputs = MatDense(2, nested=False, name="out")(inner(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.randn(2, 6).astype("float32")
    with keras_matta.WidthScope(model, 0.5):
        expected = to_numpy(model(x))
    stock = keras_matta.extract(model, 0.5)
    np.testing.assert_allclose(to_numpy(stock(x)), expected, atol=1e-6)
    assert stock.count_params() == (6 + 1) * 6 + (6 + 1) * 2


def test_subclassed_model_gives_a_clear_error():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.dense = MatDense(4)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.ones((1, 3), "float32"))
    with pytest.raises(TypeError, match="'sub' is a subclassed model"):
        keras_matta.extract(model, 0.5)


def test_a_matta_stands_for_its_ta_and_other_models_for_themselves():
    ta = mlp(sequential=False)
    mat_ta = keras_matta.MatTA(ta, student_widths=[0.5])
    assert keras_matta.cost(mat_ta, 0.5) == keras_matta.cost(ta, 0.5)
    assert keras_matta.extract(mat_ta, 0.5).count_params() == keras_matta.cost(ta, 0.5)["params"]
    # A model with a graph of its own is walked as itself, whatever it holds as `.model`.
    ta.model = mlp(sequential=True)
    assert graph_lib.unwrap(ta) is ta


def test_bad_widths_fail_before_building_anything():
    model = mlp(sequential=True)
    with pytest.raises(ValueError, match="hidden_3"):
        keras_matta.extract(model, {"hidden_3": 2})
    with pytest.raises(ValueError, match=r"'hidden_2' must be in \[1, 24\]; got 30"):
        keras_matta.extract(model, 30)


def test_cost_needs_a_known_input_shape():
    inputs = keras.Input((None, 4))
    model = keras.Model(inputs, MatDense(6)(inputs))
    with pytest.raises(ValueError, match="unknown dimensions; pass `input_shape=`"):
        keras_matta.cost(model, 0.5)
    assert keras_matta.cost(model, 0.5, input_shape=(10, 4)) == {
        "params": 4 * 3 + 3,
        "flops": 2 * 10 * 4 * 3,
    }
