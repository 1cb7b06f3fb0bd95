"""An optimizer's training step against the same optimizer at an earlier git revision.

Speed work on an optimizer is judged by its before/after step-time ratio, and on a shared
machine that ratio holds only when both sides run in one process, in turns (A B, B A:
`common.interleaved_seconds`); runs one after the other moved by tens of percent here. This
script loads `keras_matta/optimizers/<module>.py` as it was at `--baseline` (`git show`) beside
the working tree's, so both can be built in one process, on the workloads of
`shampoo_references.py` (the same model, initial weights and batch for every arm; PyTorch
backend, gradients from torch autograd), and times their steps and Keras Adam's in turns. Each
side first takes 12 steps (past the first refresh at `precondition_frequency=10`), and each turn
is 10 steps, so it holds one refresh.

The baseline module runs on the working tree's base classes and helpers: it measures a change
confined to that module and to what it overrides.

Usage:
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/optimizer_revision_ab.py \\
        --baseline 974b3ee [--optimizer SOAP] [--variants "" "block_size=1024"] \\
        [--workloads mlp lm] [--rounds 30] [--output soap_revision_ab]

Writes benchmarks/results/<output>_torch.json and prints the table: per workload and variant,
the median per-turn ratio (new / baseline, and each / Keras Adam) with its quartiles, in
process CPU time (the steadier clock on a shared machine) and wall time. `--table JSON` prints
the README's table from a results file.
"""

import argparse
import ast
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shampoo_references  # noqa: E402
from common import interleaved_seconds  # noqa: E402
from common import ratio_summary  # noqa: E402
from common import report  # noqa: E402

import keras_matta.optimizers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def baseline_class(revision, name):
    """The optimizer class `name` as `keras_matta.optimizers` defined it at `revision`."""
    module_name = getattr(keras_matta.optimizers, name).__module__
    path = module_name.replace(".", "/") + ".py"
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    # Its class would register under the same serialization name as the current one.
    source = source.replace('@keras.saving.register_keras_serializable(package="keras_matta")',
                            "")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(f"baseline_{name.lower()}", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(f.name)
    return getattr(module, name)


def parse_variant(text):
    """`"block_size=1024 beta1=0.95"` -> `{"block_size": 1024, "beta1": 0.95}`."""
    pairs = (item.split("=", 1) for item in text.split())
    return {key: ast.literal_eval(value) for key, value in pairs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", metavar="JSON", help="print the README table of a results file")
    parser.add_argument("--baseline", help="git revision of the 'before' side")
    parser.add_argument("--optimizer", default="SOAP", help="a class of keras_matta.optimizers")
    parser.add_argument("--variants", nargs="+", default=["", "block_size=1024"],
                        help='constructor arguments per variant, e.g. "block_size=1024"')
    parser.add_argument("--workloads", nargs="+", default=["mlp", "lm"], choices=["mlp", "lm"])
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--output", default="optimizer_revision_ab")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as f:
            print(readme_table(json.load(f)["rows"]))
        return
    if args.baseline is None:
        parser.error("--baseline is required to measure")
    if keras.backend.backend() != "torch":
        parser.error("run with KERAS_BACKEND=torch (the workloads step through torch autograd)")
    current = getattr(keras_matta.optimizers, args.optimizer)
    baseline = baseline_class(args.baseline, args.optimizer)

    rows = []
    for name, workload in shampoo_references.workloads(args.workloads).items():
        x = keras.ops.convert_to_tensor(workload.train[0][:workload.batch])
        y = keras.ops.convert_to_tensor(workload.train[1][:workload.batch])
        makes = {"keras_adam": lambda lr, params: keras.optimizers.Adam(lr)}
        for variant in args.variants:
            kwargs = parse_variant(variant)
            makes[f"baseline {variant}"] = lambda lr, params, k=kwargs: baseline(lr, **k)
            makes[f"new {variant}"] = lambda lr, params, k=kwargs: current(lr, **k)
        steps = {}
        for arm_name, make in makes.items():
            arm = shampoo_references.Arm(workload, make, args.learning_rate, seed=0)
            for _ in range(12):
                arm.step(x, y)
            steps[arm_name] = lambda arm=arm, x=x, y=y: arm.step(x, y)
        times = interleaved_seconds(steps, rounds=args.rounds, calls=10, warmup=0)
        for variant in args.variants:
            row = {"workload": name, "variant": variant or "(defaults)"}
            for clock in ("cpu", "wall"):
                pairs = {"new_vs_baseline": (f"new {variant}", f"baseline {variant}"),
                         "baseline_vs_adam": (f"baseline {variant}", "keras_adam"),
                         "new_vs_adam": (f"new {variant}", "keras_adam")}
                for key, (arm, base) in pairs.items():
                    summary = ratio_summary(times, arm, base, clock)
                    row[f"{key}_{clock}"] = round(summary["ratio"], 3)
                    row[f"{key}_{clock}_q25_q75"] = [round(summary["ratio_q25"], 3),
                                                     round(summary["ratio_q75"], 3)]
            rows.append(row)
    columns = ["workload", "variant", "new_vs_baseline_cpu", "new_vs_baseline_cpu_q25_q75",
               "baseline_vs_adam_cpu", "new_vs_adam_cpu", "new_vs_baseline_wall"]
    report(args.output, [dict(row, optimizer=args.optimizer, baseline=args.baseline)
                         for row in rows], columns)


def readme_table(rows):
    """Median CPU-time ratios per workload and variant, the new side's with its quartiles."""
    lines = ["| workload | variant | new / before (CPU, quartiles) | before / Keras Adam | "
             "new / Keras Adam |", "|---|---|---|---|---|"]
    for row in rows:
        low, high = row["new_vs_baseline_cpu_q25_q75"]
        lines.append(f"| {row['workload']} | {row['variant']} | "
                     f"{row['new_vs_baseline_cpu']:.3f} [{low:.3f}, {high:.3f}] | "
                     f"{row['baseline_vs_adam_cpu']:.2f} | {row['new_vs_adam_cpu']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
