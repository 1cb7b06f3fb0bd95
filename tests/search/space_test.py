"""`SearchSpace`: per-layer choices, specs usable by `extract`, uniform models, bad choices."""

import keras
import pytest

import keras_matta
from keras_matta.search import SearchSpace

pytestmark = pytest.mark.backend_agnostic


def mlp():
    return keras.Sequential([keras.Input((8,)),
                             keras_matta.MatDense(40, activation="relu", name="hidden_1"),
                             keras_matta.MatDense(20, activation="relu", name="hidden_2"),
                             keras_matta.MatDense(3, nested=False, name="logits")])


def test_shared_choices_enumerate_the_product_with_plain_int_specs():
    space = SearchSpace(mlp(), [1.0, 0.25, 0.5])  # any order: sorted smallest first
    assert space.layer_names == ["hidden_1", "hidden_2"] and space.size == 9
    assert space.choices[0] == [{"units": 10}, {"units": 20}, {"units": 40}]
    specs = [space.spec(c) for c in space.enumerate()]
    assert len(specs) == 9 and specs[0] == {"hidden_1": {"units": 10}, "hidden_2": {"units": 5}}
    assert all(space.candidate(spec) == c for spec, c in zip(specs, space.enumerate()))
    assert space.uniform() == {1.0: (2, 2), 0.25: (0, 0), 0.5: (1, 1)}


def test_choices_that_resolve_alike_are_kept_once_and_uniform_looks_them_up():
    # hidden_2 (20 units): 0.5 and 10 are the same width; hidden_1 (40): 20 units and 10.
    space = SearchSpace(mlp(), [0.5, 10, 1.0])
    assert space.sizes == [3, 2]
    assert space.uniform() == {0.5: (1, 0), 10: (0, 0), 1.0: (2, 1)}


def test_per_layer_choices_of_any_width_and_no_uniform_models():
    space = SearchSpace(mlp(), {"hidden_2": [3, 7, 20]})
    assert space.layer_names == ["hidden_2"] and space.size == 3
    assert space.spec((1,)) == {"hidden_2": {"units": 7}} and space.uniform() == {}


@pytest.mark.parametrize("choices, error, match", [
    ({"hidden_9": [0.5]}, ValueError, "Unknown layer name"),
    ([], ValueError, "empty"),
    (0.5, TypeError, "list of width specs"),
    ([0.5, 1.5], ValueError, r"must be in \(0, 1\]"),
    ([0.5, 41], ValueError, r"must be in \[1, 40\]"),
])
def test_bad_choices_name_the_problem(choices, error, match):
    with pytest.raises(error, match=match):
        SearchSpace(mlp(), choices)


def test_a_model_without_nested_layers_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras_matta.MatDense(3, nested=False)])
    with pytest.raises(ValueError, match="no nested Mat layer"):
        SearchSpace(model)
