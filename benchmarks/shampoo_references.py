"""keras_matta's Shampoo and SOAP side by side with reference implementations from PyPI.

torch backend only: the references are torch optimizers. Every optimizer trains its own copy of
the same Keras model, from the same initial weights, on the same batches, in one training
loop: the Keras model's forward pass, torch autograd for the gradients, then the optimizer's
step. Keras optimizers (ours, and Keras' Adam) take the gradients through
`optimizer.apply(gradients, variables)`, as Keras' own torch trainer does; the references
(`torch.optim.Adam`, `pytorch-optimizer`'s `ScalableShampoo` and `SOAP`, heavyball's `SOAP`) step
on the variables' torch parameters. heavyball runs eagerly (its default `torch.compile` with
autotuning took minutes per model on this CPU).

Workloads (the embedded data, held-out splits):
- `mlp`: 784-256-256-10 on the 5,000 digits (4,000 train), batch 64; metric: test accuracy.
- `lm`: a byte-level transformer LM (keras-hub decoder blocks, 2 blocks, width 128, 4 heads,
  128 bytes of context), batch 32, on Shakespeare's plays (whole plays held out); metric: test
  bits per byte.

Protocol: each optimizer at each learning rate of its grid on seed 0 (weights and batch order
from the seed); the rate with the best final validation metric is kept, and the other seeds run
at that rate only. Reported: the test metric at the last step (mean and std over seeds), the
steps each optimizer's seed-0 run needs to reach torch Adam's final validation loss (checked
every `--eval-every` steps), and the step time of each optimizer's training step as a ratio to
torch Adam's and to Keras Adam's, timed interleaved in one process (`common.interleaved_seconds`:
turns of 10 steps, so each turn holds one refresh at `precondition_frequency=10`).

Settings shared by the Shampoos: blocks of 128, roots every 10 steps from step 10, momentum 0.9
with Nesterov. Grafting: ours Adam; `ScalableShampoo` offers no Adam graft, so RMSProp. The
SOAPs: precondition frequency 10, no weight decay, their own default betas; the references
precondition every side whole (up to 10,000 in pytorch-optimizer, 2,048 in heavyball), so ours
runs twice, at its default blocks of 128 and with blocks of 1024 (every side of these models
whole).

Usage (needs `pip install pytorch-optimizer heavyball`, the `references` extra):
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/shampoo_references.py \\
        [--workloads mlp lm] [--steps 600 300] [--seeds 0 1 2]

Writes benchmarks/results/shampoo_references_torch.json and .png; `--table` prints the README
table from the JSON. `--optimizers` runs some arms only (torch's and Keras' Adam, the bases of
the ratios, always run) into `--output`'s JSON; `--table A.json B.json` joins results.
"""

import argparse
import json
import math
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR  # noqa: E402
from common import interleaved_seconds  # noqa: E402
from common import ratio_summary  # noqa: E402
from common import report  # noqa: E402
from shampoo_step_time import transformer_lm  # noqa: E402

from keras_matta.data import byte_windows  # noqa: E402
from keras_matta.data import digits  # noqa: E402
from keras_matta.data import load_task  # noqa: E402
from keras_matta.optimizers import SOAP  # noqa: E402
from keras_matta.optimizers import Shampoo  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
SHAMPOO_RATES = (3e-4, 1e-3, 3e-3)
SOAP_RATES = (1e-3, 3e-3, 1e-2)


def without_first_step(learning_rate):
    """`learning_rate` from step 2 on and 0 at step 1, as the official SOAP and heavyball, whose
    first gradient only starts the statistics."""
    return keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.0, learning_rate])


def optimizers():
    """`{name: (make(learning_rate, params), learning-rate grid)}`; `params` are torch's."""
    import heavyball
    import pytorch_optimizer
    import torch
    from pytorch_optimizer.optimizer.utils.graft import LayerWiseGrafting

    heavyball.utils.compile_mode = None  # eager, like every other arm
    return {
        "torch_adam": (lambda lr, params: torch.optim.Adam(params, lr), SHAMPOO_RATES),
        "keras_adam": (lambda lr, params: keras.optimizers.Adam(lr), SHAMPOO_RATES),
        "shampoo (ours)": (lambda lr, params: Shampoo(lr), SHAMPOO_RATES),
        "soap (ours)": (lambda lr, params: SOAP(lr), SOAP_RATES),
        # The reference SOAPs precondition a side of up to 10,000 (pytorch-optimizer) or 2,048
        # (heavyball) whole; ours cuts sides into blocks of 128 by default. The same sides whole:
        "soap (ours, blocks 1024)": (lambda lr, params: SOAP(lr, block_size=1024), SOAP_RATES),
        # Between the two: the MLP's 784-input side in two blocks (512 + 272), every other side
        # of these models whole.
        "soap (ours, blocks 512)": (lambda lr, params: SOAP(lr, block_size=512), SOAP_RATES),
        # Every refresh after the first a power step and a QR, as both reference SOAPs refresh.
        "soap (ours, blocks 1024, power QR)": (lambda lr, params: SOAP(
            lr, block_size=1024, basis_refresh="power_qr"), SOAP_RATES),
        # The search for why ours trailed heavyball's SOAP on the LM, each arm one of heavyball's
        # settings on top of the paper's first-moment decay 0.95, our default until then: 0.95
        # alone; with the embeddings preconditioned (ours leaves them to Adam); and no update
        # at the first step.
        "soap (ours, blocks 1024, beta1 0.95)": (lambda lr, params: SOAP(
            lr, block_size=1024, beta1=0.95), SOAP_RATES),
        "soap (ours, blocks 1024, beta1 0.95, embeddings)": (lambda lr, params: SOAP(
            lr, block_size=1024, beta1=0.95, exclude_embeddings=False), SOAP_RATES),
        "soap (ours, blocks 1024, beta1 0.95, embeddings, no first step)": (
            lambda lr, params: SOAP(without_first_step(lr), block_size=1024, beta1=0.95,
                                    exclude_embeddings=False),
            SOAP_RATES),
        # The two settings that each closed the gap, together: beta1 0.9 and no first step.
        "soap (ours, blocks 1024, no first step)": (lambda lr, params: SOAP(
            without_first_step(lr), block_size=1024), SOAP_RATES),
        # The option that does what the official SOAP does at the first step (the gradient
        # starts only the statistics: the moments stay 0 and Adam's count starts at step 2),
        # at the default blocks and whole.
        "soap (ours, skip first update)": (lambda lr, params: SOAP(
            lr, skip_first_update=True), SOAP_RATES),
        "soap (ours, blocks 1024, skip first update)": (lambda lr, params: SOAP(
            lr, block_size=1024, skip_first_update=True), SOAP_RATES),
        "ScalableShampoo (pytorch-optimizer)": (lambda lr, params: (
            pytorch_optimizer.ScalableShampoo(
                params, lr, block_size=128, preconditioning_compute_steps=10,
                start_preconditioning_step=10, graft_type=LayerWiseGrafting.RMSPROP)),
            SHAMPOO_RATES),
        "SOAP (pytorch-optimizer)": (lambda lr, params: pytorch_optimizer.SOAP(
            params, lr, weight_decay=0.0, precondition_frequency=10), SOAP_RATES),
        "SOAP (heavyball)": (lambda lr, params: heavyball.SOAP(
            params, lr, weight_decay=0.0, precondition_frequency=10), SOAP_RATES),
    }


class Workload:
    """A model, its splits and its metric."""

    def __init__(self, name, build, train, validation, test, batch, metric):
        self.name, self.build, self.batch, self.metric = name, build, batch, metric
        self.train, self.validation, self.test = train, validation, test

    def evaluate(self, model, split):
        """`(mean loss in nats, metric)` on `split`."""
        import torch

        x, y = split
        losses, correct = [], 0
        with torch.no_grad():
            for start in range(0, len(x), 256):
                logits = model(x[start:start + 256], training=False)
                labels = keras.ops.convert_to_tensor(y[start:start + 256])
                losses.append(float(LOSS(labels, logits)) * len(labels))
                correct += int((keras.ops.argmax(logits, axis=-1) == labels).sum())
        loss = sum(losses) / len(x)
        if self.metric == "accuracy":
            return loss, correct / len(x)
        return loss, loss / math.log(2.0)  # bits per byte

    def better(self, a, b):
        return a > b if self.metric == "accuracy" else a < b


def workloads(names):
    found = {}
    if "mlp" in names:
        found["mlp"] = Workload(
            "mlp", lambda: keras.Sequential([
                keras.Input((784,)), keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)]),
            digits.load("train"), digits.load("validation"), digits.load("test"), 64,
            "accuracy")
    if "lm" in names:
        task = load_task("shakespeare")
        windows = [byte_windows(split, 128, max_windows=count) for split, count in
                   ((task.train, 16384), (task.validation, 1024), (task.test, 1024))]
        found["lm"] = Workload(
            "lm", lambda: transformer_lm(256, 128, 128, 4), *windows, 32, "bits_per_byte")
    return found


class Arm:
    """One optimizer training its own copy of the workload's model."""

    def __init__(self, workload, make, learning_rate, seed):
        keras.utils.set_random_seed(seed)
        self.model = workload.build()  # same seed, same initial weights for every arm
        self.variables = self.model.trainable_variables
        self.params = [variable.value for variable in self.variables]
        self.optimizer = make(learning_rate, self.params)

    def step(self, x, y):
        import torch

        for param in self.params:
            param.grad = None
        loss = LOSS(y, self.model(x, training=True))
        loss.backward()
        if isinstance(self.optimizer, keras.optimizers.Optimizer):
            with torch.no_grad():
                self.optimizer.apply([param.grad for param in self.params], self.variables)
        else:
            self.optimizer.step()
        return loss


def batches(workload, steps, seed):
    """The `steps` training batches of `seed`, as torch tensors, the same for every arm."""
    x, y = workload.train
    order = np.concatenate([np.random.RandomState(seed + epoch).permutation(len(x))
                            for epoch in range(steps * workload.batch // len(x) + 1)])
    for step in range(steps):
        index = order[step * workload.batch:(step + 1) * workload.batch]
        yield keras.ops.convert_to_tensor(x[index]), keras.ops.convert_to_tensor(y[index])


def train(workload, make, learning_rate, seed, steps, eval_every):
    """One run: the validation-loss curve (every `eval_every` steps) and the final metrics."""
    arm, curve = Arm(workload, make, learning_rate, seed), []
    start = time.perf_counter()
    for step, (x, y) in enumerate(batches(workload, steps, seed), start=1):
        loss = arm.step(x, y)
        if not math.isfinite(float(loss)):
            return {"diverged": True, "curve": curve}
        if step % eval_every == 0 or step == steps:
            curve.append((step, workload.evaluate(arm.model, workload.validation)[0]))
    _, validation = workload.evaluate(arm.model, workload.validation)
    _, test = workload.evaluate(arm.model, workload.test)
    return {"diverged": False, "curve": curve, "validation": validation, "test": test,
            "seconds": time.perf_counter() - start}


def steps_to(curve, target):
    return next((step for step, loss in curve if loss <= target), None)


def study(workload, arms, args):
    """Rows of one workload: each optimizer at its best rate."""
    runs = {}
    for name, (make, rates) in arms.items():
        for rate in rates:
            runs[name, rate] = [train(workload, make, rate, args.seeds[0], args.steps[
                workload.name], args.eval_every)]
            _progress(workload, name, rate, args.seeds[0], runs[name, rate][0])
    best = {}
    for name, (make, rates) in arms.items():
        finished = [rate for rate in rates if not runs[name, rate][0]["diverged"]]
        best[name] = finished[0]
        for rate in finished[1:]:
            if workload.better(runs[name, rate][0]["validation"],
                               runs[name, best[name]][0]["validation"]):
                best[name] = rate
        for seed in args.seeds[1:]:
            result = train(workload, make, best[name], seed, args.steps[workload.name],
                           args.eval_every)
            runs[name, best[name]].append(result)
            _progress(workload, name, best[name], seed, result)
    target = runs["torch_adam", best["torch_adam"]][0]["curve"][-1][1]
    times = step_times(workload, arms, best, args.rounds)
    rows = []
    for name in arms:
        results = runs[name, best[name]]
        test = [r["test"] for r in results if not r["diverged"]]
        rows.append({
            "workload": workload.name, "optimizer": name, "metric": workload.metric,
            "learning_rate": best[name], "test_mean": float(np.mean(test)),
            "test_std": float(np.std(test, ddof=1)) if len(test) > 1 else 0.0,
            "test_per_seed": test, "diverged_seeds": sum(r["diverged"] for r in results),
            "validation_by_rate": {str(rate): runs[name, rate][0].get("validation")
                                   for rate in arms[name][1]},
            "steps_to_adam_loss": steps_to(results[0]["curve"], target),
            "steps": args.steps[workload.name],
            **{f"{clock}_vs_torch_adam": ratio_summary(times, name, "torch_adam", clock)[
                "ratio"] for clock in ("wall", "cpu")},
            "wall_vs_keras_adam": ratio_summary(times, name, "keras_adam")["ratio"],
            "step_ms": 1e3 * float(np.median(times[name]["wall"])),
        })
    return rows


def step_times(workload, arms, best, rounds):
    """Seconds per training step of each optimizer at its best rate, timed in turns."""
    x, y = next(batches(workload, 1, 0))
    steps = {}
    for name, (make, _) in arms.items():
        arm = Arm(workload, make, best[name], 0)
        for _ in range(12):  # past the first refresh
            arm.step(x, y)
        steps[name] = lambda arm=arm: arm.step(x, y)
    return interleaved_seconds(steps, rounds=rounds, calls=10, warmup=0)


def _progress(workload, name, rate, seed, result):
    outcome = "diverged" if result["diverged"] else (
        f"validation {result['validation']:.4f}, test {result['test']:.4f}, "
        f"{result['seconds']:.0f} s")
    print(f"{workload.name} {name} lr={rate:g} seed={seed}: {outcome}", flush=True)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({row["workload"] for row in rows})
    figure, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for axis, name in zip(axes[0], names):
        for row in (row for row in rows if row["workload"] == name):
            axis.errorbar(row["wall_vs_torch_adam"], row["test_mean"], yerr=row["test_std"],
                          fmt="o", capsize=3)
            axis.annotate(row["optimizer"], (row["wall_vs_torch_adam"], row["test_mean"]),
                          fontsize=7, xytext=(4, 4), textcoords="offset points")
        accuracy = name == "mlp"
        axis.set_xlabel("step time / torch Adam's (wall, interleaved)")
        axis.set_ylabel("test accuracy (higher is better)" if accuracy
                        else "test bits per byte (lower is better)")
        axis.set_title(f"{name}: each optimizer at its best learning rate (±1 std)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def markdown(rows):
    """The README table, from the rows of the results JSON."""
    lines = ["| workload | optimizer | learning rate | test (mean ± std) | steps to torch Adam's "
             "validation loss | step time / torch Adam's (wall, CPU) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        metric = "accuracy" if row["metric"] == "accuracy" else "bits/byte"
        steps = row["steps_to_adam_loss"] or f"not within {row['steps']}"
        lines.append(
            f"| {row['workload']} ({metric}, {len(row['test_per_seed'])} seeds) | "
            f"{row['optimizer']} | {row['learning_rate']:g} | "
            f"{row['test_mean']:.4f} ± {row['test_std']:.4f} | {steps} | "
            f"{row['wall_vs_torch_adam']:.2f}x, {row['cpu_vs_torch_adam']:.2f}x |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["mlp", "lm"], choices=["mlp", "lm"])
    parser.add_argument("--steps", nargs=2, type=int, default=[600, 300],
                        metavar=("MLP", "LM"), help="training steps of each run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=12, help="interleaved timing turns")
    parser.add_argument("--optimizers", nargs="+", default=None, metavar="NAME",
                        help="run only these arms (and the two Adams)")
    parser.add_argument("--output", default="shampoo_references",
                        help="file stem under benchmarks/results/")
    parser.add_argument("--table", nargs="*", metavar="JSON", default=None,
                        help="print the README table from these results (default: the "
                        "committed JSON; a workload's optimizer is taken from the first file "
                        "that has it) and exit")
    args = parser.parse_args()
    if args.table is not None:
        paths = args.table or [os.path.join(RESULTS_DIR, "shampoo_references_torch.json")]
        rows = {}
        for path in paths:
            with open(path) as f:
                for row in json.load(f)["rows"]:
                    rows.setdefault((row["workload"], row["optimizer"]), row)
        print(markdown(list(rows.values())))
        return
    if keras.backend.backend() != "torch":
        raise SystemExit("Run with KERAS_BACKEND=torch: the references are torch optimizers.")
    args.steps = dict(zip(("mlp", "lm"), args.steps))
    arms = optimizers()
    if args.optimizers:
        unknown = set(args.optimizers) - set(arms)
        if unknown:
            raise SystemExit(f"Unknown --optimizers {sorted(unknown)}; expected {list(arms)}.")
        arms = {name: arm for name, arm in arms.items()
                if name in ("torch_adam", "keras_adam", *args.optimizers)}
    columns = ["workload", "optimizer", "learning_rate", "test_mean", "test_std",
               "steps_to_adam_loss", "wall_vs_torch_adam", "cpu_vs_torch_adam",
               "wall_vs_keras_adam", "step_ms"]
    rows = []
    for workload in workloads(args.workloads).values():
        rows += study(workload, arms, args)
        # Written after each workload: a long run interrupted later keeps what it finished.
        report(args.output, rows, columns)
        plot(rows, os.path.join(RESULTS_DIR, f"{args.output}_torch.png"))


if __name__ == "__main__":
    main()
