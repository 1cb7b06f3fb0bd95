"""Distillation losses: how far a student's outputs are from a teacher's.

Each loss is a `keras.losses.Loss` called as `loss(teacher_outputs, student_outputs,
sample_weight)`: the teacher's outputs take the place of `y_true`. The per-position values are
reduced like any Keras loss (sample weights and the student outputs' Keras mask weight them;
`"sum_over_batch_size"` by default), so a padding mask given as `sample_weight` removes padded
positions from a sequence loss. Every loss also has a functional form returning the unreduced
values.

Teacher and student outputs must have the same shape: nothing is broadcast.
"""

import numbers

import keras
from keras import ops

_EPSILON = 1e-7


def _as_float(x):
    """A float tensor of at least 32 bits: half-precision logits lose too much in a softmax."""
    x = ops.convert_to_tensor(x)
    if keras.backend.standardize_dtype(x.dtype) == "float64":
        return x
    return ops.cast(x, "float32")


def _check_same_shape(teacher, student):
    t_shape, s_shape = tuple(teacher.shape), tuple(student.shape)
    if len(t_shape) != len(s_shape) or any(
        t is not None and s is not None and t != s for t, s in zip(t_shape, s_shape)
    ):
        raise ValueError(
            f"Teacher and student outputs must have the same shape; got teacher {t_shape} and "
            f"student {s_shape}. Distillation never broadcasts."
        )


def _check_temperature(temperature):
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"`temperature` must be a positive number; got {temperature!r}.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0; got {temperature}.")
    return float(temperature)


def _categorical_logits(outputs, from_logits):
    """Logits whose softmax is `outputs`' distribution (log-probabilities for probabilities)."""
    outputs = _as_float(outputs)
    if from_logits:
        return outputs
    return ops.log(ops.clip(outputs, _EPSILON, 1.0))


def _bernoulli_logits(outputs, from_logits):
    """Logits whose sigmoid is `outputs`' probability."""
    outputs = _as_float(outputs)
    if from_logits:
        return outputs
    probabilities = ops.clip(outputs, _EPSILON, 1.0 - _EPSILON)
    return ops.log(probabilities) - ops.log1p(-probabilities)


# === Functional forms ===


def kl_distillation(teacher, student, temperature=1.0, from_logits=True, teacher_from_logits=None):
    """`tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))` over the last axis.

    Args:
        teacher: teacher logits (or probabilities), shape `(..., classes)`.
        student: student logits (or probabilities), the same shape.
        temperature: `tau > 0`; softens both distributions.
        from_logits: whether `student` holds logits (else probabilities).
        teacher_from_logits: whether `teacher` holds logits; defaults to `from_logits`.

    Returns:
        The divergence per position, shape `teacher.shape[:-1]`.

    Example:

    ```python
    teacher = np.array([[2.0, 0.0, -2.0], [0.0, 0.0, 0.0]], "float32")   # (positions, classes)
    student = np.array([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]], "float32")
    kd = keras_matta.losses.kl_distillation(teacher, student, temperature=2.0)
    ops.convert_to_numpy(kd)   # [0.2411, 0.]: one value per position, 0 where they agree
    ```

    Reference:
        Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015.
    """
    temperature = _check_temperature(temperature)
    teacher_from_logits = from_logits if teacher_from_logits is None else teacher_from_logits
    _check_same_shape(teacher, student)
    teacher_log_p = ops.log_softmax(_categorical_logits(teacher, teacher_from_logits) / temperature)
    student_log_q = ops.log_softmax(_categorical_logits(student, from_logits) / temperature)
    divergence = ops.sum(ops.exp(teacher_log_p) * (teacher_log_p - student_log_q), axis=-1)
    # The tau^2 factor keeps the gradient scale independent of the temperature (Hinton et al.).
    return temperature**2 * divergence


def bernoulli_kl_distillation(
    teacher, student, temperature=1.0, from_logits=True, teacher_from_logits=None
):
    """`tau^2 * mean(KL(Bernoulli(sigmoid(t / tau)) || Bernoulli(sigmoid(s / tau))))`.

    The KL of every sigmoid output unit, averaged over the last axis (as
    `keras.losses.binary_crossentropy` averages), for binary and multi-label outputs.

    Args:
        teacher: teacher logits (or probabilities), shape `(..., units)`.
        student: student logits (or probabilities), the same shape.
        temperature: `tau > 0`; softens both distributions.
        from_logits: whether `student` holds logits (else probabilities).
        teacher_from_logits: whether `teacher` holds logits; defaults to `from_logits`.

    Returns:
        The divergence per position, shape `teacher.shape[:-1]`.

    Example:

    ```python
    teacher = np.array([[3.0, -1.0], [0.0, 0.0]], "float32")   # (positions, labels): logits
    student = np.array([[1.0, -1.0], [0.0, 0.0]], "float32")
    kd = keras_matta.losses.bernoulli_kl_distillation(teacher, student)
    ops.convert_to_numpy(kd)   # [0.0849, 0.]: the mean over the 2 labels of each position
    ```
    """
    temperature = _check_temperature(temperature)
    teacher_from_logits = from_logits if teacher_from_logits is None else teacher_from_logits
    _check_same_shape(teacher, student)
    t = _bernoulli_logits(teacher, teacher_from_logits) / temperature
    s = _bernoulli_logits(student, from_logits) / temperature
    # log_sigmoid keeps log p and log(1 - p) finite for large logits.
    p = ops.sigmoid(t)
    divergence = p * (ops.log_sigmoid(t) - ops.log_sigmoid(s)) + (1.0 - p) * (
        ops.log_sigmoid(-t) - ops.log_sigmoid(-s)
    )
    return temperature**2 * ops.mean(divergence, axis=-1)


def mse_distillation(teacher, student):
    """`mean((teacher - student)^2)` over the last axis: "distillation" for regression outputs.

    There is no temperature: a regression output is not a distribution.

    Args:
        teacher: teacher predictions, shape `(..., outputs)`.
        student: student predictions, the same shape.

    Returns:
        The mean squared difference per position, shape `teacher.shape[:-1]`.

    Example:

    ```python
    teacher = np.array([[1.0, 2.0], [0.5, 0.5]], "float32")
    student = np.array([[1.0, 0.0], [0.5, 0.5]], "float32")
    mse = keras_matta.losses.mse_distillation(teacher, student)
    ops.convert_to_numpy(mse)   # [2., 0.]: (0 + 2^2) / 2 for the first row
    ```
    """
    _check_same_shape(teacher, student)
    teacher, student = _as_float(teacher), _as_float(student)
    return ops.mean(ops.square(teacher - student), axis=-1)


# === Loss classes ===


class _Distillation(keras.losses.Loss):
    """Base class: `call(teacher, student)` returns per-position values."""

    def __init__(self, temperature=1.0, from_logits=True, teacher_from_logits=None, **kwargs):
        super().__init__(**kwargs)
        self.temperature = _check_temperature(temperature)
        flags = (("from_logits", from_logits), ("teacher_from_logits", teacher_from_logits))
        for name, value in flags:
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"`{name}` must be a bool; got {value!r}.")
        self.from_logits = from_logits
        self.teacher_from_logits = teacher_from_logits

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "from_logits": self.from_logits,
            "teacher_from_logits": self.teacher_from_logits,
        }


@keras.saving.register_keras_serializable(package="keras_matta")
class KLDistillation(_Distillation):
    """Softened-softmax knowledge distillation for categorical outputs.

        KD_tau(t -> s) = tau^2 * KL( softmax(t / tau) || softmax(s / tau) )

    per position (over the last, class axis), then reduced with sample weights.

    Args:
        temperature: `tau > 0`. Defaults to 1.0.
        from_logits: whether the student outputs are logits (else probabilities). Defaults to
            `True`.
        teacher_from_logits: whether the teacher outputs are logits; defaults to `from_logits`
            (e.g. `False` for teacher probabilities next to student logits).
        reduction, name, dtype: as for every `keras.losses.Loss`.

    Example:

    ```python
    teacher_logits = np.random.randn(2, 5, 10).astype("float32")   # (batch, time, classes)
    student_logits = np.random.randn(2, 5, 10).astype("float32")
    padding_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], "float32")
    kd = keras_matta.losses.KLDistillation(temperature=2.0)
    loss = kd(teacher_logits, student_logits, sample_weight=padding_mask)
    # a scalar: the padded positions contribute nothing
    ```

    Reference:
        Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015;
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025 (arXiv 2505.23337).
    """

    def __init__(self, temperature=1.0, from_logits=True, teacher_from_logits=None,
                 reduction="sum_over_batch_size", name="kl_distillation", dtype=None):
        super().__init__(temperature, from_logits, teacher_from_logits,
                         reduction=reduction, name=name, dtype=dtype)

    def call(self, y_true, y_pred):
        return kl_distillation(y_true, y_pred, self.temperature, self.from_logits,
                               self.teacher_from_logits)


@keras.saving.register_keras_serializable(package="keras_matta")
class BernoulliKLDistillation(_Distillation):
    """Knowledge distillation for sigmoid (binary or multi-label) outputs.

        KD_tau(t -> s) = tau^2 * mean_units KL( Bernoulli(sigmoid(t / tau))
                                              || Bernoulli(sigmoid(s / tau)) )

    Args:
        temperature: `tau > 0`. Defaults to 1.0.
        from_logits: whether the student outputs are logits (else probabilities). Defaults to
            `True`.
        teacher_from_logits: whether the teacher outputs are logits; defaults to `from_logits`.
        reduction, name, dtype: as for every `keras.losses.Loss`.

    Example:

    ```python
    teacher_logits = np.array([[2.0], [-1.0], [0.5]], "float32")   # (batch, 1): binary
    student_logits = np.array([[1.0], [-2.0], [0.5]], "float32")
    kd = keras_matta.losses.BernoulliKLDistillation()
    loss = kd(teacher_logits, student_logits)   # a scalar, the mean over the batch
    teacher_probabilities = 1 / (1 + np.exp(-teacher_logits))    # a teacher's sigmoid outputs
    same = keras_matta.losses.BernoulliKLDistillation(teacher_from_logits=False)(
        teacher_probabilities, student_logits)                    # equals `loss`
    ```

    Reference:
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025 (arXiv 2505.23337).
    """

    def __init__(self, temperature=1.0, from_logits=True, teacher_from_logits=None,
                 reduction="sum_over_batch_size", name="bernoulli_kl_distillation", dtype=None):
        super().__init__(temperature, from_logits, teacher_from_logits,
                         reduction=reduction, name=name, dtype=dtype)

    def call(self, y_true, y_pred):
        return bernoulli_kl_distillation(y_true, y_pred, self.temperature, self.from_logits,
                                         self.teacher_from_logits)


@keras.saving.register_keras_serializable(package="keras_matta")
class MSEDistillation(keras.losses.Loss):
    """Output matching for regression: `mean((t - s)^2)` over the last axis.

    Args:
        reduction, name, dtype: as for every `keras.losses.Loss`.

    Example:

    ```python
    teacher_predictions = np.array([[1.0, 2.0], [0.5, 0.5]], "float32")   # (batch, outputs)
    student_predictions = np.array([[1.0, 0.0], [0.5, 0.5]], "float32")
    kd = keras_matta.losses.MSEDistillation()
    loss = kd(teacher_predictions, student_predictions)   # (2.0 + 0.0) / 2 = 1.0
    ```

    Reference:
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025 (arXiv 2505.23337).
    """

    def __init__(self, reduction="sum_over_batch_size", name="mse_distillation", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)

    def call(self, y_true, y_pred):
        return mse_distillation(y_true, y_pred)


# === Choosing a distillation loss for a task loss ===

DISTILLATIONS = {
    "kl": KLDistillation,
    "bernoulli_kl": BernoulliKLDistillation,
    "mse": MSEDistillation,
}

_FUNCTIONS = {
    keras.losses.sparse_categorical_crossentropy: "kl",
    keras.losses.categorical_crossentropy: "kl",
    keras.losses.categorical_focal_crossentropy: "kl",
    keras.losses.binary_crossentropy: "bernoulli_kl",
    keras.losses.binary_focal_crossentropy: "bernoulli_kl",
    keras.losses.mean_squared_error: "mse",
    keras.losses.mean_absolute_error: "mse",
    keras.losses.mean_squared_logarithmic_error: "mse",
    keras.losses.mean_absolute_percentage_error: "mse",
    keras.losses.huber: "mse",
    keras.losses.log_cosh: "mse",
}


def distillation_for(task_loss, distillation="auto"):
    """The distillation loss matching a task loss, and whether the model outputs logits.

    Args:
        task_loss: a `keras.losses.Loss` (the compiled task loss). Keras' built-in losses
            (`SparseCategoricalCrossentropy`, `BinaryCrossentropy`, `MeanSquaredError`, ...)
            wrap a loss function `fn`; that function says which kind of output the task has.
        distillation: `"auto"` (categorical cross-entropies -> `"kl"`, binary ones ->
            `"bernoulli_kl"`, regression losses -> `"mse"`), or one of those names.

    Returns:
        `(name, from_logits)`: a key of `DISTILLATIONS` and whether the model's outputs are
        logits, read from the task loss's `from_logits` (`True` when it has none: a regression
        loss or a custom loss).

    Example:

    ```python
    task_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert keras_matta.losses.distillation_for(task_loss) == ("kl", True)
    assert keras_matta.losses.distillation_for(keras.losses.BinaryCrossentropy()) == (
        "bernoulli_kl", False)                                 # sigmoid probabilities
    assert keras_matta.losses.distillation_for(keras.losses.MeanSquaredError()) == ("mse", True)
    ```
    """
    kind = _FUNCTIONS.get(getattr(task_loss, "fn", None))
    from_logits = bool(task_loss.get_config().get("from_logits", kind in (None, "mse")))
    if distillation == "auto":
        if kind is None:
            raise ValueError(
                f"Cannot choose a distillation loss for the task loss {task_loss!r}: pass "
                f"`distillation=` one of {sorted(DISTILLATIONS)} to MatTA."
            )
        return kind, from_logits
    if distillation not in DISTILLATIONS:
        raise ValueError(
            f"`distillation` must be 'auto' or one of {sorted(DISTILLATIONS)}; "
            f"got {distillation!r}."
        )
    return distillation, from_logits


def make_distillation(kind, temperature, from_logits, teacher_from_logits, name):
    """An instance of the distillation loss `kind` (a key of `DISTILLATIONS`).

    Args:
        kind: `"kl"`, `"bernoulli_kl"` or `"mse"`, e.g. the name `distillation_for` returns.
        temperature: `tau > 0` of the KL losses (unused by `"mse"`).
        from_logits: whether the student outputs are logits (unused by `"mse"`).
        teacher_from_logits: whether the teacher outputs are logits; `None`: `from_logits`
            (unused by `"mse"`).
        name: the loss' name.

    Returns:
        A `KLDistillation`, `BernoulliKLDistillation` or `MSEDistillation`.

    Example:

    ```python
    task_loss = keras.losses.BinaryCrossentropy(from_logits=True)
    kind, from_logits = keras_matta.losses.distillation_for(task_loss)   # "bernoulli_kl", True
    kd = keras_matta.losses.make_distillation(kind, temperature=2.0, from_logits=from_logits,
                                              teacher_from_logits=None, name="kd")
    assert isinstance(kd, keras_matta.losses.BernoulliKLDistillation)
    ```
    """
    if kind == "mse":
        return MSEDistillation(name=name)
    return DISTILLATIONS[kind](temperature=temperature, from_logits=from_logits,
                               teacher_from_logits=teacher_from_logits, name=name)
