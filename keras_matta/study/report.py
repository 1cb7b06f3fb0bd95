"""The study's report: measured rows aggregated over seeds, a table, a plot and a JSON file.

Every number comes from a row measured by `keras_matta.study.demo`; nothing is typed in.
Gains are measured against the Student trained alone with Adam (same steps, same data).
"""

import json
import math

import numpy as np

from keras_matta.study.runs import METHOD_TITLES
from keras_matta.widths import width_label

# Per task: (primary metric, higher is better, secondary metrics), in table order.
METRICS = {
    "digits": ("accuracy", True, ("auc",)),
    "lm": ("bits_per_byte", False, ("final_word_accuracy",)),
}
METRIC_TITLES = {
    "accuracy": "accuracy",
    "auc": "AUC",
    "bits_per_byte": "bits/byte",
    "final_word_accuracy": "final-word acc.",
}
TASK_TITLES = {"digits": "MNIST digits (MLP)", "lm": "Shakespeare bytes (transformer)"}


def aggregate(rows):
    """Groups rows by (task, method, optimizer, width) and averages over seeds.

    Returns:
        A list of dicts with `mean` and `std` (0 for one seed) per metric, `seeds`, and the
        `params`, `flops`, `train_seconds` (mean) of the group, in first-seen order.
    """
    groups = {}
    for row in rows:
        key = (row["task"], row["method"], row["optimizer"], row["width"])
        groups.setdefault(key, []).append(row)
    results = []
    for (task, method, optimizer, width), members in groups.items():
        metrics = {}
        for name in members[0]["metrics"]:
            values = np.array([m["metrics"][name] for m in members], dtype=float)
            metrics[name] = {"mean": float(values.mean()), "std": float(values.std())}
        results.append({
            "task": task, "method": method, "optimizer": optimizer, "width": width,
            "label": members[0]["label"], "params": members[0]["params"],
            "flops": members[0]["flops"], "seeds": [m["seed"] for m in members],
            "train_seconds": float(np.mean([m.get("train_seconds") or 0.0 for m in members])),
            "metrics": metrics,
        })
    return results


def _find(results, task, method, optimizer, width=None):
    for result in results:
        if (result["task"], result["method"], result["optimizer"]) == (task, method, optimizer) \
                and (width is None or result["width"] == width):
            return result
    return None


def summary(results, task, student_width):
    """The paper's claims, measured: gains over the Student alone with Adam.

    Returns:
        A dict of gains in the primary metric (positive is better), `None` where a run is
        missing.
    """
    primary, higher, _ = METRICS[task]
    sign = 1.0 if higher else -1.0

    def value(method, optimizer, width=None):
        result = _find(results, task, method, optimizer, width)
        return None if result is None else result["metrics"][primary]["mean"]

    base = value("student", "adam")
    out = {"metric": primary, "higher_is_better": higher, "baseline_student_adam": base}
    for optimizer in ("adam", "shampoo"):
        for name, method, width in (("student", "student", None), ("kd", "kd", None),
                                    ("matta_student", "matta", student_width),
                                    ("matta_ta", "matta", "1")):
            measured = value(method, optimizer, width)
            gain = None if measured is None or base is None else sign * (measured - base)
            out[f"gain_{name}_{optimizer}"] = gain
    gains = [out["gain_matta_student_adam"], out["gain_student_shampoo"],
             out["gain_matta_student_shampoo"]]
    if None not in gains:
        out["super_additive"] = gains[2] > gains[0] + gains[1]
        out["super_additivity_margin"] = gains[2] - (gains[0] + gains[1])
    return out


def _format(metric, stats):
    mean, std = stats["mean"], stats["std"]
    digits = 3 if metric == "bits_per_byte" else 4
    text = f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std > 0 else "")


def _count(value):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return str(value)


def table_rows(results, task, student_width):
    """`(header, rows)` of the main table of `task`: Teacher, then each method and optimizer."""
    primary, _, secondary = METRICS[task]
    header = ["model", "optimizer", "params", "FLOPs/example",
              METRIC_TITLES[primary]] + [METRIC_TITLES[m] for m in secondary] + ["train s"]
    order = [("teacher", "adam", None)] + [
        (method, optimizer, width)
        for method, width in (("student", None), ("kd", None), ("matta", student_width),
                              ("matta", "1"))
        for optimizer in ("adam", "shampoo")
    ]
    rows = []
    for method, optimizer, width in order:
        result = _find(results, task, method, optimizer, width)
        if result is None:
            continue
        title = METHOD_TITLES["matta_ta" if method == "matta" and width == "1" else method]
        seconds = "cached" if result["train_seconds"] == 0 else f"{result['train_seconds']:.0f}"
        rows.append([title, optimizer, _count(result["params"]), _count(result["flops"])]
                    + [_format(m, result["metrics"][m]) for m in (primary, *secondary)]
                    + [seconds])
    return header, rows


def family_rows(results, task):
    """`(header, rows)`: every Mix'n'Match model extracted from the MatTA TA."""
    primary, _, secondary = METRICS[task]
    header = ["extracted widths", "optimizer", "params", "FLOPs/example",
              METRIC_TITLES[primary]] + [METRIC_TITLES[m] for m in secondary]
    rows = [
        [r["label"], r["optimizer"], _count(r["params"]), _count(r["flops"])]
        + [_format(m, r["metrics"][m]) for m in (primary, *secondary)]
        for r in results if r["task"] == task and r["method"] == "matta"
    ]
    return header, rows


def markdown_table(header, rows):
    """A Markdown pipe table, columns padded to their widest cell (never wrapped)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(row) for row in rows])


def _task_sections(results, summaries, student_widths, split):
    """Per task: `(main table title, table)`, `(family table title, table)` and the claims."""
    for task in summaries:
        tables = (
            (f"{TASK_TITLES[task]}: Students, KD and MatTA ({split} split)",
             markdown_table(*table_rows(results, task, student_widths[task]))),
            (f"{TASK_TITLES[task]}: Mix'n'Match models extracted from the MatTA TA "
             f"({split} split)", markdown_table(*family_rows(results, task))),
        )
        yield tables, _summary_text(summaries[task])


def print_tables(results, summaries, student_widths, split="test"):
    """Prints the main and Mix'n'Match tables of every task, then the measured claims."""
    for tables, claims in _task_sections(results, summaries, student_widths, split):
        for title, table in tables:
            print(f"\n{title}\n\n{table}")
        print("\n" + claims)


README_BEGIN = "<!-- demo results: generated, do not edit -->"
README_END = "<!-- end of demo results -->"


def readme_section(payload, source):
    """The README's results: the demo's tables and claims from `payload`, a `results.json`.

    Args:
        payload: the JSON payload `run_demo` wrote.
        source: the path of that file, relative to the README (named in the text).

    Returns:
        Markdown between `README_BEGIN` and `README_END`, markers included.
    """
    student_widths = {task: width_label(payload["settings"][task]["student_fraction"])
                      for task in payload["summary"]}
    seeds = sorted({seed for result in payload["results"] for seed in result["seeds"]})
    environment = payload["environment"]
    command = "keras-matta demo" + ("" if payload["mode"] == "default" else f" --{payload['mode']}")
    lines = [
        README_BEGIN,
        f"Measured by `{command}` (seeds "
        f"{', '.join(map(str, seeds))}; mean ± std over seeds; {environment['backend']} on "
        f"{environment['cpu_count']} CPU cores, {payload['seconds'] / 60:.0f} min). Source: "
        f"[`{source}`]({source}); this section is generated from it by "
        f"`python -m keras_matta.study.report {source} --readme README.md`.",
    ]
    sections = _task_sections(payload["results"], payload["summary"], student_widths,
                              payload["split"])
    for tables, claims in sections:
        for title, table in tables:
            lines += ["", f"**{title}**", "", table]
        lines += ["", "```text", claims.rstrip("\n"), "```"]
    return "\n".join(lines + [README_END])


def replace_readme_section(readme_text, section):
    """`readme_text` with the text between the markers (included) replaced by `section`."""
    begin, end = readme_text.find(README_BEGIN), readme_text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"the README has no `{README_BEGIN}` ... `{README_END}` block")
    return readme_text[:begin] + section + readme_text[end + len(README_END):]


def _summary_text(s):
    metric = METRIC_TITLES[s["metric"]]
    better = "higher" if s["higher_is_better"] else "lower"

    def gain(key):
        value = s.get(key)
        return "n/a" if value is None else f"{value:+.4f}"

    lines = [f"Gains in {metric} ({better} is better) over the Student alone with Adam "
             f"({s['baseline_student_adam']:.4f}):"]
    for optimizer in ("adam", "shampoo"):
        lines.append(
            f"  {optimizer:8s} Student alone {gain(f'gain_student_{optimizer}')}, "
            f"KD {gain(f'gain_kd_{optimizer}')}, "
            f"MatTA Student {gain(f'gain_matta_student_{optimizer}')}, "
            f"MatTA TA {gain(f'gain_matta_ta_{optimizer}')}"
        )
    if "super_additive" in s:
        verdict = "super-additive" if s["super_additive"] else "not super-additive"
        lines.append(
            f"  MatTA+Shampoo vs MatTA(Adam) + Shampoo(Student): {verdict} "
            f"(margin {s['super_additivity_margin']:+.4f})"
        )
    return "\n".join(lines) + "\n"


def plot(results, path, split="test"):
    """Quality against parameters: the extracted family against the separately trained ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in results))
    figure, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.8), squeeze=False)
    colors = {"adam": "tab:blue", "shampoo": "tab:orange"}
    for axis, task in zip(axes[0], tasks):
        primary, higher, _ = METRICS[task]

        def points(method, optimizer):
            return [r for r in results if r["task"] == task and r["method"] == method
                    and r["optimizer"] == optimizer]

        for optimizer, color in colors.items():
            family = points("matta", optimizer)
            uniform = sorted((r for r in family if not r["label"].startswith("mix")),
                             key=lambda r: r["params"])
            mixes = [r for r in family if r["label"].startswith("mix")]
            _errorbar(axis, uniform, primary, color, "o-",
                      f"MatTA family, uniform widths ({optimizer})")
            _errorbar(axis, mixes, primary, color, "D", f"MatTA Mix'n'Match ({optimizer})",
                      fill="none")
            _errorbar(axis, points("student", optimizer), primary, color, "x",
                      f"Student alone ({optimizer})", size=10)
            _errorbar(axis, points("kd", optimizer), primary, color, "^",
                      f"Student <- Teacher KD ({optimizer})")
        _errorbar(axis, points("teacher", "adam"), primary, "black", "*", "Teacher", size=12)
        axis.set_xscale("log")
        axis.set_xlabel("parameters")
        axis.set_ylabel(f"{METRIC_TITLES[primary]} ({'higher' if higher else 'lower'} is better)")
        axis.set_title(f"{TASK_TITLES[task]}, {split} split")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _errorbar(axis, results, metric, color, style, label, fill=None, size=6):
    if not results:
        return
    x = [r["params"] for r in results]
    y = [r["metrics"][metric]["mean"] for r in results]
    err = [r["metrics"][metric]["std"] for r in results]
    axis.errorbar(x, y, yerr=err if any(err) else None, fmt=style, color=color, label=label,
                  markersize=size, markerfacecolor=fill or color, capsize=3)


def write_json(path, payload):
    """Writes `payload` as indented JSON (NaN written as null)."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    with open(path, "w") as file:
        json.dump(clean(payload), file, indent=2)


def main(argv=None):
    """`python -m keras_matta.study.report RESULTS_JSON [--readme README.md]`."""
    import argparse

    parser = argparse.ArgumentParser(description="Print a demo run's README section, or "
                                     "write it into the README between the markers.")
    parser.add_argument("results", help="a results.json written by `keras-matta demo`")
    parser.add_argument("--readme", help="the README to update in place")
    args = parser.parse_args(argv)
    with open(args.results) as file:
        payload = json.load(file)
    if args.readme is None:
        print(readme_section(payload, args.results))
        return
    with open(args.readme) as file:
        text = file.read()
    with open(args.readme, "w") as file:
        file.write(replace_readme_section(text, readme_section(payload, args.results)))


if __name__ == "__main__":
    main()
