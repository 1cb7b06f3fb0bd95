"""User data: NumPy arrays, `tf.data` pipelines, TensorFlow Datasets names and files.

Every function returns a `keras_matta.data.TaskData` with the data held in memory as NumPy
arrays: the models this package trains on a CPU are small, and arrays work the same on every
Keras backend. Classification data without its own validation or test split gets one carved out
with a seeded permutation (`validation_fraction`, `test_fraction`).
"""

import os
import pathlib

import numpy as np

from keras_matta.data import digits as digits_lib
from keras_matta.data.task import CLASSIFICATION
from keras_matta.data.task import LANGUAGE_MODEL
from keras_matta.data.task import TaskData
from keras_matta.data.task import check_finite

SUFFIXES = (".npz", ".csv", ".csv.gz", ".txt")


def looks_like_path(source):
    """Whether the string `source` names a file rather than a dataset."""
    return source.endswith(SUFFIXES) or os.sep in source or os.path.exists(source)


def from_arrays(x, y, validation_fraction=0.1, test_fraction=0.1, seed=0, name="arrays",
                x_test=None, y_test=None):
    """A classification task from arrays of inputs and integer labels.

    Args:
        x: inputs, `(n, ...)`; converted to `float32`.
        y: integer class labels, `(n,)` (or `(n, 1)`), from 0 to `classes - 1`.
        validation_fraction: share of the examples held out for validation.
        test_fraction: share held out for testing (ignored when `x_test`, `y_test` are given).
        seed: fixes the permutation that carves out the held-out splits.
        name: the task's name.
        x_test, y_test: an explicit test split.

    Returns:
        A `TaskData` of kind `"classification"`.

    Example:

    ```python
    x = np.random.rand(100, 8).astype("float32")
    y = np.random.randint(0, 3, size=(100,))
    task = keras_matta.data.from_arrays(x, y)   # 80 / 10 / 10
    assert task.sizes() == {"train": 80, "validation": 10, "test": 10}
    task.num_classes                            # 3: the largest label + 1
    ```
    """
    x, y = _check_xy(x, y, "x", "y")
    if x_test is not None or y_test is not None:
        x_test, y_test = _check_xy(x_test, y_test, "x_test", "y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"`x_test` examples have shape {x_test.shape[1:]}; `x` has {x.shape[1:]}."
            )
        test_fraction = 0.0
    for arg, value in (("validation_fraction", validation_fraction),
                       ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"`{arg}` must be in [0, 1); got {value}.")
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(len(y) * validation_fraction))
    n_test = int(round(len(y) * test_fraction))
    if len(y) - n_val - n_test < 1 or (n_val < 1 and validation_fraction > 0):
        raise ValueError(f"{name}: {len(y)} examples are too few to split.")
    val, test, train = np.split(order, [n_val, n_val + n_test])
    if x_test is None:
        x_test, y_test = x[test], y[test]
    classes = int(max(y.max(), y_test.max() if len(y_test) else 0)) + 1
    return TaskData(
        name, CLASSIFICATION, (x[train], y[train]), (x[val], y[val]), (x_test, y_test),
        num_classes=classes,
        description=f"{name}: {len(train)}/{len(val)}/{len(y_test)} examples, {classes} classes",
    )


def from_tf_dataset(dataset, max_examples=None, **kwargs):
    """A classification task from a `tf.data.Dataset` of `(x, y)` pairs, batched or not.

    The dataset is read once into memory (at most `max_examples` examples).

    Args:
        dataset: a `tf.data.Dataset` yielding `(x, y)` pairs, one example or one batch each.
        max_examples: read at most this many examples. Defaults to all of them.
        **kwargs: passed to `from_arrays` (`validation_fraction`, `test_fraction`, `seed`,
            `name`, ...).

    Returns:
        A `TaskData` of kind `"classification"`.

    Example:

    ```python
    import tensorflow as tf

    x = np.random.rand(100, 8).astype("float32")
    y = np.random.randint(0, 3, size=(100,))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    task = keras_matta.data.from_tf_dataset(ds)   # read into memory, split 80 / 10 / 10
    ```
    """
    element = dataset.element_spec
    if not (isinstance(element, tuple) and len(element) == 2):
        raise ValueError(
            "The tf.data.Dataset must yield (x, y) pairs (e.g. `as_supervised=True` for TFDS); "
            f"its elements are {element}."
        )
    # Batched elements share a leading batch dimension (unknown, or fixed by drop_remainder).
    x_shape, y_shape = tuple(element[0].shape), tuple(element[1].shape)
    batched = len(y_shape) >= 1 and len(x_shape) >= 2 and y_shape[0] in (None, x_shape[0])
    xs, ys, count = [], [], 0
    for x, y in dataset.as_numpy_iterator():
        x, y = (x, y) if batched else (x[None], np.reshape(y, (1,)))
        xs.append(x)
        ys.append(np.reshape(y, (len(x),)))
        count += len(x)
        if max_examples is not None and count >= max_examples:
            break
    if not xs:
        raise ValueError("The tf.data.Dataset is empty.")
    x, y = np.concatenate(xs)[:max_examples], np.concatenate(ys)[:max_examples]
    return from_arrays(x, y, **{"name": "tf.data", **kwargs})


def from_tfds(name, data_dir=None, max_examples=None, seed=0, **kwargs):
    """A classification task from TensorFlow Datasets (downloads on first use).

    Uses the dataset's `train` split (validation carved out of it) and its `test` split.
    Only called when a user asks for it: the defaults are embedded and offline.

    Args:
        name: a TFDS name with supervised keys, e.g. `"mnist"` or `"fashion_mnist"`.
        data_dir: TFDS data directory. Defaults to TFDS's own default.
        max_examples: read at most this many examples of each split.
        seed, **kwargs: passed to `from_arrays`.

    Returns:
        A `TaskData` of kind `"classification"`, pixels of image datasets scaled to `[0, 1]`.

    Example:

    ```python
    task = keras_matta.data.from_tfds("fashion_mnist", max_examples=1000)
    task = keras_matta.data.load_task("tfds:fashion_mnist")   # the same, by name (all of it)
    x_train, y_train = task.train                              # float32 (n, 28, 28, 1) images
    ```
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            f"'tfds:{name}' needs tensorflow-datasets: pip install 'keras-matta[datasets]'."
        ) from error
    splits = tfds.load(name, split=["train", "test"], as_supervised=True, data_dir=data_dir)
    train, test = (from_tf_dataset(split.batch(1024), max_examples=max_examples,
                                   validation_fraction=0.0, test_fraction=0.0, name=name)
                   for split in splits)
    x_train, y_train = train.train
    x_test, y_test = test.train
    if x_train.dtype == np.uint8 or x_train.max() > 1.0:  # images: scale pixels to [0, 1]
        scale = 255.0 if x_train.max() <= 255 else float(x_train.max())
        x_train, x_test = x_train / scale, x_test / scale
    return from_arrays(x_train, y_train, x_test=x_test, y_test=y_test, seed=seed,
                       name=f"tfds:{name}", **kwargs)


def from_path(path, seed=0, **kwargs):
    """A task from a file.

    - `.npz`: arrays `x` and `y` (then splits are carved out), or `x_train`, `y_train`,
      `x_test`, `y_test` (validation carved out of the training split);
    - `.csv` / `.csv.gz`: numbers, one example a row, the integer label last (the layout of the
      embedded digits; no header);
    - `.txt`: UTF-8 text for a byte-level language model, cut 80/10/10 in order.

    Args:
        path: a `.npz`, `.csv`, `.csv.gz` or `.txt` file (a str or `os.PathLike`).
        seed: fixes the permutation that carves out held-out classification splits.
        **kwargs: passed to `from_arrays` for `.npz` and `.csv` files (`validation_fraction`,
            `test_fraction`, ...).

    Returns:
        A `TaskData`: `"classification"` for `.npz` and `.csv`, `"language_model"` for `.txt`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is malformed (the message names the path).

    Example:

    ```python
    np.savez("digits.npz", x=np.random.rand(50, 4), y=np.random.randint(0, 2, size=(50,)))
    task = keras_matta.data.from_path("digits.npz")   # 40 / 5 / 5 examples
    with open("sonnet.txt", "w", encoding="utf-8") as file:
        file.write("Shall I compare thee to a summer's day?\\n" * 50)
    text = keras_matta.data.from_path("sonnet.txt")   # 2,000 bytes cut 80 / 10 / 10
    assert text.kind == "language_model" and len(text.train) == 1600
    ```
    """
    path = pathlib.Path(os.fsdecode(path))
    if not path.is_file():
        raise FileNotFoundError(f"Data file not found: {path}")
    name = path.name
    if name.endswith(".npz"):
        return _from_npz(path, seed=seed, **kwargs)
    if name.endswith((".csv", ".csv.gz")):
        x, y = _read_label_last_csv(path)
        return from_arrays(x, y, seed=seed, name=name, **kwargs)
    if name.endswith(".txt"):
        return _from_text(path)
    raise ValueError(f"Unsupported data file {path}: use a {', '.join(SUFFIXES)} file.")


def _from_npz(path, seed, **kwargs):
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable .npz archive: {error}") from error
    keys = set(arrays)
    if {"x", "y"} <= keys:
        return from_arrays(arrays["x"], arrays["y"], seed=seed, name=path.name, **kwargs)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        return from_arrays(arrays["x_train"], arrays["y_train"], x_test=arrays["x_test"],
                           y_test=arrays["y_test"], seed=seed, name=path.name, **kwargs)
    raise ValueError(
        f"{path} holds arrays {sorted(keys)}; expected 'x' and 'y', or 'x_train', 'y_train', "
        "'x_test' and 'y_test'."
    )


def _read_label_last_csv(path):
    if path.name.endswith(".gz") or _columns(path) == digits_lib.NUM_FEATURES + 1:
        try:
            pixels, labels = digits_lib.read_csv(path)
            return pixels.astype("float32") / 255.0, labels
        except ValueError:
            pass  # not the digits layout: read it as a general numeric CSV below
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path} is not a CSV of numbers without a header: {error}") from error
    if table.shape[1] < 2:
        raise ValueError(f"{path} needs at least one feature column and a label column.")
    return table[:, :-1].astype("float32"), table[:, -1]


def _columns(path):
    with open(path, encoding="utf-8", errors="replace") as file:
        return file.readline().count(",") + 1


def _from_text(path):
    try:
        data = np.frombuffer(path.read_text(encoding="utf-8").encode("utf-8"), dtype=np.uint8)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from error
    if len(data) < 1000:
        raise ValueError(f"{path} has {len(data)} bytes; a language model needs at least 1000.")
    cut_1, cut_2 = int(len(data) * 0.8), int(len(data) * 0.9)
    return TaskData(
        path.name, LANGUAGE_MODEL, data[:cut_1], data[cut_1:cut_2], data[cut_2:],
        num_classes=256, description=f"{path.name}: {len(data)} bytes, split 80/10/10 in order",
    )


def _check_xy(x, y, x_name, y_name):
    if x is None or y is None:
        raise ValueError(f"Pass both `{x_name}` and `{y_name}`.")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2:
        x = x[:, None] if x.ndim == 1 else x
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"`{y_name}` must hold one integer class label per example, shape (n,); got shape "
            f"{y.shape}."
        )
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(
            f"`{x_name}` and `{y_name}` must have the same, non-zero number of examples; got "
            f"{len(x)} and {len(y)}."
        )
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"`{x_name}` must be real numbers; got dtype {x.dtype}.")
    check_finite(f"`{x_name}`", x)
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.mod(y, 1) == 0) or y.min() < 0:
        raise ValueError(f"`{y_name}` must hold integer class labels >= 0.")
    return x.astype("float32"), y.astype("int32")
