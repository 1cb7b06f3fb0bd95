"""keras_matta: Matryoshka Teacher -> TA -> Student training for Keras 3.

One training run gives a family of nested, servable models: a Teaching Assistant (TA) with the
Student nested inside it as a prefix of its kernels, trained together with a composite
distillation loss; `extract` turns any width into a standalone model of stock Keras layers.
"""

# First, before the imports below load Keras (and with it TensorFlow): when the package runs as
# a command, this quiets TensorFlow's native start-up logs (see keras_matta/_startup.py).
from keras_matta import _startup  # noqa: F401
from keras_matta import callbacks
from keras_matta import data
from keras_matta import distribution
from keras_matta import losses
from keras_matta import optimizers
from keras_matta.cost import cost
from keras_matta.extract import extract
from keras_matta.importance import block_importance
from keras_matta.ladder import ladder
from keras_matta.layers import MatDense
from keras_matta.layers import MatLayer
from keras_matta.layers import MatMultiHeadAttention
from keras_matta.layers import MatTransformerBlock
from keras_matta.memory import peak_memory
from keras_matta.reorder import reorder
from keras_matta.search import search  # the function; its pieces: `from keras_matta.search import`
from keras_matta.training import MatTA
from keras_matta.widths import WidthScope
from keras_matta.widths import resolve_widths
from keras_matta.widths import width_label

__version__ = "0.1.0"


def __getattr__(name):
    # `keras_matta.hub` imports keras-hub, which imports TensorFlow: only on first use.
    if name in ("hub", "from_keras_hub"):
        import importlib

        hub = importlib.import_module("keras_matta.hub")
        return hub if name == "hub" else hub.from_keras_hub
    raise AttributeError(f"module 'keras_matta' has no attribute {name!r}")
