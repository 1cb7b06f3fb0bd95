"""`SearchSpace`: per-layer choices, specs usable by `extract`, uniform models, dropped blocks,
bad choices."""

import json

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


# === Elastic depth: drop_blocks ===

def two_blocks(head=True):
    """Two transformer blocks (intermediate_dim 12: 0.5 -> 6) and, optionally, a fixed head."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4, 8))
    x = keras_matta.MatTransformerBlock(12, 2, name="b0", bias_initializer="random_normal")(
        inputs)
    x = keras_matta.MatTransformerBlock(12, 2, name="b1", bias_initializer="random_normal")(x)
    if head:
        x = keras_matta.MatDense(3, nested=False, name="head")(x)
    return keras.Model(inputs, x)


def test_drop_blocks_adds_dropped_as_each_blocks_smallest_choice():
    space = SearchSpace(two_blocks(), [1.0, 0.5], drop_blocks=True)
    dropped, half, full = {"depth": 0}, {"intermediate_dim": 6}, {"intermediate_dim": 12}
    assert space.layer_names == ["b0", "b1"] and space.choices == [[dropped, half, full]] * 2
    # 3 x 3 index tuples, less (0, 0): dropping both blocks is not a model.
    assert space.sizes == [3, 3] and space.size == 8
    candidates = list(space.enumerate())
    assert len(candidates) == 8 and (0, 0) not in candidates and not space.is_valid((0, 0))
    assert space.spec((0, 1)) == {"b0": dropped, "b1": half}
    assert space.smallest() == [(1, 0), (0, 1)]
    # The uniform models are the undropped ones; specs round-trip through JSON.
    assert space.uniform() == {1.0: (2, 2), 0.5: (1, 1)}
    for candidate in candidates:
        assert space.candidate(json.loads(json.dumps(space.spec(candidate)))) == candidate
    assert keras_matta.width_label(space.spec((0, 2))) == "mix(b0=dropped,b1=12)"
    # Without the option nothing is dropped.
    assert SearchSpace(two_blocks(), [1.0, 0.5]).size == 4


def test_dropped_choices_in_a_dict_are_one_choice_sorted_first():
    model = two_blocks()
    # Every dropped spec is the same model, whatever widths come with it.
    space = SearchSpace(model, {"b0": [1.0, {"depth": 0}, {"depth": 0, "intermediate_dim": 6}]})
    assert space.choices == [[{"depth": 0}, {"intermediate_dim": 12}]] and space.size == 2
    # drop_blocks with a dict: the unnamed block is searched as dropped or full.
    space = SearchSpace(model, {"b0": [0.5]}, drop_blocks=True)
    assert space.layer_names == ["b0", "b1"] and space.sizes == [2, 2] and space.size == 3
    with pytest.raises(ValueError, match="drops every block"):
        SearchSpace(model, {"b0": [{"depth": 0}], "b1": [{"depth": 0}]})


@pytest.mark.parametrize("model, choices, drop_blocks, error, match", [
    (mlp, [0.5], 1, TypeError, "`drop_blocks` must be True or False; got 1"),
    (mlp, [0.5], "yes", TypeError, "`drop_blocks` must be True or False"),
    (mlp, [0.5], True, ValueError, "`drop_blocks=True`, but model .* has no droppable block"),
    (two_blocks, [0.5, {"depth": 0}], False, ValueError, "shared by every layer.*drop_blocks"),
    (mlp, {"hidden_1": [{"depth": 0}]}, False, ValueError, "not a residual block"),
])
def test_bad_drop_blocks_name_the_problem(model, choices, drop_blocks, error, match):
    with pytest.raises(error, match=match):
        SearchSpace(model(), choices, drop_blocks=drop_blocks)
