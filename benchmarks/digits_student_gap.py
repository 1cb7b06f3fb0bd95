"""Why the MatTA Student on digits trails the Student trained alone: four ablations.

The demo's digits setting (MLP 784-128-128-10, Students at 0.25, 1,200 Adam steps of 64, the
cached 1024-wide Teacher), 3 seeds, validation accuracy of the 0.25 Student:

- `lone`: the Student trained alone;
- `teacher_default`: MatTA as the demo ran it (Teacher, TA->Student distillation warmed up);
- `teacher_gamma0`: the same without TA->Student distillation;
- `teacher_only_student`: only the Student's terms (`beta=0`, `beta_teacher=0`, `gamma=0`): the
  Student nested in the TA, trained by nothing else;
- `no_teacher`: MatTA without a Teacher.

Every arm runs the drawn sub-networks off (`num_sampled_widths=0`), as the demo did.

    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/digits_student_gap.py
"""

import json
import pathlib
import sys

import keras
import numpy as np

import keras_matta
from keras_matta.data import load_task
from keras_matta.study import demo, runs
from keras_matta.study import models as models_lib
from keras_matta.study.config import preset


def main(split="validation", seeds=(0, 1, 2)):
    config = preset("digits", "full")
    task_data = load_task("digits")

    def accuracy(model):
        return demo.evaluate(model, task_data, config, split)["accuracy"]

    teacher, _ = runs.teacher(task_data, config, runs.default_cache_dir())
    arms = {
        "teacher_default": dict(teacher=teacher, kd_warmup_steps=120),
        "teacher_gamma0": dict(teacher=teacher, gamma=0.0),
        "teacher_only_student": dict(teacher=teacher, beta=0.0, beta_teacher=0.0, gamma=0.0),
        "no_teacher": {},
    }
    results = {"lone": []} | {name: [] for name in arms}
    for seed in seeds:
        lone = runs.separate(task_data, config, "adam", seed, 0.25)[0]
        results["lone"].append(accuracy(lone))
        for name, kwargs in arms.items():
            keras.utils.set_random_seed(seed)
            ta = models_lib.build("digits", name="ta", **config.ta)
            trainer = keras_matta.MatTA(ta, student_widths=[0.25], seed=seed,
                                        num_sampled_widths=0, **kwargs)
            runs.compile_model(trainer, runs.make_optimizer("adam", config, config.steps), config)
            runs.fit(trainer, task_data, config, seed, config.steps, name)
            results[name].append(accuracy(keras_matta.extract(ta, 0.25)))
    payload = {"split": split, "seeds": list(seeds), "teacher_accuracy": accuracy(teacher),
               "accuracy": results,
               "mean": {k: float(np.mean(v)) for k, v in results.items()},
               "std": {k: float(np.std(v)) for k, v in results.items()}}
    path = pathlib.Path("benchmarks/results/digits_student_gap.json")
    path.write_text(json.dumps(payload, indent=1))
    for name, values in results.items():
        print(f"{name:22s} {np.mean(values):.4f} ± {np.std(values):.4f}  {values}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
