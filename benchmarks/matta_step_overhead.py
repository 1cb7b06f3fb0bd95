"""Step-time overhead of MatTA over the separate passes it fuses, on the current backend.

A MatTA step runs a TA training step, a Student training step (one Student width) and a teacher
forward pass in one compiled function with one backward pass. This benchmark times, in the same
run and on the same data:

- `matta`: `MatTA.fit`, per step;
- `ta`: the TA alone (`model.fit`), per step;
- `student`: the same architecture at the Student width (`model.fit` in a `WidthScope`);
- `teacher`: the teacher's forward pass (`teacher.predict`), per batch;

and reports `overhead = matta / (ta + student + teacher)` (the goal: at most 1.05) for a small
MLP classifier and a small transformer LM (`MatTransformerBlock`).
A step's time is the difference between runs of `2 * --steps` and `--steps` steps (so the fixed
cost of a `fit`/`predict` call cancels), each the median of `--repeats` interleaved runs after a
warm-up run that compiles. On small models per-step dispatch dominates, and one fused step costs
less than three.

Usage:
    KERAS_BACKEND=jax python benchmarks/matta_step_overhead.py [--steps 20] [--repeats 5]
"""

import argparse
import sys
import time

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import report  # noqa: E402

import keras_matta  # noqa: E402
from keras_matta.training import MatTA  # noqa: E402


# === Models ===


def mlp_task(args):
    d_in, classes = 256, 100

    def ta():
        return keras.Sequential([
            keras.Input((d_in,)),
            keras_matta.MatDense(args.hidden, activation="relu"),
            keras_matta.MatDense(args.hidden, activation="relu"),
            keras_matta.MatDense(classes, nested=False),
        ])

    teacher = keras.Sequential([keras.Input((d_in,)),
                                keras.layers.Dense(2 * args.hidden, activation="relu"),
                                keras.layers.Dense(classes)])
    rng = np.random.RandomState(0)
    n = 2 * args.batch * args.steps
    x = rng.randn(n, d_in).astype("float32")
    y = rng.randint(0, classes, n)
    return ta, teacher, x, y


def lm_task(args):
    vocab, seq, dim = 512, 64, 128

    def ta():
        tokens = keras.Input((seq,), dtype="int32")
        h = keras.layers.Embedding(vocab, dim)(tokens)
        for _ in range(2):
            h = keras_matta.MatTransformerBlock(4 * dim, num_heads=4, causal=True)(h)
        return keras.Model(tokens, keras_matta.MatDense(vocab, nested=False)(h))

    teacher = keras.Sequential([keras.Input((seq,), dtype="int32"),
                                keras.layers.Embedding(vocab, 2 * dim),
                                keras.layers.Dense(8 * dim, activation="relu"),
                                keras.layers.Dense(vocab)])
    rng = np.random.RandomState(0)
    n = 2 * max(args.batch // 8, 1) * args.steps
    x = rng.randint(0, vocab, (n, seq)).astype("int32")
    y = rng.randint(0, vocab, (n, seq))
    return ta, teacher, x, y


# === Timing ===


def interleaved_median_seconds(functions, repeats):
    """`{name: median seconds}`; runs are interleaved so load drift hits every candidate alike."""
    for fn in functions.values():
        fn()  # compiles
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()  # `fit`/`predict` return once the work is done and the state is synced
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def measure(name, make_ta, teacher, x, y, batch, args):
    """Milliseconds per step of each candidate and the overhead ratio.

    Each candidate runs `steps` and `2 * steps` batches; the difference over `steps` is the cost
    of a step without the fixed cost of a `fit`/`predict` call (data adapter, callbacks, sync).
    """
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = args.steps

    def runs(run):
        return {1: lambda: run(steps * batch), 2: lambda: run(2 * steps * batch)}

    def fit_runs(model):
        return runs(lambda n: model.fit(x[:n], y[:n], batch_size=batch, epochs=1,
                                        shuffle=False, verbose=0))

    # Without drawn sub-networks: the parts below are exactly the passes of this MatTA step.
    matta = MatTA(make_ta(), [args.width], teacher=teacher, num_sampled_widths=0)
    ta, student = make_ta(), make_ta()
    for model in (matta, ta, student):
        model.compile(keras.optimizers.Adam(1e-4), loss)
    teacher.compile()
    candidates = {
        "matta": fit_runs(matta),
        "ta": fit_runs(ta),
        "student": fit_runs(student),
        "teacher": runs(lambda n: teacher.predict(x[:n], batch_size=batch, verbose=0)),
    }
    functions = {(k, m): fn for k, pair in candidates.items() for m, fn in pair.items()}
    # The whole measurement runs inside the scope: entering it discards compiled functions.
    with keras_matta.WidthScope(student, args.width):
        seconds = interleaved_median_seconds(functions, args.repeats)
    per_step = {k: 1e3 * (seconds[(k, 2)] - seconds[(k, 1)]) / steps for k in candidates}
    separate = per_step["ta"] + per_step["student"] + per_step["teacher"]
    return {
        "model": name, "width": args.width, "batch": batch, "steps": steps,
        "matta_ms": per_step["matta"], "ta_ms": per_step["ta"],
        "student_ms": per_step["student"], "teacher_ms": per_step["teacher"],
        "separate_ms": separate, "overhead": per_step["matta"] / separate,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="MLP batch (LM: batch / 8)")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--width", type=float, default=0.25, help="the Student width")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="mlp,lm")
    args = parser.parse_args()
    rows = []
    if "mlp" in args.models:
        make_ta, teacher, x, y = mlp_task(args)
        rows.append(measure("MLP", make_ta, teacher, x, y, args.batch, args))
    if "lm" in args.models:
        make_ta, teacher, x, y = lm_task(args)
        lm_batch = max(args.batch // 8, 1)
        rows.append(measure("transformer LM", make_ta, teacher, x, y, lm_batch, args))
    columns = ["model", "width", "batch", "matta_ms", "ta_ms", "student_ms", "teacher_ms",
               "separate_ms", "overhead"]
    report("matta_step_overhead", rows, columns)


if __name__ == "__main__":
    main()
