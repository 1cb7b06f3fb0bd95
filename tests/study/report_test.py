"""The study's report: seed aggregation, the measured claims, and the README section.

(The family against separate training has its own tests: `family_vs_separate_test.py`.)
"""

import json

import numpy as np
import pytest

from keras_matta.study import report

pytestmark = pytest.mark.backend_agnostic  # tables and text from numbers

ACCURACY = {  # (method, optimizer, width) -> accuracy of seeds 0, 1, 2
    ("teacher", "adam", "1"): (0.97, 0.97, 0.97),
    ("separate", "adam", "0.25"): (0.90, 0.92, 0.91),  # the Student alone
    ("separate", "shampoo", "0.25"): (0.92, 0.93, 0.92),
    ("separate", "adam", "1"): (0.95, 0.94, 0.93),
    ("separate", "shampoo", "1"): (0.96, 0.96, 0.96),
    ("kd", "adam", "1"): (0.91, 0.92, 0.92),
    ("kd", "shampoo", "1"): (0.92, 0.92, 0.93),
    ("majority", "adam", None): (0.89, 0.92, 0.90),  # served at the Student's size
    ("matta", "adam", "0.25"): (0.92, 0.91, 0.93),
    ("matta", "adam", "1"): (0.94, 0.94, 0.95),
    ("matta", "shampoo", "0.25"): (0.95, 0.95, 0.96),
    ("matta", "shampoo", "1"): (0.96, 0.96, 0.97),
}


def _rows():
    rows = []
    for (method, optimizer, width), values in ACCURACY.items():
        for seed, accuracy in enumerate(values):
            rows.append({
                "task": "digits", "seed": seed, "method": method, "optimizer": optimizer,
                "width": width, "params": 1000 if width in ("0.25", None) else 4000,
                "label": "Student, majority kernels (k=4)" if method == "majority" else width,
                "role": "trained" if method in ("separate", "matta") else None,
                "flops": 2000, "train_seconds": 1.0 + seed,
                "metrics": {"accuracy": accuracy, "auc": 0.99},
            })
    return rows


def _payload():
    results = report.aggregate(_rows())
    summary = {"digits": report.summary(results, "digits", "0.25")}
    return {
        "mode": "full", "split": "test", "seconds": 1800.0,
        "environment": {"backend": "jax", "cpu_count": 2},
        "settings": {"digits": {"student_fraction": 0.25}},
        "summary": summary, "family_vs_separate": report.family_vs_separate(_rows()),
        "results": results, "rows": _rows(),
    }


def _result(results, method, optimizer, width):
    (result,) = [r for r in results
                 if (r["method"], r["optimizer"], r["width"]) == (method, optimizer, width)]
    return result


def test_aggregate_is_the_mean_and_std_over_seeds():
    results = report.aggregate(_rows())
    assert len(results) == len(ACCURACY)
    for key, values in ACCURACY.items():
        result = _result(results, *key)
        assert result["seeds"] == [0, 1, 2]
        assert result["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean(values))
        assert result["metrics"]["accuracy"]["std"] == pytest.approx(np.std(values))
        assert result["train_seconds"] == pytest.approx(2.0)


def test_summary_gains_are_against_the_student_alone_with_adam():
    summary = _payload()["summary"]["digits"]
    mean = {key: np.mean(values) for key, values in ACCURACY.items()}
    base = mean[("separate", "adam", "0.25")]
    assert summary["baseline_student_adam"] == pytest.approx(base)
    assert summary["gain_matta_student_shampoo"] == pytest.approx(
        mean[("matta", "shampoo", "0.25")] - base)
    assert summary["gain_matta_ta_adam"] == pytest.approx(mean[("matta", "adam", "1")] - base)
    assert summary["gain_majority_adam"] == pytest.approx(mean[("majority", "adam", None)] - base)
    assert summary["gain_majority_shampoo"] is None  # trained with Adam only
    margin = (mean[("matta", "shampoo", "0.25")] - base) - (
        (mean[("matta", "adam", "0.25")] - base) + (mean[("separate", "shampoo", "0.25")] - base))
    assert summary["super_additivity_margin"] == pytest.approx(margin)
    assert summary["super_additive"] == (margin > 0)


def test_results_written_before_separate_models_keep_their_student_alone():
    # Older results.json files name the Student alone method "student", width "1".
    rows = [{**row, "method": "student", "width": "1"} if row["method"] == "separate"
            and row["width"] == "0.25" else row
            for row in _rows() if (row["method"], row["width"]) != ("separate", "1")]
    results = report.aggregate(rows)
    old, new = (report.summary(r, "digits", "0.25") for r in (results, _payload()["results"]))
    assert old == pytest.approx(new)
    _, table = report.table_rows(results, "digits", "0.25")
    assert [row[0] for row in table].count("Student alone") == 2


def _cells(table_text, *first):
    """The cells of the first Markdown table row whose first cells are `first`."""
    for line in table_text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[:len(first)] == list(first):
            return cells
    raise AssertionError(f"no table row starting with {first!r}")


def test_readme_section_shows_every_measured_mean_and_its_source():
    section = report.readme_section(_payload(), "runs/results.json")
    assert section.startswith(report.README_BEGIN) and section.endswith(report.README_END)
    assert "`keras-matta demo --full`" in section and "seeds 0, 1, 2" in section
    assert "[`runs/results.json`](runs/results.json)" in section
    student_adam = ACCURACY[("separate", "adam", "0.25")]
    assert _cells(section, "Student alone", "adam")[2:5] == [
        "1k", "2k", f"{np.mean(student_adam):.4f} ± {np.std(student_adam):.4f}"]
    assert "| Teacher " in section and "| MatTA TA " in section
    assert _cells(section, "Student, majority kernels (k=4)", "adam")[2] == "1k"
    # Majority kernels 0.9033 against the Student alone's 0.91.
    assert "Majority kernels (adam), served at the Student's size: -0.0067" in section
    # The family table: the TA (width 1) with Adam, 0.9433 ± 0.0047 against 0.9400 ± 0.0082;
    # differences -0.01, 0.0, 0.02: mean 0.0033 ± 0.0125, a tie.
    assert "the family extracted from the MatTA TA vs separate training (test split)" in section
    assert _cells(section, "1", "trained", "adam") == [
        "1", "trained", "adam", "4k", "0.9433 ± 0.0047", "0.9400 ± 0.0082", "+0.0033 ± 0.0125",
        "tie", "—"]
    # Training seconds: the separate runs 0.25 and 1 (2 s each, mean over seeds) against the one
    # MatTA run (2 s): every synthetic row took 1 + seed seconds.
    assert ("separately, 2 runs (0.25, 1): 4 s; the family, one MatTA run: 2 s (0.50x)"
            in section)


def test_replace_readme_section_touches_only_the_marked_block(tmp_path):
    section = report.readme_section(_payload(), "runs/results.json")
    readme = f"# Title\n\nBefore.\n\n{report.README_BEGIN}\nold\n{report.README_END}\n\nAfter.\n"
    updated = report.replace_readme_section(readme, section)
    assert updated == f"# Title\n\nBefore.\n\n{section}\n\nAfter.\n"
    assert report.replace_readme_section(updated, section) == updated

    results, path = tmp_path / "results.json", tmp_path / "README.md"
    results.write_text(json.dumps(_payload()))
    path.write_text(readme)
    report.main([str(results), "--readme", str(path)])
    assert report.replace_readme_section(readme, report.readme_section(
        _payload(), str(results))) == path.read_text()

    with pytest.raises(ValueError, match="demo results"):
        report.replace_readme_section("# no markers\n", section)


def test_merge_joins_runs_of_other_tasks_as_one_run_would_have_written_them():
    digits = _payload()
    lm_rows = [{**row, "task": "lm", "metrics": {"bits_per_byte": 3 - row["metrics"]["accuracy"],
                                                   "final_word_accuracy": 0.01}}
               for row in _rows()]
    lm = {**_payload(), "seconds": 600.0, "rows": lm_rows,
          "settings": {"lm": {"student_fraction": 0.25}},
          "summary": {"lm": report.summary(report.aggregate(lm_rows), "lm", "0.25")}}
    merged = report.merge([digits, lm])
    assert merged["seconds"] == 2400.0
    assert set(merged["settings"]) == set(merged["summary"]) == {"digits", "lm"}
    assert merged["results"] == report.aggregate(_rows() + lm_rows)
    assert merged["family_vs_separate"] == report.family_vs_separate(_rows() + lm_rows)
    with pytest.raises(ValueError, match="share seeds: \\[0, 1, 2\\]"):
        report.merge([digits, digits])


def test_merge_joins_runs_of_other_seeds_of_a_task_as_one_run_would_have_written_them():
    def run(seeds):
        rows = [row for row in _rows() if row["seed"] in seeds]
        settings = {"digits": {"student_fraction": 0.25, "steps": 10, "seeds": seeds}}
        return {**_payload(), "seconds": 100.0 * len(seeds), "rows": rows, "settings": settings,
                "summary": {}, "results": report.aggregate(rows)}

    merged = report.merge([run([1, 2]), run([0])])
    assert merged["settings"]["digits"]["seeds"] == [0, 1, 2]
    assert merged["seconds"] == 300.0
    # Every mean, spread and paired difference is the three-seed run's, whatever the order.
    rows = [row for row in _rows() if row["seed"] in (1, 2)] + [
        row for row in _rows() if row["seed"] == 0]
    assert merged["results"] == report.aggregate(rows)
    student = _result(merged["results"], "separate", "adam", "0.25")["metrics"]["accuracy"]
    assert student["mean"] == pytest.approx(np.mean(ACCURACY["separate", "adam", "0.25"]))
    assert merged["summary"]["digits"] == report.summary(report.aggregate(rows), "digits", "0.25")
    assert merged["family_vs_separate"] == report.family_vs_separate(rows)

    other = run([0])
    other["settings"]["digits"]["steps"] = 20
    with pytest.raises(ValueError, match="differ in more than their seeds"):
        report.merge([run([1, 2]), other])


def test_merge_with_replace_swaps_in_a_rerun_of_one_method():
    """`keras-matta demo --methods majority` after a full run: its rows replace the old ones."""
    rerun_rows = [{**row, "metrics": {"accuracy": row["metrics"]["accuracy"] + 0.03, "auc": 0.99}}
                  for row in _rows() if row["method"] == "majority"]
    rerun = {**_payload(), "seconds": 60.0, "rows": rerun_rows,
             "settings": {"digits": {"student_fraction": 0.25}}}
    merged = report.merge([_payload(), rerun], replace=True)
    expected = [row for row in _rows() if row["method"] != "majority"] + rerun_rows
    assert merged["rows"] == expected
    assert merged["results"] == report.aggregate(expected)
    majority = _result(merged["results"], "majority", "adam", None)["metrics"]["accuracy"]
    assert majority["mean"] == pytest.approx(np.mean(ACCURACY["majority", "adam", None]) + 0.03)
    assert merged["summary"]["digits"] == report.summary(report.aggregate(expected), "digits",
                                                         "0.25")
    assert merged["seconds"] == 1860.0
    with pytest.raises(ValueError, match="share seeds"):
        report.merge([_payload(), rerun])


def test_merge_keeps_the_cached_teacher_once():
    """The demo trains a task's Teacher once (a row of seed 0) and every run reuses it."""
    def run(seeds, teacher_accuracy=0.97):
        rows = [row for row in _rows() if row["seed"] in seeds and row["method"] != "teacher"]
        rows.append({**_rows()[0], "seed": 0, "metrics": {"accuracy": teacher_accuracy,
                                                          "auc": 0.99}})
        return {**_payload(), "rows": rows,
                "settings": {"digits": {"student_fraction": 0.25, "seeds": seeds}}}

    merged = report.merge([run([0]), run([1, 2])])
    assert [r["seed"] for r in merged["rows"] if r["method"] == "teacher"] == [0]
    assert _result(merged["results"], "teacher", "adam", "1")["seeds"] == [0]
    assert merged["settings"]["digits"]["seeds"] == [0, 1, 2]
    with pytest.raises(ValueError, match="different Teachers"):
        report.merge([run([0]), run([1, 2], teacher_accuracy=0.5)])


def test_merge_with_replace_takes_a_matta_rerun_at_other_family_members():
    """`--methods matta` after the preset's mixes changed: the family's members may differ."""
    def with_family(payload, family, seeds=(0, 1, 2)):
        rows = [row for row in payload["rows"] if row["method"] != "matta" or row["seed"] in seeds]
        rows += [{**row, "label": family[-1], "width": family[-1], "role": "mix", "params": 2000}
                 for row in rows if row["method"] == "matta" and row["label"] == "1"]
        settings = {"digits": {"student_fraction": 0.25, "mixes": [family[-1]],
                               "family": family}}
        return {**payload, "rows": rows, "settings": settings}

    old = with_family(_payload(), ["0.25", "1", "mix(a=1,b=0.25)"])
    new_family = ["0.25", "1", "mix(a=0.75,b=0.5)"]
    rerun = with_family({**_payload(), "rows": [r for r in _rows() if r["method"] == "matta"]},
                        new_family)
    merged = report.merge([old, rerun], replace=True)
    assert merged["settings"]["digits"]["family"] == new_family
    labels = {r["label"] for r in merged["rows"] if r["method"] == "matta"}
    assert labels == set(new_family)
    assert {r["method"] for r in merged["rows"]} == {"teacher", "separate", "kd", "majority",
                                                     "matta"}
    # Only seed 0 rerun: seeds 1 and 2 keep the old mix, so the family is not one family.
    partial = with_family({**_payload(), "rows": [r for r in _rows() if r["method"] == "matta"]},
                          new_family, seeds=(0,))
    with pytest.raises(ValueError, match=r"seeds \[1, 2\], were evaluated at other family"):
        report.merge([old, partial], replace=True)
    # Without a MatTA rerun the family's members must still agree.
    separate = with_family({**_payload(), "rows": [r for r in _rows()
                                                   if r["method"] == "separate"]}, new_family)
    with pytest.raises(ValueError, match="differ in more than their seeds"):
        report.merge([old, separate], replace=True)


def test_merge_with_replace_takes_a_retrained_teacher_only_with_everything_it_taught():
    """A rerun whose Teacher was trained again replaces it, if KD and MatTA were all rerun."""
    def rerun(methods, teacher_accuracy=0.99):
        rows = [{**row, "metrics": {"accuracy": teacher_accuracy, "auc": 0.99}}
                if row["method"] == "teacher" else row
                for row in _rows() if row["method"] in ("teacher", *methods)]
        return {**_payload(), "rows": rows}

    merged = report.merge([_payload(), rerun(["kd", "matta"])], replace=True)
    teachers = [r["metrics"]["accuracy"] for r in merged["rows"] if r["method"] == "teacher"]
    assert teachers == [0.99] * 3 and len(merged["rows"]) == len(_rows())
    # The KD rows still come from the old Teacher: refused, naming them.
    with pytest.raises(ValueError, match=r"\('digits', 'kd', 0\).*another Teacher"):
        report.merge([_payload(), rerun(["matta"])], replace=True)
    # The same Teacher again: only the rerun methods change.
    same = report.merge([_payload(), rerun(["matta"], teacher_accuracy=0.97)], replace=True)
    def order(results):
        return sorted(results, key=lambda r: (r["method"], r["optimizer"], str(r["width"])))

    assert order(same["results"]) == order(report.aggregate(_rows()))


def test_merge_with_replace_takes_a_whole_rerun_at_other_settings():
    """Every method and seed of a task run again (the preset's learning rate changed): the
    rerun replaces the task, settings and Teacher included; a partial rerun cannot."""
    def run(rows, learning_rate, teacher_accuracy):
        rows = [{**row, "metrics": {"accuracy": teacher_accuracy, "auc": 0.99}}
                if row["method"] == "teacher" else row for row in rows]
        settings = {"digits": {"student_fraction": 0.25, "learning_rate": learning_rate,
                               "seeds": sorted({row["seed"] for row in rows})}}
        return {**_payload(), "rows": rows, "settings": settings}

    rerun_rows = [{**row, "metrics": {"accuracy": row["metrics"]["accuracy"] - 0.01, "auc": 0.9}}
                  for row in _rows()]
    merged = report.merge([run(_rows(), 1e-3, 0.97), run(rerun_rows, 3e-3, 0.95)], replace=True)
    assert merged["settings"]["digits"]["learning_rate"] == 3e-3
    assert merged["settings"]["digits"]["seeds"] == [0, 1, 2]
    expected = run(rerun_rows, 3e-3, 0.95)["rows"]
    assert merged["rows"] == expected
    assert merged["results"] == report.aggregate(expected)
    # Seed 0 alone at the new rate would leave seeds 1 and 2 at the old one.
    partial = run([row for row in rerun_rows if row["seed"] == 0], 3e-3, 0.95)
    with pytest.raises(ValueError, match="differ in more than their seeds"):
        report.merge([run(_rows(), 1e-3, 0.97), partial], replace=True)
