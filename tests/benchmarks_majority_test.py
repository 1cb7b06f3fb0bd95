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
    assert study.parse_variant("plain") == (1, "mean", "independent", "all")
    assert study.parse_variant("4:random_majority") == (4, "random_majority", "independent", "all")
    assert study.parse_variant("3:unit_majority:identical@ffn") == (
        3, "unit_majority", "identical", "ffn")
    for bad in ("4", "1:mean", "x:mean", "random_majority", "4:vote", "4:mean:same", "4:mean@a@b"):
        with pytest.raises(ValueError, match="'plain' or '<k >= 2>:<combine>"):
            study.parse_variant(bad)


def test_paired_verdict_is_a_two_sided_t_test(study):
    # Differences 0.010, 0.012, 0.011: t = 0.011 / (0.001 / sqrt 3) = 19 > 4.303.
    assert study.paired_verdict([0.010, 0.012, 0.011], higher_is_better=True) == "better"
    assert study.paired_verdict([0.010, 0.012, 0.011], higher_is_better=False) == "worse"
    # 0.01, -0.005, 0.02: mean 0.00833, std 0.01258, t = 1.15 < 4.303.
    assert study.paired_verdict([0.01, -0.005, 0.02], higher_is_better=True) == "="
    assert study.paired_verdict([0.5], higher_is_better=True) == "="  # one seed never decides


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
