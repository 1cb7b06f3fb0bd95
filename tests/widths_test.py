import keras
import numpy as np
import pytest

import keras_matta
from keras_matta import MatDense
from keras_matta import widths as widths_lib


def three_layer_mlp():
    return keras.Sequential(
        [
            keras.Input((4,)),
            MatDense(8, name="a"),
            MatDense(6, name="b"),
            MatDense(2, nested=False, name="head"),
        ]
    )


def by_name(resolved):
    return {layer.name: width for layer, width in resolved.items()}


def test_fraction_rounds_every_nested_layer():
    resolved = keras_matta.resolve_widths(three_layer_mlp(), 0.3)
    assert by_name(resolved) == {"a": {"units": 2}, "b": {"units": 2}, "head": {}}


def test_int_applies_to_every_nested_layer():
    assert by_name(keras_matta.resolve_widths(three_layer_mlp(), 5)) == {
        "a": {"units": 5},
        "b": {"units": 5},
        "head": {},
    }


def test_int_above_a_layers_full_width_names_that_layer():
    with pytest.raises(ValueError, match=r"'units' of layer 'b' must be in \[1, 6\]; got 7"):
        keras_matta.resolve_widths(three_layer_mlp(), 7)


def test_mix_and_match_dict_leaves_unnamed_layers_at_full_width():
    resolved = keras_matta.resolve_widths(three_layer_mlp(), {"a": 0.5, "b": {"units": 3}})
    assert by_name(resolved) == {"a": {"units": 4}, "b": {"units": 3}, "head": {}}


def test_unknown_layer_name_lists_the_mat_layers():
    message = r"Unknown Mat layer name\(s\) \['c'\].*\['a', 'b', 'head'\]"
    with pytest.raises(ValueError, match=message):
        keras_matta.resolve_widths(three_layer_mlp(), {"c": 2})


def test_width_for_a_non_nested_layer_is_rejected():
    with pytest.raises(ValueError, match=r"\['head'\] have no nested dimension"):
        keras_matta.resolve_widths(three_layer_mlp(), {"head": 1})


def test_model_without_mat_layers_is_rejected():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="plain")
    with pytest.raises(ValueError, match="'plain' has no Mat layer"):
        keras_matta.resolve_widths(model, 0.5)


@pytest.mark.parametrize("spec", ["0.5", [0.5], True])
def test_wrong_spec_type_is_a_type_error(spec):
    with pytest.raises(TypeError, match="`widths` must be"):
        keras_matta.resolve_widths(three_layer_mlp(), spec)


def test_labels_are_readable():
    assert keras_matta.width_label(0.25) == "0.25"
    assert keras_matta.width_label(16) == "16"
    assert keras_matta.width_label(None) == "full"
    assert keras_matta.width_label({"a": 0.5, "b": {"units": 3}}) == "mix(a=0.5,b=3)"


def test_scopes_nest_and_restore():
    model = three_layer_mlp()
    layer_a = model.get_layer("a")
    with keras_matta.WidthScope(model, 0.5):
        assert layer_a.selected_width == {"units": 4}
        with keras_matta.WidthScope(model, {"a": 2}):
            assert layer_a.selected_width == {"units": 2}
            assert model.get_layer("b").selected_width == {"units": 6}
        assert layer_a.selected_width == {"units": 4}
    assert layer_a.selected_width is None
    assert model(np.ones((1, 4), "float32")).shape == (1, 2)


def test_scope_restores_on_error():
    model = three_layer_mlp()
    with pytest.raises(RuntimeError):
        with keras_matta.WidthScope(model, 0.5):
            raise RuntimeError("boom")
    assert model.get_layer("a").selected_width is None


def test_is_full_width():
    model = three_layer_mlp()
    assert widths_lib.is_full_width(keras_matta.resolve_widths(model, 1.0))
    assert not widths_lib.is_full_width(keras_matta.resolve_widths(model, {"b": 5}))
