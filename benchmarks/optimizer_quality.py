"""Quality of Adam, Shampoo (Nesterov on and off) and SOAP on two small problems, one process.

- `digits`: an MLP 784-256-256-10 on the embedded MNIST digits (4,000 training images, batch
  64, `--digits-steps` steps, no schedule), each optimizer at each learning rate of its grid
  from the same initial weights and batch order; the best rate by validation accuracy, and its
  test accuracy, are reported.
- `least_squares_<n>`: full-batch `Y = X W*` with a `64 x n` kernel, `cond(X^T X) = 1e4`,
  rotated so that no coordinate axis is special (a diagonal method cannot undo the rotation);
  steps until the loss is 1e-4 of the first one, at the best rate of the grid (None: never
  within `--max-steps`). `n = 1` is the case where Shampoo does not precondition (an `(n, 1)`
  kernel): Shampoo is its Adam graft, with or without Nesterov, unless `precondition_vectors`
  (the `*_vectors` arms), which gives the column one full factor.
- `lm`: the demo's byte-level transformer TA (`keras_matta.study`, "default" size) on
  Shakespeare's plays, `--lm-steps` steps of batch 32 at a constant rate. Each optimizer of
  `--lm-optimizers` picks its rate from `LM_RATES` on seed 0's validation bits per byte; the
  other `--lm-seeds` run at that rate (weights and batches from the seed); test bits per byte
  (mean and std over seeds, and per seed for paired comparisons) are reported.

This is the evidence for Shampoo's `nesterov` and `precondition_vectors` defaults on these
problems (issue #18 adds the byte-level LM, where Nesterov helped: 3.029 against 3.078
bits/byte).

Usage:
    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/optimizer_quality.py \\
        [--digits-steps 600] [--max-steps 1500] [--problems digits least_squares lm] \\
        [--lm-steps 600] [--lm-seeds 0 1 2] [--lm-optimizers shampoo shampoo_vectors] \\
        [--output optimizer_quality]

Writes benchmarks/results/<output>_<backend>.json; `--table JSON [JSON ...]` prints the README
table from results files instead.
"""

import argparse
import json
import sys

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import report  # noqa: E402

from keras_matta.data import byte_windows  # noqa: E402
from keras_matta.data import digits  # noqa: E402
from keras_matta.data import load_task  # noqa: E402
from keras_matta.optimizers import SOAP  # noqa: E402
from keras_matta.optimizers import Shampoo  # noqa: E402
from keras_matta.study import models  # noqa: E402
from keras_matta.study import runs  # noqa: E402
from keras_matta.study.config import preset  # noqa: E402

OPTIMIZERS = {
    "adam": lambda lr: keras.optimizers.Adam(lr),
    "shampoo": lambda lr: Shampoo(lr),  # nesterov=True, the default
    "shampoo_no_nesterov": lambda lr: Shampoo(lr, nesterov=False),
    "shampoo_vectors": lambda lr: Shampoo(lr, precondition_vectors=True),
    "soap": lambda lr: SOAP(lr),
    "soap_vectors": lambda lr: SOAP(lr, precondition_vectors=True),
}
# Rates around each optimizer's usual one (SOAP's paper default is 3e-3, Adam's 1e-3).
DIGITS_RATES = {"adam": [3e-4, 1e-3, 3e-3], "shampoo": [3e-4, 1e-3, 3e-3],
                "shampoo_no_nesterov": [3e-4, 1e-3, 3e-3], "shampoo_vectors": [3e-4, 1e-3, 3e-3],
                "soap": [1e-3, 3e-3, 1e-2], "soap_vectors": [1e-3, 3e-3, 1e-2]}
LEAST_SQUARES_RATES = [0.03, 0.1, 0.3, 1.0, 3.0]
# On this LM with a cosine schedule, Shampoo's best rate of {1e-3, 3e-3, 1e-2} was 1e-2 and
# Adam's 3e-3 (shampoo_convergence_jax.json); here the rate is constant.
LM_RATES = {"adam": [1e-3, 3e-3], "shampoo": [3e-3, 1e-2], "shampoo_no_nesterov": [3e-3, 1e-2],
            "shampoo_vectors": [3e-3, 1e-2], "soap": [3e-3, 1e-2], "soap_vectors": [3e-3, 1e-2]}


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


def lm_bits_per_byte(make, learning_rate, steps, seed, data, splits):
    """`[bits per byte on each of splits]` after `steps` steps from seed `seed`'s weights and
    batches of `data` (the Shakespeare task)."""
    config = preset("lm", "default")
    keras.utils.set_random_seed(seed)
    model = models.build("lm", "lm", **config.ta)
    model.compile(make(learning_rate), loss=runs.loss_fn())
    for x, y in runs.batches(data, config, seed, steps):
        model.train_on_batch(x, y)
    return [model.evaluate(*split, batch_size=256, verbose=0) / np.log(2.0) for split in splits]


def lm_rows(steps, seeds, names):
    data, length = load_task("shakespeare"), preset("lm", "default").sequence_length
    splits = [byte_windows(data.validation, length, max_windows=512),
              byte_windows(data.test, length, max_windows=512)]
    rows = []
    for name in names:
        by_rate = {lr: lm_bits_per_byte(OPTIMIZERS[name], lr, steps, seeds[0], data, splits)
                   for lr in LM_RATES[name]}
        print(f"  lm {name}, seed {seeds[0]}: validation bits/byte by rate "
              f"{ {lr: round(float(v), 4) for lr, (v, _) in by_rate.items()} }", flush=True)
        lr = min(by_rate, key=lambda rate: by_rate[rate][0])
        per_seed = [by_rate[lr]] + [
            lm_bits_per_byte(OPTIMIZERS[name], lr, steps, seed, data, splits)
            for seed in seeds[1:]]
        test = [t for _, t in per_seed]
        print(f"  lm {name} lr={lr:g}: test bits/byte {np.mean(test):.4f} ± {np.std(test):.4f}",
              flush=True)
        rows.append({"problem": "lm", "optimizer": name, "learning_rate": lr, "steps": steps,
                     "seeds": list(seeds), "validation_bits_per_byte": by_rate[lr][0],
                     "test_bits_per_byte": float(np.mean(test)),
                     "test_bits_per_byte_std": float(np.std(test)),
                     "test_bits_per_byte_per_seed": test,
                     "validation_by_rate": {str(k): v for k, (v, _) in by_rate.items()}})
    return rows


def readme_table(rows):
    """One line per optimizer: each problem's result and, in brackets, its chosen rate."""
    problems = list(dict.fromkeys(row["problem"] for row in rows))
    titles = {"digits": "digits MLP: test accuracy", "lm": "byte LM: test bits/byte"}

    def cell(row):
        if row is None:
            return ""
        if row["problem"] == "digits":
            value = f"{row['test_accuracy']:.3f}"
        elif row["problem"] == "lm":
            value = (f"{row['test_bits_per_byte']:.3f} ± {row['test_bits_per_byte_std']:.3f} "
                     f"({len(row['seeds'])} seeds)")
        else:
            value = str(row["steps_to_1e-4"] or "not reached")
        return f"{value} ({row['learning_rate']:g})" if row["learning_rate"] else value

    header = [titles.get(p, p.replace("least_squares_", "least squares ") + ": steps to 1e-4")
              for p in problems]
    lines = ["| optimizer | " + " | ".join(header) + " |", "|---" * (len(problems) + 1) + "|"]
    for name in dict.fromkeys(row["optimizer"] for row in rows):
        found = {row["problem"]: row for row in rows if row["optimizer"] == name}
        lines.append(f"| {name} | " + " | ".join(cell(found.get(p)) for p in problems) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits-steps", type=int, default=600)
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--problems", nargs="+", default=["digits", "least_squares"],
                        choices=["digits", "least_squares", "lm"])
    parser.add_argument("--lm-steps", type=int, default=600)
    parser.add_argument("--lm-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lm-optimizers", nargs="+", default=["shampoo", "shampoo_vectors"],
                        choices=list(OPTIMIZERS))
    parser.add_argument("--output", default="optimizer_quality",
                        help="file stem under benchmarks/results/ (before _<backend>)")
    parser.add_argument("--table", nargs="+", metavar="JSON",
                        help="print the README table from these results files and exit")
    args = parser.parse_args()
    if args.table:
        rows = []
        for path in args.table:
            with open(path) as file:
                rows += json.load(file)["rows"]
        print(readme_table(rows))
        return
    rows = []
    if "least_squares" in args.problems:
        for outputs in (8, 1):
            rows += least_squares_rows(outputs, args.max_steps)
    if "digits" in args.problems:
        rows += digits_rows(args.digits_steps, args.seed)
    if "lm" in args.problems:
        rows += lm_rows(args.lm_steps, args.lm_seeds, args.lm_optimizers)
    report(args.output, rows,
           ["problem", "optimizer", "learning_rate", "test_accuracy", "validation_accuracy",
            "steps_to_1e-4", "test_bits_per_byte", "test_bits_per_byte_std"])


if __name__ == "__main__":
    main()
