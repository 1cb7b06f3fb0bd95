"""User data: arrays, tf.data, files and TFDS names all become the same `TaskData`."""

import importlib.util

import numpy as np
import pytest

from keras_matta import data

pytestmark = pytest.mark.backend_agnostic  # NumPy, files and tf.data, never Keras' backend


def _rows(x, y):
    return sorted((xi.tobytes(), int(yi)) for xi, yi in zip(x, y))


def _arrays(n=50, features=3, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, features)).astype("float32"), (np.arange(n) % classes).astype("int32")


def test_arrays_round_trip_through_the_splits():
    x, y = _arrays()
    task = data.load_task((x, y))
    assert task.kind == data.CLASSIFICATION and task.num_classes == 4
    assert task.sizes() == {"train": 40, "validation": 5, "test": 5}
    joined = [row for split in (task.train, task.validation, task.test) for row in _rows(*split)]
    assert sorted(joined) == _rows(x, y)
    again = data.load_task((x, y))
    np.testing.assert_array_equal(again.test[0], task.test[0])
    other = data.load_task((x, y), seed=1)
    assert not np.array_equal(other.test[0], task.test[0])


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_tf_data_matches_the_same_arrays():
    import tensorflow as tf

    x, y = _arrays()
    expected = data.load_task((x, y))
    for dataset in (
        tf.data.Dataset.from_tensor_slices((x, y)),
        tf.data.Dataset.from_tensor_slices((x, y)).batch(7),
        tf.data.Dataset.from_tensor_slices((x, y)).batch(10, drop_remainder=True),
    ):
        task = data.load_task(dataset)
        for split in ("train", "validation", "test"):
            np.testing.assert_array_equal(getattr(task, split)[0], getattr(expected, split)[0])
            np.testing.assert_array_equal(getattr(task, split)[1], getattr(expected, split)[1])
    with pytest.raises(ValueError, match=r"\(x, y\) pairs"):
        data.load_task(tf.data.Dataset.from_tensor_slices(x))


def test_files_load_and_round_trip(tmp_path):
    x, y = _arrays()
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    task = data.load_task(str(tmp_path / "xy.npz"))
    np.testing.assert_array_equal(task.test[0], data.load_task((x, y)).test[0])
    np.savez(tmp_path / "split.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    task = data.load_task(tmp_path / "split.npz")
    np.testing.assert_array_equal(task.test[0], x[40:])
    assert task.sizes() == {"train": 36, "validation": 4, "test": 10}
    np.savetxt(tmp_path / "table.csv", np.column_stack([x, y]), delimiter=",")
    task = data.load_task(str(tmp_path / "table.csv"))
    assert task.input_shape == (3,) and task.num_classes == 4
    np.testing.assert_allclose(task.test[0], data.load_task((x, y)).test[0], rtol=1e-6)
    text = "To be, or not to be, that is the question:\n" * 40
    (tmp_path / "text.txt").write_text(text)
    task = data.load_task(str(tmp_path / "text.txt"))
    assert task.kind == data.LANGUAGE_MODEL
    joined = np.concatenate([task.train, task.validation, task.test]).tobytes()
    assert joined.decode("utf-8") == text


def test_embedded_tasks():
    digits = data.load_task("digits")
    assert digits.input_shape == (784,) and digits.num_classes == 10
    lm = data.load_task("lm")
    assert lm.kind == data.LANGUAGE_MODEL and lm.num_classes == 256
    assert lm.sizes()["train"] > 4_000_000 and lm.test.dtype == np.uint8


def test_bad_inputs_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        data.load_task(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "keys.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match=r"keys.npz holds arrays \['a'\]"):
        data.load_task(str(tmp_path / "keys.npz"))
    (tmp_path / "broken.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        data.load_task(str(tmp_path / "broken.npz"))
    (tmp_path / "header.csv").write_text("a,b,label\n1,2,0\n")
    with pytest.raises(ValueError, match="header.csv"):
        data.load_task(str(tmp_path / "header.csv"))
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(ValueError, match="short.txt"):
        data.load_task(str(tmp_path / "short.txt"))
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(ValueError, match="Unsupported data file"):
        data.from_path(tmp_path / "data.json")
    x, y = _arrays()
    with pytest.raises(ValueError, match="same, non-zero number"):
        data.load_task((x, y[:-1]))
    with pytest.raises(ValueError, match="one integer class label"):
        data.load_task((x, np.zeros((50, 2))))
    with pytest.raises(ValueError, match="integer class labels"):
        data.load_task((x, y + 0.5))
    with pytest.raises(ValueError, match="NaN"):
        data.load_task((np.full_like(x, np.nan), y))
    with pytest.raises(ValueError, match="Unknown data source 'cifar'"):
        data.load_task("cifar")
    with pytest.raises(TypeError, match="Cannot load data from int"):
        data.load_task(3)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is None,
                    reason="needs tensorflow-datasets")
def test_tfds_name_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30):
        task = data.load_task("tfds:mnist", max_examples=30)
    assert task.name == "tfds:mnist" and task.input_shape == (28, 28, 1)
    assert task.sizes() == {"train": 27, "validation": 3, "test": 30}
    assert 0.0 <= task.train[0].min() and task.train[0].max() <= 1.0
