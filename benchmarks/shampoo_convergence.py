"""Steps and seconds Shampoo needs to reach Adam's final held-out loss, on the embedded LM data.

The model is the demo's byte-level transformer TA (`keras_matta.study`, "default" size) on
Shakespeare's plays; the held-out loss is bits per byte on windows of the validation plays.
Each optimizer trains from the same initial weights on the same batches, with the demo's
schedule (5% warm-up, cosine decay to 10%) over `--steps`, at each learning rate of
`--learning-rates`; the best learning rate of each (lowest final held-out loss) is compared:

- target: Adam's final held-out loss at its best learning rate;
- steps (seconds) to target: the first evaluation at or below the target, and the training
  time spent until then (evaluation excluded), for Adam and for Shampoo;
- the ratios Shampoo / Adam (the goal: under 0.8).

Training runs in chunks of `--eval-every` steps (one `fit` call each, so the evaluation between
chunks sees the weights of exactly that step); times exclude compilation and evaluation.
Shampoo uses the matmul-only Newton roots by default, as the demo does on CPU (see
`keras_matta.study.runs.make_optimizer`).

Usage:
    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/shampoo_convergence.py \\
        [--steps 600] [--eval-every 25] [--learning-rates 1e-3 3e-3 1e-2]

Writes benchmarks/results/shampoo_convergence_<backend>.json and .png.
"""

import argparse
import math
import sys
import time

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import report  # noqa: E402

from keras_matta.data import byte_windows, load_task  # noqa: E402
from keras_matta.optimizers import Shampoo  # noqa: E402
from keras_matta.study import models, runs  # noqa: E402
from keras_matta.study.config import preset  # noqa: E402


def make_optimizer(name, learning_rate, steps, root_method):
    warmup = max(1, steps // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps - warmup, alpha=0.1, warmup_target=learning_rate,
        warmup_steps=warmup)
    if name == "adam":
        return keras.optimizers.Adam(schedule)
    return Shampoo(schedule, root_method=root_method)


def train_curve(name, learning_rate, data, held_out, config, args):
    """`[(step, training seconds, held-out bits per byte)]`, evaluated every `eval_every`."""
    keras.utils.set_random_seed(args.seed)  # identical initial weights for every run
    model = models.build("lm", "lm", **config.ta)
    model.compile(make_optimizer(name, learning_rate, args.steps, args.root_method),
                  loss=runs.loss_fn())
    x, y = (np.concatenate(part) for part in zip(*runs.batches(data, config, args.seed,
                                                               args.steps)))
    compile_train_step(model, x[:config.batch_size], y[:config.batch_size])
    chunk = args.eval_every * config.batch_size
    curve, seconds = [], 0.0
    for start in range(0, len(x), chunk):
        begin = time.perf_counter()
        model.fit(x[start:start + chunk], y[start:start + chunk], batch_size=config.batch_size,
                  epochs=1, shuffle=False, verbose=0)
        seconds += time.perf_counter() - begin
        loss = model.evaluate(*held_out, batch_size=256, verbose=0)
        step = (start + chunk) // config.batch_size
        curve.append((step, seconds, loss / math.log(2.0)))
        print(f"\r  {name} lr={learning_rate:g}: step {step}/{args.steps}, "
              f"{curve[-1][2]:.3f} bits/byte, {seconds:.0f} s", end="", flush=True)
    print()
    return curve


def compile_train_step(model, x, y):
    """Compiles the train step with one step, then restores the weights and optimizer state.

    So that the timed steps exclude compilation (tens of seconds for Shampoo on CPU) and the
    run starts from the initial weights with the optimizer at step 0.
    """
    model.optimizer.build(model.trainable_variables)
    state = [v.numpy() for v in model.variables + model.optimizer.variables]
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for variable, value in zip(model.variables + model.optimizer.variables, state):
        variable.assign(value)


def first_reaching(curve, target):
    """`(step, seconds)` of the first evaluation at or below `target`, or `(None, None)`."""
    for step, seconds, loss in curve:
        if loss <= target:
            return step, seconds
    return None, None


def plot(axes, rows):
    colors = {"adam": "tab:blue", "shampoo": "tab:orange"}
    for row in rows:
        steps, _, losses = zip(*row["curve"])
        axes.plot(steps, losses, color=colors[row["optimizer"]],
                  linewidth=2.5 if row["best"] else 0.8, alpha=1.0 if row["best"] else 0.5,
                  label=f"{row['optimizer']} lr={row['learning_rate']:g}")
    target = next(r for r in rows if r["best"] and r["optimizer"] == "adam")["final_bpb"]
    axes.axhline(target, color="black", linestyle=":", label="Adam's final (target)")
    axes.set_xlabel("step")
    axes.set_ylabel("held-out bits per byte")
    axes.set_ylim(top=min(8.0, axes.get_ylim()[1]))
    axes.set_title(f"Shampoo vs Adam on Shakespeare bytes ({keras.backend.backend()})")
    axes.legend(fontsize=7)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--eval-windows", type=int, default=256)
    parser.add_argument("--root-method", default="newton", choices=["newton", "eigh"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps % args.eval_every:
        parser.error("--steps must be a multiple of --eval-every")

    config = preset("lm", "default")
    data = load_task("shakespeare")
    held_out = byte_windows(data.validation, config.sequence_length,
                            max_windows=args.eval_windows)
    rows = []
    for name in ("adam", "shampoo"):
        for learning_rate in args.learning_rates:
            curve = train_curve(name, learning_rate, data, held_out, config, args)
            rows.append({"optimizer": name, "learning_rate": learning_rate,
                         "final_bpb": curve[-1][2], "train_seconds": curve[-1][1],
                         "curve": curve})
    best = {name: min((r for r in rows if r["optimizer"] == name), key=lambda r: r["final_bpb"])
            for name in ("adam", "shampoo")}
    target = best["adam"]["final_bpb"]
    for row in rows:
        row["best"] = row is best[row["optimizer"]]
        row["steps_to_target"], row["seconds_to_target"] = first_reaching(row["curve"], target)
    adam, shampoo = best["adam"], best["shampoo"]
    reached = shampoo["steps_to_target"] is not None
    summary = {
        "target_bpb": target,
        "steps_ratio": shampoo["steps_to_target"] / adam["steps_to_target"] if reached else None,
        "seconds_ratio": (shampoo["seconds_to_target"] / adam["seconds_to_target"]
                          if reached else None),
        "step_time_ratio": shampoo["train_seconds"] / adam["train_seconds"],
    }
    columns = ["optimizer", "learning_rate", "best", "final_bpb", "train_seconds",
               "steps_to_target", "seconds_to_target"]
    report("shampoo_convergence", rows + [{"optimizer": "summary", **summary}], columns,
           plot=lambda axes, _: plot(axes, rows))
    print(f"Shampoo / Adam to Adam's final held-out loss ({target:.3f} bits/byte): "
          f"steps {_ratio(summary['steps_ratio'])}, seconds {_ratio(summary['seconds_ratio'])} "
          f"(goal < 0.8); whole-run time ratio {summary['step_time_ratio']:.2f}")


def _ratio(value):
    return "not reached" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
