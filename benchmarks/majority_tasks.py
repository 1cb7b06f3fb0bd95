"""The two tasks of the majority-kernel study: data, a model built from Mat layers, a metric.

- `digits`: an MLP `784 -> H -> H -> 10` of `MatDense` layers (ReLU) on the 5,000 embedded
  MNIST digits (4,000 / 500 / 500); the metric is test accuracy.
- `shakespeare`: a causal byte-level transformer (token and position embeddings,
  `MatTransformerBlock`s, a final layer norm and a 256-way `MatDense` head) on the embedded
  plays, whole plays held out; the metric is test bits per byte, `CE / ln 2`.

Each task also has a `*_small_long` regime: a smaller served model trained three times longer,
where the small model underfits most and a training-time gain should be largest.

Every kernel a variant places copies on is a majority kernel of `Variant.majority` copies; the
models are at full width (no nesting here).
"""

import dataclasses
import math
import typing

import keras
import numpy as np
from keras import ops

import keras_matta
from keras_matta.data import byte_windows
from keras_matta.data import load_task


class Variant(typing.NamedTuple):
    """One point of the design space: `plain` is `Variant(1, "mean", "independent", "all")`."""

    majority: int
    combine: str
    init: str = "independent"
    placement: str = "all"  # LM: "all" (blocks and head), "blocks" or "ffn"; MLP: "all"

    def layer_kwargs(self, seed):
        return {"majority": self.majority, "majority_combine": self.combine,
                "majority_init": self.init, "majority_seed": seed}


PLAIN_VARIANT = Variant(1, "mean")

# === Tasks ===


@dataclasses.dataclass
class Digits:
    """The MLP on the embedded MNIST digits."""

    hidden: int = 64
    epochs: int = 15
    train_examples: int = 4000
    timing_steps: int = 100  # ~1 ms steps: many, or noise dominates
    batch: int = 64
    name: str = "digits"
    metric: typing.ClassVar[str] = "accuracy"
    higher_is_better: typing.ClassVar[bool] = True
    placements: typing.ClassVar[tuple] = ("all",)

    def load(self):
        task = load_task("digits")
        self.train = tuple(a[: self.train_examples] for a in task.train)
        self.validation, self.test = task.validation, task.test
        return self

    def build(self, variant, seed):
        inputs = keras.Input((784,))
        x = inputs
        for i in range(2):
            x = keras_matta.MatDense(self.hidden, activation="relu", name=f"hidden_{i + 1}",
                                     **variant.layer_kwargs(seed * 100 + i))(x)  # (B, H)
        logits = keras_matta.MatDense(10, nested=False, name="logits",
                                      **variant.layer_kwargs(seed * 100 + 9))(x)  # (B, 10)
        return keras.Model(inputs, logits, name="digits_mlp")

    def score(self, model, split):
        x, y = split
        logits = model.predict(x, batch_size=500, verbose=0)  # (n, 10)
        return float(np.mean(np.argmax(logits, axis=-1) == y))


@dataclasses.dataclass
class Shakespeare:
    """The byte-level transformer language model on the embedded plays."""

    dim: int = 64
    layers: int = 1
    epochs: int = 3
    sequence: int = 64
    train_windows: int = 4096
    eval_windows: int = 512
    timing_steps: int = 20
    batch: int = 32
    name: str = "shakespeare"
    metric: typing.ClassVar[str] = "bits_per_byte"
    higher_is_better: typing.ClassVar[bool] = False
    placements: typing.ClassVar[tuple] = ("all", "blocks", "ffn")

    def load(self):
        task, length = load_task("shakespeare"), self.sequence
        self.train = byte_windows(task.train, length, max_windows=self.train_windows)
        self.validation = byte_windows(task.validation, length, max_windows=self.eval_windows)
        self.test = byte_windows(task.test, length, max_windows=self.eval_windows)
        return self

    def build(self, variant, seed):
        # `placement`: the blocks' FFNs only, the whole blocks, or the blocks and the head.
        block_placement = "ffn" if variant.placement == "ffn" else "all"
        head = variant if variant.placement == "all" else PLAIN_VARIANT
        tokens = keras.Input((self.sequence,), dtype="int32")
        x = keras.layers.Embedding(256, self.dim, name="token_embedding")(tokens)  # (B, T, d)
        positions = ops.cumsum(ops.ones_like(tokens), axis=1) - 1  # (B, T): 0, ..., T - 1
        x = ops.add(x, keras.layers.Embedding(self.sequence, self.dim,
                                              name="position_embedding")(positions))
        for i in range(self.layers):
            x = keras_matta.MatTransformerBlock(
                2 * self.dim, num_heads=4, causal=True, activation="gelu", name=f"block_{i}",
                majority_placement=block_placement, **variant.layer_kwargs(seed * 100 + 10 * i),
            )(x)  # (B, T, d)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
        logits = keras_matta.MatDense(256, nested=False, name="logits",
                                      **head.layer_kwargs(seed * 100 + 99))(x)  # (B, T, 256)
        return keras.Model(tokens, logits, name="byte_lm")

    def score(self, model, split):
        x, y = split
        logits = model.predict(x, batch_size=64, verbose=0)  # (n, T, 256)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        nats = -np.take_along_axis(log_probs, y[..., None], axis=-1).mean()
        return float(nats / math.log(2.0))


# The regimes: the study's default sizes, a smaller served model trained 3x longer, and the LM
# trained for the main job's 1,000-odd steps (8 epochs of 128 batches).
TASKS = {
    "digits": lambda: Digits(),
    "digits_small_long": lambda: Digits(hidden=16, epochs=45, name="digits_small_long"),
    "shakespeare": lambda: Shakespeare(),
    "shakespeare_long": lambda: Shakespeare(epochs=8, name="shakespeare_long"),
    "shakespeare_small_long": lambda: Shakespeare(dim=32, epochs=9,
                                                  name="shakespeare_small_long"),
}
QUICK = {  # tiny settings for a smoke check
    "digits": {"hidden": 16, "epochs": 1, "train_examples": 512, "timing_steps": 10},
    "shakespeare": {"dim": 16, "sequence": 16, "train_windows": 128, "eval_windows": 32,
                    "epochs": 1, "timing_steps": 4},
}


def make_task(name, quick=False):
    """The task `name` (a key of `TASKS`), loaded; `quick` shrinks it to a smoke check."""
    task = TASKS[name]()
    if quick:
        task = dataclasses.replace(task, **QUICK[name.split("_")[0]])
    return task.load()
