"""Which peak learning rate should the main job use? Chosen on the validation split.

The demo trains every model of a task (Teacher, separate models, MatTA) at one peak learning
rate. This runs the `--full` study of one task on the validation split at each rate of a grid:
the Teacher (retrained: its cache key holds the rate), every trained width separately, and the
MatTA family, with Adam and Shampoo, on the same seeds. The rate is chosen by the models
trained without the family alone, the Teacher and the separately trained widths (the baselines
get their best rate, so the choice cannot favour MatTA; the Teacher counts because KD and MatTA
learn from it); the family-vs-separate comparison is then read at that rate.

Prints, per rate and optimizer, the Teacher, each trained width's separate value and the
family's change against it (paired by seed), and writes JSON.

    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/demo_learning_rate.py --task digits \
        --rates 1e-3 3e-3 6e-3 [--optimizers adam] [--output adam.json]
    python benchmarks/demo_learning_rate.py --merge adam.json shampoo.json   # one JSON
    python benchmarks/demo_learning_rate.py \
        --readme benchmarks/results/demo_learning_rate_digits.json   # its README table
"""

import argparse
import dataclasses
import json
import pathlib
import time

import numpy as np

from keras_matta.study import demo, report, runs
from keras_matta.study.config import preset


def run(task, rates, seeds, optimizers):
    config = preset(task, "full")
    out = {}
    for rate in rates:
        rate_config = dataclasses.replace(config, learning_rate=rate, seeds=tuple(seeds))
        rows = demo.run_task(rate_config, runs.default_cache_dir(), split="validation",
                             optimizers=optimizers, methods=("separate", "matta"))
        out[f"{rate:g}"] = rows
    return out


def trained_widths(rows_by_rate, task):
    """`{rate: {optimizer: [member]}}`: the trained widths (TA and Students) of each run."""
    table = {}
    for rate, rows in rows_by_rate.items():
        comparison = report.family_vs_separate(rows)[task]
        table[rate] = {
            optimizer: [m for m in data["members"] if m["reference"] == "separate"]
            for optimizer, data in comparison["optimizers"].items()
        }
    return table


def teachers(rows_by_rate, task):
    """`{rate: the Teacher's validation metric}`."""
    metric = report.METRICS[task][0]
    return {rate: next(r["metrics"][metric] for r in rows if r["method"] == "teacher")
            for rate, rows in rows_by_rate.items()}


def choose(table, teacher, higher_is_better):
    """Per optimizer, the rate at which the Teacher and the separately trained widths are best
    on average (each seed-mean counts once). Returns `{optimizer: rate}`."""
    sign = 1.0 if higher_is_better else -1.0
    chosen = {}
    for optimizer in next(iter(table.values())):
        scores = {rate: sign * np.mean([teacher[rate]] + [m["separate"]["mean"]
                                                          for m in table[rate][optimizer]])
                  for rate in table}
        chosen[optimizer] = max(scores, key=scores.get)
    return chosen


def print_table(table, teacher, chosen):
    for rate, by_optimizer in table.items():
        for optimizer, members in by_optimizer.items():
            mark = "  <- chosen" if chosen[optimizer] == rate else ""
            cells = "  ".join(
                f"{m['label']}: {m['separate']['mean']:.4f} "
                f"({m['difference']['mean']:+.4f} ± {m['difference']['std']:.4f})"
                for m in members)
            print(f"rate {rate:>6s} {optimizer:8s} Teacher {teacher[rate]:.4f}  {cells}{mark}")


README_BEGIN = "<!-- demo learning rate: generated, do not edit -->"
README_END = "<!-- end of demo learning rate -->"


def markdown(payload, source):
    """The README block: per rate, the Teacher, and per optimizer each trained width's separate
    value with the family's change against it and the side that is better."""
    higher = report.METRICS[payload["task"]][1]
    first_rate = next(iter(payload["trained_widths"].values()))
    labels = [m["label"] for m in next(iter(first_rate.values()))]
    seeds = ", ".join(str(s) for s in payload["seeds"])
    lines = [README_BEGIN, "",
             f"**{payload['task']}** ({payload['split']} split, seeds {seeds}; each cell: the "
             "separately trained model, then the MatTA family's member against it, paired by "
             f"seed, and the better side). Source: [`{source}`]({source}).", "",
             "| rate | Teacher | optimizer | " + " | ".join(labels) + " |",
             "|---|---|---|" + "---|" * len(labels)]
    for rate, by_optimizer in payload["trained_widths"].items():
        for optimizer, members in by_optimizer.items():
            chosen = " (chosen)" if payload["chosen"][optimizer] == rate else ""
            cells = []
            for m in members:
                d = m["difference"]
                verdict = report.better_side(d, higher)
                cells.append(f"{m['separate']['mean']:.4f} ({d['mean']:+.4f} ± {d['std']:.4f}, "
                             f"{verdict})")
            lines.append(f"| {rate}{chosen} | {payload['teacher'][rate]:.4f} | {optimizer} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines + ["", README_END])


def summarize(task, seeds, rows_by_rate, seconds):
    table = trained_widths(rows_by_rate, task)
    teacher = teachers(rows_by_rate, task)
    chosen = choose(table, teacher, report.METRICS[task][1])
    print_table(table, teacher, chosen)
    return {"task": task, "split": "validation", "seeds": seeds, "seconds": seconds,
            "chosen": chosen, "teacher": teacher, "trained_widths": table,
            "rows": rows_by_rate}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("digits", "lm"))
    parser.add_argument("--rates", nargs="+", type=float)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--optimizers", nargs="+", default=list(runs.OPTIMIZERS))
    parser.add_argument("--output", default=None)
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="join runs of one task (e.g. one per optimizer) into --output")
    parser.add_argument("--readme", metavar="JSON", help="write its table into README.md")
    args = parser.parse_args()
    if args.readme:
        readme = pathlib.Path("README.md")
        block = markdown(json.loads(pathlib.Path(args.readme).read_text()), args.readme)
        readme.write_text(report.replace_readme_section(readme.read_text(), block,
                                                        README_BEGIN, README_END))
        return
    if args.merge:
        parts = [json.loads(pathlib.Path(p).read_text()) for p in args.merge]
        rows_by_rate = {}
        for part in parts:
            for rate, rows in part["rows"].items():
                known = rows_by_rate.setdefault(rate, [])
                # The Teacher of a rate is the same file in every part: keep one row.
                known.extend(r for r in rows if r["method"] != "teacher" or not any(
                    k["method"] == "teacher" for k in known))
        payload = summarize(parts[0]["task"], parts[0]["seeds"], rows_by_rate,
                            sum(part["seconds"] for part in parts))
    else:
        if not (args.task and args.rates):
            parser.error("--task and --rates are needed to run")
        start = time.perf_counter()
        rows_by_rate = run(args.task, args.rates, args.seeds, tuple(args.optimizers))
        payload = summarize(args.task, args.seeds, rows_by_rate, time.perf_counter() - start)
    output = pathlib.Path(args.output or
                          f"benchmarks/results/demo_learning_rate_{payload['task']}.json")
    output.write_text(json.dumps(payload, indent=1))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
