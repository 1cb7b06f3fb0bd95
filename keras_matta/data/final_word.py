"""A LAMBADA-style final-word task built from held-out verse.

LAMBADA (Paperno et al., 2016) asks a language model for the last word of a passage given the
passage before it. Ours takes every speech line of held-out plays whose final word has at least
`min_word_length` letters, keeps the `context_length` bytes of text just before that word as
the context (so the context ends with the line so far, e.g. `"...So foul and fair a day I have
not "`) and the word as the target (`"seen"`). Unlike LAMBADA, lines are not filtered for needing
broad context: many final words are guessable from the line alone (rhyme and metre help).

A model answers by greedy byte decoding until it emits a byte that is not a letter or an
apostrophe; the answer is right when the decoded word equals the target exactly (see
`keras_matta.study.metrics.final_word_accuracy`).
"""

import re

import numpy as np

WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'")
# The final word of a line: letters (inner apostrophes allowed), then only punctuation.
_FINAL_WORD = re.compile(r"([A-Za-z][A-Za-z']*)[^A-Za-z'\n]*$")


def final_word_examples(text, context_length, min_word_length=3, max_examples=None):
    """Context/target pairs: the bytes before each line's final word, and that word.

    Args:
        text: cleaned text (e.g. `keras_matta.data.shakespeare.load_text("test")`).
        context_length: number of bytes of context, `C`; lines whose final word starts fewer
            than `C` bytes into `text` are skipped.
        min_word_length: smallest target length in letters. Defaults to 3.
        max_examples: keep at most this many examples, spread evenly over `text`.
            Defaults to all.

    Returns:
        `(contexts, targets)`: an `int32` array `(examples, C)` of byte values and a list of
        the target words as `bytes`.

    Example:

    ```python
    text = "MACBETH:\\nSo foul and fair a day I have not seen.\\n"
    contexts, targets = keras_matta.data.final_word_examples(text, context_length=20)
    bytes(contexts[0].astype("uint8")), targets[0]   # (b"ir a day I have not ", b"seen")

    text = keras_matta.data.shakespeare.load_text("test")   # Macbeth, The Tempest
    contexts, targets = keras_matta.data.final_word_examples(text, 64)
    bytes(contexts[0].astype("uint8")) + targets[0]   # text up to the end of a line's word
    # b"ch:\\nWhen shall we three meet again\\nIn thunder, lightning, or in rain"
    ```
    """
    if not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"`context_length` must be a positive int; got {context_length!r}.")
    data = text.encode("utf-8")
    contexts, targets = [], []
    offset = 0  # byte offset of the current line
    for line in text.split("\n"):
        encoded = line.encode("utf-8")
        match = _FINAL_WORD.search(line)
        # A speaker line opens a paragraph and ends with a colon ("MACBETH:").
        is_speaker = line.endswith(":") and (offset == 0 or data[offset - 2 : offset] == b"\n\n")
        if match and not is_speaker and len(match.group(1)) >= min_word_length:
            start = offset + len(line[: match.start(1)].encode("utf-8"))
            if start >= context_length:
                contexts.append(np.frombuffer(data[start - context_length : start], np.uint8))
                targets.append(match.group(1).encode("ascii"))
        offset += len(encoded) + 1
    if not contexts:
        raise ValueError(
            f"No line of the {len(data)}-byte text has a final word of {min_word_length}+ "
            f"letters after {context_length} bytes of context."
        )
    if max_examples is not None and max_examples < len(contexts):
        keep = np.linspace(0, len(contexts) - 1, max_examples).round().astype(int)
        contexts, targets = [contexts[i] for i in keep], [targets[i] for i in keep]
    return np.stack(contexts).astype("int32"), targets
