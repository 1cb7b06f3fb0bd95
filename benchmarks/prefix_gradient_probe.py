"""Probe (issue #15): does the Student gain when wider members push less on its slice?

The README's diagnosis of the digits Student that does not beat the one trained alone: trained
by its own terms only inside the TA it equals the lone Student, so what holds it back is sharing
its prefix with wider members that fit the training images. This probe scales the gradient the
wider members (the other Students, the drawn sub-network and the TA) send into the smallest
Student's slice of every nested weight by `s`, leaving their forward passes unchanged:

    w_read = stop_gradient(w) + (w * m - stop_gradient(w * m)),  m = s on the slice, 1 elsewhere

read during their passes through `keras_matta.training.shared_weights.read_through`, the
context `detach_shared` reads shared weights through. The slice is the Student's width from
each layer's nesting declaration; a layer's input axis, which the declaration binds at call
time, is left whole. With Adam that does not change what the probe measures: the weights
outside the Student's slice that the whole axis covers get gradient from the wider members
only, all scaled by `s`, which Adam's `m / sqrt(v)` divides out.

Not a library feature: a measurement made before deciding whether to build one. The demo's
digits setting without a Teacher (`family_recipe_study.py`'s protocol: Students 0.25, 0.5, 0.75,
one drawn sub-network per step, Adam, the same batches for every arm), validation split.

    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/prefix_gradient_probe.py \\
        --scales 1 0.5 0.25 --seeds 0 1 2
"""

import argparse
import json
import pathlib

import keras
import numpy as np
from keras import ops

import family_recipe_study as study
import keras_matta
from keras_matta import widths as widths_lib
from keras_matta.data import load_task
from keras_matta.layers import nesting as nesting_lib
from keras_matta.study import demo
from keras_matta.study import models as models_lib
from keras_matta.study.config import preset
from keras_matta.training import shared_weights


class ScaledPrefixMatTA(keras_matta.MatTA):
    """MatTA whose wider members send `scale` times their gradient into the smallest Student's
    slice."""

    def __init__(self, model, student_widths, scale=1.0, **kwargs):
        super().__init__(model, student_widths, **kwargs)
        self.scale = float(scale)
        self._masks = None

    def _slice_masks(self):
        if self._masks is None:
            self._masks = {}
            resolved = widths_lib.resolve_widths(self.model, self.student_widths[0])
            for layer, width in resolved.items():
                width = layer.complete_width(width)
                for entry in layer.nesting():
                    mask = np.ones(tuple(entry.variable.shape), "float32")
                    nesting_lib.prefix(mask, entry.axes, width)[...] = self.scale
                    self._masks[id(entry.variable)] = ops.convert_to_tensor(mask)
        return self._masks

    def _scaled_scope(self):
        masks = self._slice_masks()

        def scaled(variable, value):
            if id(variable) not in masks:
                return value
            product = value * masks[id(variable)]
            return ops.stop_gradient(value) + (product - ops.stop_gradient(product))

        return shared_weights.read_through(scaled, self.model.variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if training and self.scale != 1.0:
            with self._scaled_scope():
                y_pred = self(x, training=True)
        return super().compute_loss(x, y, y_pred, sample_weight, training)

    def _narrower_outputs(self, x, training, head):
        if not training or self.scale == 1.0 or head == self.head_names[1]:
            return super()._narrower_outputs(x, training, head)
        with self._scaled_scope():
            return super()._narrower_outputs(x, training, head)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 0.5, 0.25])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output", default="prefix_gradient_probe_digits.json")
    args = parser.parse_args()
    config = preset("digits", "full")
    task_data = load_task(demo.TASK_DATA["digits"])
    rows = []
    for seed in args.seeds:
        for fraction in study.SEPARATE_WIDTHS:
            keras.utils.set_random_seed(seed)
            kwargs = models_lib.student_kwargs(config.ta, "digits", fraction)
            model = models_lib.build("digits", name="digits_separate", **kwargs)
            study._train(model, task_data, config, seed, f"separate {fraction}")
            rows.append({"arm": "separate", "seed": seed, "width": f"{fraction:g}",
                         "value": study._evaluate(model, task_data, config, "validation")})
            print(rows[-1], flush=True)
        for scale in args.scales:
            keras.utils.set_random_seed(seed)
            ta = models_lib.build("digits", name="digits_ta", **config.ta)
            trainer = ScaledPrefixMatTA(ta, study.STUDENTS, scale=scale, seed=seed,
                                        num_sampled_widths=1)
            study._train(trainer, task_data, config, seed, f"MatTA, scale {scale:g}")
            for fraction in study.SEPARATE_WIDTHS:
                member = keras_matta.extract(ta, fraction)
                rows.append({"arm": f"scale {scale:g}", "seed": seed, "width": f"{fraction:g}",
                             "value": study._evaluate(member, task_data, config, "validation")})
                print(rows[-1], flush=True)
    table(rows)
    path = pathlib.Path(__file__).resolve().parent / "results" / args.output
    path.write_text(json.dumps({"task": "digits", "split": "validation", "steps": config.steps,
                                "learning_rate": config.learning_rate, "rows": rows}, indent=1))
    print("wrote", path)


def table(rows):
    """Per arm and width: the mean and std over seeds, and the change against separate training
    paired by seed."""
    value = {(r["arm"], r["seed"], r["width"]): r["value"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    print("| arm | width | accuracy | change against separate |")
    print("|---|---|---|---|")
    for arm in dict.fromkeys(r["arm"] for r in rows):
        for width in dict.fromkeys(r["width"] for r in rows):
            values = np.array([value[arm, s, width] for s in seeds])
            changes = values - np.array([value["separate", s, width] for s in seeds])
            print(f"| {arm} | {width} | {values.mean():.4f} ± {values.std():.4f} | "
                  f"{changes.mean():+.4f} ± {changes.std():.4f} |")


if __name__ == "__main__":
    main()
