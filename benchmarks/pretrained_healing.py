"""Healing a reordered SmolLM2-135M family with MatTA, the original model as the Teacher.

The set-up of `pretrained_shrinking.py` (SmolLM2-135M-Instruct as the TA, heads nested in GQA
groups, calibrated on Shakespeare's training plays, evaluated on the test plays), then a short
MatTA run on training-play windows: the TA and the `--students` FFN widths (plus one drawn
sub-network per step, so the widths between train too) distilled from a frozen copy of the
original. Reports held-out bits per
byte of each width before and after healing, with the steps and tokens it took.

    KERAS_BACKEND=torch OMP_NUM_THREADS=2 python benchmarks/pretrained_healing.py --steps 40
"""

import argparse
import sys
import time

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import report  # noqa: E402
from pretrained_shrinking import WIDTHS  # noqa: E402
from pretrained_shrinking import as_inputs  # noqa: E402
from pretrained_shrinking import bits_per_byte  # noqa: E402
from pretrained_shrinking import gguf_path  # noqa: E402
from pretrained_shrinking import width_spec  # noqa: E402
from pretrained_shrinking import windows  # noqa: E402

import keras_matta  # noqa: E402
from keras_matta import hub  # noqa: E402
from keras_matta.data import shakespeare  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--length", type=int, default=64, help="tokens per training window")
    parser.add_argument("--students", type=float, nargs="+", default=[0.5],
                        help="FFN fractions trained as Students")
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--method", default="activation")
    parser.add_argument("--evaluation", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    gguf = hub.GGUFFile(gguf_path(), cache=True)
    tokenizer = hub.load_gguf_tokenizer(gguf)
    original = hub.load_gguf_llama(gguf)
    test_text, train_text = shakespeare.load_text("test"), shakespeare.load_text("train")
    evaluation, num_bytes = windows(tokenizer, test_text, 128, args.evaluation,
                                    np.random.default_rng(1234))  # as pretrained_shrinking
    training, _ = windows(tokenizer, train_text, args.length, args.steps * args.batch_size,
                          np.random.default_rng(10_000 + args.seed))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    ta = hub.from_keras_hub(original, ta_num_heads=original.num_query_heads)
    model = hub.LogitsModel(ta)
    calibration, _ = windows(tokenizer, train_text, 128, 8, np.random.default_rng(0))
    keras_matta.reorder(model, as_inputs(calibration), method=args.method, loss=loss,
                        batch_size=4)
    specs = {label: width_spec(ta, fraction, heads) for label, fraction, heads in WIDTHS}
    rows = [{"stage": "reordered", "width": label, "steps": 0, "tokens": 0,
             "bits_per_byte": bits_per_byte(model, evaluation, num_bytes, spec)}
            for label, spec in specs.items()]
    rows.append({"stage": "reordered", "width": "full", "steps": 0, "tokens": 0,
                 "bits_per_byte": bits_per_byte(model, evaluation, num_bytes)})
    for row in rows:
        print(row, flush=True)

    teacher = hub.LogitsModel(original)
    teacher.trainable = False
    students = [width_spec(ta, fraction, None) for fraction in args.students]
    mat_ta = keras_matta.MatTA(model, students, teacher=teacher, seed=args.seed)
    mat_ta.compile(keras.optimizers.Adam(args.learning_rate), loss)
    x, y = as_inputs(training)
    start = time.perf_counter()
    mat_ta.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=1)
    seconds = time.perf_counter() - start
    tokens = args.steps * args.batch_size * args.length
    for label, spec in [*specs.items(), ("full", None)]:
        rows.append({"stage": "healed", "width": label, "steps": args.steps, "tokens": tokens,
                     "students": args.students, "train_seconds": seconds,
                     "bits_per_byte": bits_per_byte(model, evaluation, num_bytes, spec)})
        print(rows[-1], flush=True)
    report("pretrained_healing", rows,
           ["stage", "width", "steps", "tokens", "bits_per_byte", "train_seconds"])


if __name__ == "__main__":
    main()
