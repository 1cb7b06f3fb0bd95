"""The study's report: measured rows aggregated over seeds, tables, a plot and a JSON file.

Every number comes from a row measured by `keras_matta.study.demo`; nothing is typed in.
Gains are measured against the Student trained alone with Adam (same steps, same data).
Each member of the family extracted from the MatTA TA is compared with separate training
(`family_vs_separate`): with the model trained alone at its size, or, for sizes that were not
trained separately (in-between widths, Mix'n'Match), with the linear interpolation in
parameters between the two nearest separately trained sizes; differences are paired by seed.
"""

import json
import math
import os

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
        `label`, `role`, `params`, `flops`, `train_seconds` (mean) of the group, in first-seen
        order.
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
            "label": members[0]["label"], "role": members[0].get("role"),
            "params": members[0]["params"],
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


def _lookup(results, task, method, optimizer, width=None):
    """`_find`, where a separate model at the Student's width may be an older result's `student`
    (written before separate models were trained at every size)."""
    found = _find(results, task, method, optimizer, width)
    if found is None and method == "separate":
        found = _find(results, task, "student", optimizer)
    return found


def summary(results, task, student_width):
    """The paper's claims, measured: gains over the Student alone with Adam.

    The Student alone is the model trained separately at the Student's width.

    Returns:
        A dict of gains in the primary metric (positive is better), `None` where a run is
        missing.
    """
    primary, higher, _ = METRICS[task]
    sign = 1.0 if higher else -1.0

    def value(method, optimizer, width=None):
        result = _lookup(results, task, method, optimizer, width)
        return None if result is None else result["metrics"][primary]["mean"]

    base = value("separate", "adam", student_width)
    out = {"metric": primary, "higher_is_better": higher, "baseline_student_adam": base}
    for optimizer in ("adam", "shampoo"):
        for name, method, width in (("student", "separate", student_width), ("kd", "kd", None),
                                    ("majority", "majority", None),
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


# === The family against separate training ===


def interpolate(params, lower, upper):
    """The value at `params` on the straight line between two `(params, value)` points.

    Args:
        params: where to read the line; between `lower[0]` and `upper[0]`.
        lower: `(params, value)` of the smaller separately trained size.
        upper: `(params, value)` of the larger one (may equal `lower`: its value is returned).

    Returns:
        The interpolated value.

    Example:

    ```python
    interpolate(150, (100, 0.90), (200, 0.94))   # 0.92
    ```
    """
    (x0, y0), (x1, y1) = lower, upper
    if not x0 <= params <= x1:
        raise ValueError(f"`params` ({params}) must lie between {x0} and {x1}.")
    if x1 == x0:
        return y0
    return y0 + (params - x0) / (x1 - x0) * (y1 - y0)


def paired_difference(family, reference):
    """Family minus reference, paired by seed, over the seeds both have.

    Args:
        family: `{seed: value}` of the family member.
        reference: `{seed: value}` of its separately trained reference.

    Returns:
        `{"mean", "std", "seeds"}` of the per-seed differences (`std` over seeds, 0 for one);
        `None` when no seed is shared.

    Example:

    ```python
    paired_difference({0: 0.92, 1: 0.95}, {0: 0.90, 1: 0.92})   # mean 0.025, std 0.005
    ```
    """
    seeds = sorted(set(family) & set(reference))
    if not seeds:
        return None
    differences = np.array([family[s] - reference[s] for s in seeds], dtype=float)
    return {"mean": float(differences.mean()), "std": float(differences.std()), "seeds": seeds}


def better_side(difference, higher_is_better):
    """Which side wins: `"family"`, `"separate"`, or `"tie"` within one std of the difference.

    Args:
        difference: `{"mean", "std"}` of family minus separate (`paired_difference`).
        higher_is_better: whether a larger metric is better (accuracy) or worse (bits/byte).

    Returns:
        `"tie"` when `|mean| <= std` (with one seed: only when equal), else the better side.

    Example:

    ```python
    better_side({"mean": -0.05, "std": 0.01}, higher_is_better=False)   # "family"
    ```
    """
    if abs(difference["mean"]) <= difference["std"]:
        return "tie"
    return "family" if (difference["mean"] > 0) == higher_is_better else "separate"


def monotonicity(members, higher_is_better):
    """Whether each member that is no Student is at least as good as its smaller trained neighbour.

    The neighbour is the largest trained member (role `"trained"`) with fewer parameters;
    members below every trained one are not checked. The two are compared paired by seed, with
    the rule of `better_side`: a member worse than its neighbour by no more than the standard
    deviation of the per-seed differences ties with it.

    Args:
        members: dicts with `label`, `role`, `params` and `values` (`{seed: metric}`).
        higher_is_better: the metric's direction.

    Returns:
        One dict per such member: `label`, `params`, `value` (its mean), `neighbour`,
        `neighbour_params`, `neighbour_value`, `margin` (how much better than the neighbour,
        paired by seed: `{"mean", "std", "seeds"}` in the metric's units; a negative mean is
        worse) and `verdict`: `"pass"` (mean margin >= 0), `"tie"` (worse within one std),
        `"fail"`, or `None` without a neighbour.

    Example:

    ```python
    monotonicity([
        {"label": "0.25", "role": "trained", "params": 10, "values": {0: 0.90, 1: 0.92}},
        {"label": "0.375", "role": "in-between", "params": 15, "values": {0: 0.88, 1: 0.92}},
    ], higher_is_better=True)   # [{"label": "0.375", "verdict": "tie", "margin": ...}]
    ```
    """
    sign = 1.0 if higher_is_better else -1.0
    trained = sorted((m for m in members if m["role"] == "trained"), key=lambda m: m["params"])
    checks = []
    for member in members:
        if member["role"] == "trained":
            continue
        smaller = [m for m in trained if m["params"] < member["params"]]
        check = {"label": member["label"], "params": member["params"],
                 "value": _stats(member["values"].values())["mean"], "neighbour": None,
                 "neighbour_params": None, "neighbour_value": None, "margin": None,
                 "verdict": None}
        if smaller:
            neighbour = smaller[-1]
            margin = paired_difference({s: sign * v for s, v in member["values"].items()},
                                       {s: sign * v for s, v in neighbour["values"].items()})
            if margin["mean"] >= 0:
                verdict = "pass"
            else:
                verdict = "tie" if -margin["mean"] <= margin["std"] else "fail"
            check.update(neighbour=neighbour["label"], neighbour_params=neighbour["params"],
                         neighbour_value=_stats(neighbour["values"].values())["mean"],
                         margin=margin, verdict=verdict)
        checks.append(check)
    return checks


def _by_seed(rows, metric):
    """`{label: {"params", "role", "values": {seed: metric}, "seconds": {seed: s}}}`."""
    out = {}
    for row in rows:
        entry = out.setdefault(row["label"], {"params": row["params"], "role": row.get("role"),
                                              "values": {}, "seconds": {}})
        entry["values"][row["seed"]] = row["metrics"][metric]
        entry["seconds"][row["seed"]] = row.get("train_seconds") or 0.0
    return out


def _reference(params, label, separate):
    """`(kind, {seed: value}, between)` of the separate reference at `params`, or `None`s."""
    if label in separate:
        return "separate", separate[label]["values"], [label]
    sizes = sorted(separate.items(), key=lambda item: item[1]["params"])
    lower = [item for item in sizes if item[1]["params"] <= params]
    upper = [item for item in sizes if item[1]["params"] >= params]
    if not lower or not upper:
        return None, {}, []  # outside the separately trained sizes: nothing to compare with
    (lo_label, lo), (hi_label, hi) = lower[-1], upper[0]
    seeds = set(lo["values"]) & set(hi["values"])
    values = {s: interpolate(params, (lo["params"], lo["values"][s]),
                             (hi["params"], hi["values"][s])) for s in seeds}
    if lo is hi:
        return "separate", values, [lo_label]
    return "interpolated", values, [lo_label, hi_label]


def _stats(values):
    array = np.array(list(values), dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std())}


def family_vs_separate(rows):
    """Every family member extracted from the MatTA TA against separate training, per optimizer.

    The reference of a member is the separately trained model with the same width label, else
    the linear interpolation in parameters between the two nearest separately trained sizes
    (per seed), else none (outside their range). Training compute: the separate side is the
    sum of its runs' seconds, the family is its one MatTA run (the Teacher, shared and cached,
    is counted on neither side); both are averaged over seeds.

    Args:
        rows: the demo's measured rows (`method` `"separate"` and `"matta"` are used).

    Returns:
        `{task: {"metric", "higher_is_better", "optimizers": {optimizer: {"members",
        "monotonicity", "seconds"}}}}`. Each member: `label`, `role`, `params`, `values`
        (`{seed: metric}`), `family` (`{"mean", "std"}` over seeds), `reference`
        (`"separate"`, `"interpolated"` or `None`), `between` (the separate sizes used),
        `separate` (`{"mean", "std"}` of the reference), `difference` (family minus separate,
        paired by seed: `{"mean", "std", "seeds"}`) and `better` (`better_side`); members
        ascend in parameters. `seconds`: `{"separate", "family", "separate_runs"}`.

    Example:

    ```python
    data = family_vs_separate(payload["rows"])
    data["digits"]["optimizers"]["adam"]["members"][0]["better"]   # "family"
    ```
    """
    out = {}
    for task, optimizer in dict.fromkeys((r["task"], r["optimizer"]) for r in rows
                                         if r["method"] == "matta"):
        primary, higher, _ = METRICS[task]

        def select(method, task=task, optimizer=optimizer, primary=primary):
            return _by_seed([r for r in rows if (r["task"], r["method"], r["optimizer"])
                             == (task, method, optimizer)], primary)

        family, separate = select("matta"), select("separate")
        members = []
        for label, entry in sorted(family.items(), key=lambda item: item[1]["params"]):
            kind, reference, between = _reference(entry["params"], label, separate)
            difference = paired_difference(entry["values"], reference) if kind else None
            members.append({
                "label": label, "role": entry["role"], "params": entry["params"],
                "values": entry["values"], "family": _stats(entry["values"].values()),
                "reference": kind,
                "between": between,
                "separate": _stats(reference.values()) if reference else None,
                "difference": difference,
                "better": better_side(difference, higher) if difference else None,
            })
        seeds = sorted({s for e in family.values() for s in e["seconds"]})
        seconds = {
            "separate": float(np.mean([sum(e["seconds"].get(s, 0.0) for e in separate.values())
                                       for s in seeds])),
            # One MatTA run trains the whole family: every member's row carries its seconds.
            "family": float(np.mean([max(e["seconds"].get(s, 0.0) for e in family.values())
                                     for s in seeds])),
            "separate_runs": sorted(separate, key=lambda label: separate[label]["params"]),
        }
        task_out = out.setdefault(task, {"metric": primary, "higher_is_better": higher,
                                         "optimizers": {}})
        task_out["optimizers"][optimizer] = {
            "members": members, "monotonicity": monotonicity(members, higher),
            "seconds": seconds,
        }
    return out


def _format(metric, stats, signed=False):
    mean, std = stats["mean"], stats["std"]
    digits = 3 if metric == "bits_per_byte" else 4
    text = f"{mean:{'+' if signed else ''}.{digits}f}"
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
        for method, width in (("separate", student_width), ("kd", None), ("majority", None),
                              ("matta", student_width), ("matta", "1"))
        for optimizer in ("adam", "shampoo")
    ]
    rows = []
    for method, optimizer, width in order:
        result = _lookup(results, task, method, optimizer, width)
        if result is None:
            continue
        # The majority-kernel row's label names its number of copies.
        title = (result["label"] if method == "majority" else
                 METHOD_TITLES["matta_ta" if method == "matta" and width == "1" else method])
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


def family_table(data, task):
    """`(header, rows)`: each family member against separate training, per optimizer.

    Args:
        data: `family_vs_separate(rows)`.
        task: the task whose table is made.
    """
    metric = data[task]["metric"]
    header = ["family member", "role", "optimizer", "params", f"family {METRIC_TITLES[metric]}",
              "trained separately", "family − separate", "better",
              "vs smaller trained width"]
    rows = []
    for optimizer, side in data[task]["optimizers"].items():
        checks = {check["label"]: check for check in side["monotonicity"]}
        for m in side["members"]:
            if m["reference"] is None:
                reference, difference = "n/a (outside the trained sizes)", "n/a"
            else:
                reference = _format(metric, m["separate"]) + (
                    f" (interpolated {'–'.join(m['between'])})"
                    if m["reference"] == "interpolated" else "")
                difference = _format(metric, m["difference"], signed=True)
            rows.append([m["label"], m["role"], optimizer, _count(m["params"]),
                         _format(metric, m["family"]), reference, difference,
                         m["better"] or "n/a", _check_text(metric, checks.get(m["label"]))])
    return header, rows


def _check_text(metric, check):
    if check is None:
        return "—"  # a trained width: compared with separate training only
    if check["verdict"] is None:
        return "n/a (no smaller trained width)"
    value = _format(metric, {"mean": check["neighbour_value"], "std": 0.0})
    verdict = "FAIL" if check["verdict"] == "fail" else check["verdict"]
    return f"{verdict} ({check['neighbour']}: {value})"


def _family_text(task_data):
    """Per optimizer: the tally of `family_table` and each side's training seconds."""
    lines = []
    for optimizer, side in task_data["optimizers"].items():
        tally = {key: sum(m["better"] == key for m in side["members"])
                 for key in ("family", "tie", "separate")}
        verdicts = [c["verdict"] for c in side["monotonicity"] if c["verdict"] is not None]
        seconds = side["seconds"]
        ratio = seconds["family"] / seconds["separate"] if seconds["separate"] else float("nan")
        lines += [
            f"Family vs separate training ({optimizer}): family better at {tally['family']}, "
            f"tie at {tally['tie']}, separate better at {tally['separate']} of "
            f"{sum(tally.values())} sizes; monotone in parameters: of {len(verdicts)} members "
            f"that are no Student, {verdicts.count('pass')} pass, {verdicts.count('tie')} tie "
            f"with their smaller trained neighbour, {verdicts.count('fail')} fail.",
            f"  Training seconds ({optimizer}): separately, {len(seconds['separate_runs'])} runs "
            f"({', '.join(seconds['separate_runs'])}): {seconds['separate']:.0f} s; the family, "
            f"one MatTA run: {seconds['family']:.0f} s ({ratio:.2f}x).",
        ]
    lines.append("  The Teacher is trained once, cached, and shared by KD and MatTA: its "
                 "training counts on neither side (MatTA's seconds include its forward passes).")
    return "\n".join(lines) + "\n"


def markdown_table(header, rows):
    """A Markdown pipe table, columns padded to their widest cell (never wrapped)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(row) for row in rows])


def _task_sections(payload):
    """Per task: `[(title, table), ...]` and the text block (claims, family tally, seconds).

    Results written before `family_vs_separate` existed keep their Mix'n'Match table.
    """
    results, split = payload["results"], payload["split"]
    family = payload.get("family_vs_separate")
    for task, claims in payload["summary"].items():
        student_width = width_label(payload["settings"][task]["student_fraction"])
        tables = [(f"{TASK_TITLES[task]}: Students, KD and MatTA ({split} split)",
                   markdown_table(*table_rows(results, task, student_width)))]
        text = _summary_text(claims)
        if family is None:
            tables.append((f"{TASK_TITLES[task]}: Mix'n'Match models extracted from the MatTA "
                           f"TA ({split} split)", markdown_table(*family_rows(results, task))))
        else:
            tables.append((f"{TASK_TITLES[task]}: the family extracted from the MatTA TA vs "
                           f"separate training ({split} split)",
                           markdown_table(*family_table(family, task))))
            text += _family_text(family[task])
        yield tables, text


def print_tables(payload):
    """Prints every task's tables, then its claims, family tally and training seconds.

    Args:
        payload: the JSON payload of `run_demo` (`results`, `summary`, `settings`, `split`,
            and `family_vs_separate`).
    """
    for tables, text in _task_sections(payload):
        for title, table in tables:
            print(f"\n{title}\n\n{table}")
        print("\n" + text)


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
    for tables, text in _task_sections(payload):
        for title, table in tables:
            lines += ["", f"**{title}**", "", table]
        lines += ["", "```text", text.rstrip("\n"), "```"]
    return "\n".join(lines + [README_END])


def replace_readme_section(readme_text, section, begin_marker=README_BEGIN,
                           end_marker=README_END):
    """`readme_text` with the text between the markers (included) replaced by `section`."""
    begin, end = readme_text.find(begin_marker), readme_text.find(end_marker)
    if begin < 0 or end < begin:
        raise ValueError(f"the README has no `{begin_marker}` ... `{end_marker}` block")
    return readme_text[:begin] + section + readme_text[end + len(end_marker):]


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
    if s.get("gain_majority_adam") is not None:
        lines.append(
            f"  Majority kernels (adam), served at the Student's size: "
            f"{gain('gain_majority_adam')} at this learning rate; in the design study, each "
            f"variant at its best rate, no way of combining the copies beat the plain model "
            f"beyond seed noise (README, benchmarks/majority_study.py)"
        )
    if "super_additive" in s:
        verdict = "super-additive" if s["super_additive"] else "not super-additive"
        lines.append(
            f"  MatTA+Shampoo vs MatTA(Adam) + Shampoo(Student): {verdict} "
            f"(margin {s['super_additivity_margin']:+.4f})"
        )
    return "\n".join(lines) + "\n"


def plot(results, path, split="test"):
    """Quality against parameters: the family extracted from the MatTA TA vs separate training.

    One panel per task (rows) and optimizer (columns): the separately trained sizes as a line
    with error bars (the x axis is linear, so the line is the interpolated reference of the
    family table), the family's trained widths as filled circles, its in-between widths
    (hollow circles) and Mix'n'Match models (hollow diamonds), each labelled.

    Args:
        results: `aggregate(rows)`.
        path: the image file to write (PNG).
        split: the evaluated split, named in the titles.

    Example:

    ```python
    plot(payload["results"], "quality_vs_params.png")
    ```
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    tasks = list(dict.fromkeys(r["task"] for r in results if r["method"] == "matta"))
    optimizers = list(dict.fromkeys(r["optimizer"] for r in results if r["method"] == "matta"))
    figure, axes = plt.subplots(len(tasks), len(optimizers), squeeze=False, sharey="row",
                                figsize=(6.4 * len(optimizers), 4.6 * len(tasks)))
    for row, task in enumerate(tasks):
        primary, higher, _ = METRICS[task]
        for axis, optimizer in zip(axes[row], optimizers):
            def points(method, roles=None, task=task, optimizer=optimizer):
                return sorted((r for r in results if (r["task"], r["method"], r["optimizer"])
                               == (task, method, optimizer)
                               and (roles is None or r.get("role") in roles)),
                              key=lambda r: r["params"])

            _errorbar(axis, points("separate"), primary, "0.35", "s-", "trained separately")
            family = "tab:blue" if optimizer == "adam" else "tab:orange"
            _errorbar(axis, points("matta", ("trained",)), primary, family, "o--",
                      "family: trained widths", size=7)
            _errorbar(axis, points("matta", ("in-between",)), primary, family, "o",
                      "family: in-between widths (no Student)", fill="none", size=7)
            _errorbar(axis, points("matta", ("mix",)), primary, family, "D",
                      "family: Mix'n'Match (no Student), per-layer widths", fill="none",
                      size=7)
            axis.margins(x=0.06)
            axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: _count(int(x))))
            _label_points(axis, points("matta"), primary, family)
            axis.set_xlabel("parameters")
            axis.set_title(f"{TASK_TITLES[task]}: {optimizer}, {split} split", fontsize=10)
            axis.grid(True, alpha=0.3)
            axis.legend(fontsize=7)
        axes[row][0].set_ylabel(
            f"{METRIC_TITLES[primary]} ({'higher' if higher else 'lower'} is better)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _label_points(axis, results, metric, color):
    """Labels each point with its width; mixes by their per-layer widths (`mix 1, 0.25`)."""
    low, high = axis.get_xlim()
    for r in results:
        text = r["label"]
        if text.startswith("mix("):  # mix(block_1=1,block_2=0.25): the widths, in layer order
            text = "mix " + ", ".join(part.partition("=")[2] or part
                                      for part in text[4:-1].split(","))
        # Right of the point, or left of it near the right edge, so no label leaves the panel.
        right = r["params"] < low + 0.75 * (high - low)
        axis.annotate(text, (r["params"], r["metrics"][metric]["mean"]), fontsize=7,
                      color=color, textcoords="offset points", xytext=(5 if right else -5, 4),
                      ha="left" if right else "right",
                      bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "alpha": 0.7,
                            "edgecolor": "none"})


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


# The settings that only choose the members MatTA's family is evaluated at.
FAMILY_SETTINGS = ("mixes", "in_between", "family")
# The methods that learn from the Teacher.
TEACHER_METHODS = ("kd", "matta")


def _merged_rows(payloads, replace):
    """The rows of `merge`: each task's Teacher once; with `replace`, reruns in place of the
    rows they redo, and a retrained Teacher in place of the old one, as long as every row that
    learned from a Teacher learned from the one kept."""
    def key(row):
        return row["task"], row["seed"], row["method"]

    entries, run_teachers = [], {}  # (payload index, row); (index, task) -> Teacher's metrics
    for index, payload in enumerate(payloads):
        for row in payload["rows"]:
            if row["method"] == "teacher":
                run_teachers.setdefault((index, row["task"]), row["metrics"])
        retrained = {task for i, task in run_teachers if i == index}
        if replace:
            rerun = {key(row) for row in payload["rows"] if row["method"] != "teacher"}
            entries = [(i, row) for i, row in entries if key(row) not in rerun
                       and not (row["method"] == "teacher" and row["task"] in retrained)]
        entries.extend((index, row) for row in payload["rows"])
    teachers, kept = {}, []  # (task, seed) -> the Teacher's metrics
    for index, row in entries:
        if row["method"] == "teacher":
            if key(row) in teachers:  # another run of the task: the same cached Teacher
                if teachers[key(row)] != row["metrics"]:
                    raise ValueError(f"Cannot merge runs of task {row['task']!r} with different "
                                     "Teachers (their metrics differ).")
                continue
            teachers[key(row)] = row["metrics"]
        kept.append((index, row))
    teacher = {task: metrics for (task, _, _), metrics in teachers.items()}
    stale = sorted({(row["task"], row["method"], row["seed"]) for index, row in kept
                    if row["method"] in TEACHER_METHODS
                    and run_teachers.get((index, row["task"]), teacher.get(row["task"]))
                    != teacher.get(row["task"])})
    if stale:
        raise ValueError(f"Cannot merge: {stale} (task, method, seed) learned from another "
                         "Teacher than the one kept; rerun those methods and seeds too.")
    return [row for _, row in kept]


def merge(payloads, replace=False):
    """One payload from demo runs of other tasks or other seeds (e.g. `--task digits` and
    `--task lm` run side by side, or `--task lm --seeds 1 2` after `--seeds 0`): rows joined,
    everything derived recomputed from them.

    `seconds` is the sum of the runs' wall times.

    Args:
        payloads: `results.json` payloads of one mode and split. Runs of the same task must
            share its settings, apart from their seeds, which must not overlap, and their
            Teacher: trained once and cached, it is one row in every run of a task, kept once.
        replace: whether a later payload's rows replace the earlier rows of the same task,
            seed and method (a rerun of some methods, `keras-matta demo --methods ...`), in
            which case seeds may overlap. A rerun of `matta` may also change which members the
            family is evaluated at (`FAMILY_SETTINGS`), as long as every seed's MatTA rows end
            up evaluated at the same members; a rerun with a retrained Teacher replaces the
            Teacher, as long as every KD and MatTA row kept learned from it. A rerun of every
            method and seed merged so far for a task replaces that task whole, its settings
            included (say, after the preset's learning rate changed).

    Returns:
        The merged payload, as `run_demo` would have written it for all the tasks and seeds at
        once.
    """
    first = payloads[0]
    settings, seeds, runs = {}, {}, {}  # runs: task -> the (seed, method) pairs merged so far
    for payload in payloads:
        if (payload["mode"], payload["split"]) != (first["mode"], first["split"]):
            raise ValueError("Cannot merge demo results of different modes or splits: "
                             f"{first['mode']}/{first['split']} and "
                             f"{payload['mode']}/{payload['split']}.")
        for task, task_settings in payload["settings"].items():
            pairs = {(row["seed"], row["method"]) for row in payload["rows"]
                     if row["task"] == task and row["method"] != "teacher"}
            run_seeds = {seed for seed, _ in pairs}
            reruns_family = replace and any(method == "matta" for _, method in pairs)
            if replace and task in settings and pairs >= runs[task]:
                del settings[task], seeds[task]  # a whole rerun: nothing of the task is kept
            runs[task] = runs.get(task, set()) | pairs
            if task in settings:
                free = dict.fromkeys(("seeds",) + (FAMILY_SETTINGS if reruns_family else ()))
                if {**settings[task], **free} != {**task_settings, **free}:
                    raise ValueError(f"Cannot merge runs of task {task!r} whose settings "
                                     "differ in more than their seeds"
                                     + (" and family members." if reruns_family else "."))
                if reruns_family:
                    settings[task].update({key: task_settings[key] for key in FAMILY_SETTINGS
                                           if key in task_settings})
                if seeds[task] & run_seeds and not replace:
                    raise ValueError(f"Cannot merge runs of task {task!r} that share seeds: "
                                     f"{sorted(seeds[task] & run_seeds)}.")
            settings.setdefault(task, dict(task_settings))
            seeds[task] = seeds.get(task, set()) | run_seeds
            if "seeds" in task_settings:
                settings[task]["seeds"] = sorted(seeds[task])
    kept = _merged_rows(payloads, replace)
    for task, task_settings in settings.items():
        stale = sorted({row["seed"] for row in kept if row["task"] == task
                        and row["method"] == "matta"
                        and row["label"] not in task_settings.get("family", [row["label"]])})
        if stale:
            raise ValueError(f"Cannot merge: the MatTA rows of task {task!r}, seeds {stale}, "
                             "were evaluated at other family members; rerun `--methods matta` "
                             "for those seeds too.")
    results = aggregate(kept)
    return {
        **first, "seconds": sum(payload["seconds"] for payload in payloads),
        "settings": settings,
        "summary": {task: summary(results, task, width_label(s["student_fraction"]))
                    for task, s in settings.items()},
        "family_vs_separate": family_vs_separate(kept), "results": results, "rows": kept,
    }


def main(argv=None):
    """`python -m keras_matta.study.report RESULTS_JSON [--readme README.md]`, or
    `... --merge A.json B.json --output RESULTS_JSON` (also writes the plot next to it)."""
    import argparse

    parser = argparse.ArgumentParser(description="Print a demo run's README section, or "
                                     "write it into the README between the markers.")
    parser.add_argument("results", help="a results.json written by `keras-matta demo`")
    parser.add_argument("--readme", help="the README to update in place")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="merge these runs (of other tasks or seeds) into RESULTS_JSON first")
    parser.add_argument("--replace", action="store_true",
                        help="with --merge: a later file's rows replace the earlier rows of the "
                             "same task, seed and method (`keras-matta demo --methods ...`)")
    args = parser.parse_args(argv)
    if args.merge:
        payloads = []
        for path in args.merge:
            with open(path) as file:
                payloads.append(json.load(file))
        merged = merge(payloads, replace=args.replace)
        write_json(args.results, merged)
        plot(merged["results"], os.path.join(os.path.dirname(args.results) or ".",
                                              "quality_vs_params.png"), merged["split"])
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
