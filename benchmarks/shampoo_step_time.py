"""Training-step time of Shampoo relative to Adam, on the current backend.

For an MLP and a small transformer (embedding, two blocks of keras.layers.MultiHeadAttention
and a feed-forward Dense pair, a classifier head), each optimizer trains the same model with
the backend's default compiled train function; the report is the mean step time and its ratio
to Adam's, measured in the same run. Shampoo runs with `start_preconditioning_step=1`, so
every timed step preconditions, and the timed window is a multiple of every
`precondition_frequency`, so it holds its share of root refreshes (a median would hide them).

Both wall time and process CPU time are reported: on a shared machine the CPU-time ratio is
the steadier one. On a small CPU, pin BLAS to one thread (OMP_NUM_THREADS=1
OPENBLAS_NUM_THREADS=1): under contention its spinning threads made a batched 128x128 eigh
100x slower.

Usage:
    KERAS_BACKEND=jax python benchmarks/shampoo_step_time.py [--steps 100] [--frequencies 1 10 100]

Writes benchmarks/results/shampoo_step_time_<backend>.json and .png.
"""

import argparse
import math
import sys
import time

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import report  # noqa: E402

from keras_matta.optimizers import Shampoo  # noqa: E402


def mlp(width):
    return keras.Sequential(
        [
            keras.Input((width,)),
            keras.layers.Dense(2 * width, activation="relu"),
            keras.layers.Dense(2 * width, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def transformer(vocabulary, sequence, width, heads, blocks=2):
    tokens = keras.Input((sequence,), dtype="int32")
    x = keras.layers.Embedding(vocabulary, width)(tokens)
    for _ in range(blocks):
        attended = keras.layers.MultiHeadAttention(heads, width // heads)(x, x)
        x = keras.layers.LayerNormalization()(x + attended)
        hidden = keras.layers.Dense(4 * width, activation="gelu")(x)
        x = keras.layers.LayerNormalization()(x + keras.layers.Dense(width)(hidden))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(vocabulary)(x))


def workloads(args):
    rng = np.random.default_rng(0)
    batch = args.batch_size
    mlp_data = (
        rng.standard_normal((batch, args.width)).astype("float32"),
        rng.integers(0, 10, batch),
    )
    tokens = rng.integers(0, args.vocabulary, (batch, args.sequence)).astype("int32")
    transformer_data = (tokens, rng.integers(0, args.vocabulary, batch))
    return {
        "mlp": (lambda: mlp(args.width), mlp_data),
        "transformer": (
            lambda: transformer(args.vocabulary, args.sequence, args.width, args.heads),
            transformer_data,
        ),
    }


def mean_step_seconds(build_model, optimizer, data, steps, warmup):
    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    x, y = data
    for _ in range(warmup):  # compilation and the first root refresh
        model.train_on_batch(x, y)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = model.train_on_batch(x, y)  # returns a host value: the step has finished
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    if not np.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss} with {optimizer.name}")
    print(f"  {optimizer.name}: {1e3 * wall / steps:.2f} ms/step wall, "
          f"{1e3 * cpu / steps:.2f} ms/step CPU", flush=True)
    return wall / steps, cpu / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--frequencies", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--models", nargs="+", default=["mlp", "transformer"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocabulary", type=int, default=1000)
    parser.add_argument("--sequence", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--root-method", default="eigh", choices=["eigh", "newton"])
    args = parser.parse_args()
    window = math.lcm(*args.frequencies)
    steps = window * max(1, math.ceil(args.steps / window))
    if steps != args.steps:
        print(f"timing {steps} steps: a multiple of every precondition_frequency")

    rows = []
    for model_name in args.models:
        build_model, data = workloads(args)[model_name]
        adam_wall, adam_cpu = mean_step_seconds(
            build_model, keras.optimizers.Adam(), data, steps, args.warmup
        )
        for frequency in [None] + list(args.frequencies):  # None: Adam itself
            wall, cpu = adam_wall, adam_cpu
            if frequency is not None:
                optimizer = Shampoo(
                    precondition_frequency=frequency,
                    start_preconditioning_step=1,
                    block_size=args.block_size,
                    root_method=args.root_method,
                )
                wall, cpu = mean_step_seconds(build_model, optimizer, data, steps, args.warmup)
            rows.append(
                {"model": model_name, "optimizer": "adam" if frequency is None else "shampoo",
                 "frequency": frequency, "step_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu,
                 "ratio_vs_adam": wall / adam_wall, "cpu_ratio_vs_adam": cpu / adam_cpu}
            )
    for row in rows:
        row.update(
            steps=steps, batch_size=args.batch_size, block_size=args.block_size,
            root_method=args.root_method,
        )

    def plot(axes, rows):
        shampoo_rows = [r for r in rows if r["optimizer"] == "shampoo"]
        labels = [f"{r['model']}\nf={r['frequency']}" for r in shampoo_rows]
        positions = np.arange(len(shampoo_rows))
        axes.bar(positions - 0.2, [r["ratio_vs_adam"] for r in shampoo_rows], 0.4,
                 label="wall time")
        axes.bar(positions + 0.2, [r["cpu_ratio_vs_adam"] for r in shampoo_rows], 0.4,
                 label="CPU time")
        axes.set_xticks(positions, labels)
        axes.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="Adam")
        axes.set_ylabel("step time / Adam step time")
        axes.set_title(f"Shampoo step time ({keras.backend.backend()}, block {args.block_size})")
        axes.legend()

    report(
        "shampoo_step_time",
        rows,
        ["model", "optimizer", "frequency", "step_ms", "ratio_vs_adam", "cpu_ms",
         "cpu_ratio_vs_adam"],
        plot=plot,
    )


if __name__ == "__main__":
    main()
