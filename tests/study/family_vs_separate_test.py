"""The family against separate training: interpolation, paired differences, the better side,
the monotonicity check and each side's training seconds, on rows whose expected numbers are
worked out by hand below."""

import pytest

from keras_matta.study import report

pytestmark = pytest.mark.backend_agnostic  # tables, text and a plot from numbers

# (label, role, params) -> accuracy of seeds 0 and 1, with Adam. Separate sizes: 100, 200, 400.
SEPARATE = {
    ("0.25", 100): (0.80, 0.82),
    ("0.5", 200): (0.86, 0.86),
    ("1", 400): (0.90, 0.94),
}
FAMILY = {
    ("mix(tiny)", "mix", 50): (0.70, 0.70),  # below every separate size: nothing to compare
    ("0.25", "trained", 100): (0.83, 0.83),
    ("0.375", "in-between", 150): (0.85, 0.83),
    ("0.5", "trained", 200): (0.85, 0.87),
    ("mix(a=1,b=0.25)", "mix", 300): (0.85, 0.85),
    ("1", "trained", 400): (0.92, 0.92),
}
SEPARATE_SECONDS = {"0.25": (1.0, 2.0), "0.5": (2.0, 3.0), "1": (4.0, 5.0)}  # seeds 0, 1
MATTA_SECONDS = (6.0, 8.0)
SHAMPOO_SHIFT = 0.05  # Shampoo's family is this much better; its separate models are Adam's


def _rows():
    rows = []
    for optimizer, shift in (("adam", 0.0), ("shampoo", SHAMPOO_SHIFT)):
        for (label, params), values in SEPARATE.items():
            for seed, value in enumerate(values):
                rows.append(_row("separate", optimizer, label, "trained", params, seed, value,
                                 SEPARATE_SECONDS[label][seed]))
        for (label, role, params), values in FAMILY.items():
            for seed, value in enumerate(values):
                rows.append(_row("matta", optimizer, label, role, params, seed, value + shift,
                                 MATTA_SECONDS[seed]))
    return rows


def _row(method, optimizer, label, role, params, seed, accuracy, seconds):
    return {"task": "digits", "seed": seed, "method": method, "optimizer": optimizer,
            "width": label, "label": label, "role": role, "params": params, "flops": 2 * params,
            "train_seconds": seconds, "metrics": {"accuracy": accuracy, "auc": 0.99}}


def _members(optimizer="adam"):
    data = report.family_vs_separate(_rows())
    return {m["label"]: m for m in data["digits"]["optimizers"][optimizer]["members"]}


def test_interpolate_is_linear_in_parameters():
    assert report.interpolate(150, (100, 0.90), (200, 0.94)) == pytest.approx(0.92)
    assert report.interpolate(175, (100, 2.0), (200, 1.0)) == pytest.approx(1.25)
    assert report.interpolate(100, (100, 0.9), (100, 0.9)) == 0.9
    with pytest.raises(ValueError, match=r"`params` \(250\)"):
        report.interpolate(250, (100, 0.90), (200, 0.94))


def test_paired_difference_is_per_seed_over_shared_seeds():
    difference = report.paired_difference({0: 0.92, 1: 0.95, 2: 0.5}, {0: 0.90, 1: 0.92})
    # Seeds 0 and 1: differences 0.02 and 0.03.
    assert difference["seeds"] == [0, 1]
    assert difference["mean"] == pytest.approx(0.025)
    assert difference["std"] == pytest.approx(0.005)
    assert report.paired_difference({0: 1.0}, {1: 1.0}) is None


@pytest.mark.parametrize("mean, std, higher, expected", [
    (0.02, 0.01, True, "family"),
    (0.02, 0.01, False, "separate"),
    (-0.05, 0.01, False, "family"),
    (-0.05, 0.01, True, "separate"),
    (0.01, 0.01, True, "tie"),  # |mean| <= std
    (-0.005, 0.025, False, "tie"),
    (0.0, 0.0, True, "tie"),
])
def test_better_side_is_a_tie_within_one_std(mean, std, higher, expected):
    assert report.better_side({"mean": mean, "std": std}, higher) == expected


def test_trained_sizes_are_compared_with_the_separate_model_of_their_size():
    members = _members()
    # 0.25: family 0.83, 0.83 against 0.80, 0.82: differences 0.03, 0.01.
    m = members["0.25"]
    assert (m["reference"], m["between"]) == ("separate", ["0.25"])
    assert m["separate"]["mean"] == pytest.approx(0.81)
    assert m["difference"]["mean"] == pytest.approx(0.02)
    assert m["difference"]["std"] == pytest.approx(0.01)
    assert m["better"] == "family"
    # 1: family 0.92, 0.92 against 0.90, 0.94: differences +0.02, -0.02: a tie.
    m = members["1"]
    assert m["difference"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert m["difference"]["std"] == pytest.approx(0.02)
    assert m["better"] == "tie"


def test_untrained_sizes_are_compared_with_the_interpolated_separate_curve():
    members = _members()
    # 0.375 (150 params), halfway between 0.25 (100) and 0.5 (200): seed 0 0.80 + 0.5 * 0.06 =
    # 0.83, seed 1 0.82 + 0.5 * 0.04 = 0.84. Family 0.85, 0.83: differences 0.02, -0.01.
    m = members["0.375"]
    assert (m["reference"], m["between"]) == ("interpolated", ["0.25", "0.5"])
    assert m["separate"]["mean"] == pytest.approx(0.835)
    assert m["separate"]["std"] == pytest.approx(0.005)
    assert m["difference"]["mean"] == pytest.approx(0.005)
    assert m["difference"]["std"] == pytest.approx(0.015)
    assert m["better"] == "tie"
    # The mix (300 params), halfway between 0.5 (200) and 1 (400): 0.88 and 0.90. Family 0.85,
    # 0.85: differences -0.03, -0.05.
    m = members["mix(a=1,b=0.25)"]
    assert (m["reference"], m["between"]) == ("interpolated", ["0.5", "1"])
    assert m["difference"]["mean"] == pytest.approx(-0.04)
    assert m["difference"]["std"] == pytest.approx(0.01)
    assert m["better"] == "separate"
    # Below the smallest separate size there is no reference.
    m = members["mix(tiny)"]
    assert m["reference"] is None and m["difference"] is None and m["better"] is None


def test_optimizers_are_compared_separately():
    # Shampoo's family is Adam's + 0.05 against the same separate values.
    assert _members("shampoo")["0.25"]["difference"]["mean"] == pytest.approx(0.07)
    assert [m["label"] for m in _members("shampoo").values()] == [
        label for label, _, _ in FAMILY]  # ascending in parameters


def test_monotonicity_compares_with_the_largest_smaller_trained_width():
    data = report.family_vs_separate(_rows())["digits"]["optimizers"]["adam"]
    checks = {c["label"]: c for c in data["monotonicity"]}
    assert set(checks) == {"mix(tiny)", "0.375", "mix(a=1,b=0.25)"}  # untrained members only
    # 0.375 against 0.25, paired by seed: +0.02 and 0.00, mean +0.01: passes.
    assert (checks["0.375"]["neighbour"], checks["0.375"]["verdict"]) == ("0.25", "pass")
    assert checks["0.375"]["margin"]["mean"] == pytest.approx(0.01)
    assert checks["0.375"]["margin"]["std"] == pytest.approx(0.01)
    # The mix (300 params): its neighbour is 0.5 (200), not 0.25. Against 0.5's 0.85 and 0.87
    # it is 0.00 and -0.02: mean -0.01 within its std 0.01, so a tie, not a pass.
    assert (checks["mix(a=1,b=0.25)"]["neighbour"], checks["mix(a=1,b=0.25)"]["verdict"]) == (
        "0.5", "tie")
    assert checks["mix(a=1,b=0.25)"]["margin"]["mean"] == pytest.approx(-0.01)
    assert checks["mix(a=1,b=0.25)"]["neighbour_value"] == pytest.approx(0.86)
    assert checks["mix(tiny)"]["verdict"] is None  # no smaller trained width


def test_monotonicity_reads_lower_as_better_for_bits_per_byte():
    members = [
        {"label": "0.25", "role": "trained", "params": 10, "values": {0: 2.80, 1: 2.82}},
        {"label": "0.375", "role": "in-between", "params": 15, "values": {0: 2.75, 1: 2.77}},
        {"label": "0.5", "role": "trained", "params": 20, "values": {0: 2.60, 1: 2.60}},
        {"label": "mix", "role": "mix", "params": 25, "values": {0: 2.70, 1: 2.66}},
    ]
    checks = {c["label"]: c for c in report.monotonicity(members, higher_is_better=False)}
    assert checks["0.375"]["verdict"] == "pass"
    assert checks["0.375"]["margin"]["mean"] == pytest.approx(0.05)
    # 0.10 and 0.06 worse than 0.5: mean -0.08, std 0.02, beyond noise.
    assert checks["mix"]["verdict"] == "fail"
    assert checks["mix"]["margin"]["mean"] == pytest.approx(-0.08)
    assert checks["mix"]["neighbour"] == "0.5"
    assert report._check_text("bits_per_byte", checks["mix"]) == "FAIL (0.5: 2.600)"


def test_training_seconds_sum_the_separate_runs_and_take_the_one_matta_run():
    seconds = report.family_vs_separate(_rows())["digits"]["optimizers"]["adam"]["seconds"]
    # Separate: seed 0 1 + 2 + 4 = 7, seed 1 2 + 3 + 5 = 10: mean 8.5. MatTA: 6 and 8: 7.
    assert seconds["separate"] == pytest.approx(8.5)
    assert seconds["family"] == pytest.approx(7.0)
    assert seconds["separate_runs"] == ["0.25", "0.5", "1"]


def test_family_table_and_text_show_the_numbers():
    data = report.family_vs_separate(_rows())
    header, rows = report.family_table(data, "digits")
    by_label = {(row[0], row[2]): dict(zip(header, row)) for row in rows}
    mix = by_label[("mix(a=1,b=0.25)", "adam")]
    assert mix["trained separately"] == "0.8900 ± 0.0100 (interpolated 0.5–1)"
    assert mix["family − separate"] == "-0.0400 ± 0.0100"
    assert mix["better"] == "separate"
    assert mix["vs smaller trained width"] == "tie (0.5: 0.8600)"
    assert by_label[("0.375", "adam")]["vs smaller trained width"] == "pass (0.25: 0.8300)"
    assert by_label[("0.25", "adam")]["vs smaller trained width"] == "—"
    assert by_label[("mix(tiny)", "adam")]["better"] == "n/a"
    text = report._family_text(data["digits"])
    # Adam: family better at 0.25; ties at 0.375, 0.5, 1; separate better at the mix.
    assert ("Family vs separate training (adam): family better at 1, tie at 3, separate "
            "better at 1 of 5 sizes; monotone in parameters: of 2 members that are no "
            "Student, 1 pass, 1 tie with their smaller trained neighbour, 0 fail."
            ) in text
    assert "separately, 3 runs (0.25, 0.5, 1): 8 s; the family, one MatTA run: 7 s (0.82x)" in text


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "quality_vs_params.png"
    report.plot(report.aggregate(_rows()), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
