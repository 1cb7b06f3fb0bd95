"""The search space: which widths each nested Mat layer may take.

A candidate is a tuple of choice indices, one per searched layer; `spec(candidate)` turns it
into a width spec of plain ints that `keras_matta.extract`, `WidthScope` and `cost` accept and
that JSON round-trips unchanged. With elastic depth a residual block's choices may include
`{"depth": 0}` (the block dropped): it is the block's smallest choice, and the candidates that
would drop every block of the model are not part of the space.
"""

import itertools
import math

from keras_matta import widths as widths_lib
from keras_matta.layer_width import DEPTH
from keras_matta.layer_width import is_dropped

DEFAULT_CHOICES = (0.25, 0.5, 0.75, 1.0)
DROPPED = {DEPTH: 0}  # the one choice of a dropped block, whatever its widths would have been


class SearchSpace:
    """Per-layer width choices of a Mat model, smallest first.

    Args:
        model: the TA (a model containing Mat layers).
        choices: the per-layer specs each nested layer may take. A list (`[0.25, 0.5, 1.0]`,
            typically the trained Student widths plus the TA's) applies to every nested layer,
            and its entries are the *uniform* models (every layer at the same entry); a dict
            `{layer_name: [spec, ...]}` gives each layer its own list (layers not named stay
            at full width). An entry is anything one layer's spec accepts: a fraction, an int
            (primary dimension), or `{dimension: width}`; in a dict, a residual block's list
            may also hold `{"depth": 0}` (drop the block). Entries that resolve to the same
            widths are kept once, and every dropped entry is the one choice `{"depth": 0}`.
        drop_blocks: whether every droppable layer (a residual block: `MatTransformerBlock`,
            the keras-hub Mat decoder blocks; `layer.droppable`) also gets the choice
            `{"depth": 0}`, its smallest, so that a search explores depth as well as width.
            With a dict of `choices`, a droppable layer it does not name gets the choices
            dropped and full width. The uniform models stay the undropped ones, and a
            candidate that would drop every block of the model is not in the space.

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

    # Elastic depth: each transformer block may also be dropped (never both).
    inputs = keras.Input((5, 16))
    x = keras_matta.MatTransformerBlock(32, 2, name="block_0")(inputs)
    x = keras_matta.MatTransformerBlock(32, 2, name="block_1")(x)
    lm = keras.Model(inputs, x)
    space = SearchSpace(lm, [0.5, 1.0], drop_blocks=True)
    assert space.sizes == [3, 3] and space.size == 8   # 3 x 3 less "both dropped"
    assert space.spec((0, 2)) == {"block_0": {"depth": 0},
                                  "block_1": {"intermediate_dim": 32}}
    assert space.uniform() == {0.5: (1, 1), 1.0: (2, 2)}
    ```
    """

    def __init__(self, model, choices=DEFAULT_CHOICES, drop_blocks=False):
        if not isinstance(drop_blocks, bool):
            raise TypeError(f"`drop_blocks` must be True or False; got {drop_blocks!r}.")
        layers = [layer for layer in widths_lib.mat_layers(model) if layer.nested_dims()]
        if not layers:
            raise ValueError(f"Model '{model.name}' has no nested Mat layer to search over.")
        droppable = [layer for layer in layers if layer.droppable]
        if drop_blocks and not droppable:
            raise ValueError(
                f"`drop_blocks=True`, but model '{model.name}' has no droppable block (a "
                "residual block such as MatTransformerBlock or a keras-hub Mat decoder block); "
                "search its widths with `drop_blocks=False`."
            )
        if isinstance(choices, dict):
            by_name = {layer.name: layer for layer in layers}
            unknown = sorted(set(choices) - set(by_name))
            if unknown:
                raise ValueError(
                    f"Unknown layer name(s) {unknown} in `choices`; the nested Mat layers of "
                    f"'{model.name}' are {sorted(by_name)}."
                )
            # Model order; a droppable layer the dict leaves out may still be dropped.
            per_layer = {layer: _as_list(choices[layer.name], f"choices['{layer.name}']")
                         if layer.name in choices else [None]
                         for layer in layers
                         if layer.name in choices or (drop_blocks and layer.droppable)}
            self._uniform_labels = None
        else:
            self._uniform_labels = _as_list(choices, "choices")
            if any(isinstance(spec, dict) and spec.get(DEPTH) == 0
                   for spec in self._uniform_labels):
                raise ValueError(
                    f"`choices` {choices!r} is shared by every layer, and a uniform model "
                    "cannot drop every block: pass `drop_blocks=True` to let each block be "
                    "dropped, or a dict `{layer_name: [spec, ...]}`."
                )
            per_layer = {layer: self._uniform_labels for layer in layers}
        self.layers = list(per_layer)
        self.layer_names = [layer.name for layer in self.layers]
        self.choices = [
            _resolve_choices(layer, [*specs, DROPPED] if drop_blocks and layer.droppable
                             else specs)
            for layer, specs in per_layer.items()]
        self.drop_blocks = drop_blocks
        # Dropping every block of the model is not a model (`WidthScope` refuses it): the
        # candidates that do are left out of the space. Only possible when the space searches
        # every droppable layer and each may be dropped; a dropped choice is always index 0.
        searched = {layer.name for layer in self.layers}
        self._all_blocks = [i for i, layer in enumerate(self.layers) if layer.droppable] if (
            droppable and all(layer.name in searched for layer in droppable)
            and all(is_dropped(self.choices[i][0]) for i, layer in enumerate(self.layers)
                    if layer.droppable)) else []
        if self.size == 0:
            raise ValueError(
                f"Every candidate of `choices` drops every block of '{model.name}' "
                f"({[layer.name for layer in droppable]}): give a block a width to keep."
            )

    @property
    def size(self):
        """The number of candidates: the product of every layer's number of choices, less
        those that drop every block."""
        dropping_all = math.prod(len(c) for i, c in enumerate(self.choices)
                                 if i not in self._all_blocks) if self._all_blocks else 0
        return math.prod(len(c) for c in self.choices) - dropping_all

    @property
    def sizes(self):
        """The number of choices of each searched layer."""
        return [len(c) for c in self.choices]

    def is_valid(self, candidate):
        """Whether a tuple of choice indices is a candidate (it keeps at least one block)."""
        return not self._all_blocks or any(candidate[i] != 0 for i in self._all_blocks)

    def smallest(self):
        """The candidates that no other is smaller than in every layer (the cheapest is one).

        Every layer at its smallest choice; where that would drop every block, one candidate
        per block that keeps that block alone, at its smallest width.
        """
        zeros = tuple(0 for _ in self.choices)
        if self.is_valid(zeros):
            return [zeros]
        return [zeros[:i] + (1,) + zeros[i + 1:] for i in self._all_blocks
                if len(self.choices[i]) > 1]

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
        return filter(self.is_valid, itertools.product(*(range(len(c)) for c in self.choices)))

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
    """Distinct `{dimension: width}` of `specs`, smallest first (by every dimension in order).

    A dropped block is the choice `{"depth": 0}` whatever widths came with it, and the smallest.
    """
    resolved = []
    for spec in specs:
        width = layer.resolve_width(spec)  # validates: names the layer, the value, the range
        width = dict(DROPPED) if is_dropped(width) else width
        if width not in resolved:
            resolved.append(width)
    return sorted(resolved, key=lambda width: (not is_dropped(width), tuple(width.values())))
