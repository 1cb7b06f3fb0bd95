"""MatTA in 60 lines: a TA with its Student nested inside, trained together, then extracted.

Runs in about a minute on a laptop CPU, offline, on the 5,000 MNIST digits keras_matta ships:

    KERAS_BACKEND=jax python examples/matta_digits.py
"""

import keras

import keras_matta
from keras_matta.data import load_task
from keras_matta.optimizers import Shampoo
from keras_matta.training import MatTA

keras.utils.set_random_seed(0)
task = load_task("digits")  # 4,000 / 500 / 500 real MNIST digits, pixels in [0, 1]
x_train, y_train = task.train
x_test, y_test = task.test

# The TA: two hidden MatDense layers of 128 units. Every narrower width is a prefix of the same
# kernels, so the Student (32 units per layer) lives inside the TA.
ta = keras.Sequential([
    keras.Input((784,)),
    keras_matta.MatDense(128, activation="relu", name="hidden_1"),
    keras_matta.MatDense(128, activation="relu", name="hidden_2"),
    keras_matta.MatDense(10, nested=False, name="logits"),
], name="ta")

# TA and Student learn together: the Student also distils the TA's (detached) logits.
mat_ta = MatTA(ta, student_widths=[0.25], kd_warmup_steps=60)
mat_ta.compile(
    optimizer=Shampoo(learning_rate=1e-3, root_method="newton"),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
mat_ta.fit(x_train, y_train, batch_size=64, epochs=8, verbose=2)

# Any width, or a per-layer Mix'n'Match, is now a standalone model of stock Keras layers.
for widths in (0.25, 0.5, {"hidden_1": 1.0, "hidden_2": 0.25}, None):
    model = keras_matta.extract(ta, widths)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    cost = keras_matta.cost(ta, widths)
    print(f"{keras_matta.width_label(widths):32s} params {cost['params']:7d}  "
          f"FLOPs {cost['flops']:7d}  test accuracy {accuracy:.3f}")

keras_matta.extract(ta, 0.25).save("student.keras")  # loads with plain keras.saving.load_model
