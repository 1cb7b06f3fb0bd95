"""Timing and reporting shared by the benchmarks (run by hand, never in CI)."""

import json
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
