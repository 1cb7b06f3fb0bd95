"""Which MatTA recipe makes the whole family good? Measured on the validation split.

Every arm sees the same batches in the same order for the same number of steps, with the same
optimizer and schedule as the demo (`keras_matta.study.runs`); no Teacher, so the family recipe is
measured on its own. Arms:

- `separate`: a model of each family size trained alone (the bar every member must reach);
- one MatTA run per recipe variant (`VARIANTS`), Students at 0.25, 0.5 and 0.75 of the TA, from
  which every uniform width between 0.25 and 1 (trained or not) and the Mix'n'Match models of the
  demo's family (with `--all-mixes`, every per-layer mix of the trained widths) are evaluated.

Prints a table (the change of every member against the separately trained model of its size, or
the linear interpolation between the two nearest trained sizes by parameters) and writes JSON.

    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/family_recipe_study.py --task lm \
        --variants baseline weighted --seeds 0 1 2
    python benchmarks/family_recipe_study.py --merge a.json b.json --output merged.json
    python benchmarks/family_recipe_study.py --readme digits.json lm.json   # README tables
    python benchmarks/family_recipe_study.py --plot lm.json sampled1   # lm.png: one arm's curve
"""

import argparse
import dataclasses
import itertools
import json
import pathlib
import re
import time

import keras
import numpy as np

import keras_matta
from keras_matta import widths as widths_lib
from keras_matta.data import load_task
from keras_matta.study import demo, report, runs
from keras_matta.study import models as models_lib
from keras_matta.study.config import preset

SEPARATE_WIDTHS = (0.25, 0.5, 0.75, 1.0)
STUDENTS = [0.25, 0.5, 0.75]
EVALUATED = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)

# Each variant is MatTA's keyword arguments on top of `student_widths=STUDENTS`.
VARIANTS = {
    # The recipe before this study (`num_sampled_widths` defaulted to 0).
    "baseline": {"num_sampled_widths": 0},
    # Loss weight proportional to the width (MatFormer: weight toward the largest).
    "weighted": {"student_weights": [0.25, 0.5, 0.75], "num_sampled_widths": 0},
    "ta_heavy": {"beta": 3.0, "num_sampled_widths": 0},
    "sandwich": {"strategy": "sandwich", "num_sampled_widths": 0},
    "kd_tau2": {"temperature": 2.0, "num_sampled_widths": 0},
    "kd_only": {"alpha": 0.0, "gamma": 1.0, "num_sampled_widths": 0},
    "no_detach": {"detach_ta": False, "num_sampled_widths": 0},
    # US-Nets' sandwich rule per layer: sub-networks at widths drawn on every step.
    "sampled1": {"num_sampled_widths": 1},
    "sampled2": {"num_sampled_widths": 2},
    # The same number of passes per step as `baseline`: one Student, two drawn sub-networks.
    "student_sampled2": {"student_widths": [0.25], "num_sampled_widths": 2},
    "sampled2_kd_only": {"num_sampled_widths": 2, "alpha": 0.0},
    "sampled1_ta_heavy": {"num_sampled_widths": 1, "beta": 2.0},
    "sampled1_gamma3": {"num_sampled_widths": 1, "gamma": 3.0},
    # Controls for the TA's gap: the TA's terms alone (Students weighted 0), then one Student.
    "ta_only": {"student_weights": [0.0, 0.0, 0.0], "num_sampled_widths": 0},
    "one_student": {"student_widths": [0.25], "num_sampled_widths": 0},
    "one_student_light": {"student_widths": [0.25], "student_weights": [0.25],
                          "num_sampled_widths": 0},
    # The TA's task loss weighted over the sum of the narrower members' terms.
    "sampled1_beta4": {"num_sampled_widths": 1, "beta": 4.0},
    "sampled1_beta8": {"num_sampled_widths": 1, "beta": 8.0},
    # Only the TA's terms train the weights no width slices (embeddings, norms, output layer).
    "one_student_detached": {"student_widths": [0.25], "num_sampled_widths": 0,
                             "detach_shared": True},
    "sampled1_detached": {"num_sampled_widths": 1, "detach_shared": True},
    # Per-layer draws among the trained widths only (MatFormer's Mix'n'Match), or a coin
    # per layer between those and the range.
    "sampled1_granularities": {"num_sampled_widths": 1,
                               "sampled_width_distribution": "granularities"},
    "sampled1_either": {"num_sampled_widths": 1, "sampled_width_distribution": "either"},
    # The smallest Student's terms weighted over the others' (the digits Student trails).
    "sampled1_student_heavy": {"num_sampled_widths": 1, "student_weights": [3.0, 1.0, 1.0]},
}


def _metric(task, values):
    return values["accuracy"] if task == "digits" else values["bits_per_byte"]


def _evaluate(model, task_data, config, split):
    return _metric(config.task, demo.evaluate(model, task_data, config, split))


def _train(model, task_data, config, seed, title):
    runs.compile_model(model, runs.make_optimizer("adam", config, config.steps), config)
    seconds, _ = runs.fit(model, task_data, config, seed, config.steps, title)
    return seconds


def run(task, variants, seeds, steps, split, mixes, ffn_only=False, learning_rate=None,
        separate_widths=SEPARATE_WIDTHS, ta=None):
    config = preset(task, "full")
    if ta:  # every arm at another TA size (the separate models scale with it)
        config = dataclasses.replace(config, ta={**config.ta, **ta})
    if steps:
        config = dataclasses.replace(config, steps=steps)
    if learning_rate:
        config = dataclasses.replace(config, learning_rate=learning_rate)
    if ffn_only:  # every head in every member: only the FFN width is nested (MatFormer)
        config = dataclasses.replace(config, ta={**config.ta, "nested_heads": False})
    if task == "lm":
        config = dataclasses.replace(config, eval_windows=1024)
    task_data = load_task(demo.TASK_DATA[task])
    family = list(EVALUATED) + _mixes(config, mixes)
    rows = []
    for seed in seeds:
        for fraction in separate_widths:
            keras.utils.set_random_seed(seed)
            kwargs = models_lib.student_kwargs(config.ta, task, fraction)
            model = models_lib.build(task, name=f"{task}_separate", **kwargs)
            seconds = _train(model, task_data, config, seed, f"separate {fraction}")
            rows.append({"arm": "separate", "seed": seed, "width": f"{fraction:g}",
                         "params": int(keras_matta.cost(model)["params"]),
                         "value": _evaluate(model, task_data, config, split),
                         "seconds": seconds})
            print(rows[-1], flush=True)
        for name in variants:
            keras.utils.set_random_seed(seed)
            ta = models_lib.build(task, name=f"{task}_ta", **config.ta)
            kwargs = {"student_widths": STUDENTS, **VARIANTS[name]}
            trainer = keras_matta.MatTA(ta, seed=seed, **kwargs)
            seconds = _train(trainer, task_data, config, seed, f"MatTA {name}")
            for spec in family:
                rows.append({"arm": name, "seed": seed, "width": widths_lib.width_label(spec),
                             "params": int(keras_matta.cost(ta, spec)["params"]),
                             "value": _evaluate(keras_matta.extract(ta, spec), task_data,
                                                config, split),
                             "seconds": seconds})
                print(rows[-1], flush=True)
    return config, rows


def _mixes(config, which):
    """No mixes (`"none"`), the demo's per-layer mixes (`"demo"`), or every per-layer mix of
    the trained granularities (`"all"`)."""
    if which == "none":
        return []
    if which == "demo":
        return list(config.mixes)
    layers = sorted(config.mixes[0])
    grid = itertools.product((*STUDENTS, 1.0), repeat=len(layers))
    return [dict(zip(layers, widths)) for widths in grid if len(set(widths)) > 1]


def summarize(task, rows):
    """`{arm: {width: (mean, std, mean change against separate, std of the change)}}`."""
    separate = {}
    for row in rows:
        if row["arm"] == "separate":
            separate.setdefault(row["seed"], []).append((row["params"], row["value"]))

    def reference(seed, params):
        points = sorted(separate[seed])
        xs, ys = [p for p, _ in points], [v for _, v in points]
        return float(np.interp(params, xs, ys))

    table = {}
    for row in rows:
        cell = table.setdefault(row["arm"], {}).setdefault(row["width"], [])
        cell.append((row["value"], row["value"] - reference(row["seed"], row["params"]),
                     row["params"]))
    out = {}
    for arm, widths in table.items():
        out[arm] = {}
        for width, cell in widths.items():
            values, deltas = np.array([c[0] for c in cell]), np.array([c[1] for c in cell])
            out[arm][width] = {"mean": float(values.mean()), "std": float(values.std()),
                               "delta": float(deltas.mean()), "delta_std": float(deltas.std()),
                               "params": cell[0][2], "seeds": len(cell)}
    return out


def _members(summary):
    """Every member any arm evaluated: the uniform widths by size, then the mixes."""
    members = {width: cell["params"] for arm in summary.values() for width, cell in arm.items()}
    return sorted(members, key=lambda w: (w.startswith("mix"), members[w]))


def print_table(task, summary):
    arms = list(summary)
    widths = _members(summary)
    print(f"\n{task}: value (change vs separate; {'higher' if task == 'digits' else 'lower'} "
          "is better)")
    print("width".ljust(28) + "".join(a.ljust(22) for a in arms))
    for width in widths:
        line = width.ljust(28)
        for arm in arms:
            cell = summary[arm].get(width)
            line += ("" if cell is None else
                     f"{cell['mean']:.4f} ({cell['delta']:+.4f})").ljust(22)
        print(line)


def _spread(width):
    """A member's largest layer width over its smallest (1 for a uniform width)."""
    fractions = [float(f) for f in re.findall(r"=([0-9.]+)", width)]
    return max(fractions) / min(fractions) if fractions else 1.0


def plot(payload, arm, path):
    """Quality against parameters: separate training, `arm`'s uniform widths and its mixes,
    the mixes coloured by how far apart their layers' widths are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(payload["task"], payload["rows"])
    figure, axis = plt.subplots(figsize=(7.5, 5))
    for name, style in (("separate", "k-o"), (arm, "C0-s")):
        cells = sorted((c["params"], c["mean"]) for w, c in summary[name].items()
                       if not w.startswith("mix"))
        axis.plot(*zip(*cells), style, label=f"{name} (uniform widths)")
    mixes = [(w, c) for w, c in summary[arm].items() if w.startswith("mix")]
    spreads = sorted({_spread(w) for w, _ in mixes})
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(spreads)))
    for spread, colour in zip(spreads, colours):
        cells = [c for w, c in mixes if _spread(w) == spread]
        axis.errorbar([c["params"] for c in cells], [c["mean"] for c in cells],
                      yerr=[c["std"] for c in cells], fmt="^", color=colour, capsize=2,
                      label=f"{arm} mixes, widest / narrowest layer = {spread:g}")
    for width, cell in mixes:
        axis.annotate(width[4:-1], (cell["params"], cell["mean"]), fontsize=6,
                      xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel("parameters")
    axis.set_ylabel("validation accuracy (higher is better)" if payload["task"] == "digits"
                    else "validation bits/byte (lower is better)")
    axis.set_title(f"{payload['task']}: Mix'n'Match against the trained widths "
                   f"({len(payload['seeds'])} seeds, mean ± std)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


README_BEGIN = "<!-- family recipe study: generated, do not edit -->"
README_END = "<!-- end of family recipe study -->"


def _ta_size(payload):
    """` at TA d=128, FFN 512` where a run changed the preset's TA size (`--ta`)."""
    ta, preset_ta = payload.get("ta"), preset(payload["task"], "full").ta
    if not ta or ta == preset_ta:
        return ""
    return (f" at TA d={ta['model_dim']}, FFN {ta['intermediate_dim']}" if payload["task"] == "lm"
            else f" at TA {ta}")


def markdown(payloads):
    """One table per task: every member's value and its change against separate training."""
    out = [README_BEGIN]
    for payload in payloads:
        # From the rows, so that files written before `seeds` was summarised show it too.
        task = payload["task"]
        summary = summarize(task, payload["rows"])
        arms = list(summary)
        out.append(
            f"\n**{task}**{_ta_size(payload)} ({payload['split']} split, {payload['steps']} "
            "steps, Adam, seeds "
            f"{', '.join(map(str, payload['seeds']))}; "
            f"{'accuracy, higher' if task == 'digits' else 'bits/byte, lower'} is better; in "
            "brackets the change against the separately trained model of the same size, or the "
            "interpolation between the two nearest sizes, paired by seed, ± its std over "
            "seeds). Source: "
            f"[`{payload['path']}`]({payload['path']}).\n")
        legend = [f"`{arm}` {json.dumps(kwargs) if kwargs else '(no argument)'}"
                  for arm, kwargs in payload["variants"].items()]
        out.append("Arms (MatTA arguments besides Students at 0.25, 0.5, 0.75): "
                   + "; ".join(legend) + ".\n")
        # An arm run on fewer seeds than the file holds says how many.
        seeds = {arm: max(cell["seeds"] for cell in summary[arm].values()) for arm in arms}
        out.append("| member | params | " + " | ".join(
            arm if seeds[arm] == len(payload["seeds"]) else f"{arm} ({seeds[arm]} seeds)"
            for arm in arms) + " |")
        out.append("|---|---|" + "---|" * len(arms))
        for width in _members(summary):
            values = [summary[arm].get(width) for arm in arms]
            params = next(v["params"] for v in values if v is not None)
            out.append(f"| {width} | {params / 1000:.1f}k | " + " | ".join(
                "" if v is None else f"{v['mean']:.4f}" + _change(arm, v)
                for arm, v in zip(arms, values)) + " |")
    out.append(README_END)
    return "\n".join(out)


def _change(arm, cell):
    """` (change)` against separate training, ` (change ± its std over seeds)` for several."""
    if arm == "separate":
        return ""
    spread = f" ± {cell['delta_std']:.4f}" if cell["seeds"] > 1 else ""
    return f" ({cell['delta']:+.4f}{spread})"


def merge(paths, arms=None):
    """The payloads of several runs of one task merged (rows deduplicated by arm, seed, width),
    keeping the separate models and, if given, only `arms`."""
    payloads = [json.loads(pathlib.Path(p).read_text()) for p in paths]
    rows, seen = [], set()
    for payload in payloads:
        for row in payload["rows"]:
            key = (row["arm"], row["seed"], row["width"])
            if arms and row["arm"] not in ("separate", *arms):
                continue
            if key not in seen:
                seen.add(key)
                rows.append(row)
    first = payloads[0]
    variants = {k: v for p in payloads for k, v in p["variants"].items()
                if not arms or k in arms}
    seeds = sorted({row["seed"] for row in rows})
    return {**first, "variants": variants, "rows": rows, "seeds": seeds,
            "seconds": sum(p["seconds"] for p in payloads),
            "summary": summarize(first["task"], rows)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("digits", "lm"))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        help="MatTA recipes to train; none (`--variants` alone) trains only "
                        "the separate models")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--no-mixes", action="store_true")
    parser.add_argument("--all-mixes", action="store_true",
                        help="evaluate every per-layer mix of the trained granularities, not "
                        "only the demo's")
    parser.add_argument("--ffn-only", action="store_true",
                        help="language model: nest only the FFN width (all heads everywhere)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak learning rate of every arm (default: the demo's)")
    parser.add_argument("--ta", type=json.loads, default=None, metavar="JSON",
                        help='TA builder arguments over the preset\'s, e.g. \'{"model_dim": 128}\'')
    parser.add_argument("--separate-widths", nargs="+", type=float, default=SEPARATE_WIDTHS)
    parser.add_argument("--output", default=None)
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="merge these results of one task into --output instead of running")
    parser.add_argument("--arms", nargs="+", default=None,
                        help="with --merge: keep only these arms (and the separate models)")
    parser.add_argument("--readme", nargs="+", metavar="JSON",
                        help="write the tables of these results into README.md")
    parser.add_argument("--plot", nargs=2, metavar=("JSON", "ARM"),
                        help="plot one arm's members of these results next to the JSON")
    args = parser.parse_args()
    if args.plot:
        path = pathlib.Path(args.plot[0])
        plot(json.loads(path.read_text()), args.plot[1], path.with_suffix(".png"))
        print(f"wrote {path.with_suffix('.png')}")
        return
    if args.readme:
        payloads = [{**json.loads(pathlib.Path(p).read_text()), "path": p} for p in args.readme]
        readme = pathlib.Path("README.md")
        readme.write_text(report.replace_readme_section(
            readme.read_text(), markdown(payloads), README_BEGIN, README_END))
        return
    if args.merge:
        payload = merge(args.merge, args.arms)
    else:
        start = time.perf_counter()
        config, rows = run(args.task, args.variants, args.seeds, args.steps, args.split,
                           "none" if args.no_mixes else "all" if args.all_mixes else "demo",
                           args.ffn_only, args.learning_rate,
                           tuple(args.separate_widths), args.ta)
        payload = {
            "task": args.task, "split": args.split, "steps": config.steps, "seeds": args.seeds,
            "ffn_only": args.ffn_only, "learning_rate": config.learning_rate, "ta": config.ta,
            "variants": {v: VARIANTS[v] for v in args.variants},
            "backend": keras.backend.backend(), "seconds": time.perf_counter() - start,
            "summary": summarize(args.task, rows), "rows": rows,
        }
    print_table(payload["task"], payload["summary"])
    output = pathlib.Path(args.output or
                          f"benchmarks/results/family_recipe_{payload['task']}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=1))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
