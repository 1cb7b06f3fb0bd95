"""MatBackbone: the base of the Mat (nested-width) versions of keras-hub backbones."""

import keras

from keras_matta import widths as widths_lib
from keras_matta.extract import rebuild_stock
from keras_matta.hub import weights as weights_lib
from keras_matta.layer_width import is_dropped


class MatBackbone(keras.Model):
    """A Functional keras-hub-style backbone whose decoder blocks are Mat layers.

    Subclasses (`MatGPT2Backbone`, `MatLlamaBackbone`) build the same graph as their keras-hub
    source class (`token_ids`, `padding_mask` in; final hidden states out), with every decoder
    block replaced by a Mat block of TA width. The config remembers the source class, so any
    width extracts back into it:

        extract_stock(w) = SourceClass(**config at w) holding W[..., :w] of every block

    when every block runs at the same width and the attention head size stays
    `hidden_dim / num_heads` (keras-hub derives it that way). A Mix'n'Match spec with per-block
    widths extracts into a Functional `keras.Model` of keras-hub/Keras layers instead, with the
    same inputs and outputs, the real per-block sizes and equal outputs.

    `source_widths()` is the spec of the pretrained backbone the model was grown from;
    `width_spec(intermediate_dim, num_heads)` builds the per-block spec of any uniform width.
    `extract_stock(widths)` is the hook `keras_matta.extract` dispatches to.

    Subclasses create `token_embedding`, `transformer_layers` and `layer_norm`, build the
    graph with `_decoder_graph`, set `source_classes` and the Student's sizes
    (`student_intermediate_dim`, `student_num_heads`) and implement `_stock_config(width)`,
    `_embedding_links(stock)`, `_block_links(block, stock_block)` and
    `_stock_width_error(block, width)`.

    Args:
        *args, **kwargs: the Functional `keras.Model` arguments (inputs, outputs, name, ...)
            a subclass builds.
        source_class: the name of the keras-hub class the model extracts into, one of the
            subclass' `source_classes`.
        dtype: dtype policy of the model. Defaults to Keras' global policy.

    Example:

    ```python
    import keras_hub

    # Real use: a pretrained backbone, e.g. GPT2Backbone.from_preset("gpt2_base_en").
    gpt2 = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32,
                                         max_sequence_length=16)
    ta = keras_matta.hub.from_keras_hub(gpt2, ta_intermediate_dim=64)
    assert isinstance(ta, keras_matta.hub.MatBackbone)   # a MatGPT2Backbone
    ta.source_widths()   # {"transformer_layer_0": {"intermediate_dim": 32}, ...}: gpt2's
    spec = ta.width_spec(intermediate_dim=48)            # every block at 48 FFN units
    student = ta.extract_stock(spec)                     # a GPT2Backbone, intermediate_dim=48
    ```

    Reference:
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025 (arXiv 2505.23337).
    """

    #: names of the keras-hub classes a subclass can stand for, the first is the default.
    source_classes = ()

    def __init__(self, *args, source_class, dtype=None, **kwargs):
        if source_class not in self.source_classes:
            raise ValueError(
                f"`source_class` of {type(self).__name__} must be one of "
                f"{list(self.source_classes)}; got {source_class!r}."
            )
        super().__init__(*args, **kwargs)
        self.source_class = source_class
        self._initialized = True
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)

    def _decoder_graph(self, embed):
        """The keras-hub decoder graph: `(inputs, outputs)` for the Functional `__init__`.

        `embed` maps the `token_ids` input to the `(B, T, d)` input of the first block (the
        part that differs between architectures); every block of `transformer_layers` then
        runs with the padding mask, and `layer_norm` gives the final hidden states.
        """
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = embed(token_ids)  # (B, T, d)
        for block in self.transformer_layers:
            x = block(x, padding_mask=padding_mask)  # (B, T, d)
        outputs = self.layer_norm(x)  # (B, T, d)
        return {"token_ids": token_ids, "padding_mask": padding_mask}, outputs

    def __setattr__(self, name, value):
        # As keras-hub's Backbone: torch's Module.__setattr__ cannot run before Model.__init__,
        # and the layers are created before the Functional graph.
        if keras.config.backend() == "torch" and not hasattr(self, "_initialized"):
            return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)

    # === Widths ===

    def width_spec(self, intermediate_dim=None, num_heads=None, drop=()):
        """The spec running every block at `intermediate_dim` and `num_heads` (None: full).

        `drop` names blocks (or gives their indices) to remove: elastic depth, such as Gemma
        3n's skip lists or the lowest `keras_matta.block_importance`.
        """
        names = [block.name for block in self.transformer_layers]
        dropped = set()
        for item in drop:
            if isinstance(item, int) and 0 <= item < len(names):
                item = names[item]
            if item not in names:
                raise ValueError(
                    f"`drop` must hold block names or indices of {names}; got {item!r}."
                )
            dropped.add(item)
        spec = {}
        for block in self.transformer_layers:
            dims = {"depth": 0} if block.name in dropped else {}
            if intermediate_dim is not None:
                dims["intermediate_dim"] = intermediate_dim
            head_dim = self._heads_dimension()
            if num_heads is not None and head_dim in block.nested_dims():
                dims[head_dim] = num_heads
            spec[block.name] = dims
        return spec

    def source_widths(self):
        """The width spec of the pretrained backbone this model was grown from."""
        return self.width_spec(self.student_intermediate_dim, self.student_num_heads)

    def _heads_dimension(self):
        return "num_heads"

    # === Extraction ===

    def extract_stock(self, widths=None, name=None):
        """This backbone at `widths` as a standalone model (see the class docstring).

        Args:
            widths: a width spec (float, int, `{layer_name: spec}` dict, `None` = full TA).
            name: name of the returned model (default: the source class' default name for a
                uniform width, `"<name>_mix"` for a Mix'n'Match spec).

        Returns:
            An instance of the keras-hub source class (uniform widths, dropped blocks removed
            and the rest renumbered) or a Functional `keras.Model` (per-block widths), sharing
            no variable with this model.
        """
        resolved = widths_lib.resolve_widths(self, widths)
        kept = [block for block in self.transformer_layers if not is_dropped(resolved[block])]
        per_block = [resolved[block] for block in kept]
        uniform = all(width == per_block[0] for width in per_block)
        if (uniform and self._stock_width_error(kept[0], per_block[0]) is None
                and self._stock_depth_error(kept) is None):
            return self._to_source_class(per_block[0], kept, name)
        return rebuild_stock(self, resolved, name or f"{self.name}_mix")

    def _to_source_class(self, width, kept, name):
        kwargs = {} if name is None else {"name": name}
        config = {**self._stock_config(width), "num_layers": len(kept)}
        stock = self.source_class_object()(**config, **kwargs)
        links = self.source_links(stock, blocks=kept)
        weights_lib.slice_into_stock(links, kept[0].complete_width(width))
        return stock

    def source_links(self, backbone, blocks=None):
        """Every `Link` between this model and a source backbone of the Student's width.

        `blocks` are the Mat blocks the backbone's blocks stand for, in order (default: all;
        fewer when elastic depth dropped some).
        """
        links = self._embedding_links(backbone)
        blocks = self.transformer_layers if blocks is None else blocks
        for block, stock_block in zip(blocks, backbone.transformer_layers):
            links += self._block_links(block, stock_block)
        return links

    def source_class_object(self):
        import keras_hub

        return getattr(keras_hub.models, self.source_class)

    # === Implemented by subclasses ===

    def _stock_config(self, width):
        raise NotImplementedError

    def _embedding_links(self, stock):
        raise NotImplementedError

    def _block_links(self, block, stock_block):
        raise NotImplementedError

    def _stock_width_error(self, block, width):
        """`None` if `width` is expressible in the source class, else the reason."""
        raise NotImplementedError

    def _stock_depth_error(self, kept):
        """`None` if the source class can hold the `kept` blocks renumbered, else the reason.

        Only a class whose blocks differ by index (Gemma 2's alternating sliding windows)
        overrides it; elsewhere any subset of blocks renumbers into a stock backbone.
        """
        return None

    @classmethod
    def source_intermediate_dim(cls, backbone):
        """The FFN units of a source `backbone` (its `intermediate_dim`, except for Gemma)."""
        return backbone.intermediate_dim

    # === Serialization ===

    def get_config(self):
        # Not Functional.get_config: the model is rebuilt from its own arguments, as keras-hub
        # backbones are.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "source_class": self.source_class,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

