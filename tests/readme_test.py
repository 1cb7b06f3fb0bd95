"""The README tells the truth: its quick start runs, and its results are the committed run's.

- The quick start block is executed as written (it trains MatTA on the embedded digits); the
  Student it extracts is a stock Keras model that predicts like the TA's nested prefix and
  classifies held-out digits well above chance.
- The results section is byte-for-byte what `keras_matta.study.report.readme_section` renders
  from the committed `results.json` of the `--full` demo run: no number is typed in by hand.
"""

import json
import pathlib
import re
import sys

import numpy as np
import pytest
from helpers import to_numpy

import keras_matta
from keras_matta.study import report

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "guides"))
import sync_notebooks  # noqa: E402

RESULTS = "benchmarks/results/demo_full/results.json"


def _section(title):
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _python_blocks(markdown):
    return re.findall(r"```python\n(.*?)```", markdown, re.S)


@pytest.mark.backend_agnostic
def test_quick_start_is_at_most_15_lines():
    (block,) = _python_blocks(_section("Quick start"))
    assert len(block.strip().splitlines()) <= 15


@pytest.mark.slow
@pytest.mark.runs_on("tensorflow")
def test_quick_start_runs_and_its_student_is_a_stock_model(tmp_path, monkeypatch):
    (block,) = _python_blocks(_section("Quick start"))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "<README quick start>", "exec"), namespace)
    ta, student, mix = namespace["ta"], namespace["student"], namespace["mix"]
    x_test, y_test = namespace["x_test"], namespace["y_test"]

    for model in (student, mix):
        assert not any(type(layer).__module__.startswith("keras_matta")
                       for layer in model.layers)
    assert student.count_params() == keras_matta.cost(ta, 0.25)["params"]
    student_logits = to_numpy(student.predict(x_test, verbose=0))
    with keras_matta.WidthScope(ta, 0.25):
        nested_logits = to_numpy(ta.predict(x_test, verbose=0))
    np.testing.assert_allclose(student_logits, nested_logits, rtol=1e-5, atol=1e-5)
    accuracy = np.mean(student_logits.argmax(-1) == y_test)
    assert accuracy > 0.85, accuracy  # chance is 0.1; five epochs reach about 0.92


@pytest.mark.backend_agnostic
def test_results_section_is_rendered_from_the_committed_run():
    payload = json.loads((ROOT / RESULTS).read_text())
    assert payload["mode"] == "full" and len(payload["rows"]) > 0
    assert (ROOT / RESULTS).with_name("quality_vs_params.png").stat().st_size > 10_000
    expected = report.readme_section(payload, RESULTS)
    assert expected in README.read_text(), (
        "README results are stale: run "
        f"`python -m keras_matta.study.report {RESULTS} --readme README.md`")


@pytest.mark.backend_agnostic
def test_guides_and_supported_backends_are_linked():
    text = README.read_text()
    for guide in sorted((ROOT / "guides").glob("*.py")):
        if guide.name not in sync_notebooks.TOOLS:
            assert f"(guides/{guide.name})" in text, guide.name
            assert f"(guides/md/{guide.stem}.md)" in text, guide.name
    for backend in ("TensorFlow", "JAX", "PyTorch"):
        assert backend in _section("Supported versions")

