"""Scaling MatTA out: layouts for `keras.distribution` (JAX), replicas (TF), gradients (torch).

What each backend offers Keras 3.15, and what keras_matta adds (the module that has it):

| backend | Keras' engine | keras_matta |
| --- | --- | --- |
| JAX | `keras.distribution.DataParallel` / `ModelParallel` (a `LayoutMap` of variable paths) | `matta_layout_map`, `add_nested_layouts` (Mat layers' weights: `layouts`), `add_shampoo_layouts` (Shampoo's state: `jax`) |
| TensorFlow | `tf.distribute` strategies (`MirroredStrategy`, ...) entered with `strategy.scope()` | nothing to call: MatTA logs per-term losses and regularization like Keras does (`tensorflow`) |
| PyTorch | none: `keras.distribution` is JAX-only, and `fit` never talks to other processes | `synchronize_gradients`: data-parallel `fit` over `torch.distributed` (`torch`) |

On every backend the result of a data-parallel step equals the single-device step on the
whole batch (up to float summation order): the loss is a mean over the batch, so the mean of
the replicas' gradients (each the gradient of its shard's mean) is the whole batch's gradient
when the shards are equally large.

Each backend's module imports its framework only inside the functions that need it: importing
keras_matta on one backend never imports another backend's framework.
"""  # noqa: E501 (a Markdown table: its rows cannot wrap)

from keras_matta.distribution.jax import add_shampoo_layouts
from keras_matta.distribution.jax import statistics_axis
from keras_matta.distribution.layouts import DEFAULT_ATTENTION
from keras_matta.distribution.layouts import DEFAULT_COLUMN_PARALLEL
from keras_matta.distribution.layouts import DEFAULT_ROW_PARALLEL
from keras_matta.distribution.layouts import add_nested_layouts
from keras_matta.distribution.layouts import matta_layout_map
from keras_matta.distribution.tensorflow import replicas_in_sync
from keras_matta.distribution.torch import GradientSynchronization
from keras_matta.distribution.torch import synchronize_gradients
