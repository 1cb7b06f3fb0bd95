"""Classic knowledge distillation: a Student trained on labels and a frozen Teacher's logits.

The baseline the paper compares MatTA against ("the Student distilled directly from the
Teacher"). It uses the same terms and weights as the Student's part of the MatTA objective
minus the TA: `alpha * task(y, z_S) + alpha_teacher * KD_tau(z_T -> z_S)`, with the same
`keras_matta.losses.KLDistillation`, so the comparison isolates what the TA adds.
"""

import keras
from keras import ops

from keras_matta import losses as losses_lib


class Distiller(keras.Model):
    """Trains `student` on `alpha * task + alpha_teacher * KD_tau(teacher -> student)`.

        KD_tau(t -> s) = tau^2 * KL(softmax(t / tau) || softmax(s / tau))

    Only `compute_loss` is overridden (as `keras.distillation.Distiller` does), so the same
    code trains on every backend. The Teacher is called with `training=False` under a
    stop-gradient and set `trainable=False`.

    Args:
        student: the model to train (logits out).
        teacher: a trained model with the same output shape (logits out).
        alpha: weight of the task loss. Defaults to 1.0.
        alpha_teacher: weight of the distillation term. Defaults to 1.0.
        temperature: `tau`. Defaults to 1.0.
        name: the model's name.

    Example:

    ```python
    kd = Distiller(student, teacher)
    kd.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kd.fit(x, y)
    kd.student.save("student.keras")
    ```
    """

    def __init__(self, student, teacher, alpha=1.0, alpha_teacher=1.0, temperature=1.0,
                 name="distiller"):
        super().__init__(name=name)
        teacher.trainable = False
        self.student = student
        self.teacher = teacher
        self.alpha = float(alpha)
        self.alpha_teacher = float(alpha_teacher)
        self.distillation = losses_lib.KLDistillation(temperature=temperature, name="kd")
        # Metrics set as attributes are tracked (and logged) by Keras.
        self.task_tracker = keras.metrics.Mean(name="task_loss")
        self.kd_tracker = keras.metrics.Mean(name="kd_teacher_loss")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        # The compiled task loss (and any regularization losses) of the Student.
        task = super().compute_loss(x, y, y_pred, sample_weight, training)
        teacher_logits = ops.stop_gradient(self.teacher(x, training=False))
        kd = self.distillation(teacher_logits, y_pred, sample_weight)
        self.task_tracker.update_state(task)
        self.kd_tracker.update_state(kd)
        return self.alpha * task + self.alpha_teacher * kd
