"""Quality of Adam, Shampoo (Nesterov on and off) and SOAP on two small problems, one process.

- `digits`: an MLP 784-256-256-10 on the embedded MNIST digits (4,000 training images, batch
  64, `--digits-steps` steps, no schedule), each optimizer at each learning rate of its grid
  from the same initial weights and batch order; the best rate by validation accuracy, and its
  test accuracy, are reported.
- `least_squares_<n>`: full-batch `Y = X W*` with a `64 x n` kernel, `cond(X^T X) = 1e4`,
  rotated so that no coordinate axis is special (a diagonal method cannot undo the rotation);
  steps until the loss is 1e-4 of the first one, at the best rate of the grid (None: never
  within `--max-steps`). `n = 1` is the case where Shampoo does not precondition (an `(n, 1)`
  kernel): Shampoo is its Adam graft, with or without Nesterov.

This is the evidence for Shampoo's `nesterov` default on these problems (issue #18 adds the
byte-level LM, where Nesterov helped: 3.029 against 3.078 bits/byte).

Usage:
    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/optimizer_quality.py \\
        [--digits-steps 600] [--max-steps 1500]

Writes benchmarks/results/optimizer_quality_<backend>.json.
"""

import argparse
import sys

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import report  # noqa: E402

from keras_matta.data import digits  # noqa: E402
from keras_matta.optimizers import SOAP  # noqa: E402
from keras_matta.optimizers import Shampoo  # noqa: E402

OPTIMIZERS = {
    "adam": lambda lr: keras.optimizers.Adam(lr),
    "shampoo": lambda lr: Shampoo(lr),  # nesterov=True, the default
    "shampoo_no_nesterov": lambda lr: Shampoo(lr, nesterov=False),
    "soap": lambda lr: SOAP(lr),
}
# Rates around each optimizer's usual one (SOAP's paper default is 3e-3, Adam's 1e-3).
DIGITS_RATES = {"adam": [3e-4, 1e-3, 3e-3], "shampoo": [3e-4, 1e-3, 3e-3],
                "shampoo_no_nesterov": [3e-4, 1e-3, 3e-3], "soap": [1e-3, 3e-3, 1e-2]}
LEAST_SQUARES_RATES = [0.03, 0.1, 0.3, 1.0, 3.0]


def digits_rows(steps, seed):
    x, y = digits.load("train", seed)
    validation, test = digits.load("validation", seed), digits.load("test", seed)
    order = np.random.default_rng(seed).integers(0, len(x), (steps, 64))
    rows = []
    for name, make in OPTIMIZERS.items():
        best = None
        for lr in DIGITS_RATES[name]:
            keras.utils.set_random_seed(seed)
            model = keras.Sequential([
                keras.Input((784,)), keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
            model.compile(make(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
            for batch in order:
                model.train_on_batch(x[batch], y[batch])
            accuracy = model.evaluate(*validation, verbose=0, return_dict=True)["accuracy"]
            print(f"  digits {name} lr={lr:g}: validation accuracy {accuracy:.4f}", flush=True)
            if best is None or accuracy > best[1]:
                test_accuracy = model.evaluate(*test, verbose=0, return_dict=True)["accuracy"]
                best = (lr, accuracy, test_accuracy)
        rows.append({"problem": "digits", "optimizer": name, "learning_rate": best[0],
                     "validation_accuracy": best[1], "test_accuracy": best[2], "steps": steps})
    return rows


def rotated_least_squares(outputs, features=64, samples=256, condition=1e4, seed=0):
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((features, features)))
    scales = np.logspace(0, -0.5 * np.log10(condition), features)
    orthonormal, _ = np.linalg.qr(rng.standard_normal((samples, features)))
    x = (np.sqrt(samples) * orthonormal * scales) @ rotation.T
    y = x @ rng.standard_normal((features, outputs))
    return x.astype("float32"), y.astype("float32")


def steps_to_target(make, x, y, learning_rate, max_steps, target=1e-4):
    model = keras.Sequential([keras.Input((x.shape[1],)),
                              keras.layers.Dense(y.shape[1], use_bias=False,
                                                 kernel_initializer="zeros")])
    model.compile(make(learning_rate), "mse")
    first = None
    for step in range(max_steps + 1):
        loss = float(model.train_on_batch(x, y))  # the loss before this step's update
        first = first or loss
        if loss <= target * first:
            return step
        if not np.isfinite(loss):
            return None
    return None


def least_squares_rows(outputs, max_steps):
    x, y = rotated_least_squares(outputs)
    rows = []
    for name, make in OPTIMIZERS.items():
        found = {lr: steps_to_target(make, x, y, lr, max_steps) for lr in LEAST_SQUARES_RATES}
        print(f"  least squares 64x{outputs} {name}: {found}", flush=True)
        reached = [(steps, lr) for lr, steps in found.items() if steps is not None]
        steps, lr = min(reached) if reached else (None, None)
        rows.append({"problem": f"least_squares_64x{outputs}", "optimizer": name,
                     "learning_rate": lr, "steps_to_1e-4": steps,
                     "steps_by_rate": {str(k): v for k, v in found.items()}})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits-steps", type=int, default=600)
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--problems", nargs="+", default=["digits", "least_squares"],
                        choices=["digits", "least_squares"])
    args = parser.parse_args()
    rows = []
    if "least_squares" in args.problems:
        for outputs in (8, 1):
            rows += least_squares_rows(outputs, args.max_steps)
    if "digits" in args.problems:
        rows += digits_rows(args.digits_steps, args.seed)
    report("optimizer_quality", rows,
           ["problem", "optimizer", "learning_rate", "test_accuracy", "validation_accuracy",
            "steps_to_1e-4"])


if __name__ == "__main__":
    main()
