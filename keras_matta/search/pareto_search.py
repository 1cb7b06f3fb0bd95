"""`search`: the Pareto front of quality against cost over a Mat model's width specs."""

import dataclasses
import hashlib
import numbers

import keras

from keras_matta import graph as graph_lib
from keras_matta import widths as widths_lib
from keras_matta.search import costs as costs_lib
from keras_matta.search import strategies
from keras_matta.search.cache import EvaluationCache
from keras_matta.search.data import SearchData
from keras_matta.search.pareto import pareto_front
from keras_matta.search.sensitivity import AdditiveSensitivity
from keras_matta.search.sensitivity import best_per_cost_bucket
from keras_matta.search.space import DEFAULT_CHOICES
from keras_matta.search.space import SearchSpace

STRATEGIES = ("auto", "exhaustive", "evolutionary")
PROXIES = ("subset", "sensitivity")
# A metric whose name contains one of these is minimised when `maximize` is not given.
_LOWER_IS_BETTER = ("loss", "error", "crossentropy", "perplexity", "bits")


@dataclasses.dataclass(frozen=True)
class Point:
    """One measured width spec.

    Attributes:
        widths: `{layer_name: {dimension: int}}`, for `keras_matta.extract`.
        quality: the objective on the whole validation data (where `exact` is False: on the
            proxy subset, or predicted from per-layer sensitivities).
        costs: `{"params": int, "flops": int}`, and `"peak_memory_mb"` and `"latency_ms"`
            where the search needs them.
        exact: whether `quality` was measured on the whole data.
        uniform: the shared choice (such as `0.25`) when every layer is at it, else `None`.
    """

    widths: dict
    quality: float
    costs: dict
    exact: bool = True
    uniform: object = None

    @property
    def label(self):
        return widths_lib.width_label(self.widths)

    def to_dict(self):
        return {"widths": self.widths, "label": self.label, "quality": self.quality,
                "exact": self.exact, "uniform": self.uniform, **self.costs}


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What `search` found.

    Attributes:
        front: the Pareto front within the budget, cheapest first (exact qualities).
        uniform: every uniform model (within the budget or not), cheapest first.
        measured: every candidate measured, in order (proxy qualities where a proxy was used).
        objective, maximize, cost, budget, strategy, proxy: the settings.
    """

    front: list
    uniform: list
    measured: list
    objective: str
    maximize: bool
    cost: str
    budget: dict
    strategy: str
    proxy: object = None

    def best(self):
        """The best-quality point of the front (it satisfies the budget)."""
        return self.front[-1]

    def best_uniform(self):
        """The best uniform model within the budget, or `None` if none fits."""
        fits = [p for p in self.uniform if _within(p.costs, self.budget)]
        key = (lambda p: p.quality) if self.maximize else (lambda p: -p.quality)
        return max(fits, key=key) if fits else None

    def to_dict(self):
        return {"objective": self.objective, "maximize": self.maximize, "cost": self.cost,
                "budget": self.budget, "strategy": self.strategy, "proxy": self.proxy,
                "front": [p.to_dict() for p in self.front],
                "uniform": [p.to_dict() for p in self.uniform],
                "measured": [p.to_dict() for p in self.measured]}


def search(model, data, budget=None, objective="loss", maximize=None, cost=None,
           choices=DEFAULT_CHOICES, strategy="auto", max_evaluations=200, population=16,
           seed=0, batch_size=32, proxy_steps=None, cache=None, latency_repeats=10,
           input_shape=None, verbose=1, drop_blocks=False, proxy=None, proxy_buckets=8,
           proxy_top=2):
    """The Pareto front of quality against cost over the width specs of a trained Mat model.

    Every nested Mat layer takes one of `choices` independently (Mix'n'Match); a candidate's
    quality is `objective` on `data`, run at its widths (`WidthScope`, equal to the extracted
    model); its costs are counted (`params`, `flops`: `keras_matta.cost`; `peak_memory_mb`:
    `keras_matta.peak_memory` of one served batch of `batch_size`, weights and the largest set
    of live activations, in MB of 2**20 bytes) or measured (`latency_ms`: the extracted stock
    model's median time per batch of `batch_size` on this backend). The front keeps the
    candidates within `budget` that no other beats on both quality and `cost`. With
    `drop_blocks=True` each residual block may also be dropped (elastic depth), so the front
    trades depth as well as width.

    - `strategy="exhaustive"` measures every candidate within the budget; `"evolutionary"`
      measures at most `max_evaluations` (`strategies.evolutionary`: parents drawn from the
      front, crossover and one-step mutations, seeded); `"auto"` is exhaustive when the space
      has at most `max_evaluations` candidates.
    - With `proxy="subset"` (or `proxy_steps` alone), candidates are ranked on the first
      `proxy_steps` batches and only the proxy front and the uniform models are measured again
      on the whole data; the returned front is computed from those exact values.
    - With `proxy="sensitivity"`, no candidate is evaluated during the search: each is ranked
      by the additive prediction `q_hat(c) = q(c*) + sum_l [q(c*[l <- c_l]) - q(c*)]`
      (`sensitivity.AdditiveSensitivity`; `c*` is every layer at its largest choice, `c*[l <-
      j]` narrows layer `l` alone), from `1 + sum_l (n_l - 1)` evaluations on the first
      `proxy_steps` batches (all of `data` when `proxy_steps` is None, so that every one-layer
      narrowing is predicted exactly). The searched candidates, sorted by cost, are then cut
      into `proxy_buckets` groups of equal count, and the `proxy_top` best predicted of each,
      with the uniform models, are evaluated exactly on the whole data: at most
      `proxy_buckets * proxy_top + len(choices)` exact evaluations besides the calibration
      ones, whatever the size of the space. The returned front is computed from those exact
      values; `.measured` holds the predictions.
    - With `cache` (a file path), every finished measurement is appended to the file at once:
      stop the search at any moment (Ctrl-C) and call again with the same arguments to resume;
      nothing finished is measured twice and the seeded search takes the same path.

    Every argument, the budget against the cheapest candidate and one batch of `data` through
    the model are checked before the search starts.

    Args:
        model: a trained Mat model (the TA), or a `MatTA` (its TA is searched). For a metric
            name as `objective` it must be compiled with that metric.
        data: validation data: `(x, y)` or `(x, y, sample_weight)` arrays, or a dataset of
            batches, as `Model.evaluate` accepts.
        budget: `{cost_name: bound}` with one of `"params"`, `"flops"`, `"peak_memory_mb"`,
            `"latency_ms"`, or `None` (no bound).
        objective: a key of `model.evaluate(..., return_dict=True)` (`"loss"`, `"accuracy"`),
            or a function `objective(model, data) -> float` called inside
            `WidthScope(model, widths)` with `data` as given (or its proxy subset).
        maximize: whether a higher objective is better; by default `False` for names with
            "loss", "error", "crossentropy", "perplexity" or "bits", `True` for other names;
            required for a function.
        cost: the cost the front trades against (default: the budget's, else `"params"`).
        choices: the per-layer widths (see `SearchSpace`): a list shared by every layer
            (default `(0.25, 0.5, 0.75, 1.0)`; give the trained Student widths and `1.0` to
            mix only trained granularities, or any widths), or `{layer_name: [spec, ...]}`
            (a block's list may hold `{"depth": 0}`).
        strategy: `"auto"`, `"exhaustive"` or `"evolutionary"`.
        max_evaluations: the most candidates measured by the evolutionary search.
        population: candidates per generation of the evolutionary search.
        seed: seeds the evolutionary search.
        batch_size: the batch size for arrays, and the batch latency and peak memory are
            measured and counted at.
        proxy_steps: the batches a proxy ranks (`"subset"`) or calibrates (`"sensitivity"`)
            on; the front is confirmed on all of `data`.
        cache: a file of finished measurements (resumable), or `None`.
        latency_repeats: timed calls per latency measurement (their median is kept).
        input_shape: per-example input shape, where the model's has unknown dimensions.
        verbose: 1 shows a progress bar, 0 is silent.
        drop_blocks: whether every droppable block (`MatTransformerBlock`, the keras-hub Mat
            decoder blocks) also gets the choice `{"depth": 0}` (dropped), its smallest; see
            `SearchSpace`. Candidates keep at least one block; the uniform models are the
            undropped ones. `keras_matta.block_importance` shows which blocks matter least.
        proxy: `None` (every candidate evaluated on all of `data`), `"subset"` or
            `"sensitivity"` (see above). `None` with `proxy_steps` means `"subset"`.
        proxy_buckets: the cost ranges whose best predictions `"sensitivity"` confirms.
        proxy_top: the predictions confirmed per cost range.

    Returns:
        A `SearchResult`: `.front` (the Pareto points, cheapest first, each with `.widths` for
        `keras_matta.extract`, `.quality` and `.costs`), `.uniform`, `.measured`, `.best()`,
        `.best_uniform()` and `.to_dict()` (JSON).

    Raises:
        ValueError: an unknown objective, cost or strategy; a budget that no candidate meets;
            data that does not fit the model; an uncompiled model with a metric name;
            `drop_blocks=True` for a model without a droppable block.
        TypeError: arguments of the wrong type.

    Example:

    ```python
    ta = keras.Sequential([keras.Input((8,)),
                           keras_matta.MatDense(32, activation="relu", name="hidden_1"),
                           keras_matta.MatDense(32, activation="relu", name="hidden_2"),
                           keras_matta.MatDense(3, nested=False, name="logits")])
    ta.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               metrics=["accuracy"])
    x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 3, 64)
    result = keras_matta.search(ta, (x, y), budget={"params": 800}, objective="accuracy",
                                choices=[0.25, 0.5, 1.0], verbose=0)
    assert all(point.costs["params"] <= 800 for point in result.front)
    student = keras_matta.extract(ta, result.best().widths)   # the model to serve
    assert student.count_params() == result.best().costs["params"]

    # Elastic depth: under a budget below any model with both blocks, the front drops one.
    inputs = keras.Input((4, 8))
    x = keras_matta.MatTransformerBlock(16, 2, name="block_0")(inputs)
    x = keras_matta.MatTransformerBlock(16, 2, name="block_1")(x)
    lm = keras.Model(inputs, keras_matta.MatDense(3, nested=False, name="logits")(x))
    lm.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.random.rand(16, 4, 8).astype("float32"), np.random.randint(0, 3, (16, 4))
    both = keras_matta.cost(lm, {"block_0": 0.5, "block_1": 0.5})["params"]
    result = keras_matta.search(lm, (x, y), budget={"params": both - 1}, choices=[0.5, 1.0],
                                drop_blocks=True, verbose=0)
    assert all({"depth": 0} in point.widths.values() for point in result.front)
    ```

    Reference:
        Devvrit et al., "MatFormer: Nested Transformer for Elastic Inference", 2023
        (Mix'n'Match); Cai et al., "Once-for-All", ICLR 2020 (searching sub-networks under
        a latency budget).
    """
    # === Arguments, all checked before any measurement ===
    model = graph_lib.unwrap(model)
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model with Mat layers; got "
                        f"{type(model).__name__}.")
    space = SearchSpace(model, choices, drop_blocks=drop_blocks)
    maximize = _direction(model, objective, maximize)
    budget = _budget(budget)
    cost = _cost_name(cost, budget)
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}; got {strategy!r}.")
    if proxy is None and proxy_steps is not None:
        proxy = "subset"
    if proxy is not None and proxy not in PROXIES:
        raise ValueError(f"`proxy` must be None or one of {PROXIES}; got {proxy!r}.")
    if proxy == "subset" and proxy_steps is None:
        raise ValueError("`proxy='subset'` ranks candidates on the first `proxy_steps` batches: "
                         "give `proxy_steps` (a positive int).")
    for name, value in (("max_evaluations", max_evaluations), ("population", population),
                        ("batch_size", batch_size), ("latency_repeats", latency_repeats),
                        ("proxy_steps", 1 if proxy_steps is None else proxy_steps),
                        ("proxy_buckets", proxy_buckets), ("proxy_top", proxy_top)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
    if strategy == "auto":
        strategy = "exhaustive" if space.size <= max_evaluations else "evolutionary"
    search_data = SearchData(data, batch_size)
    search_data.check_inputs(model)
    proxy_data = search_data.subset(proxy_steps)
    needed = {cost, *budget, "params", "flops"}

    # === Measurements, cached ===
    store = EvaluationCache(cache, fingerprint=_fingerprint(
        model, objective, maximize, batch_size, proxy_steps, latency_repeats))
    example = search_data.first_batch() if "latency_ms" in needed else None

    known_costs = {}  # candidate -> costs: each is asked for several times, walked once

    def costs_of(candidate):
        if candidate in known_costs:
            return dict(known_costs[candidate])
        widths = space.spec(candidate)
        values = costs_lib.counted_costs(model, widths, input_shape)
        if "peak_memory_mb" in needed:
            values["peak_memory_mb"] = costs_lib.peak_memory_mb(model, widths, batch_size,
                                                                input_shape)
        if "latency_ms" in needed:
            values["latency_ms"] = _cached(store, "latency_ms", widths, lambda: (
                costs_lib.latency_ms(model, widths, example, repeats=latency_repeats)))
        known_costs[candidate] = values
        return dict(values)

    def quality_of(candidate, exact):
        widths = space.spec(candidate)
        kind, part = ("quality", search_data) if exact else ("proxy_quality", proxy_data)

        def compute():
            if progress is not None and proxy == "sensitivity":  # counts evaluations run
                progress.add(1)
            return _quality(model, widths, objective, part)

        return _cached(store, kind, widths, compute)

    def check_budget():
        if not budget:
            return
        (name, bound), = budget.items()
        smallest = min(space.smallest(), key=lambda c: costs_of(c)[name])
        if not _within(costs_of(smallest), budget):
            raise ValueError(
                f"No width spec fits the budget {name} <= {bound:g}: the smallest candidate "
                f"({widths_lib.width_label(space.spec(smallest))}) has {name}="
                f"{costs_of(smallest)[name]:g}. Raise the budget or add smaller `choices`."
            )

    if "latency_ms" not in budget:  # counted: no model runs before this error
        check_budget()
    _check_runs(model, objective, search_data)
    check_budget()

    # === The search ===
    uniform = space.uniform()
    if proxy == "sensitivity":  # exact evaluations only: the calibration, then confirmations
        target = sum(space.sizes) - len(space.sizes) + 1 + proxy_buckets * proxy_top \
            + len(uniform)
    else:
        target = space.size if strategy == "exhaustive" else max_evaluations
    progress = _Progress(target, verbose) if verbose else None
    sign = 1.0 if maximize else -1.0
    exact_search = proxy is None
    predictor = None
    if proxy == "sensitivity":
        predictor = AdditiveSensitivity(
            space.sizes, lambda c: quality_of(c, exact=proxy_steps is None), space.is_valid)

    def ranked_quality(candidate):
        if predictor is not None:  # a sum: no model runs
            return predictor.predict(candidate)
        return quality_of(candidate, exact=exact_search)

    def measure(candidate):
        quality = ranked_quality(candidate)
        if progress is not None and predictor is None:
            progress.add(1)
        return costs_of(candidate)[cost], sign * quality

    def feasible(candidate):
        if not space.is_valid(candidate):  # drops every block: not a model, not counted
            return False
        fits = _within(costs_of(candidate), budget)
        if not fits and progress is not None and strategy == "exhaustive" and not predictor:
            progress.add(1)
        return fits

    if strategy == "exhaustive":
        measured = strategies.exhaustive(space.sizes, feasible, measure)
    else:
        measured = strategies.evolutionary(
            space.sizes, feasible, measure, max_evaluations, seed=seed, population=population,
            initial=list(uniform.values()))

    # === The front, on exact qualities ===
    def point(candidate, exact=True):
        label = next((u for u, c in uniform.items() if c == candidate), None)
        quality = quality_of(candidate, exact) if exact else ranked_quality(candidate)
        return Point(space.spec(candidate), quality, costs_of(candidate), exact, label)

    measured_points = [point(c, exact_search) for c in measured]
    front_of = lambda points: [points[i] for i in pareto_front(  # noqa: E731
        [p.costs[cost] for p in points], [sign * p.quality for p in points])]
    front = front_of(measured_points)
    if proxy == "subset":
        confirmed = [space.candidate(p.widths) for p in front]
    elif proxy == "sensitivity":
        confirmed = best_per_cost_bucket(measured, lambda c: costs_of(c)[cost],
                                         lambda c: sign * predictor.predict(c),
                                         proxy_buckets, proxy_top)
    if proxy is not None:
        fitting_uniform = [c for c in uniform.values()
                           if _within(costs_of(c), budget) and c not in confirmed]
        front = front_of([point(c) for c in confirmed + fitting_uniform])
    uniform_points = sorted((point(c) for c in uniform.values()), key=lambda p: p.costs[cost])
    if progress is not None:  # the evolution may stop early: close the bar at its count
        progress.update(progress.target, finalize=True)
    return SearchResult(front, uniform_points, measured_points, _name(objective), maximize,
                        cost, budget, strategy, proxy)


class _Progress:
    """A `keras.utils.Progbar` that can be closed early, once."""

    def __init__(self, target, verbose):
        self.target, self.seen = target, 0
        self.bar = keras.utils.Progbar(target, verbose=verbose, unit_name="candidate")

    def add(self, count):
        self.seen += count
        if self.seen < self.target:
            self.bar.update(self.seen)

    def update(self, _, finalize=True):
        self.bar.update(self.target, finalize=finalize)


def _cached(store, kind, widths, compute):
    value = store.get(kind, widths)
    if value is None:
        value = float(compute())
        store.put(kind, widths, value)
    return value


def _quality(model, widths, objective, data):
    with widths_lib.WidthScope(model, widths):
        if callable(objective):
            return objective(model, data.as_evaluate_argument())
        return data.evaluate(model)[objective]


def _check_runs(model, objective, data):
    """One batch through the full-width model: data that does not fit fails here, named."""
    try:
        if callable(objective):
            return
        logs = data.subset(1).evaluate(model)
    except Exception as error:  # whatever the backend raises for mismatched shapes or dtypes
        raise ValueError(f"`data` does not match the model '{model.name}': "
                         f"{str(error).strip().splitlines()[0] if str(error) else error!r}"
                         ) from error
    if objective not in logs:
        raise ValueError(f"Unknown objective {objective!r}: '{model.name}' is compiled with "
                         f"the metrics {sorted(logs)}.")


def _direction(model, objective, maximize):
    if maximize is not None and not isinstance(maximize, bool):
        raise TypeError(f"`maximize` must be True, False or None; got {maximize!r}.")
    if callable(objective):
        if maximize is None:
            raise ValueError("`maximize` is required when `objective` is a function: say "
                             "whether a higher value is better.")
        return maximize
    if not isinstance(objective, str):
        raise TypeError(f"`objective` must be a metric name or a function; got {objective!r}.")
    if not getattr(model, "compiled", False):
        raise ValueError(
            f"`objective={objective!r}` is a metric of `evaluate`, but '{model.name}' is not "
            "compiled: call `model.compile(loss=..., metrics=[...])` first, or pass a function."
        )
    if maximize is None:
        maximize = not any(word in objective.lower() for word in _LOWER_IS_BETTER)
    return maximize


def _budget(budget):
    if budget is None:
        return {}
    if not isinstance(budget, dict) or len(budget) != 1:
        raise TypeError(f"`budget` must be a dict with one cost, such as {{'params': 2e6}}; "
                        f"got {budget!r}.")
    (name, bound), = budget.items()
    if name not in costs_lib.COSTS:
        raise ValueError(f"Unknown cost {name!r} in `budget`; allowed: {costs_lib.COSTS}.")
    if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not bound > 0:
        raise ValueError(f"`budget[{name!r}]` must be a positive number; got {bound!r}.")
    return {name: bound}


def _cost_name(cost, budget):
    if cost is None:
        return next(iter(budget), "params")
    if cost not in costs_lib.COSTS:
        raise ValueError(f"Unknown cost {cost!r}; allowed: {costs_lib.COSTS}.")
    return cost


def _within(costs, budget):
    return all(costs[name] <= bound for name, bound in budget.items())


def _name(objective):
    return objective if isinstance(objective, str) else getattr(objective, "__name__",
                                                                repr(objective))


def _fingerprint(model, objective, maximize, batch_size, proxy_steps, latency_repeats):
    """What cached values depend on: the weights, the objective, the measurement settings."""
    digest = hashlib.sha256()
    for weight in model.weights:  # values only: Keras renames paths across a save and load
        digest.update(keras.ops.convert_to_numpy(weight.value).tobytes())
    return {"weights_sha256": digest.hexdigest(), "objective": _name(objective),
            "maximize": maximize, "batch_size": batch_size, "proxy_steps": proxy_steps,
            "latency_repeats": latency_repeats, "backend": keras.backend.backend()}
