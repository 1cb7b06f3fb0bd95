"""The searched Mix'n'Match model against the best uniform width under the same budget.

For each embedded task and seed: a TA trained by `keras-matta train` (default preset, Shampoo,
Students at 0.25, 0.5, 0.75 and the recipe's drawn sub-networks; the seed sets the training,
the data splits stay seed 0's), then one exhaustive `keras_matta.search` over per-layer widths
on the *validation* split (no budget: the whole front), then for each parameter budget the
best front point within it and the best uniform width within it, both measured again on the
*test* split (the search never saw it). `lm+depth` searches the same LM TAs with elastic depth
too (`drop_blocks=True`: each block may also be dropped).

Budgets: halfway between the parameter counts of consecutive uniform widths, where a mix can
use the room a uniform model leaves unused.

    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/search_vs_uniform.py \
        [--task digits lm lm+depth] [--seeds 0 1 2]
    python benchmarks/search_vs_uniform.py --table    # the README table, from the JSON

Writes `benchmarks/results/search_vs_uniform.json` (merged per task and seed) and prints a table.
"""

import argparse
import collections
import json
import pathlib
import time

import keras
import numpy as np

import keras_matta
from keras_matta import commands
from keras_matta.data import load_task
from keras_matta.study import metrics as metrics_lib
from keras_matta.study import runs

RESULTS = pathlib.Path(__file__).parent / "results" / "search_vs_uniform.json"
CHOICES = {"digits": (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0),
           "lm": (0.25, 0.5, 0.75, 1.0), "lm+depth": (0.25, 0.5, 0.75, 1.0)}
SOURCES = {"digits": "digits", "lm": "shakespeare", "lm+depth": "shakespeare"}


def test_quality(model, task, task_data, config):
    """Accuracy (digits) or bits per byte (LM) on the test split, as `keras-matta evaluate`."""
    if task == "digits":
        x, y = task_data.test
        return metrics_lib.classification_metrics(model, x, y)["accuracy"]
    x, y = runs.evaluation_windows(task_data, config, "test")
    return metrics_lib.bits_per_byte(model, x, y)


def run(task, work_dir, seed):
    model_task = task.split("+")[0]  # lm+depth searches the lm TA
    ta_path = work_dir / f"ta_{model_task}_seed{seed}.keras"
    start = time.perf_counter()
    if not ta_path.exists():
        commands.train(SOURCES[task], ta_path, mode="default", seed=seed)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = commands.search(ta_path, SOURCES[task], work_dir / f"search_{task}_seed{seed}",
                             choices=CHOICES[task], strategy="exhaustive",
                             drop_blocks=task.endswith("+depth"))
    search_seconds = time.perf_counter() - start
    ta = commands.load_model(ta_path)
    task_data = load_task(SOURCES[task], seed=0)
    config = commands.config_for(task_data, "default", None if task == "digits"
                                 else ta.input_shape[1])
    uniform = result.uniform
    budgets = [(a.costs["params"] + b.costs["params"]) // 2 for a, b in zip(uniform, uniform[1:])]
    rows = []
    for budget in budgets:
        searched = [p for p in result.front if p.costs["params"] <= budget][-1]
        fits = [p for p in uniform if p.costs["params"] <= budget]
        best_uniform = (max if result.maximize else min)(fits, key=lambda p: p.quality)
        row = {"budget_params": budget}
        for name, point in (("searched", searched), ("uniform", best_uniform)):
            model = keras_matta.extract(ta, point.widths)
            row[name] = {"label": point.label, "uniform": point.uniform,
                         "params": point.costs["params"], "flops": point.costs["flops"],
                         "validation": point.quality,
                         "test": test_quality(model, task, task_data, config)}
        rows.append(row)
        print(task, seed, budget, row, flush=True)
    return {"objective": result.objective, "maximize": result.maximize,
            "choices": list(CHOICES[task]), "candidates": len(result.measured),
            "train_seconds": train_seconds, "search_seconds": search_seconds,
            "front": [p.to_dict() for p in result.front],
            "uniform": [p.to_dict() for p in uniform], "budgets": rows}


def markdown(payload):
    """The README table, generated from the JSON: per budget, the searched model's test metric
    minus the best uniform width's, paired by seed."""
    lines = ["| task | params budget | best uniform width | searched models (seeds) | "
             "test: searched − uniform, mean ± std | seeds where searched is better / worse |",
             "|---|---|---|---|---|---|"]
    for task, result in payload["tasks"].items():
        seeds = sorted(result["seeds"], key=int)
        maximize = result["seeds"][seeds[0]]["maximize"]
        metric = "accuracy" if maximize else "bits/byte"
        per_budget = zip(*(result["seeds"][seed]["budgets"] for seed in seeds))
        for rows in per_budget:
            deltas = np.array([r["searched"]["test"] - r["uniform"]["test"] for r in rows])
            better = int(np.sum(deltas > 0 if maximize else deltas < 0))
            worse = int(np.sum(deltas < 0 if maximize else deltas > 0))
            uniform = collections.Counter(f"{r['uniform']['uniform']:g}" for r in rows)
            searched = collections.Counter(
                "uniform" if r["searched"]["label"] == r["uniform"]["label"]
                else r["searched"]["label"] for r in rows)
            std = deltas.std(ddof=1) if len(deltas) > 1 else 0.0
            lines.append(
                f"| {task} ({metric}) | {rows[0]['budget_params'] / 1e3:.1f}k | "
                f"{_counts(uniform)} | {_counts(searched)} | "
                f"{deltas.mean():+.4f} ± {std:.4f} | {better} / {worse} of {len(rows)} |")
    return "\n".join(lines)


def _counts(counter):
    return ", ".join(f"{key} ({n})" if n > 1 else key for key, n in counter.most_common())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", choices=sorted(CHOICES),
                        default=["digits", "lm", "lm+depth"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work-dir", default="/tmp/search_vs_uniform")
    parser.add_argument("--table", action="store_true",
                        help="print the README table from the committed JSON and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(RESULTS.read_text())))
        return
    work_dir = pathlib.Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    payload = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"tasks": {}}
    for task in args.task:
        for seed in args.seeds:
            entry = payload["tasks"].setdefault(task, {"seeds": {}})
            entry["seeds"][str(seed)] = run(task, work_dir, seed)
            payload["backend"] = keras.backend.backend()
            RESULTS.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"Wrote {RESULTS}")
    print(markdown(payload))


if __name__ == "__main__":
    main()
