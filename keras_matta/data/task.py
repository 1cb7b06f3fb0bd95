"""`TaskData`: the train/validation/test splits of a task, held in memory."""

import dataclasses

import numpy as np

CLASSIFICATION = "classification"
LANGUAGE_MODEL = "language_model"


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


def check_finite(name, x):
    """Raises a `ValueError` naming `name` if `x` holds NaN or infinity."""
    if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values.")
