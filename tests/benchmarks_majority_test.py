"""The pure helpers of `benchmarks/majority_study.py`: variants, learning-rate choice, summary.

The study's conclusion rests on which learning rate each variant keeps, so the choice is
checked against hand-computed answers in both directions (accuracy up, bits per byte down).
"""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.backend_agnostic  # the study's pure-Python helpers

STUDY_PATH = pathlib.Path(__file__).parents[1] / "benchmarks" / "majority_study.py"


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, str(STUDY_PATH.parent))  # the script imports its sibling `common`
    try:
        spec = importlib.util.spec_from_file_location("majority_study", STUDY_PATH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(STUDY_PATH.parent))
    return module


def test_parse_variant(study):
    assert study.parse_variant("plain") == (1, "mean")
    assert study.parse_variant("4:random_majority") == (4, "random_majority")
    for bad in ("4", "1:mean", "x:mean", "random_majority"):
        with pytest.raises(ValueError, match="'plain' or '<k >= 2>:<combine>'"):
            study.parse_variant(bad)


def test_best_learning_rate_maximizes_accuracy_and_minimizes_bits_per_byte(study):
    validation = {1e-3: [0.90, 0.92], 3e-3: [0.95, 0.91], 1e-2: [0.80, 0.99]}  # means .91 .93 .895
    assert study.best_learning_rate(validation, higher_is_better=True) == 3e-3
    assert study.best_learning_rate(validation, higher_is_better=False) == 1e-2
    assert study.best_learning_rate({3e-3: [2.0], 1e-3: [2.0]}, False) == 1e-3  # tie: smaller


def test_summarize(study):
    mean, std = study.summarize([0.90, 0.92, 0.97])
    assert mean == pytest.approx(0.93)
    assert std == pytest.approx(np.sqrt(((-0.03) ** 2 + (-0.01) ** 2 + 0.04**2) / 2))
    assert study.summarize([0.5]) == (0.5, 0.0)


def test_parse_args_requires_the_plain_baseline_and_known_tasks(study):
    args = study.parse_args(["--quick"])
    assert "plain" in args.variants and args.seeds == [0, 1]
    with pytest.raises(ValueError, match="must include 'plain'"):
        study.parse_args(["--variants", "2:mean"])
    with pytest.raises(ValueError, match=r"Unknown `--tasks` \['cifar'\]"):
        study.parse_args(["--tasks", "digits,cifar"])
