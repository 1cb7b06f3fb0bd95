"""CPU latency of a MatTA family against its size: every uniform width, extracted and exported.

For each task's TA (the `keras-matta train` default preset, built and left untrained: latency
does not depend on the weights), each width of `--widths` is extracted with
`keras_matta.extract` and served three ways where the backend allows it:

- `keras`: the extracted Keras model, compiled (`jit_compile` on JAX and TensorFlow, eager on
  torch), called through `predict_on_batch`;
- `saved_model`: `model.export(..., format="tf_saved_model")` reloaded with
  `tf.saved_model.load` and called through its `serve` endpoint (TensorFlow and JAX; Keras
  3.15 cannot export it from torch, see `tests/export_test.py`);
- `litert`: `model.export(..., format="litert")` run by the TFLite interpreter (TensorFlow
  only, for the same reason);
- `onnx`: `model.export(..., format="onnx")` at a static batch size, run by onnxruntime on one
  thread (every backend; not the TensorFlow LM, whose exact GELU tf2onnx cannot convert).

Every artifact's outputs are checked against the Keras model's before it is timed. All arms
of one task and batch size are timed in one process, in turns (`common.interleaved_seconds`),
and reported as the median of the per-round ratios to the same format at full width (how much
a smaller member saves) and to the Keras model at the same width (what the format costs). The
median time per call is given for scale only: on a shared machine it moves between runs.

Usage:
    KERAS_BACKEND=tensorflow OMP_NUM_THREADS=1 python benchmarks/family_latency.py \\
        [--tasks digits lm] [--widths 0.25 0.5 0.75 1] [--rounds 30] [--calls 5]
    python benchmarks/family_latency.py --table   # the README table, from the JSON

Writes benchmarks/results/family_latency_<backend>.json and .png.
"""

import argparse
import json
import os
import sys
import tempfile
import warnings

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import RESULTS_DIR  # noqa: E402
from common import interleaved_seconds  # noqa: E402
from common import pin_threads  # noqa: E402
from common import ratio_summary  # noqa: E402
from common import report  # noqa: E402

import keras_matta  # noqa: E402
from keras_matta.study import config as config_lib  # noqa: E402
from keras_matta.study import models  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")
# Where Keras 3.15 exports each format (the shipping matrix in the README).
FORMATS = {"tensorflow": ("keras", "saved_model", "litert", "onnx"),
           "jax": ("keras", "saved_model", "onnx"),
           "torch": ("keras", "onnx")}
# What fails in Keras' exporters (tests/export_test.py pins each as an expected failure).
UNSUPPORTED = {("tensorflow", "lm", "onnx"): "tf2onnx 1.17 cannot convert the exact GELU (Erfc)"}
DEFAULT_BATCHES = {"digits": (1, 256), "lm": (1, 32)}


def task_inputs(task, ta, batch):
    """A random input batch of the TA's shape: pixels for digits, bytes for the LM."""
    rng = np.random.default_rng(0)
    shape = (batch, *ta.input_shape[1:])
    if task == "digits":
        return rng.random(shape).astype("float32")
    return rng.integers(0, models.VOCABULARY_SIZE, shape).astype("int32")


def keras_forward(model, x):
    model.compile(jit_compile=keras.backend.backend() != "torch")
    model.make_predict_function()
    return lambda: model.predict_on_batch(x)


def saved_model_forward(model, x, directory):
    import tensorflow as tf

    path = os.path.join(directory, "saved_model")
    model.export(path, format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(path)
    # The closure keeps `loaded` alive: `serve` needs its variables.
    return lambda: loaded.serve(x).numpy()


def litert_forward(model, x, directory):
    import tensorflow as tf

    path = os.path.join(directory, "model.tflite")
    model.export(path, format="litert", verbose=False)
    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice, once per model
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=1)
    (input_detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(input_detail["index"], x.shape)
    interpreter.allocate_tensors()
    output_index = interpreter.get_output_details()[0]["index"]

    def forward():
        interpreter.set_tensor(input_detail["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return forward


def onnx_forward(model, x, directory):
    import onnxruntime

    path = os.path.join(directory, "model.onnx")
    # A static batch size: torch's exporter needs it for the transformer (tests/export_test.py).
    model.export(path, format="onnx", verbose=False,
                 input_signature=[keras.InputSpec(shape=x.shape, dtype=x.dtype)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)[0]


FORWARDS = {"saved_model": saved_model_forward, "litert": litert_forward,
            "onnx": onnx_forward}


def family_arms(task, ta, widths, batch, formats, directory):
    """`{(format, width): (params, flops, fn)}` for every width and format, outputs checked."""
    x = task_inputs(task, ta, batch)
    found = {}
    for width in widths:
        model = keras_matta.extract(ta, width)
        costs = keras_matta.cost(ta, width)
        assert costs["params"] == model.count_params()
        expected = keras.ops.convert_to_numpy(model(x))
        for fmt in formats:
            if fmt == "keras":
                fn = keras_forward(model, x)
            else:
                export_dir = os.path.join(directory, f"{task}_{batch}_{fmt}_{width:g}")
                os.makedirs(export_dir)
                fn = FORWARDS[fmt](model, x, export_dir)
            np.testing.assert_allclose(keras.ops.convert_to_numpy(fn()), expected,
                                       rtol=1e-4, atol=1e-4)
            found[fmt, width] = (costs["params"], costs["flops"], fn)
    return found


def plot(axes, rows, backend):
    markers = {"keras": "o", "saved_model": "s", "litert": "^", "onnx": "D"}
    for task, batch, fmt in dict.fromkeys((r["task"], r["batch"], r["format"]) for r in rows):
        series = [r for r in rows if (r["task"], r["batch"], r["format"]) == (task, batch, fmt)]
        axes.plot([r["params"] / 1e3 for r in series], [r["ratio_vs_full"] for r in series],
                  marker=markers[fmt], label=f"{task}, batch {batch}, {fmt}")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xlabel("parameters of the extracted model (thousands)")
    axes.set_ylabel("latency / the same format at full width")
    axes.set_title(f"MatTA family on CPU ({backend}, 1 thread, interleaved)")
    axes.legend(fontsize=7)


def markdown():
    """The README tables, one per task: latency ratios of every committed backend's family."""
    results = {}
    for backend in BACKENDS:
        try:
            with open(f"{RESULTS_DIR}/family_latency_{backend}.json") as f:
                results[backend] = json.load(f)["rows"]
        except FileNotFoundError:
            continue
    tables = []
    for task in dict.fromkeys(r["task"] for rows in results.values() for r in rows):
        sizes = dict.fromkeys((r["width"], r["params"]) for rows in results.values()
                              for r in rows if r["task"] == task)
        lines = [f"**{task}**: latency / the same format at full width "
                 "(for an artifact, its latency / the Keras model's at the same width)", "",
                 "| backend | format | batch | " + " | ".join(
                     f"{width:g}: {params / 1e3:.1f}k params" for width, params in sizes)
                 + " | full width, ms per call (for scale) |",
                 "|---|---|---|" + "---|" * (len(sizes) + 1)]
        for backend, rows in results.items():
            keys = dict.fromkeys((r["format"], r["batch"]) for r in rows if r["task"] == task)
            for fmt, batch in sorted(keys, key=lambda key: (key[1], key[0] != "keras", key[0])):
                series = [r for r in rows if (r["task"], r["format"], r["batch"]) == (
                    task, fmt, batch)]
                cells = [f"{r['ratio_vs_full']:.2f}"
                         + ("" if fmt == "keras" else f" ({r['ratio_vs_keras']:.2f})")
                         for r in series]
                full_ms = next(r["ms"] for r in series if r["width"] == 1)
                lines.append(f"| {backend} | {fmt} | {batch} | " + " | ".join(cells)
                             + f" | {full_ms:.2f} |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["digits", "lm"], choices=["digits", "lm"])
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--batches", type=int, nargs="+",
                        help="batch sizes of every task (default: 1 and 256 for digits, 1 and "
                             "32 for the LM)")
    parser.add_argument("--formats", nargs="+", choices=["keras", *FORWARDS],
                        help="default: every format this backend exports")
    parser.add_argument("--rounds", type=int, default=30, help="turns of each arm")
    parser.add_argument("--calls", type=int, default=5, help="calls per turn")
    parser.add_argument("--table", action="store_true",
                        help="print the README table from the committed JSON and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown())
        return
    pin_threads()
    backend = keras.backend.backend()
    formats = args.formats or FORMATS[backend]
    widths = sorted(args.widths)
    if widths[-1] != 1.0:
        parser.error(f"--widths must include 1 (the baseline of the ratios); got {widths}")
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for task in args.tasks:
            ta_kwargs = config_lib.preset(task, "default").ta
            keras.utils.set_random_seed(0)
            ta = models.build(task, name=f"{task}_ta", **ta_kwargs)
            for batch in args.batches or DEFAULT_BATCHES[task]:
                served = [fmt for fmt in formats if (backend, task, fmt) not in UNSUPPORTED]
                for fmt in sorted(set(formats) - set(served)):
                    print(f"{task}: no {fmt} ({UNSUPPORTED[backend, task, fmt]})")
                print(f"{task}, batch {batch}: exporting {len(widths)} widths as {served}",
                      flush=True)
                arms = family_arms(task, ta, widths, batch, served, directory)
                times = interleaved_seconds({key: fn for key, (_, _, fn) in arms.items()},
                                            rounds=args.rounds, calls=args.calls)
                for (fmt, width), (params, flops, _) in arms.items():
                    vs_full = ratio_summary(times, (fmt, width), (fmt, 1.0))
                    rows.append({
                        "task": task, "batch": batch, "format": fmt, "width": width,
                        "params": params, "flops_per_example": flops,
                        "ratio_vs_full": vs_full["ratio"],
                        "ratio_vs_full_q25": vs_full["ratio_q25"],
                        "ratio_vs_full_q75": vs_full["ratio_q75"],
                        "ratio_vs_keras": ratio_summary(times, (fmt, width),
                                                        ("keras", width))["ratio"],
                        "cpu_ratio_vs_full": ratio_summary(times, (fmt, width), (fmt, 1.0),
                                                           clock="cpu")["ratio"],
                        "ms": 1e3 * float(np.median(times[fmt, width]["wall"])),
                        "rounds": args.rounds, "calls": args.calls,
                    })
    report("family_latency", rows,
           ["task", "batch", "format", "width", "params", "ratio_vs_full", "ratio_vs_keras",
            "cpu_ratio_vs_full", "ms"],
           lambda axes, rows: plot(axes, rows, backend))


if __name__ == "__main__":
    main()
