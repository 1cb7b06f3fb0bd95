"""Inference latency of Mat layers and of extracted models, on the current backend.

Two comparisons, each a ratio to a stock Keras model of the same shape:

1. an MLP of `MatDense` layers at full width vs the same MLP of `keras.layers.Dense` (the
   cost of the Mat layer's slicing machinery when nothing is sliced);
2. at each width `w` of `--widths`: the Mat MLP run at `w` (runtime slicing, in a
   `WidthScope`) and `keras_matta.extract` of it at `w`, each vs a stock MLP built directly
   at that size (the extracted model should cost what the stock one does: it *is* one).

Every model is compiled as a served model runs (`jit_compile` on JAX and TensorFlow; torch
runs eagerly) and called through `predict_on_batch`. All arms are timed in one process, in
turns (`common.interleaved_seconds`): an earlier version timed them one after the other, and
on a shared 2-core machine a stock model came out 250x slower than the same-size sliced one.
The table reports the median of the per-round ratios with its 95 % interval
(`common.ratio_summary`), the same ratio in process CPU time, and, for scale only, the median
time per call.

Usage:
    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/mat_layer_latency.py \\
        [--batch 256] [--rounds 100] [--calls 5] [--widths 0.5 0.25]
    python benchmarks/mat_layer_latency.py --table   # the README table, from the JSON

Writes benchmarks/results/mat_layer_latency_<backend>.json and .png.
"""

import argparse
import contextlib
import json
import sys

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import RESULTS_DIR  # noqa: E402
from common import interleaved_seconds  # noqa: E402
from common import pin_threads  # noqa: E402
from common import ratio_summary  # noqa: E402
from common import report  # noqa: E402

import keras_matta  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")


def mlp(layer_cls, hidden, depth, d_in, classes, **head_kwargs):
    # Functional, as `extract` returns: every arm runs the same model class's predict step.
    inputs = keras.Input((d_in,))
    x = inputs
    for _ in range(depth):
        x = layer_cls(hidden, activation="relu")(x)
    return keras.Model(inputs, layer_cls(classes, **head_kwargs)(x))


def compiled_forward(model, x):
    """`fn()` running the compiled inference of `model` on `x`, as a served model would."""
    model.compile(jit_compile=keras.backend.backend() != "torch")
    model.make_predict_function()
    return lambda: model.predict_on_batch(x)


def arms(args, x, scopes):
    """`[(case, model name, baseline name, params, fn)]`, one per timed model.

    The runtime-sliced models stay inside their `WidthScope` (entered on `scopes`) while they
    are timed: leaving it discards their compiled functions.
    """
    d_in, classes = x.shape[1], 10
    dense = mlp(keras.layers.Dense, args.hidden, args.depth, d_in, classes)
    mat = mlp(keras_matta.MatDense, args.hidden, args.depth, d_in, classes, nested=False)
    mat.set_weights(dense.get_weights())
    found = [
        ("full width", "Dense MLP", "Dense MLP", dense.count_params(), compiled_forward(dense, x)),
        ("full width", "MatDense MLP", "Dense MLP", mat.count_params(), compiled_forward(mat, x)),
    ]
    for fraction in args.widths:
        case = f"width {fraction:g}"
        stock = mlp(keras.layers.Dense, round(fraction * args.hidden), args.depth, d_in, classes)
        # Its own copy of the Mat MLP, so each width keeps its own compiled function.
        sliced = mlp(keras_matta.MatDense, args.hidden, args.depth, d_in, classes, nested=False)
        sliced.set_weights(mat.get_weights())
        scopes.enter_context(keras_matta.WidthScope(sliced, fraction))
        extracted = keras_matta.extract(mat, fraction)
        # The same function, three ways: a check that the arms compare like with like.
        np.testing.assert_allclose(keras.ops.convert_to_numpy(sliced(x)),
                                   keras.ops.convert_to_numpy(extracted(x)), rtol=1e-4, atol=1e-4)
        params = keras_matta.cost(mat, fraction)["params"]
        assert stock.count_params() == extracted.count_params() == params
        stock_name = f"stock MLP at {fraction:g}"
        found += [
            (case, stock_name, stock_name, params, compiled_forward(stock, x)),
            (case, "Mat MLP, runtime slicing", stock_name, params, compiled_forward(sliced, x)),
            (case, "extracted", stock_name, params, compiled_forward(extracted, x)),
        ]
    return found


def plot(axes, rows, batch, backend):
    labels = [f"{r['case']}: {r['model']}" for r in rows]
    ratios = np.array([r["ratio"] for r in rows])
    spread = np.array([[r["ratio"] - r["ratio_ci_low"] for r in rows],
                       [r["ratio_ci_high"] - r["ratio"] for r in rows]])
    axes.barh(labels, ratios, xerr=spread, capsize=3)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xlabel(f"latency / stock model of the same size (median of interleaved rounds, "
                    f"95 % interval)\nbatch {batch}, {backend}, CPU")
    axes.invert_yaxis()


def markdown():
    """The README table: every backend's committed JSON, one column of ratios per backend."""
    results = {}
    for backend in BACKENDS:
        try:
            with open(f"{RESULTS_DIR}/mat_layer_latency_{backend}.json") as f:
                results[backend] = json.load(f)["rows"]
        except FileNotFoundError:
            continue
    first = next(iter(results.values()))
    lines = ["| case | model | params | " + " | ".join(
                 f"{backend}: wall [95 % interval] / CPU" for backend in results) + " |",
             "|---|---|---|" + "---|" * len(results)]
    for i, row in enumerate(first):
        if row["model"] == row.get("baseline"):
            continue  # the baseline's own ratio is 1 by construction
        cells = []
        for rows in results.values():
            r = rows[i]
            cells.append(f"{r['ratio']:.2f} [{r['ratio_ci_low']:.2f}, {r['ratio_ci_high']:.2f}]"
                         f" / {r['cpu_ratio']:.2f}")
        lines.append(f"| {row['case']} | {row['model']} vs {row['baseline']} | "
                     f"{row['params'] / 1e6:.2f}M | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--widths", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--rounds", type=int, default=100, help="turns of each model")
    parser.add_argument("--calls", type=int, default=5, help="calls per turn")
    parser.add_argument("--table", action="store_true",
                        help="print the README table from the committed JSON and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown())
        return
    pin_threads()
    x = np.random.default_rng(0).standard_normal((args.batch, 512)).astype("float32")
    with contextlib.ExitStack() as scopes:
        timed = arms(args, x, scopes)
        # Names are unique per case (the stock baselines carry their width).
        times = interleaved_seconds({(case, name): fn for case, name, _, _, fn in timed},
                                    rounds=args.rounds, calls=args.calls)
    rows = []
    for case, name, baseline, params, _ in timed:
        key, base = (case, name), (case, baseline)
        rows.append({
            "case": case, "model": name, "baseline": baseline, "params": params,
            **ratio_summary(times, key, base),
            **{f"cpu_{k}": v for k, v in ratio_summary(times, key, base, clock="cpu").items()},
            "ms": 1e3 * float(np.median(times[key]["wall"])),
            "batch": args.batch, "rounds": args.rounds, "calls": args.calls,
        })
    report("mat_layer_latency", rows,
           ["case", "model", "params", "ratio", "ratio_ci_low", "ratio_ci_high", "cpu_ratio",
            "ms"],
           lambda axes, rows: plot(axes, rows, args.batch, keras.backend.backend()))


if __name__ == "__main__":
    main()
