"""Width specs: which nested width every Mat layer of a model runs at.

One spec type is accepted everywhere (layers, `WidthScope`, `MatTA`, `extract`, `cost`):

- a float `f` in (0, 1]: every nested dimension of every Mat layer at `f * full` rounded half up
  (attention heads only where the layer nests them);
- an int `n`: every Mat layer's primary nested dimension (`units`, `intermediate_dim`) at `n`;
- a dict `{layer_name: spec}` ("Mix'n'Match"): per-layer choices, layers not named run at full
  width; a layer's spec is a float, an int, or a dict of its nested dimensions
  (`{"intermediate_dim": 512, "num_heads": 4}`);
- `None`: full width.

Resolution turns a spec into `{layer: {dimension: width}}` for a concrete model and validates
everything before any computation runs. Widths are plain Python ints, so compiled functions see
static shapes.
"""

import keras

from keras_matta._validation import is_fraction
from keras_matta._validation import is_int
from keras_matta.layer_width import is_dropped
from keras_matta.layers.mat_layer import MatLayer


def mat_layers(model):
    """Returns the outermost Mat layers of `model`, in creation order.

    Mat layers nested inside another Mat layer (the FFN of a transformer block) are driven by
    their parent and are not listed.
    """
    if isinstance(model, MatLayer):
        return [model]
    found = []
    inner = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, MatLayer) and id(layer) not in inner:
            found.append(layer)
            inner.update(
                id(sub) for sub in layer._flatten_layers(include_self=False, recursive=True)
            )
    return found


def resolve_widths(model, widths):
    """Resolves a width spec against every outermost Mat layer of `model`.

    Args:
        model: a model (or a single Mat layer) containing Mat layers.
        widths: a width spec (see the module docstring).

    Returns:
        A dict `{layer: {dimension: width}}` with an entry for every Mat layer.

    Raises:
        ValueError: `model` has no Mat layer, a layer name is unknown or a width is out of range.
        TypeError: the spec is of the wrong type.

    Example:

    ```python
    model = keras.Sequential([keras.Input((16,)),
                              keras_matta.MatDense(64, activation="relu", name="hidden"),
                              keras_matta.MatDense(10, nested=False, name="logits")])
    resolved = keras_matta.resolve_widths(model, 0.25)
    {layer.name: width for layer, width in resolved.items()}
    # {"hidden": {"units": 16}, "logits": {}}: a `nested=False` head has no nested dimension
    resolved = keras_matta.resolve_widths(model, {"hidden": 48})   # Mix'n'Match, by name
    assert resolved[model.get_layer("hidden")] == {"units": 48}
    ```
    """
    layers = mat_layers(model)
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no Mat layer (MatDense, MatTransformerBlock, ...): "
            "there is no nested width to select."
        )
    if isinstance(widths, dict):
        by_name = {layer.name: layer for layer in layers}
        unknown = [name for name in widths if name not in by_name]
        if unknown:
            raise ValueError(
                f"Unknown Mat layer name(s) {unknown} in widths; the Mat layers of "
                f"'{model.name}' are {sorted(by_name)}."
            )
        fixed = [name for name in widths if not by_name[name].nested_dims()]
        if fixed:
            raise ValueError(
                f"Mat layer(s) {fixed} have no nested dimension (`nested=False`); remove them "
                "from widths."
            )
        resolved = {layer: layer.resolve_width(widths.get(layer.name)) for layer in layers}
        droppable = [layer for layer in layers if layer.droppable]
        if droppable and all(is_dropped(resolved[layer]) for layer in droppable):
            raise ValueError(
                f"`widths` drops every block of '{model.name}' ({[b.name for b in droppable]}); "
                "keep at least one."
            )
        return resolved
    if widths is not None and not (is_fraction(widths) or is_int(widths)):
        raise TypeError(
            "`widths` must be a float in (0, 1], an int, a dict {layer_name: spec} or None; "
            f"got {widths!r} of type {type(widths).__name__}."
        )
    return {
        layer: layer.resolve_width(widths) if layer.nested_dims() else {} for layer in layers
    }


def is_full_width(resolved):
    """True when every layer of a resolved spec runs at its full width."""
    return all(width == layer.nested_dims() for layer, width in resolved.items())


def width_label(spec):
    """A short, readable name for a width spec, used in metric and model names.

    MatTA logs a Student as `student_<label>_...` (e.g. `student_0.25_accuracy`), and
    `keras_matta.extract` names the model it returns `<model>_<label>`, non-word characters
    replaced by `_` (`ta_0_25`).

    Args:
        spec: a width spec: a float, an int, a `{layer_name: spec}` dict or `None`.

    Returns:
        A string: the fraction or int as written, `"full"` for `None`, `"mix(...)"` for a dict
        (a dropped block reads `dropped`).

    Example:

    ```python
    assert keras_matta.width_label(0.25) == "0.25"
    assert keras_matta.width_label(512) == "512"
    assert keras_matta.width_label(None) == "full"
    spec = {"block_0": 0.5, "block_1": {"intermediate_dim": 512, "num_heads": 4}}
    assert keras_matta.width_label(spec) == "mix(block_0=0.5,block_1=512x4)"
    assert keras_matta.width_label({"block_0": {"depth": 0}, "block_1": 0.5}) == (
        "mix(block_0=dropped,block_1=0.5)")
    ```
    """
    if spec is None:
        return "full"
    if is_fraction(spec):
        return f"{spec:g}"
    if is_int(spec):
        return str(int(spec))
    parts = []
    for name, value in spec.items():
        if isinstance(value, dict):
            value = "dropped" if is_dropped(value) else "x".join(str(v) for v in value.values())
        parts.append(f"{name}={value if not is_fraction(value) else f'{value:g}'}")
    return "mix(" + ",".join(parts) + ")"


class WidthScope:
    """Runs the Mat layers of a model at the widths of a spec, inside a `with` block.

    The selection is held by the layers themselves for the duration of the block (no global
    state) and restored on exit, so scopes nest. Entering or leaving a scope discards the model's
    cached `predict`/`evaluate`/`train` functions, so a function compiled at one width is never
    reused at another.

    Args:
        model: the model whose Mat layers are selected.
        widths: a width spec (a float, an int, a `{layer_name: spec}` dict or `None`).

    Example:

    ```python
    model = keras.Sequential([keras.Input((16,)), keras_matta.MatDense(64, activation="relu"),
                              keras_matta.MatDense(10, nested=False)])
    x = np.random.rand(4, 16).astype("float32")
    with keras_matta.WidthScope(model, 0.25):
        small_logits = model(x)                       # the hidden layer runs at 16 units
        small_predictions = model.predict(x, verbose=0)   # predict/evaluate/fit too
    full_logits = model(x)                            # the full width again after the block
    ```
    """

    def __init__(self, model, widths):
        self.model = model
        self.widths = widths
        self.resolved = resolve_widths(model, widths)
        self._saved = None

    def __enter__(self):
        self._saved = select(self.resolved)
        _discard_compiled_functions(self.model)
        return self

    def __exit__(self, *exc_info):
        select(self._saved)
        _discard_compiled_functions(self.model)
        return False


def select(selection):
    """Selects `{layer: width}` on the layers; returns what they had selected, to restore.

    The mechanism under `WidthScope` (validated specs) and MatTA's drawn widths (tensors).
    """
    saved = {layer: layer.selected_width for layer in selection}
    for layer, width in selection.items():
        layer._select_width(width)
    return saved


def _discard_compiled_functions(model):
    if isinstance(model, keras.Model):
        model.train_function = None
        model.test_function = None
        model.predict_function = None
