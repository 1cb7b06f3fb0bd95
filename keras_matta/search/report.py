"""A search's front for people and files: a table, a JSON file, a PNG, and a point read back.

`keras-matta search` writes the JSON and the PNG; `keras-matta extract --point FILE[:INDEX]`
reads a point's widths back from that JSON.
"""

import json
import pathlib

from keras_matta.search.costs import COSTS


def table(result):
    """The front (and the uniform models) as a fixed-width text table.

    Args:
        result: a `SearchResult`.

    Returns:
        A string: one row per front point (`#` is its index for `extract --point`), then the
        uniform models, each with its quality and costs.

    Example:

    ```python
    from keras_matta.search import report
    from keras_matta.search.pareto_search import Point, SearchResult

    point = Point({"hidden": {"units": 16}}, 0.9, {"params": 442, "flops": 832}, uniform=0.25)
    result = SearchResult([point], [point], [point], "accuracy", True, "params", {}, "exhaustive")
    assert "mix(hidden=16)" in report.table(result)
    ```
    """
    costs = [c for c in COSTS if c in (result.front or result.uniform)[0].costs]
    header = ["#", "widths", result.objective, *costs, "uniform"]
    rows = [[str(i), p.label, f"{p.quality:.4f}", *(_number(p.costs[c]) for c in costs),
             "" if p.uniform is None else f"{p.uniform:g}"] for i, p in enumerate(result.front)]
    widths = [max(len(r[k]) for r in [header] + rows) for k in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    uniform = [f"{p.uniform:g}: {result.objective} {p.quality:.4f}, "
               + ", ".join(f"{c} {_number(p.costs[c])}" for c in costs) for p in result.uniform]
    lines.append("Uniform widths: " + "; ".join(uniform) if uniform else "")
    within = "within the budget" if result.budget else "no budget"
    best = result.best_uniform()
    lines.append(f"Pareto front: {len(result.front)} of {len(result.measured)} measured "
                 f"({result.strategy}, "
                 + (f"{result.proxy} proxy, " if result.proxy else "") + f"{within}"
                 + "".join(f", {k} <= {_number(v)}" for k, v in result.budget.items()) + ").")
    if best is not None:
        lines.append(f"Best uniform width within the budget: {best.uniform:g} "
                     f"({result.objective} {best.quality:.4f}, {result.cost} "
                     f"{_number(best.costs[result.cost])}); best searched: "
                     f"{result.best().label} ({result.best().quality:.4f}, "
                     f"{_number(result.best().costs[result.cost])}).")
    return "\n".join(lines)


def write_json(result, path, **settings):
    """Writes `result.to_dict()` and `settings` (where the model and data came from) to `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result.to_dict(), "settings": settings}, indent=1) + "\n")


def plot(result, path):
    """Quality against cost: every measured candidate, the front, the uniform models, the budget.

    Args:
        result: a `SearchResult`.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    cost = result.cost
    measured = [p for p in result.measured if p.exact] or result.measured
    axes.scatter([p.costs[cost] for p in measured], [p.quality for p in measured], s=10,
                 color="0.7", label="measured" + ("" if measured[0].exact else " (proxy)"))
    axes.plot([p.costs[cost] for p in result.front], [p.quality for p in result.front], "o-",
              color="tab:blue", label="Pareto front (searched)")
    axes.scatter([p.costs[cost] for p in result.uniform], [p.quality for p in result.uniform],
                 marker="s", s=60, facecolors="none", edgecolors="tab:red", linewidths=1.5,
                 label="uniform widths", zorder=3)
    for p in result.uniform:
        axes.annotate(f"{p.uniform:g}", (p.costs[cost], p.quality), textcoords="offset points",
                      xytext=(5, -12), color="tab:red", fontsize=8)
    for name, bound in result.budget.items():
        if name == cost:
            axes.axvline(bound, color="k", linestyle="--", linewidth=1, label=f"budget {name}")
    axes.set_xlabel(cost)
    axes.set_ylabel(result.objective + (" (higher is better)" if result.maximize
                                        else " (lower is better)"))
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def read_point(reference):
    """The widths of a front point written by `write_json`: `"front.json"` (the best point,
    the last) or `"front.json:INDEX"` (the `#` of the table).

    Example:

    ```python
    import json
    from keras_matta.search import report

    front = [{"widths": {"hidden": {"units": 8}}}, {"widths": {"hidden": {"units": 16}}}]
    with open("front.json", "w") as file:
        json.dump({"front": front}, file)
    assert report.read_point("front.json:0") == {"hidden": {"units": 8}}
    assert report.read_point("front.json") == {"hidden": {"units": 16}}
    ```
    """
    head, _, tail = str(reference).rpartition(":")
    path, index = (head, tail) if head and tail.lstrip("-").isdigit() else (reference, "")
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Search result not found: {path}")
    try:
        front = json.loads(path.read_text())["front"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{path} is not a search result (no 'front' list).") from None
    if not front:
        raise ValueError(f"{path} has an empty front.")
    position = int(index) if index else len(front) - 1
    if not -len(front) <= position < len(front):
        raise ValueError(f"Point {position} is not on the front of {path}: it has "
                         f"{len(front)} points (0 to {len(front) - 1}).")
    return front[position]["widths"]


def _number(value):
    if isinstance(value, float) and value < 1000:
        return f"{value:.3g}"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:g}"
