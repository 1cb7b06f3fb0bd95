"""Training-step time of Shampoo and SOAP relative to Adam, on the current backend.

Two workloads, each optimizer training the same model with the backend's default compiled
train function; the report is the mean step time and its ratio to Adam's, measured in the
same run:

- `mlp`: two hidden ReLU layers (width 256, 128 inputs, 10 classes), at each batch size of
  `--mlp-batch-sizes`. Shampoo's per-step cost (two Gram products and two preconditioner
  products per 128-block: 512 multiply-adds per parameter) does not depend on the batch,
  the model's (3 per parameter and example) does, so the ratio falls as the batch grows:
  at batch 32 it cannot come near 1.
- `transformer_lm`: a small GPT-style byte-level LM (keras-hub `TokenAndPositionEmbedding`
  and two `TransformerDecoder` blocks, width 128, 4 heads, next-token logits at every one
  of 128 positions), batch 32.

Adam and each of `--optimizers` (Shampoo, SOAP) at each frequency train their own copy of the
model in one process, timed in turns of `--round-steps` steps (machine drift spreads over all
of them alike). They run with `start_preconditioning_step=1`, so every timed step
preconditions, and the timed window is a multiple of every `precondition_frequency`, so it
holds its share of refreshes (a median would hide them). SOAP's step does 6 block products
(2 Grams, rotating the gradient in and the update out; its momentum stays in the eigenbasis)
against Shampoo's 4 (2 Grams, `P_L M P_R`), and the same eigendecompositions at a refresh, where
SOAP adds 4 products to move the momentum into the new basis.

The cost model (the floor; `--no-floor` skips it): per optimizer and frequency, the Kronecker
arithmetic of one step alone, at the fastest this machine does it, is timed in the same turns:
every block of the model's preconditioned variables stacked by block shape across variables (the
fewest calls), compiled as the train step is (`model.jit_compile`: XLA on JAX, a plain
`tf.function` on TensorFlow's CPU default, eager torch), doing the step's block products
(Shampoo 4, SOAP 6) and, every `frequency` steps, the eigendecompositions of both statistics
(and SOAP's 4 products of the momentum's move).
`floor = 1 + (products + eigh / frequency) / Adam's step` is then what the step would cost with
no overhead besides Adam's own: no copies into blocks, no norms, no dispatch. A goal below the
floor cannot be reached by implementation at that block size and frequency; the gap between the
floor and the measured ratio is what an implementation could still win.

Both wall time and process CPU time are reported: on a shared machine the CPU-time ratio is
the steadier one. `adam_control` is a second Adam model, built after the others: its ratio to
the first Adam says how far two identical models' times differ in one process. On a small
CPU, pin BLAS to one thread (OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1): under contention its
spinning threads made a batched 128x128 eigh 100x slower.

Usage:
    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/shampoo_step_time.py \\
        [--steps 100] [--frequencies 1 10 100] [--mlp-batch-sizes 32 1024] \\
        [--optimizers shampoo soap] [--block-size 128] [--no-floor] \\
        [--output optimizer_step_time]

Writes benchmarks/results/<output>_<backend>.json and .png; `--table JSON [JSON ...]` prints
the README table (measured ratio and floor per workload, optimizer and backend) from results
files instead.
"""

import argparse
import json
import math
import sys
import time

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import report  # noqa: E402

from keras_matta.optimizers import SOAP  # noqa: E402
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


def transformer_lm(vocabulary, sequence, width, heads, blocks=2):
    """A GPT-style byte-level LM: next-token logits at every position."""
    import keras_hub

    tokens = keras.Input((sequence,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(vocabulary, sequence, width)(tokens)
    for _ in range(blocks):
        x = keras_hub.layers.TransformerDecoder(4 * width, heads)(x)
    return keras.Model(tokens, keras.layers.Dense(vocabulary)(x))


def workloads(args):
    """`[(model name, batch size, build_model, (x, y))]` for the models of `--models`."""
    rng = np.random.default_rng(0)
    found = []
    if "mlp" in args.models:
        for batch in args.mlp_batch_sizes:
            data = (rng.standard_normal((batch, args.width)).astype("float32"),
                    rng.integers(0, 10, batch))
            found.append(("mlp", batch, lambda: mlp(args.width), data))
    if "transformer_lm" in args.models:
        tokens = rng.integers(0, args.vocabulary, (args.batch_size, args.sequence + 1))
        data = (tokens[:, :-1].astype("int32"), tokens[:, 1:])
        found.append(("transformer_lm", args.batch_size, lambda: transformer_lm(
            args.vocabulary, args.sequence, args.width, args.heads), data))
    return found


# Block products per step: Shampoo's two Grams and P_L M P_R; SOAP's two Grams, the gradient
# rotated in and the update rotated out. At a refresh SOAP also moves its momentum into the new
# basis: P = Q_old^T Q_new on each side, then P_L^T M' P_R.
PRODUCTS = {"shampoo": 4, "shampoo_vectors": 4, "soap": 6}
REFRESH_PRODUCTS = {"shampoo": 0, "shampoo_vectors": 0, "soap": 4}


def make_optimizer(name, root_method, **common):
    """`shampoo`, `shampoo_vectors` (`precondition_vectors=True`) or `soap`."""
    if name == "soap":
        return SOAP(**common)
    return Shampoo(root_method=root_method, precondition_vectors=name == "shampoo_vectors",
                   **common)


def warmed_up_model(build_model, optimizer, data, warmup):
    """The workload's model, compiled with `optimizer`, after `warmup` steps (compilation and
    the first root refresh)."""
    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    for _ in range(warmup):
        model.train_on_batch(*data)
    return model


def interleaved_step_seconds(steps_by_name, steps, round_steps):
    """Mean wall and CPU seconds of each `step()` (a function returning a host value, so the
    work has finished), timed in turns of `round_steps` calls.

    Taking turns spreads the machine's slow drifts (other processes, clocks) over all of them
    alike, so the ratios hold even where the absolute times move by 20 % between runs.
    """
    wall = {name: 0.0 for name in steps_by_name}
    cpu = {name: 0.0 for name in steps_by_name}
    for _ in range(steps // round_steps):
        for name, step in steps_by_name.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(round_steps):
                value = step()
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
            if not np.all(np.isfinite(value)):
                raise RuntimeError(f"non-finite value {value} with {name}")
    return {name: (wall[name] / steps, cpu[name] / steps) for name in steps_by_name}


def block_stacks(model, optimizer):
    """`{(rows, cols): number of blocks}` over the variables `optimizer` preconditions."""
    stacks = {}
    for variable in model.trainable_variables:
        layout = optimizer.block_layout(variable)
        if layout is not None:
            stacks[layout.block_shape] = stacks.get(layout.block_shape, 0) + layout.num_blocks
    return stacks


def compiled(fn, jit_compile):
    """`fn` compiled as a Keras train step with `model.jit_compile` is: XLA on JAX, a
    `tf.function` (with XLA if asked; Keras' default on a CPU is without) on TensorFlow,
    `torch.compile` if asked on torch (eager by default)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn) if jit_compile else fn
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile)
    if jit_compile:
        import torch

        return torch.compile(fn)
    return fn


def kronecker_arithmetic(stacks, products, jit_compile, refresh_products=0, seed=0):
    """`(products_step, eigh_step)`: the block products of one step, and one refresh's
    eigendecompositions of both statistics (with `refresh_products=4`, SOAP's move of the
    momentum into the new bases after them), over `stacks` (see `block_stacks`), each stack
    one batched call, compiled like the train step (`compiled`); both return a host
    scalar."""
    from keras import ops

    rng = np.random.default_rng(seed)
    tensors = []
    for (rows, cols), count in stacks.items():
        g = rng.standard_normal((count, rows, cols)).astype("float32")
        left = rng.standard_normal((count, rows, rows)).astype("float32") / rows
        right = rng.standard_normal((count, cols, cols)).astype("float32") / cols
        grams = g @ g.transpose(0, 2, 1), g.transpose(0, 2, 1) @ g  # statistics to decompose
        tensors.append(tuple(ops.convert_to_tensor(t) for t in (g, left, right, *grams)))

    def products_fn(tensors):
        total = 0.0
        for g, left, right, _, _ in tensors:
            grams = ops.matmul(g, ops.swapaxes(g, -1, -2)), ops.matmul(ops.swapaxes(g, -1, -2), g)
            x = g
            for _ in range((products - 2) // 2):  # P_L X P_R (Shampoo), Q_L^T X Q_R (SOAP)
                x = ops.matmul(ops.matmul(left, x), right)
            # Whole sums: a slice of a product could let XLA compute only that slice.
            total = total + ops.sum(grams[0]) + ops.sum(grams[1]) + ops.sum(x)
        return total

    def eigh_fn(tensors):
        total = 0.0
        for g, left, right, left_statistics, right_statistics in tensors:
            outputs = [ops.eigh(stats)[1] for stats in (left_statistics, right_statistics)]
            if refresh_products:  # P = Q_old^T Q_new per side, then P_L^T M' P_R
                p_left = ops.matmul(ops.swapaxes(left, -1, -2), outputs[0])
                p_right = ops.matmul(ops.swapaxes(right, -1, -2), outputs[1])
                outputs.append(ops.matmul(ops.matmul(ops.swapaxes(p_left, -1, -2), g), p_right))
            total = total + sum(ops.sum(x) for x in outputs)
        return total

    products_fn, eigh_fn = compiled(products_fn, jit_compile), compiled(eigh_fn, jit_compile)
    return (lambda: ops.convert_to_numpy(products_fn(tensors)),
            lambda: ops.convert_to_numpy(eigh_fn(tensors)))


# Issue #18's goals at precondition_frequency=10, as ratios to Adam's step.
GOALS = {("transformer_lm", 32): 1.10, ("mlp", 1024): 1.25, ("mlp", 32): 2.0}


def plot(axes, rows, block_size):
    """One cluster of bars per workload, one bar per optimizer and frequency: wall-time ratios
    (the CPU-time ratios are in the JSON and the table), each bar's floor as a black tick and
    the workload's goal as a dashed line."""
    from matplotlib.ticker import NullFormatter

    workloads = list(dict.fromkeys((r["model"], r["batch_size"]) for r in rows))
    series = list(dict.fromkeys(
        (r["optimizer"], r["frequency"]) for r in rows if r["optimizer"] != "adam"))
    width = 0.8 / len(series)
    for i, (optimizer, frequency) in enumerate(series):
        found = [next(r for r in rows if (r["model"], r["batch_size"]) == workload
                      and (r["optimizer"], r["frequency"]) == (optimizer, frequency))
                 for workload in workloads]
        positions = np.arange(len(workloads)) + (i - (len(series) - 1) / 2) * width
        axes.bar(positions, [r["ratio_vs_adam"] for r in found], width,
                 label=f"{optimizer}, frequency {frequency}")
        floors = [(p, r["floor_vs_adam"]) for p, r in zip(positions, found) if "floor_vs_adam" in r]
        if floors:
            axes.hlines([f for _, f in floors], [p - width / 2 for p, _ in floors],
                        [p + width / 2 for p, _ in floors], color="black", linewidth=2,
                        label="floor (cost model)" if i == 0 else None)
    with_goal = [j for j, workload in enumerate(workloads) if workload in GOALS]
    for j in with_goal:
        axes.hlines(GOALS[workloads[j]], j - 0.45, j + 0.45, color="gray", linestyle="--",
                    label="goal (issue #18)" if j == with_goal[0] else None)
    axes.set_xticks(np.arange(len(workloads)),
                    [f"{model}, batch {batch}" for model, batch in workloads])
    axes.set_yscale("log")
    ticks = [1, 1.1, 1.25, 2, 4, 8, 16]
    axes.set_yticks(ticks, [f"{tick:g}" for tick in ticks])
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.axhline(1.0, color="black", linewidth=0.8, label="Adam")
    axes.set_ylabel("step time / Adam step time (wall)")
    axes.set_title(f"Step time vs Adam ({keras.backend.backend()}, block {block_size})")
    axes.legend(fontsize=8)


def readme_table(payloads):
    """Rows: workload and optimizer; columns: each payload's backend (and block size, where
    the payloads differ in it), `measured (floor)`."""
    backends = [payload["environment"]["backend"] for payload in payloads]
    block_sizes = [payload["rows"][0].get("block_size") for payload in payloads]
    if len(set(block_sizes)) > 1:
        backends = [f"{backend}, blocks {size}" for backend, size in zip(backends, block_sizes)]
    keys = list(dict.fromkeys(
        (row["model"], row["batch_size"], row["optimizer"], row["frequency"])
        for payload in payloads for row in payload["rows"] if row["optimizer"] != "adam"))
    lines = ["| workload | optimizer | goal | " + " | ".join(backends) + " |",
             "|---" * (len(backends) + 3) + "|"]
    for model, batch, optimizer, frequency in keys:
        cells = []
        for payload in payloads:
            row = next((r for r in payload["rows"] if (r["model"], r["batch_size"],
                        r["optimizer"], r["frequency"]) == (model, batch, optimizer, frequency)),
                       None)
            cells.append(_ratio_cell(row))
        goal = GOALS.get((model, batch)) if frequency == 10 else None
        label = optimizer if frequency is None else f"{optimizer}, frequency {frequency}"
        lines.append(f"| {model}, batch {batch} | {label} | "
                     f"{'' if goal is None else f'{goal:g}'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio_cell(row):
    if row is None:
        return ""
    if "floor_vs_adam" not in row:
        return f"{row['ratio_vs_adam']:.2f}"
    return f"{row['ratio_vs_adam']:.2f} ({row['floor_vs_adam']:.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--round-steps", type=int, default=10,
                        help="steps each optimizer runs in its turn (see interleaved_step_seconds)")
    parser.add_argument("--frequencies", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--models", nargs="+", default=["mlp", "transformer_lm"],
                        choices=["mlp", "transformer_lm"])
    parser.add_argument("--mlp-batch-sizes", type=int, nargs="+", default=[32, 1024])
    parser.add_argument("--batch-size", type=int, default=32, help="of the transformer LM")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocabulary", type=int, default=256)
    parser.add_argument("--sequence", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--root-method", default="eigh", choices=["eigh", "newton"],
                        help="Shampoo's (SOAP always uses eigh)")
    parser.add_argument("--optimizers", nargs="+", default=["shampoo", "soap"],
                        choices=list(PRODUCTS))
    parser.add_argument("--table", nargs="+", metavar="JSON",
                        help="print the README table from these results files and exit")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the cost model's floor (see the module docstring)")
    parser.add_argument("--output", default="optimizer_step_time",
                        help="file stem under benchmarks/results/ (before _<backend>)")
    args = parser.parse_args()
    if args.table:
        payloads = []
        for path in args.table:
            with open(path) as file:
                payloads.append(json.load(file))
        print(readme_table(payloads))
        return
    window = math.lcm(*args.frequencies, args.round_steps)
    steps = window * max(1, math.ceil(args.steps / window))
    if steps != args.steps:
        print(f"timing {steps} steps: a multiple of --round-steps and every frequency")

    rows = []
    for model_name, batch_size, build_model, data in workloads(args):
        print(f"{model_name}, batch {batch_size}:", flush=True)
        optimizers = {("adam", None): keras.optimizers.Adam()}
        for name in args.optimizers:
            for frequency in args.frequencies:
                common = dict(precondition_frequency=frequency, start_preconditioning_step=1,
                              block_size=args.block_size)
                optimizers[name, frequency] = make_optimizer(name, args.root_method, **common)
        # A second Adam, built last: its ratio to the first is the spread between two identical
        # models in one process (on TensorFlow up to 25 % at the MLP's small steps), below
        # which no ratio here means anything.
        optimizers["adam_control", None] = keras.optimizers.Adam()
        models = {
            key: warmed_up_model(build_model, optimizer, data, args.warmup)
            for key, optimizer in optimizers.items()
        }
        steps_by_name = {key: (lambda m=model, d=data: m.train_on_batch(*d))
                         for key, model in models.items()}
        stacks = {}
        if args.floor:
            for name in args.optimizers:
                model = models[name, args.frequencies[0]]
                stacks[name] = block_stacks(model, model.optimizer)
                products, eigh = kronecker_arithmetic(stacks[name], PRODUCTS[name],
                                                      model.jit_compile, REFRESH_PRODUCTS[name])
                products(), eigh()  # compiles
                steps_by_name[name, "products"], steps_by_name[name, "eigh"] = products, eigh
        times = interleaved_step_seconds(steps_by_name, steps, args.round_steps)
        adam_wall, adam_cpu = times["adam", None]
        for name, frequency in models:
            wall, cpu = times[name, frequency]
            row = {"model": model_name, "batch_size": batch_size, "optimizer": name,
                   "frequency": frequency, "step_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu,
                   "ratio_vs_adam": wall / adam_wall, "cpu_ratio_vs_adam": cpu / adam_cpu,
                   "steps": steps, "block_size": args.block_size,
                   "root_method": "eigh" if name == "soap" else args.root_method}
            if name in stacks:
                products_wall, eigh_wall = times[name, "products"][0], times[name, "eigh"][0]
                row.update(
                    blocks={f"{r}x{c}": n for (r, c), n in stacks[name].items()},
                    products_ms=1e3 * products_wall, eigh_ms=1e3 * eigh_wall,
                    floor_vs_adam=1.0 + (products_wall + eigh_wall / frequency) / adam_wall,
                )
            print(f"  {name}, frequency {frequency}: {1e3 * wall:.2f} ms/step wall "
                  f"({row['ratio_vs_adam']:.2f}x Adam; floor "
                  f"{row.get('floor_vs_adam', float('nan')):.2f}x), "
                  f"{1e3 * cpu:.2f} ms/step CPU", flush=True)
            rows.append(row)

    report(
        args.output,
        rows,
        ["model", "batch_size", "optimizer", "frequency", "step_ms", "ratio_vs_adam", "cpu_ms",
         "cpu_ratio_vs_adam", "floor_vs_adam"],
        plot=lambda axes, rows: plot(axes, rows, args.block_size),
    )


if __name__ == "__main__":
    main()
