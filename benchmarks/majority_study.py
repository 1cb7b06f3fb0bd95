"""Majority kernels against the plain small model, each at its own best learning rate.

On the embedded data, a small model built from Mat layers at full width (no nesting here):

- `digits`: an MLP `784 -> H -> H -> 10` of `MatDense` layers (ReLU), every kernel stored as
  `k` copies; the metric is test accuracy.
- `shakespeare`: a causal byte-level transformer (token and position embeddings,
  `MatTransformerBlock`s with all six kernels as `k` copies, a final layer norm and a 256-way
  `MatDense` head with `k` copies); the metric is test bits per byte, `CE / ln 2`.

Variants: `plain` (`k = 1`) and `k:combine` for `k` in {2, 4} and the combines
`random_majority` (the mean of a random strict majority of the copies per training step) and
`mean` (the symmetric control); `3:median` is cheap and included. Two facts frame the numbers:
a strict majority of 2 copies is both copies, so `2:random_majority` *is* `2:mean`; and the mean
of `k` independently initialized copies starts with `1/sqrt(k)` of the plain kernel's scale,
after which (with Adam, which is invariant to the gradient's `1/k` scale) every copy takes the
plain model's step: `mean` is the plain model with a shrunken initialization.

Protocol: Adam, every learning rate of the grid and every seed (the seed fixes the
initialization, the majority draws and the order of the batches, identical across variants).
After training, `keras_matta.extract` collapses the copies into the served model (stock Keras
layers, the plain model's parameter count), which is evaluated on the validation and test
splits. Each variant keeps the learning rate with the best mean validation metric; the table
reports the test metric at that rate, mean and standard deviation over the seeds, and its
difference from `plain` (paired by seed: mean and standard deviation of the differences).
The training-time overhead is the median step time of each variant over the plain model's,
measured interleaved in the same process (see `step_milliseconds`).

Usage (the defaults took 13 minutes on one core of the 2-core CI machine):
    KERAS_BACKEND=jax OMP_NUM_THREADS=1 \
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        python benchmarks/majority_study.py
    KERAS_BACKEND=jax python benchmarks/majority_study.py --quick    # smoke check, < 1 min
"""

import argparse
import math
import sys
import time

import keras
import numpy as np
from keras import ops

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import report  # noqa: E402

import keras_matta  # noqa: E402
from keras_matta.data import byte_windows  # noqa: E402
from keras_matta.data import load_task  # noqa: E402

PLAIN = "plain"
DEFAULT_VARIANTS = "plain,2:random_majority,2:mean,4:random_majority,4:mean,3:median"

# === Variants ===


def parse_variant(text):
    """`"plain"` -> `(1, "mean")`; `"4:random_majority"` -> `(4, "random_majority")`."""
    if text == PLAIN:
        return 1, "mean"
    majority, _, combine = text.partition(":")
    if not majority.isdigit() or int(majority) < 2 or not combine:
        raise ValueError(f"A variant is 'plain' or '<k >= 2>:<combine>'; got {text!r}.")
    return int(majority), combine


# === Tasks: data, model, metric ===


class Digits:
    """The MLP on the 5,000 embedded MNIST digits (4,000 / 500 / 500)."""

    name, metric, higher_is_better = "digits", "accuracy", True

    def __init__(self, args):
        task = load_task("digits")
        limit = args.digits_train
        self.train = tuple(a[:limit] for a in task.train)
        self.validation, self.test = task.validation, task.test
        self.hidden, self.epochs, self.batch = args.digits_hidden, args.digits_epochs, 64
        self.timing_steps = args.digits_timing_steps  # ~1 ms steps: many, or noise dominates

    def build(self, majority, combine, seed):
        inputs = keras.Input((784,))
        x = inputs
        for i in range(2):
            x = keras_matta.MatDense(self.hidden, activation="relu", majority=majority,
                                     majority_combine=combine, majority_seed=seed * 100 + i,
                                     name=f"hidden_{i + 1}")(x)  # (B, H)
        logits = keras_matta.MatDense(10, nested=False, majority=majority,
                                      majority_combine=combine, majority_seed=seed * 100 + 9,
                                      name="logits")(x)  # (B, 10)
        return keras.Model(inputs, logits, name="digits_mlp")

    def score(self, model, split):
        x, y = split
        logits = model.predict(x, batch_size=500, verbose=0)  # (n, 10)
        return float(np.mean(np.argmax(logits, axis=-1) == y))


class Shakespeare:
    """The byte-level transformer on the embedded plays (whole plays held out)."""

    name, metric, higher_is_better = "shakespeare", "bits_per_byte", False

    def __init__(self, args):
        task, length = load_task("shakespeare"), args.lm_sequence
        self.sequence, self.dim, self.layers = length, args.lm_dim, args.lm_layers
        self.train = byte_windows(task.train, length, max_windows=args.lm_train_windows)
        self.validation = byte_windows(task.validation, length, max_windows=args.lm_eval_windows)
        self.test = byte_windows(task.test, length, max_windows=args.lm_eval_windows)
        self.epochs, self.batch, self.timing_steps = args.lm_epochs, 32, args.lm_timing_steps

    def build(self, majority, combine, seed):
        tokens = keras.Input((self.sequence,), dtype="int32")
        x = keras.layers.Embedding(256, self.dim, name="token_embedding")(tokens)  # (B, T, d)
        positions = ops.cumsum(ops.ones_like(tokens), axis=1) - 1  # (B, T): 0, ..., T - 1
        x = ops.add(x, keras.layers.Embedding(self.sequence, self.dim,
                                              name="position_embedding")(positions))
        for i in range(self.layers):
            x = keras_matta.MatTransformerBlock(
                2 * self.dim, num_heads=4, causal=True, activation="gelu", majority=majority,
                majority_combine=combine, majority_seed=seed * 100 + 10 * i, name=f"block_{i}",
            )(x)  # (B, T, d)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
        logits = keras_matta.MatDense(256, nested=False, majority=majority,
                                      majority_combine=combine, majority_seed=seed * 100 + 99,
                                      name="logits")(x)  # (B, T, 256)
        return keras.Model(tokens, logits, name="byte_lm")

    def score(self, model, split):
        x, y = split
        logits = model.predict(x, batch_size=64, verbose=0)  # (n, T, 256)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        nats = -np.take_along_axis(log_probs, y[..., None], axis=-1).mean()
        return float(nats / math.log(2.0))


TASKS = {"digits": Digits, "shakespeare": Shakespeare}

# === One training run ===


def train_and_score(task, majority, combine, learning_rate, seed):
    """Trains one variant from scratch; scores the extracted (served) model.

    Returns `{"validation", "test", "params"}`. The batch order depends on `seed` only, so
    every variant sees the same batches.
    """
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    model = task.build(majority, combine, seed)
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = task.train
    order = np.random.RandomState(seed)
    for _ in range(task.epochs):
        index = order.permutation(len(x))
        model.fit(x[index], y[index], batch_size=task.batch, epochs=1, shuffle=False, verbose=0)
    served = keras_matta.extract(model, None)  # the copies collapsed: stock Keras layers
    return {"validation": task.score(served, task.validation),
            "test": task.score(served, task.test), "params": served.count_params()}


# === Selection and summary (pure) ===


def best_learning_rate(validation, higher_is_better):
    """The learning rate with the best mean validation metric over seeds.

    Args:
        validation: `{learning_rate: [metric per seed]}`.
        higher_is_better: whether a larger metric is better.

    Returns:
        The chosen learning rate (ties go to the smaller rate).
    """
    sign = -1.0 if higher_is_better else 1.0
    return min(sorted(validation), key=lambda rate: sign * float(np.mean(validation[rate])))


def summarize(values):
    """`(mean, sample standard deviation)` of per-seed values (std 0 for a single seed)."""
    values = np.asarray(values, dtype="float64")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


# === Step time ===


def step_milliseconds(task, variants, repeats):
    """`{variant: median CPU milliseconds per training step}`, all variants timed interleaved.

    A step's time is `(t(2 * steps) - t(steps)) / steps` over `fit` calls
    (`steps = task.timing_steps`), so the fixed cost of a call cancels; each `t` is the median
    of `repeats` interleaved runs after a compiling one. `t` is the process's CPU time, not wall
    time: with one thread per process it is the work done, whatever else shares the machine.
    """
    steps = task.timing_steps
    longest = 2 * steps * task.batch
    x, y = (np.resize(a, (longest,) + a.shape[1:]) for a in task.train)  # repeated if short
    runs = {}
    for variant in variants:
        model = task.build(*parse_variant(variant), seed=0)
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        for multiple in (1, 2):
            def run(model=model, n=multiple * steps * task.batch):
                model.fit(x[:n], y[:n], batch_size=task.batch, epochs=1, shuffle=False,
                          verbose=0)

            runs[(variant, multiple)] = run
    for run in runs.values():
        run()  # compiles
    seconds = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            start = time.process_time()
            run()
            seconds[key].append(time.process_time() - start)
    median = {key: float(np.median(value)) for key, value in seconds.items()}
    return {v: 1e3 * (median[(v, 2)] - median[(v, 1)]) / steps for v in variants}


# === The study ===


def study_task(task, args, progress, advance):
    """Rows (one per variant) for one task."""
    runs = {}  # (variant, learning_rate) -> [result per seed]
    for variant in args.variants:
        for rate in args.learning_rates:
            for seed in args.seeds:
                progress(f"{task.name} {variant} lr={rate:g} seed={seed}")
                result = train_and_score(task, *parse_variant(variant), rate, seed)
                runs.setdefault((variant, rate), []).append(result)
                advance()
    progress(f"{task.name}: step times")
    milliseconds = step_milliseconds(task, args.variants, args.repeats)
    rows = []
    for variant in args.variants:
        validation = {rate: [r["validation"] for r in runs[(variant, rate)]]
                      for rate in args.learning_rates}
        rate = best_learning_rate(validation, task.higher_is_better)
        test = [r["test"] for r in runs[(variant, rate)]]
        mean, std = summarize(test)
        rows.append({
            "task": task.name, "variant": variant, "metric": task.metric, "best_lr": rate,
            "validation_mean": summarize(validation[rate])[0], "test_mean": mean,
            "test_std": std, "test_per_seed": test, "seeds": list(args.seeds),
            "served_params": runs[(variant, rate)][0]["params"],
            "validation_by_lr": {str(r): summarize(v)[0] for r, v in validation.items()},
            "test_by_lr": {str(r): summarize([one["test"] for one in runs[(variant, r)]])[0]
                           for r in args.learning_rates},
            "step_ms": milliseconds[variant],
            "overhead": milliseconds[variant] / milliseconds[PLAIN],
        })
    plain = next(row for row in rows if row["variant"] == PLAIN)
    for row in rows:
        # Paired by seed: a seed fixes the batch order for every variant.
        paired = np.subtract(row["test_per_seed"], plain["test_per_seed"])
        row["delta_vs_plain"], row["delta_std"] = summarize(paired)
    return rows


def plot(axes, rows):
    """Relative change of test error (digits: 1 - accuracy) or bits per byte vs plain."""
    tasks = sorted({row["task"] for row in rows})
    variants = [row["variant"] for row in rows if row["task"] == tasks[0]]
    width = 0.8 / len(tasks)
    for t, name in enumerate(tasks):
        task_rows = {row["variant"]: row for row in rows if row["task"] == name}
        loss = (lambda v: 1.0 - v) if task_rows[PLAIN]["metric"] == "accuracy" else (lambda v: v)
        base = loss(task_rows[PLAIN]["test_mean"])
        change = [100 * (loss(task_rows[v]["test_mean"]) / base - 1) for v in variants]
        spread = [100 * task_rows[v]["test_std"] / base for v in variants]
        axes.bar(np.arange(len(variants)) + t * width, change, width, yerr=spread, capsize=3,
                 label=f"{name} ({'test error' if name == 'digits' else 'bits/byte'})")
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xticks(np.arange(len(variants)) + width * (len(tasks) - 1) / 2)
    axes.set_xticklabels(variants, rotation=20, fontsize=8)
    axes.set_ylabel("% change vs plain (lower is better)")
    axes.set_title("Majority kernels vs the plain small model (best LR each; ±1 std)")
    axes.legend(fontsize=8)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke check")
    parser.add_argument("--tasks", default="digits,shakespeare")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--learning-rates", default="1e-3,3e-3,1e-2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--digits-hidden", type=int, default=64)
    parser.add_argument("--digits-epochs", type=int, default=15)
    parser.add_argument("--digits-train", type=int, default=4000, help="training examples")
    parser.add_argument("--lm-dim", type=int, default=64)
    parser.add_argument("--lm-layers", type=int, default=1)
    parser.add_argument("--lm-sequence", type=int, default=64)
    parser.add_argument("--lm-train-windows", type=int, default=4096)
    parser.add_argument("--lm-eval-windows", type=int, default=512)
    parser.add_argument("--lm-epochs", type=int, default=3)
    parser.add_argument("--digits-timing-steps", type=int, default=100)
    parser.add_argument("--lm-timing-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.variants, args.learning_rates, args.seeds = "plain,4:random_majority", "3e-3", "0,1"
        args.digits_hidden, args.digits_epochs, args.digits_train = 16, 1, 512
        args.lm_dim, args.lm_sequence, args.lm_train_windows = 16, 16, 128
        args.lm_eval_windows, args.lm_epochs, args.repeats = 32, 1, 2
        args.digits_timing_steps, args.lm_timing_steps = 10, 4
    args.tasks = args.tasks.split(",")
    args.variants = args.variants.split(",")
    args.learning_rates = [float(rate) for rate in args.learning_rates.split(",")]
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    for variant in args.variants:
        parse_variant(variant)
    if PLAIN not in args.variants:
        raise ValueError(
            f"`--variants` must include '{PLAIN}' (the baseline); got {args.variants}."
        )
    unknown = set(args.tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"Unknown `--tasks` {sorted(unknown)}; choose from {sorted(TASKS)}.")
    return args


def main(argv=None):
    from rich.progress import Progress

    args = parse_args(argv)
    total = len(args.tasks) * len(args.variants) * len(args.learning_rates) * len(args.seeds)
    rows, start, cpu_start = [], time.perf_counter(), time.process_time()
    with Progress() as bar:
        job = bar.add_task("majority study", total=total)
        for name in args.tasks:
            task = TASKS[name](args)
            rows += study_task(task, args, lambda text: bar.update(job, description=text),
                               lambda: bar.advance(job))
    print(f"study took {time.perf_counter() - start:.0f} s wall, "
          f"{time.process_time() - cpu_start:.0f} s CPU; learning rates {args.learning_rates}, "
          f"seeds {args.seeds}")
    columns = ["task", "variant", "metric", "best_lr", "test_mean", "test_std",
               "delta_vs_plain", "delta_std", "served_params", "step_ms", "overhead"]
    # A smoke check must not overwrite the study's results.
    report("majority_study_quick" if args.quick else "majority_study", rows, columns, plot=plot)


if __name__ == "__main__":
    main()
