"""Inference latency of Mat layers and of extracted models, on the current backend.

Two comparisons, each measured in one run so the ratios are meaningful on a noisy machine:

1. `MatDense` at full width vs `keras.layers.Dense` of the same shape (cost of slicing);
2. an MLP of `MatDense` layers run at width `w` (runtime slicing) vs `keras_matta.extract` of
   it at `w` vs a stock MLP built directly at that size (the extracted model should cost what
   the stock one does).

Usage:
    KERAS_BACKEND=jax python benchmarks/mat_layer_latency.py [--batch 256] [--repeats 50]
"""

import argparse
import sys

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import median_seconds, report  # noqa: E402

import keras_matta  # noqa: E402


def mlp(layer_cls, hidden, depth, d_in, classes, **head_kwargs):
    layers = [keras.Input((d_in,))]
    layers += [layer_cls(hidden, activation="relu") for _ in range(depth)]
    layers.append(layer_cls(classes, **head_kwargs))
    return keras.Sequential(layers)


def compiled_forward(model):
    # The benchmark times compiled inference, as a served model would run.
    model.compile(jit_compile=keras.backend.backend() != "torch")
    model.make_predict_function()
    return lambda x: model.predict_on_batch(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    d_in, classes = 512, 10
    x = np.random.randn(args.batch, d_in).astype("float32")
    rows = []

    dense = mlp(keras.layers.Dense, args.hidden, args.depth, d_in, classes)
    mat = mlp(keras_matta.MatDense, args.hidden, args.depth, d_in, classes, nested=False)
    mat.set_weights(dense.get_weights())
    dense_forward, mat_forward = compiled_forward(dense), compiled_forward(mat)
    t_dense = median_seconds(lambda: dense_forward(x), args.repeats)
    t_mat = median_seconds(lambda: mat_forward(x), args.repeats)
    rows.append(
        {"case": "full width", "model": "Dense MLP", "ms": 1e3 * t_dense, "ratio": 1.0,
         "params": dense.count_params()}
    )
    rows.append(
        {"case": "full width", "model": "MatDense MLP", "ms": 1e3 * t_mat,
         "ratio": t_mat / t_dense, "params": mat.count_params()}
    )

    for fraction in (0.5, 0.25):
        with keras_matta.WidthScope(mat, fraction):
            sliced = compiled_forward(mat)
            t_sliced = median_seconds(lambda: sliced(x), args.repeats)
        extracted = keras_matta.extract(mat, fraction)
        stock = mlp(keras.layers.Dense, round(fraction * args.hidden), args.depth, d_in, classes)
        extracted_forward, stock_forward = compiled_forward(extracted), compiled_forward(stock)
        t_extracted = median_seconds(lambda: extracted_forward(x), args.repeats)
        t_stock = median_seconds(lambda: stock_forward(x), args.repeats)
        case = f"width {fraction:g}"
        for model_name, seconds, params in (
            ("stock MLP at width", t_stock, stock.count_params()),
            ("Mat MLP, runtime slicing", t_sliced, keras_matta.cost(mat, fraction)["params"]),
            ("extracted", t_extracted, extracted.count_params()),
        ):
            rows.append(
                {"case": case, "model": model_name, "ms": 1e3 * seconds,
                 "ratio": seconds / t_stock, "params": params}
            )

    def plot(axes, rows):
        labels = [f"{r['case']}\n{r['model']}" for r in rows]
        axes.barh(labels, [r["ms"] for r in rows])
        axes.set_xlabel(f"median latency, ms (batch {args.batch}, {keras.backend.backend()})")
        axes.invert_yaxis()

    report("mat_layer_latency", rows, ["case", "model", "ms", "ratio", "params"], plot)


if __name__ == "__main__":
    main()
