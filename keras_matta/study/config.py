"""The study's settings: model sizes, training budgets and the Mix'n'Match family, per task.

Three presets per task (`preset(task, mode)`):

- `quick`: a smoke test (CI): tiny models, a few dozen steps; numbers mean nothing.
- `default`: the README's main job; the whole demo (both tasks, Teachers included) is sized to
  finish in about 10 minutes on 2 CPU cores with the JAX backend.
- `full`: the real study: longer training and 3 seeds (mean and spread); tens of minutes.

Every run of a task (a model trained separately at each trained size of the family, the
Student distilled from the Teacher, MatTA), with Adam and with Shampoo, gets the same data in
the same order, the same number of steps, batch size and learning-rate schedule. Nothing is
tuned per method.

The family evaluated from the MatTA TA (`TaskConfig.family`): the trained widths
(`student_widths` and the TA, 1.0), the `in_between` widths that are evaluated but never
trained, and the per-layer Mix'n'Match `mixes`.
"""

import dataclasses

TASKS = ("digits", "lm")
MODES = ("quick", "default", "full")
# The models trained for each seed and optimizer (the Teacher is trained once per task).
METHODS = ("separate", "kd", "majority", "matta")
# Midway between the trained widths 0.25, 0.5, 0.75 and 1.0 (default and full presets).
_IN_BETWEEN = (0.375, 0.625, 0.875)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Everything one task of the study needs.

    Attributes:
        task: `"digits"` (MLP on 5,000 MNIST digits) or `"lm"` (byte-level transformer on
            Shakespeare).
        ta: builder arguments of the TA (`keras_matta.study.models.build`).
        teacher: builder arguments of the Teacher.
        student_fraction: the Student (of the main table: alone, KD, MatTA) is the TA at this
            width (every nested dimension); one of `student_widths`.
        student_widths: the uniform widths below 1 that MatTA trains as Students; with the TA
            (1.0) they are the family's trained sizes, each also trained separately.
        steps: optimizer steps of every Student / KD / MatTA run.
        teacher_steps: optimizer steps of the Teacher.
        batch_size: examples (digits) or windows (lm) per step.
        learning_rate: peak learning rate of the warm-up + cosine schedule (Adam; Shampoo grafts
            Adam's step size, so the same value applies).
        mixes: per-layer Mix'n'Match width dicts extracted from the MatTA TA.
        in_between: uniform widths extracted from the MatTA TA that no Student has: they show
            whether the family interpolates between its trained widths.
        eval_windows: language model: evaluate bits per byte on at most this many windows of
            the split, spread over it (`None`: all).
        final_word_examples: language model: number of final-word examples.
        temperature: distillation temperature of the classic-KD Student (MatTA runs at the
            library's defaults: they are its recipe).
        kd_warmup_fraction: MatTA ramps the TA->Student term over this share of the steps.
        majority: copies of every kernel of the majority-kernel Student (Majority Kernels:
            trained at the Student's size with `majority` copies and the library's default
            combine, served collapsed to one kernel by `extract`; Adam only). 1 skips it.
        seeds: seeds of the Student/TA runs (the Teacher is trained once, with seed 0).
    """

    task: str
    ta: dict
    teacher: dict
    student_fraction: float
    steps: int
    teacher_steps: int
    batch_size: int
    learning_rate: float
    student_widths: tuple
    mixes: tuple = ()
    in_between: tuple = ()
    eval_windows: int = None
    final_word_examples: int = 0
    temperature: float = 1.0
    kd_warmup_fraction: float = 0.1
    majority: int = 4
    seeds: tuple = (0,)

    def __post_init__(self):
        for name in ("student_widths", "in_between"):
            for width in getattr(self, name):
                if not isinstance(width, float) or not 0.0 < width < 1.0:
                    raise ValueError(
                        f"`{name}` must hold fractions in (0, 1) (the TA, 1.0, is always in the "
                        f"family); got {width!r} in {getattr(self, name)!r}.")
        if self.student_fraction not in self.student_widths:
            raise ValueError(
                f"`student_fraction` ({self.student_fraction!r}) must be one of "
                f"`student_widths` {self.student_widths!r}: it is a trained width of the family.")
        if isinstance(self.majority, bool) or not isinstance(self.majority, int) \
                or self.majority < 1:
            raise ValueError(f"`majority` must be an int >= 1; got {self.majority!r}.")

    @property
    def trained_widths(self):
        """The family's trained uniform widths, ascending: the Students' and the TA's (1.0)."""
        return tuple(sorted(set(self.student_widths) | {1.0}))

    @property
    def family(self):
        """Every width spec evaluated from the MatTA TA: uniform widths ascending, then mixes."""
        return tuple(sorted(set(self.trained_widths) | set(self.in_between))) + self.mixes

    @property
    def sequence_length(self):
        return self.ta.get("sequence_length")

    def with_seeds(self, seeds):
        return dataclasses.replace(self, seeds=tuple(seeds))


def _digits(mode):
    # The TA is 4x the Student's width (the Student: 32 hidden units per layer).
    hidden = {"quick": 64, "default": 128, "full": 128}[mode]
    student = 0.25
    # Mixes with no layer at the Student's width: on validation (README, "Which mixes lie on
    # the family's curve") a layer kept at 0.25 bottlenecks a mix whose other layer is wide.
    mixes = (
        {"hidden_1": 0.5, "hidden_2": 0.75},
        {"hidden_1": 0.75, "hidden_2": 0.5},
        {"hidden_1": 1.0, "hidden_2": 0.75},
    )
    return TaskConfig(
        task="digits",
        ta={"hidden_units": hidden, "num_layers": 2},
        teacher={"hidden_units": {"quick": 128, "default": 1024, "full": 1024}[mode],
                 "num_layers": 2, "nested": False},
        student_fraction=student,
        # Quick (CI) keeps two Students and one mix: every kind of row, the fewest compilations.
        student_widths=(student, 0.5) if mode == "quick" else (student, 0.5, 0.75),
        in_between=() if mode == "quick" else _IN_BETWEEN,
        steps={"quick": 40, "default": 600, "full": 1200}[mode],
        teacher_steps={"quick": 40, "default": 1200, "full": 2400}[mode],
        batch_size=64,
        # Chosen on the validation split (benchmarks/demo_learning_rate.py, 3 seeds) by the
        # models that learn without the family, the Teacher and the separate widths: 0.9491
        # on average at 3e-3 against 0.9441 at 1e-3 and 0.9481 at 6e-3 with Adam (Shampoo:
        # 0.9507 against 0.9491 and 0.9500).
        learning_rate=3e-3,
        # tau = 1 (the KL between the served distributions). tau = 4 (Hinton et al.) was
        # tried on the validation split: KD and MatTA Students were worse with Adam and Shampoo.
        mixes=mixes[:1] if mode == "quick" else mixes,
        seeds=(0, 1, 2) if mode == "full" else (0,),
    )


def _lm(mode):
    sizes = {
        "quick": dict(model_dim=32, num_layers=2, num_heads=2, intermediate_dim=64),
        "default": dict(model_dim=64, num_layers=2, num_heads=4, intermediate_dim=256),
        "full": dict(model_dim=64, num_layers=2, num_heads=4, intermediate_dim=256),
    }[mode]
    teacher = {
        "quick": dict(model_dim=64, num_layers=2, num_heads=2, intermediate_dim=128),
        "default": dict(model_dim=128, num_layers=2, num_heads=4, intermediate_dim=512),
        "full": dict(model_dim=128, num_layers=3, num_heads=4, intermediate_dim=512),
    }[mode]
    student = 0.5 if mode == "quick" else 0.25
    sequence_length = 32 if mode == "quick" else 64
    return TaskConfig(
        task="lm",
        ta={"sequence_length": sequence_length, "nested_heads": True, **sizes},
        teacher={"sequence_length": sequence_length, "nested_heads": False, **teacher},
        student_fraction=student,
        steps={"quick": 20, "default": 300, "full": 1000}[mode],
        teacher_steps={"quick": 20, "default": 900, "full": 3000}[mode],
        batch_size=32,
        learning_rate=3e-3,
        student_widths=(student,) if mode == "quick" else (student, 0.5, 0.75),
        in_between=() if mode == "quick" else _IN_BETWEEN,
        # As for digits: no block at the Student's width (see _digits).
        mixes=(
            {"block_1": 0.75, "block_2": 0.5},
            {"block_1": 0.5, "block_2": 0.75},
            {"block_1": 1.0, "block_2": 0.75},
        )[: 1 if mode == "quick" else 3],
        eval_windows={"quick": 64, "default": 1024, "full": None}[mode],
        final_word_examples={"quick": 32, "default": 400, "full": 2000}[mode],
        seeds=(0, 1, 2) if mode == "full" else (0,),
    )


def preset(task, mode="default"):
    """The `TaskConfig` of `task` (`"digits"` or `"lm"`) in `mode` (`quick`, `default`, `full`).

    Example:

    ```python
    config = preset("digits", "quick").with_seeds([0, 1])
    ```
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {TASKS}.")
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}.")
    return _digits(mode) if task == "digits" else _lm(mode)
