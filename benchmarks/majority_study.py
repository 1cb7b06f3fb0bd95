"""Majority kernels against the plain small model: the design space, each at its best rate.

Tasks and regimes are in `majority_tasks.py` (an MLP on digits, a byte-level transformer on
Shakespeare, each also as a smaller model trained longer). A variant is written
`k:combine[:init][@placement]`:

- `combine`, how the `k` copies make one kernel per step (`keras_matta.layers.majority`):
  `random_majority` (a random strict majority of whole copies), `unit_majority` and
  `element_majority` (a fresh majority per output unit or per element, dropout-like),
  `random_convex` (Dirichlet weights), `learned` (softmax of trained logits), `median`, and
  `mean` (the symmetric control);
- `init`: `independent` (default) or `identical` copies; with identical copies the served mean
  starts as the plain model, so `k:mean:identical` with Adam *is* the plain model (Adam divides
  out the `1/k` gradient scale of the reparameterisation: no learning-rate compensation is
  needed, and the per-variant learning-rate grid below would absorb it anyway);
- `placement` (the LM only): `all` (blocks and head, default), `blocks`, or `ffn`.

Protocol: Adam, every learning rate of the grid and every seed (the seed fixes the
initialization, the draws and the order of the batches, identical across variants). After
training, `keras_matta.extract` collapses the copies into the served model (stock Keras layers,
the plain model's parameter count), scored on validation and test. Each variant keeps the
learning rate with the best mean validation metric; the table reports the test metric there,
mean and standard deviation over the seeds, and the paired difference from `plain` (mean, std,
and whether a paired t-test rejects "no difference" at 95%). The training-step overhead is the
median CPU time per step over `plain`'s, timed interleaved in the same process.

Each run is appended to a `--runs` JSON-lines file and reused when the same task settings,
variant, rate and seed come again: a one-seed screen of many variants, then three seeds of the
contenders, cost only the new runs.

Usage (one core; the commands that produced the committed results are in the README):
    export KERAS_BACKEND=jax JAX_CPU_ENABLE_ASYNC_DISPATCH=false OMP_NUM_THREADS=1 \
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    python benchmarks/majority_study.py --tasks digits --variants plain,4:unit_majority \
        --seeds 0,1,2 --name majority_design_study
    python benchmarks/majority_study.py --readme benchmarks/results/majority_design_study_jax.json
        # (several files, comma-separated, make one table)
    python benchmarks/majority_study.py --quick    # smoke check, < 1 min
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR  # noqa: E402
from common import report  # noqa: E402
from majority_tasks import PLAIN_VARIANT  # noqa: E402
from majority_tasks import TASKS  # noqa: E402
from majority_tasks import Variant  # noqa: E402
from majority_tasks import make_task  # noqa: E402

import keras_matta  # noqa: E402
from keras_matta.layers.majority import COMBINES  # noqa: E402
from keras_matta.layers.majority import INITS  # noqa: E402

PLAIN = "plain"
DEFAULT_VARIANTS = "plain,4:random_majority,4:unit_majority,4:element_majority,4:mean"
# Two-sided 95% critical values of Student's t by degrees of freedom (paired, n - 1).
T_CRITICAL = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}

# === Variants ===


def parse_variant(text):
    """`"plain"` or `"k:combine[:init][@placement]"` -> `Variant`.

    >>> parse_variant("4:unit_majority:identical@ffn")
    Variant(majority=4, combine='unit_majority', init='identical', placement='ffn')
    """
    if text == PLAIN:
        return PLAIN_VARIANT
    body, _, placement = text.partition("@")
    majority, _, rest = body.partition(":")
    combine, _, init = rest.partition(":")
    if (not majority.isdigit() or int(majority) < 2 or combine not in COMBINES
            or (init and init not in INITS) or (placement and "@" in placement)):
        raise ValueError(
            f"A variant is 'plain' or '<k >= 2>:<combine>[:<init>][@<placement>]' with combine "
            f"in {COMBINES} and init in {INITS}; got {text!r}."
        )
    return Variant(int(majority), combine, init or "independent", placement or "all")


# === One training run ===


def train_and_score(task, variant, learning_rate, seed):
    """Trains one variant from scratch; scores the extracted (served) model.

    Returns `{"validation", "test", "params"}`. The batch order depends on `seed` only, so
    every variant sees the same batches.
    """
    keras.utils.clear_session()
    keras.utils.set_random_seed(seed)
    model = task.build(variant, seed)
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


class RunCache:
    """Per-run results in a JSON-lines file, keyed by task settings, variant, rate and seed."""

    def __init__(self, path):
        self.path, self.runs = path, {}
        if path and os.path.exists(path):
            with open(path) as f:
                for line in f:
                    record = json.loads(line)
                    self.runs[record["key"]] = record["result"]

    @staticmethod
    def key(task, variant, learning_rate, seed):
        settings = json.dumps(dataclasses.asdict(task), sort_keys=True)
        return f"{settings}|{variant}|{learning_rate!r}|{seed}|{keras.backend.backend()}"

    def get(self, *key):
        return self.runs.get(self.key(*key))

    def put(self, result, *key):
        self.runs[self.key(*key)] = result
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps({"key": self.key(*key), "result": result}) + "\n")


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


def paired_verdict(differences, higher_is_better):
    """`"better"`, `"worse"` or `"="`: a two-sided paired t-test at 95% on per-seed differences.

    With one seed, or no spread between the differences, there is no noise estimate: `"="`
    (a one-seed screen never decides).
    """
    n = len(differences)
    mean, std = summarize(differences)
    if n < 2 or n - 1 not in T_CRITICAL or std == 0.0:
        return "="
    if abs(mean) / (std / np.sqrt(n)) <= T_CRITICAL[n - 1]:
        return "="
    return "better" if (mean > 0) == higher_is_better else "worse"


# === Step time ===


def step_milliseconds(task, variants, repeats, batch):
    """`{variant: median CPU milliseconds per training step}`, all variants timed interleaved.

    Steps are of `batch` examples. A step's time is `(t(2 * steps) - t(steps)) / steps` over
    `fit` calls (`steps = task.timing_steps`), so the fixed cost of a call cancels; each `t` is
    the median of `repeats` interleaved runs after a compiling one. `t` is the process's CPU
    time, not wall time: with one thread per process it is the work done, whatever else shares
    the machine.
    """
    steps = task.timing_steps
    longest = 2 * steps * batch
    x, y = (np.resize(a, (longest,) + a.shape[1:]) for a in task.train)  # repeated if short
    runs = {}
    for variant in variants:
        model = task.build(parse_variant(variant), seed=0)
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        for multiple in (1, 2):
            def run(model=model, n=multiple * steps * batch):
                model.fit(x[:n], y[:n], batch_size=batch, epochs=1, shuffle=False, verbose=0)

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


def study_task(task, args, cache, progress, advance):
    """Rows (one per variant) for one task."""
    variants = [v for v in args.variants
                if parse_variant(v).placement in type(task).placements]
    runs = {}  # (variant, learning_rate) -> [result per seed]
    for variant in variants:
        for rate in args.learning_rates:
            for seed in args.seeds:
                progress(f"{task.name} {variant} lr={rate:g} seed={seed}")
                result = cache.get(task, variant, rate, seed)
                if result is None:
                    result = train_and_score(task, parse_variant(variant), rate, seed)
                    cache.put(result, task, variant, rate, seed)
                runs.setdefault((variant, rate), []).append(result)
                advance()
    progress(f"{task.name}: step times")
    timing_batch = args.timing_batch or task.batch
    milliseconds = step_milliseconds(task, variants, args.repeats, timing_batch)
    rows = []
    for variant in variants:
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
            "timing_batch": timing_batch,
            "overhead": milliseconds[variant] / milliseconds[PLAIN],
            "settings": dataclasses.asdict(task),
        })
    plain = next(row for row in rows if row["variant"] == PLAIN)
    for row in rows:
        # Paired by seed: a seed fixes the batch order for every variant.
        paired = np.subtract(row["test_per_seed"], plain["test_per_seed"])
        row["delta_vs_plain"], row["delta_std"] = summarize(paired)
        row["verdict"] = paired_verdict(paired, task.higher_is_better)
    return rows


def plot(axes, rows):
    """Relative change of test error (digits: 1 - accuracy) or bits per byte vs plain."""
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    width = 0.8 / len(tasks)
    for t, name in enumerate(tasks):
        task_rows = {row["variant"]: row for row in rows if row["task"] == name}
        loss = (lambda v: 1.0 - v) if task_rows[PLAIN]["metric"] == "accuracy" else (lambda v: v)
        base = loss(task_rows[PLAIN]["test_mean"])
        change = [100 * (loss(task_rows[v]["test_mean"]) / base - 1) if v in task_rows
                  else np.nan for v in variants]
        spread = [100 * task_rows[v]["delta_std"] / base if v in task_rows else 0.0
                  for v in variants]
        axes.bar(np.arange(len(variants)) + t * width, change, width, yerr=spread, capsize=2,
                 label=f"{name} ({'test error' if name.startswith('digits') else 'bits/byte'})")
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xticks(np.arange(len(variants)) + width * (len(tasks) - 1) / 2)
    axes.set_xticklabels(variants, rotation=35, ha="right", fontsize=6)
    axes.set_ylabel("% change vs plain (lower is better)")
    axes.set_title("Majority kernels vs the plain small model (best LR each; ±1 paired std)",
                   fontsize=9)
    axes.legend(fontsize=6)


def readme_table(rows):
    """The README's markdown table of a results file's rows (quality only: a quality study's
    timings share the machine with its training runs; `timing_table` reads a timing run)."""
    lines = ["| task | variant | seeds | best LR | test (mean ± std) | Δ vs plain (paired) | "
             "verdict |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['task']} | `{row['variant']}` | {len(row['seeds'])} | {row['best_lr']:g} | "
            f"{row['test_mean']:.4f} ± {row['test_std']:.4f} | "
            f"{row['delta_vs_plain']:+.4f} ± {row['delta_std']:.4f} | {row['verdict']} |"
        )
    lines.append("\nAccuracy: higher is better; bits per byte: lower. Verdict: a two-sided paired "
                 "t-test over seeds at 95% (one seed never decides).")
    return "\n".join(lines)


def timing_table(rows):
    """The README's markdown table of training-step time against the plain model."""
    lines = ["| task | variant | batch | step (ms) | step time / plain |", "|---|---|---|---|---|"]
    for row in rows:
        batch = row.get("timing_batch", row["settings"]["batch"])
        lines.append(f"| {row['task']} | `{row['variant']}` | {batch} | {row['step_ms']:.2f} | "
                     f"{row['overhead']:.2f}x |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke check")
    parser.add_argument("--tasks", default="digits,shakespeare", help=f"of {sorted(TASKS)}")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--learning-rates", default="1e-3,3e-3,1e-2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing runs")
    parser.add_argument("--timing-batch", type=int, default=None,
                        help="batch size of the timed steps (default: the task's)")
    parser.add_argument("--name", default="majority_design_study", help="results file stem")
    parser.add_argument("--runs", default=os.path.join(RESULTS_DIR, "majority_runs.jsonl"),
                        help="JSON-lines cache of single runs ('' for none)")
    parser.add_argument("--readme", metavar="JSON[,JSON...]",
                        help="print the README table of results files")
    parser.add_argument("--readme-timing", metavar="JSON[,JSON...]",
                        help="print the README step-time table of timing results files")
    args = parser.parse_args(argv)
    if args.quick:
        args.variants, args.learning_rates, args.seeds = "plain,4:unit_majority", "3e-3", "0,1"
        args.repeats, args.name, args.runs = 2, "majority_design_study_quick", ""
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
    if args.readme or args.readme_timing:
        rows = []
        for path in (args.readme or args.readme_timing).split(","):
            with open(path) as f:
                rows += json.load(f)["rows"]
        print(readme_table(rows) if args.readme else timing_table(rows))
        return
    cache = RunCache(args.runs)
    total = len(args.tasks) * len(args.variants) * len(args.learning_rates) * len(args.seeds)
    rows, start, cpu_start = [], time.perf_counter(), time.process_time()
    with Progress() as bar:
        job = bar.add_task("majority study", total=total)
        for name in args.tasks:
            task = make_task(name, quick=args.quick)
            rows += study_task(task, args, cache,
                               lambda text: bar.update(job, description=text),
                               lambda: bar.advance(job))
    print(f"study took {time.perf_counter() - start:.0f} s wall, "
          f"{time.process_time() - cpu_start:.0f} s CPU; learning rates {args.learning_rates}, "
          f"seeds {args.seeds}")
    columns = ["task", "variant", "best_lr", "test_mean", "test_std", "delta_vs_plain",
               "delta_std", "verdict", "served_params", "step_ms", "overhead"]
    report(args.name, rows, columns, plot=plot)


if __name__ == "__main__":
    main()
