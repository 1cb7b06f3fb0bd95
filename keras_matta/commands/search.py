"""`keras-matta search`: the Pareto front of a saved TA's width specs, written as JSON and PNG."""

import pathlib

import keras

import keras_matta
from keras_matta.commands import common
from keras_matta.data import CLASSIFICATION
from keras_matta.data import load_task
from keras_matta.search import report as search_report
from keras_matta.study import metrics as metrics_lib
from keras_matta.study import runs


def search(model_path, source, output_dir, budget=None, objective=None, choices=None,
           strategy="auto", max_evaluations=200, seed=0, proxy_steps=None, batch_size=None,
           split="validation", mode="default", data_seed=0, resume=True, drop_blocks=False,
           proxy=None):
    """The Pareto front of the saved TA's width specs on `source`'s `split` (`keras_matta.search`).

    Args:
        model_path: the TA's `.keras` file.
        source: an embedded task or a data file (see `keras_matta.data.load_task`).
        output_dir: where `front.json`, `front.png` and the resumable `cache.jsonl` go.
        budget: `{cost: bound}` or `None`.
        objective: a metric name; default `accuracy` (classification) or `bits_per_byte`
            (byte language model, computed as in `keras-matta evaluate`).
        choices: the per-layer widths (default `(0.25, 0.5, 0.75, 1.0)`).
        strategy, max_evaluations, seed, proxy, proxy_steps: as in `keras_matta.search`.
        batch_size: the evaluation batch, and the batch latency is timed and the peak
            memory counted at (default: the preset's training batch size).
        split: the split to search on (`validation`: keep `test` for the final report).
        mode: the preset whose evaluation sizes are used (`quick` evaluates fewer windows).
        data_seed: the split seed of the data (as used when training).
        resume: reuse the measurements in `output_dir/cache.jsonl` of an interrupted run.
        drop_blocks: also let every transformer block be dropped (elastic depth), as in
            `keras_matta.search`.

    Returns:
        The `SearchResult`; prints its table.
    """
    model = common.load_model(model_path)
    task_data = load_task(source, seed=data_seed)
    config = common.matching_config(model, model_path, task_data, mode)
    batch_size = batch_size or config.batch_size
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if task_data.kind == CLASSIFICATION:
        data = getattr(task_data, split)
        model.compile(loss=loss, metrics=["accuracy"])
        objective, maximize = objective or "accuracy", None
    else:
        data = runs.evaluation_windows(task_data, config, split)
        model.compile(loss=loss)
        if objective in (None, "bits_per_byte"):
            def bits_per_byte(at_width, windows):
                return metrics_lib.bits_per_byte(at_width, *windows[:2])

            objective, maximize = bits_per_byte, False
        else:
            maximize = None
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cache = output_dir / "cache.jsonl"
    if not resume and cache.exists():
        cache.unlink()
    result = keras_matta.search(
        model, data, budget=budget, objective=objective, maximize=maximize,
        choices=choices or (0.25, 0.5, 0.75, 1.0), strategy=strategy,
        max_evaluations=max_evaluations, seed=seed, batch_size=batch_size,
        proxy=proxy, proxy_steps=proxy_steps, cache=cache, drop_blocks=drop_blocks)
    search_report.write_json(result, output_dir / "front.json", model=str(model_path),
                             data=str(source), split=split, backend=keras.backend.backend())
    search_report.plot(result, output_dir / "front.png")
    print(search_report.table(result))
    print(f"Wrote {output_dir / 'front.json'} and {output_dir / 'front.png'}; extract a point "
          f"with: keras-matta extract --model {model_path} --point "
          f"{output_dir / 'front.json'}:INDEX --output student.keras")
    return result
