"""The search space: which widths each nested Mat layer may take.

A candidate is a tuple of choice indices, one per searched layer; `spec(candidate)` turns it
into a width spec of plain ints that `keras_matta.extract`, `WidthScope` and `cost` accept and
that JSON round-trips unchanged.
"""

import itertools
import math

from keras_matta import widths as widths_lib

DEFAULT_CHOICES = (0.25, 0.5, 0.75, 1.0)


class SearchSpace:
    """Per-layer width choices of a Mat model, smallest first.

    Args:
        model: the TA (a model containing Mat layers).
        choices: the per-layer specs each nested layer may take. A list (`[0.25, 0.5, 1.0]`,
            typically the trained Student widths plus the TA's) applies to every nested layer,
            and its entries are the *uniform* models (every layer at the same entry); a dict
            `{layer_name: [spec, ...]}` gives each layer its own list (layers not named stay
            at full width). An entry is anything one layer's spec accepts: a fraction, an int
            (primary dimension), or `{dimension: width}`. Entries that resolve to the same
            widths are kept once.

    Example:

    ```python
    ta = keras.Sequential([keras.Input((16,)),
                           keras_matta.MatDense(64, activation="relu", name="hidden_1"),
                           keras_matta.MatDense(32, activation="relu", name="hidden_2"),
                           keras_matta.MatDense(10, nested=False, name="logits")])
    from keras_matta.search import SearchSpace

    space = SearchSpace(ta, [0.25, 0.5, 1.0])
    assert space.size == 9 and space.layer_names == ["hidden_1", "hidden_2"]
    assert space.spec((0, 2)) == {"hidden_1": {"units": 16}, "hidden_2": {"units": 32}}
    assert space.uniform() == {0.25: (0, 0), 0.5: (1, 1), 1.0: (2, 2)}
    ```
    """

    def __init__(self, model, choices=DEFAULT_CHOICES):
        layers = [layer for layer in widths_lib.mat_layers(model) if layer.nested_dims()]
        if not layers:
            raise ValueError(f"Model '{model.name}' has no nested Mat layer to search over.")
        if isinstance(choices, dict):
            by_name = {layer.name: layer for layer in layers}
            unknown = sorted(set(choices) - set(by_name))
            if unknown:
                raise ValueError(
                    f"Unknown layer name(s) {unknown} in `choices`; the nested Mat layers of "
                    f"'{model.name}' are {sorted(by_name)}."
                )
            per_layer = {layer: choices[layer.name] for layer in layers if layer.name in choices}
            self._uniform_labels = None
        else:
            per_layer = {layer: choices for layer in layers}
            self._uniform_labels = _as_list(choices, "choices")
        self.layers = list(per_layer)
        self.layer_names = [layer.name for layer in self.layers]
        self.choices = [_resolve_choices(layer, _as_list(specs, f"choices['{layer.name}']"))
                        for layer, specs in per_layer.items()]

    @property
    def size(self):
        """The number of candidates (the product of every layer's number of choices)."""
        return math.prod(len(c) for c in self.choices)

    @property
    def sizes(self):
        """The number of choices of each searched layer."""
        return [len(c) for c in self.choices]

    def spec(self, candidate):
        """The width spec `{layer_name: {dimension: int}}` of a candidate (index tuple)."""
        return {name: dict(choices[i])
                for name, choices, i in zip(self.layer_names, self.choices, candidate)}

    def candidate(self, spec):
        """The index tuple of a spec produced by `spec()` (a point read back from JSON)."""
        try:
            return tuple(choices.index(spec[name])
                         for name, choices in zip(self.layer_names, self.choices))
        except (KeyError, ValueError):
            raise ValueError(f"Width spec {spec!r} is not a candidate of this space.") from None

    def enumerate(self):
        """Every candidate, in lexicographic order of the choice indices."""
        return itertools.product(*(range(len(c)) for c in self.choices))

    def uniform(self):
        """`{label: candidate}` of the uniform models (a shared choices list only, else `{}`).

        Entry `i` of a shared list is index `i` in every layer unless two entries resolved to
        the same width in some layer; the index is then looked up per layer.
        """
        if self._uniform_labels is None:
            return {}
        uniform = {}
        for label in self._uniform_labels:
            widths = [layer.resolve_width(label) for layer in self.layers]
            uniform[label] = tuple(c.index(w) for c, w in zip(self.choices, widths))
        return uniform


def _as_list(specs, where):
    if isinstance(specs, (str, bytes, dict)) or not hasattr(specs, "__iter__"):
        raise TypeError(f"`{where}` must be a list of width specs; got {specs!r}.")
    specs = list(specs)
    if not specs:
        raise ValueError(f"`{where}` is empty: give at least one width.")
    return specs


def _resolve_choices(layer, specs):
    """Distinct `{dimension: width}` of `specs`, smallest first (by every dimension in order)."""
    resolved = []
    for spec in specs:
        width = layer.resolve_width(spec)  # validates: names the layer, the value, the range
        if width not in resolved:
            resolved.append(width)
    return sorted(resolved, key=lambda width: tuple(width.values()))
