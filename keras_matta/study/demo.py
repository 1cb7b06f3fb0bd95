"""The demo study: the paper's comparison, at small scale, on the embedded data.

For each task (digits, language model) and seed:

1. the Teacher (a wider model) is trained once with Adam and cached on disk;
2. for Adam and for Shampoo: a model trained separately at every trained size of the family
   (the Students' widths and the TA's; the one at the Student's width is "the Student
   alone"), the Student distilled from the Teacher, and MatTA (the TA and its nested Students
   trained together, with the Teacher); with Adam also the Student with majority kernels
   (`config.majority` copies of each kernel, served collapsed at the Student's size);
3. the family (the Students' widths; in-between widths and Mix'n'Match models, no Student's) is
   extracted from each MatTA TA with `keras_matta.extract`, and every model is evaluated on
   the held-out test split, with its parameters and FLOPs from `keras_matta.cost`.

Results: `results.json` (every measured row, the aggregate over seeds, the claims summary,
the family against separate training, the settings and the environment),
`quality_vs_params.png`, and tables on the console.
"""

import os
import pathlib
import platform
import time

import keras

import keras_matta
from keras_matta import widths as widths_lib
from keras_matta.data import final_word_examples
from keras_matta.data import load_task
from keras_matta.study import metrics as metrics_lib
from keras_matta.study import report
from keras_matta.study import runs
from keras_matta.study.config import METHODS
from keras_matta.study.config import preset

TASK_DATA = {"digits": "digits", "lm": "shakespeare"}


def evaluate(model, task_data, config, split, final_words=None):
    """The task's metrics of `model` on `split` (with a progress bar for the language model)."""
    if config.task == "digits":
        x, y = getattr(task_data, split)
        return metrics_lib.classification_metrics(model, x, y)
    from rich.progress import Progress

    x, y = runs.evaluation_windows(task_data, config, split)
    batches = -(-len(x) // 256)
    decode_steps = 0 if final_words is None else max(len(t) for t in final_words[1]) + 1
    with Progress() as progress:
        bar = progress.add_task(f"  evaluate {model.name}", total=batches + decode_steps)
        advance = lambda: progress.advance(bar)  # noqa: E731
        result = {"bits_per_byte": metrics_lib.bits_per_byte(model, x, y, on_batch=advance)}
        if final_words is not None:
            result["final_word_accuracy"] = metrics_lib.final_word_accuracy(
                model, *final_words, on_step=advance)
    return result


def _row(task, seed, method, optimizer, width, label, model_cost, metrics, seconds, role=None):
    return {"task": task, "seed": seed, "method": method, "optimizer": optimizer,
            "width": width, "label": label, "role": role, "params": int(model_cost["params"]),
            "flops": int(model_cost["flops"]), "metrics": metrics, "train_seconds": seconds}


def run_task(config, cache_dir, split="test", optimizers=runs.OPTIMIZERS, retrain_teacher=False,
             methods=METHODS):
    """Runs the study of one task (the `methods` of `config.METHODS`); returns its measured rows.

    Every row has `train_seconds`: its own run's for the Teacher (0 when cached), a separate
    model and the KD Student; for a family member, the one MatTA run's that trained the whole
    family.
    """
    print(f"\n=== {config.task}: loading data", flush=True)
    task_data = load_task(TASK_DATA[config.task])
    print(f"  {task_data.description}; sizes {task_data.sizes()}", flush=True)
    final_words = None
    if config.task == "lm":
        text = getattr(task_data, split).tobytes().decode("utf-8")
        final_words = final_word_examples(text, config.sequence_length,
                                          max_examples=config.final_word_examples)
    rows, teacher = [], None
    if {"kd", "matta"} & set(methods):  # the only methods that learn from the Teacher
        teacher, info = runs.teacher(task_data, config, cache_dir, retrain=retrain_teacher)
        rows.append(_row(config.task, 0, "teacher", "adam", None, "Teacher",
                         keras_matta.cost(teacher),
                         evaluate(teacher, task_data, config, split, final_words),
                         info["seconds"]))
    student_label = widths_lib.width_label(config.student_fraction)
    for seed in config.seeds:
        for optimizer in optimizers:
            print(f"\n=== {config.task}, seed {seed}, {optimizer}", flush=True)
            for fraction in config.trained_widths if "separate" in methods else ():
                label = widths_lib.width_label(fraction)
                model, result = runs.separate(task_data, config, optimizer, seed, fraction)
                # Final-word accuracy (decoding: the slowest metric) only for the main table.
                words = final_words if label == student_label else None
                rows.append(_row(config.task, seed, "separate", optimizer, label, label,
                                 keras_matta.cost(model),
                                 evaluate(model, task_data, config, split, words),
                                 result["seconds"], role="trained"))
            if "kd" in methods:
                model, result = runs.distilled_student(task_data, config, optimizer, seed,
                                                       teacher)
                rows.append(_row(config.task, seed, "kd", optimizer, None,
                                 runs.METHOD_TITLES["kd"], keras_matta.cost(model),
                                 evaluate(model, task_data, config, split, final_words),
                                 result["seconds"]))
            if "majority" in methods and optimizer == "adam" and config.majority > 1:
                model, result = runs.majority_student(task_data, config, optimizer, seed)
                rows.append(_row(config.task, seed, "majority", optimizer, None,
                                 f"{runs.METHOD_TITLES['majority']} (k={config.majority})",
                                 keras_matta.cost(model),
                                 evaluate(model, task_data, config, split, final_words),
                                 result["seconds"]))
            if "matta" not in methods:
                continue
            ta, result = runs.matta(task_data, config, optimizer, seed, teacher)
            rows.extend(_family_rows(ta, config, task_data, split, final_words, seed, optimizer,
                                     result["seconds"], student_label))
    return rows


def _family_rows(ta, config, task_data, split, final_words, seed, optimizer, seconds,
                 student_label):
    from rich.progress import Progress

    rows = []
    with Progress(transient=False) as progress:
        bar = progress.add_task(f"  extract + evaluate {len(config.family)} models",
                                total=len(config.family))
        for spec in config.family:
            label = widths_lib.width_label(spec)
            role = ("mix" if isinstance(spec, dict) else
                    "trained" if spec in config.trained_widths else "in-between")
            model = keras_matta.extract(ta, spec)
            # Final-word accuracy only for the main table's MatTA Student and TA.
            words = final_words if label in (student_label, "1") else None
            rows.append(_row(config.task, seed, "matta", optimizer, label, label,
                             keras_matta.cost(ta, spec),
                             evaluate(model, task_data, config, split, words), seconds,
                             role=role))
            progress.advance(bar)
    return rows


def environment():
    """Backend, versions and machine, written next to the results."""
    import numpy

    return {
        "backend": keras.backend.backend(), "keras": keras.__version__,
        "keras_matta": keras_matta.__version__, "numpy": numpy.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def run_demo(tasks=("digits", "lm"), mode="default", seeds=None, output_dir="matta_demo",
             cache_dir=None, split="test", retrain_teacher=False, methods=METHODS):
    """Runs the study and writes `results.json` and `quality_vs_params.png` to `output_dir`.

    Args:
        tasks: any of `"digits"`, `"lm"`.
        mode: `"quick"`, `"default"` or `"full"` (see `keras_matta.study.config`).
        seeds: seeds of the Student/TA runs; defaults to the mode's (`full`: 0, 1, 2).
        output_dir: where the results go (created).
        cache_dir: where Teachers are cached (default `~/.cache/keras_matta`).
        split: the split evaluated: `"test"` (reported) or `"validation"` (for tuning).
        retrain_teacher: ignore a cached Teacher.
        methods: the methods of `config.METHODS` to run (default: all). A run of some of them
            replaces their rows in a full run's results:
            `python -m keras_matta.study.report FULL.json --merge FULL.json PART.json --replace`.

    Returns:
        The JSON payload (also written to `output_dir/results.json`).

    Example:

    ```python
    from keras_matta.study.demo import run_demo
    run_demo(tasks=("digits",), mode="quick", output_dir="/tmp/demo")
    ```
    """
    if not methods or set(methods) - set(METHODS):
        raise ValueError(f"`methods` must be a non-empty subset of {METHODS}; got {methods!r}.")
    start = time.perf_counter()
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = pathlib.Path(cache_dir) if cache_dir else runs.default_cache_dir()
    configs = {task: preset(task, mode) for task in tasks}
    if seeds is not None:
        configs = {task: config.with_seeds(seeds) for task, config in configs.items()}
    rows = []
    for config in configs.values():
        rows.extend(run_task(config, cache_dir, split=split, retrain_teacher=retrain_teacher,
                             methods=methods))
    results = report.aggregate(rows)
    summaries = {task: report.summary(results, task, widths_lib.width_label(c.student_fraction))
                 for task, c in configs.items()}
    plot_path = output_dir / "quality_vs_params.png"
    plotted = "matta" in methods  # the plot is of the family
    if plotted:
        report.plot(results, plot_path, split)
    payload = {
        "mode": mode, "split": split, "seconds": time.perf_counter() - start,
        "environment": environment(),
        "settings": {task: _settings(c) for task, c in configs.items()},
        "summary": summaries, "family_vs_separate": report.family_vs_separate(rows),
        "results": results, "rows": rows,
    }
    report.write_json(output_dir / "results.json", payload)
    print()
    if set(methods) == set(METHODS):
        report.print_tables(payload)
    else:  # the claims compare methods that did not run: the main table only
        for task, config in configs.items():
            student = widths_lib.width_label(config.student_fraction)
            print(report.markdown_table(*report.table_rows(results, task, student)) + "\n")
    written = f" and {plot_path}" if plotted else ""
    print(f"Wrote {output_dir / 'results.json'}{written} "
          f"({payload['seconds']:.0f} s, backend {keras.backend.backend()}).")
    return payload


def _settings(config):
    import dataclasses

    settings = dataclasses.asdict(config)
    settings["trained_widths"] = list(config.trained_widths)
    settings["family"] = [widths_lib.width_label(spec) for spec in config.family]
    return settings
