"""`keras_matta.ladder`: rungs computed by hand, per-kind floors, validation."""

import keras
import pytest

import keras_matta


def _mlp():
    return keras.Sequential([
        keras.Input((16,)),
        keras_matta.MatDense(64, activation="relu", name="hidden_1"),
        keras_matta.MatDense(48, activation="relu", name="hidden_2"),
        keras_matta.MatDense(10, nested=False, name="logits"),
    ])


def _transformer():
    inputs = keras.Input((4, 16))
    x = keras_matta.MatTransformerBlock(64, 8, nested_heads=True, name="block_1")(inputs)
    x = keras_matta.MatDense(32, name="proj")(x)
    return keras.Model(inputs, keras_matta.MatDense(5, nested=False, name="head")(x))


def test_geometric_halvings():
    assert keras_matta.ladder(_mlp(), 0.125) == [0.125, 0.25, 0.5]
    assert keras_matta.ladder(_mlp(), 0.3) == [0.3, 0.5]
    # factor 4: 1/4, then the floor.
    assert keras_matta.ladder(_mlp(), 0.1, factor=4) == [0.1, 0.25]


def test_linear_rungs():
    assert keras_matta.ladder(_mlp(), 0.25, num_widths=3) == [0.25, 0.5, 0.75]
    assert keras_matta.ladder(_mlp(), 0.5, num_widths=1) == [0.5]


def test_per_kind_floors_stop_while_others_descend():
    rungs = keras_matta.ladder(
        _transformer(), {"MatTransformerBlock": {"intermediate_dim": 0.125, "num_heads": 0.5},
                         "proj": 0.25})
    # FFN 64: 8, 16, 32; heads 8: 4 (floor 0.5) at every rung; proj 32: 8, 8, 16 (the shorter
    # ladder waits at its floor while the FFN's goes on down).
    assert rungs == [
        {"block_1": {"intermediate_dim": 8, "num_heads": 4}, "proj": {"units": 8}},
        {"block_1": {"intermediate_dim": 16, "num_heads": 4}, "proj": {"units": 8}},
        {"block_1": {"intermediate_dim": 32, "num_heads": 4}, "proj": {"units": 16}},
    ]
    model = _transformer()
    trainer = keras_matta.MatTA(model, student_widths=keras_matta.ladder(model, {"proj": 0.25}))
    assert len(trainer.student_widths) == 2


def test_unnamed_layers_stay_full_and_duplicates_are_dropped():
    # hidden_2 (48 units) from 0.5 in two linear rungs: 24, 36; hidden_1 is not named.
    rungs = keras_matta.ladder(_mlp(), {"hidden_2": 0.5}, num_widths=2)
    assert rungs == [{"hidden_2": {"units": 24}}, {"hidden_2": {"units": 36}}]


@pytest.mark.parametrize("kwargs, match", [
    ({"smallest": 0.0}, "smallest"),
    ({"smallest": 1.0}, "smallest"),
    ({"smallest": "0.5"}, "smallest"),
    ({"smallest": 0.5, "num_widths": 0}, "num_widths"),
    ({"smallest": 0.5, "factor": 1.0}, "factor"),
    ({"smallest": {"MatConv": 0.5}}, "Unknown layer or class"),
    ({"smallest": {}}, "at least one"),
    ({"smallest": {"hidden_1": {"heads": 0.5}}}, "Unknown nested dimension"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_matta.ladder(_mlp(), **kwargs)
