"""What `MatTA.compile` fixes: the task loss, the matching distillation loss, metrics per head."""

import keras
from keras import ops

from keras_matta import losses as losses_lib

_SPARSE = (keras.losses.sparse_categorical_crossentropy,)
_CATEGORICAL = (keras.losses.categorical_crossentropy, keras.losses.categorical_focal_crossentropy)
_BINARY = (keras.losses.binary_crossentropy, keras.losses.binary_focal_crossentropy)


class CompiledObjective:
    """The compiled pieces of a MatTA objective.

    Args:
        loss: the task loss (a `keras.losses.Loss`, a loss function or its name).
        metrics, weighted_metrics: lists of metrics (names, functions or `Metric` objects);
            each head (the TA and every Student) gets its own copy, named `<head>_<name>`.
            `weighted_metrics` receive the sample weights.
        head_names: `["ta", "student_<label>", ...]`.
        distillation: `"auto"` or a key of `keras_matta.losses.DISTILLATIONS`.
        temperature: the temperature of the KL distillation losses.
    """

    def __init__(self, loss, metrics, weighted_metrics, head_names, distillation, temperature):
        self.task_loss = as_loss(loss)
        self.kind, self.from_logits = losses_lib.distillation_for(self.task_loss, distillation)
        self.temperature = temperature
        self._distillations = {}
        self.head_metrics = {}
        for head in head_names:
            self.head_metrics[head] = [
                (self._make_metric(identifier, head), weighted)
                for weighted, group in ((False, metrics), (True, weighted_metrics))
                for identifier in _as_list(group, "weighted_metrics" if weighted else "metrics")
            ]

    def distillation(self, teacher_from_logits, name):
        """A distillation loss for student outputs of this task's kind (made once, then reused)."""
        key = (teacher_from_logits, name)
        if key not in self._distillations:
            self._distillations[key] = losses_lib.make_distillation(
                self.kind, self.temperature, self.from_logits, teacher_from_logits, name
            )
        return self._distillations[key]

    def metrics(self):
        return [metric for pairs in self.head_metrics.values() for metric, _ in pairs]

    def update_metrics(self, head, labels, outputs, sample_weight):
        outputs = ops.stop_gradient(outputs)
        for metric, weighted in self.head_metrics[head]:
            metric.update_state(labels, outputs, sample_weight=sample_weight if weighted else None)

    def _make_metric(self, identifier, head):
        if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
            return self._accuracy(f"{head}_{identifier}")
        if isinstance(identifier, keras.metrics.Metric):
            # A fresh copy per head: one object cannot hold the state of several heads.
            config = {**identifier.get_config(), "name": f"{head}_{identifier.name}"}
            return type(identifier).from_config(config)
        if isinstance(identifier, str):
            metric = keras.metrics.get(identifier)
            name = f"{head}_{identifier}"
            if isinstance(metric, keras.metrics.Metric):
                return type(metric).from_config({**metric.get_config(), "name": name})
            return keras.metrics.MeanMetricWrapper(metric, name=name)
        if callable(identifier):
            return keras.metrics.MeanMetricWrapper(
                identifier, name=f"{head}_{getattr(identifier, '__name__', 'metric')}"
            )
        raise TypeError(
            f"A metric must be a name, a function or a keras.metrics.Metric; got {identifier!r}."
        )

    def _accuracy(self, name):
        """The accuracy matching the task loss, as `compile` picks it from shapes."""
        fn = getattr(self.task_loss, "fn", None)
        if fn in _SPARSE:
            return keras.metrics.SparseCategoricalAccuracy(name=name)
        if fn in _CATEGORICAL:
            return keras.metrics.CategoricalAccuracy(name=name)
        if fn in _BINARY:
            # A logit is positive exactly when its probability is above 0.5.
            threshold = 0.0 if self.from_logits else 0.5
            return keras.metrics.BinaryAccuracy(name=name, threshold=threshold)
        raise ValueError(
            f"Cannot resolve 'accuracy' for the task loss {self.task_loss!r}: pass a metric "
            "object (e.g. keras.metrics.SparseCategoricalAccuracy()) instead."
        )


def as_loss(loss):
    """A `keras.losses.Loss` from a loss, a loss function or a name."""
    if isinstance(loss, keras.losses.Loss):
        return loss
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss
    if callable(loss):
        return _FunctionLoss(loss)
    raise TypeError(f"`loss` must be a keras.losses.Loss, a function or a name; got {loss!r}.")


class _FunctionLoss(keras.losses.Loss):
    """Wraps a loss function `fn(y_true, y_pred)` (as Keras does for `compile(loss="mse")`)."""

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "task_loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        # As Keras' wrapper: labels `(batch,)` against outputs `(batch, 1)` line up.
        true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
        if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
            if true_rank == 1:
                y_true = ops.expand_dims(y_true, -1)
            else:
                y_pred = ops.squeeze(y_pred, -1)
        elif true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
            if pred_rank == 1:
                y_pred = ops.expand_dims(y_pred, -1)
            else:
                y_true = ops.squeeze(y_true, -1)
        return self.fn(y_true, y_pred)


def _as_list(metrics, argument):
    if metrics is None:
        return []
    if not isinstance(metrics, (list, tuple)):
        raise TypeError(f"MatTA.compile(`{argument}`) must be a list; got {metrics!r}.")
    return list(metrics)
