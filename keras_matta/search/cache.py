"""A file of finished evaluations, so a search can be interrupted and resumed.

One JSON object per line, appended and flushed to disk as soon as an evaluation finishes: a
search killed at any moment loses at most the evaluation that was running, and a torn last line
(killed mid-write) is ignored on reading. The first line records what the values depend on (the
model's weights, the objective, the measurement settings); resuming with a file written for
something else is an error instead of silently reusing stale numbers.
"""

import json
import os
import pathlib


class EvaluationCache:
    """Values of `(kind, widths)` pairs, in memory and, with a `path`, in a JSON-lines file.

    Args:
        path: the cache file (created if missing), or `None` to keep values in memory only.
        fingerprint: a JSON-serializable dict identifying what the values were measured on.

    Example:

    ```python
    from keras_matta.search.cache import EvaluationCache

    cache = EvaluationCache("search.jsonl", fingerprint={"objective": "accuracy"})
    cache.put("quality", {"hidden": {"units": 16}}, 0.91)
    resumed = EvaluationCache("search.jsonl", fingerprint={"objective": "accuracy"})
    assert resumed.get("quality", {"hidden": {"units": 16}}) == 0.91
    ```
    """

    def __init__(self, path=None, fingerprint=None):
        self.path = None if path is None else pathlib.Path(path)
        self.fingerprint = fingerprint or {}
        self._values = {}
        if self.path is None:
            return
        if self.path.exists() and self.path.stat().st_size:
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"fingerprint": self.fingerprint})

    def __len__(self):
        return len(self._values)

    def get(self, kind, widths):
        """The stored value, or `None`."""
        return self._values.get(_key(kind, widths))

    def put(self, kind, widths, value):
        """Stores `value` (a float) and, with a file, appends it to disk at once."""
        self._values[_key(kind, widths)] = value
        if self.path is not None:
            self._append({"kind": kind, "widths": widths, "value": value})

    def _append(self, record):
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record, sort_keys=True) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def _read(self):
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0])["fingerprint"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{self.path} is not a search cache file (no fingerprint on its "
                             "first line).") from None
        if header != json.loads(json.dumps(self.fingerprint)):
            changed = sorted(k for k in set(header) | set(self.fingerprint)
                             if header.get(k) != self.fingerprint.get(k))
            raise ValueError(
                f"{self.path} holds evaluations of another search (different {changed}); pass "
                "a new cache file, or delete this one to start over."
            )
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the torn last line of a killed write
            self._values[_key(record["kind"], record["widths"])] = record["value"]


def _key(kind, widths):
    return kind + ":" + json.dumps(widths, sort_keys=True)
