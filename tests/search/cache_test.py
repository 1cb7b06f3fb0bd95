"""`EvaluationCache`: values survive a restart, a torn last line and nothing else's file."""

import json

import pytest

from keras_matta.search import EvaluationCache

pytestmark = pytest.mark.backend_agnostic

WIDTHS = {"hidden_1": {"units": 8}, "hidden_2": {"units": 4}}


def test_values_are_on_disk_as_soon_as_they_are_put(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = EvaluationCache(path, fingerprint={"objective": "accuracy"})
    cache.put("quality", WIDTHS, 0.5)
    # Read back by a second instance while the first is still alive (a killed process).
    resumed = EvaluationCache(path, fingerprint={"objective": "accuracy"})
    assert resumed.get("quality", WIDTHS) == 0.5 and len(resumed) == 1
    assert resumed.get("latency_ms", WIDTHS) is None
    # Key order in the spec does not matter.
    assert resumed.get("quality", dict(reversed(list(WIDTHS.items())))) == 0.5


def test_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "cache.jsonl"
    EvaluationCache(path, {"a": 1}).put("quality", WIDTHS, 0.25)
    with open(path, "a") as file:
        file.write('{"kind": "quality", "widths": {"hidden_1"')  # killed mid-write
    assert EvaluationCache(path, {"a": 1}).get("quality", WIDTHS) == 0.25


def test_a_file_of_another_search_is_refused(tmp_path):
    path = tmp_path / "cache.jsonl"
    EvaluationCache(path, {"objective": "accuracy", "batch_size": 32})
    with pytest.raises(ValueError, match=r"another search \(different \['batch_size'\]\)"):
        EvaluationCache(path, {"objective": "accuracy", "batch_size": 64})
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"something": "else"}) + "\n")
    with pytest.raises(ValueError, match="not a search cache"):
        EvaluationCache(other, {})


def test_in_memory_without_a_path():
    cache = EvaluationCache()
    cache.put("quality", WIDTHS, 1.0)
    assert cache.get("quality", WIDTHS) == 1.0
