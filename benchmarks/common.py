"""Timing and reporting shared by the benchmarks (run by hand, never in CI)."""

import json
import math
import os
import platform
import time

import keras
import numpy as np

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")


def median_seconds(fn, repeats=30, warmup=3):
    """Median wall time of `fn()` after `warmup` calls (compilation excluded)."""
    for _ in range(warmup):
        _block(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _block(value):
    # Asynchronous backends (JAX, torch on GPU) return before the work is done.
    if hasattr(value, "block_until_ready"):
        value.block_until_ready()
    else:
        keras.ops.convert_to_numpy(value)


def environment():
    return {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def report(name, rows, columns, plot=None):
    """Prints `rows` as a table, writes them as JSON (and a PNG if `plot` is given).

    Args:
        name: file stem under benchmarks/results/.
        rows: list of dicts.
        columns: the keys to print, in order.
        plot: optional `fn(matplotlib_axes, rows)` drawing the figure.
    """
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stem = os.path.join(RESULTS_DIR, f"{name}_{keras.backend.backend()}")
    payload = {"benchmark": name, "environment": environment(), "rows": rows}
    with open(stem + ".json", "w") as f:
        json.dump(payload, f, indent=2)
    print(json.dumps(payload))
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(_fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths)))
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(figsize=(7, 4))
        plot(axes, rows)
        fig.tight_layout()
        fig.savefig(stem + ".png", dpi=120)
        print(f"wrote {stem}.json and {stem}.png")
    else:
        print(f"wrote {stem}.json")


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def interleaved_seconds(fns, rounds=30, calls=5, warmup=3):
    """Wall and CPU seconds per call of each `fns[name]()`, timed in turns in one process.

    Each round runs every function `calls` times in a row, the arms in order on even rounds and
    in reverse order on odd ones (A B, then B A), so a slow drift of the machine (another
    process, clocks) falls on all arms alike and no arm always follows the same one. Compare
    arms by their per-round ratios (`ratio_summary`): absolute times on a shared machine move by
    tens of percent between runs, the ratio of two turns a few milliseconds apart does not.

    Args:
        fns: `{name: fn}`; `fn()` runs one call and returns its output (blocked on).
        rounds: turns per arm.
        calls: calls per turn.
        warmup: untimed calls of each arm first (compilation, caches).

    Returns:
        `{name: {"wall": [seconds per call, one per round], "cpu": [...]}}`.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            _block(fns[name]())
    times = {name: {"wall": [], "cpu": []} for name in names}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            fn = fns[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                _block(fn())
            times[name]["wall"].append((time.perf_counter() - start) / calls)
            times[name]["cpu"].append((time.process_time() - start_cpu) / calls)
    return times


def ratio_summary(times, name, baseline, clock="wall"):
    """Median, quartiles and a 95 % interval of the median of the per-round ratios
    `times[name] / times[baseline]`.

    The quartiles say how much one round's ratio scatters; the interval says how well the
    median is known (distribution-free: order statistics of the `n` ratios, as for a sign
    test; it needs `n >= 6`, else it spans all the ratios).

    Args:
        times: what `interleaved_seconds` returns.
        name: the arm measured.
        baseline: the arm it is divided by (timed in the same rounds).
        clock: `"wall"` or `"cpu"` (process CPU time: steadier when other processes compete
            for the cores, but blind to time spent waiting).

    Returns:
        `{"ratio", "ratio_q25", "ratio_q75", "ratio_ci_low", "ratio_ci_high"}`.
    """
    ratios = np.sort(np.asarray(times[name][clock]) / np.asarray(times[baseline][clock]))
    q25, median, q75 = np.percentile(ratios, [25, 50, 75])
    # The median lies below r_(k) (0-based order statistics) when at most k of the n ratios
    # do: probability P(Binomial(n, 1/2) <= k). Take the largest k where that is <= 2.5 %.
    n, k, tail = len(ratios), -1, 0.0
    while k + 1 < n // 2 and tail + math.comb(n, k + 1) / 2**n <= 0.025:
        k += 1
        tail += math.comb(n, k) / 2**n
    k = max(k, 0)
    return {"ratio": float(median), "ratio_q25": float(q25), "ratio_q75": float(q75),
            "ratio_ci_low": float(ratios[k]), "ratio_ci_high": float(ratios[n - 1 - k])}


def pin_threads():
    """Runs each backend's kernels on `OMP_NUM_THREADS` threads (if set), as BLAS does.

    `OMP_NUM_THREADS` alone does not reach TensorFlow's or XLA's own thread pools; on a small
    shared machine their extra threads make timings swing. Call before the first operation.
    """
    threads = os.environ.get("OMP_NUM_THREADS")
    if not threads:
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    elif backend == "torch":
        import torch

        torch.set_num_threads(int(threads))
    elif backend == "jax" and int(threads) == 1:
        # Read when XLA's CPU client starts, on the first operation.
        flags = os.environ.get("XLA_FLAGS", "")
        if "multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (
                f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            ).strip()
