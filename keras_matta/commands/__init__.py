"""What `keras-matta train`, `extract`, `evaluate` and `search` do (the CLI only parses arguments).

The application layer: each command composes the library (`MatTA`, `extract`, `cost`,
`search`) with the demo study's presets, models and metrics (`keras_matta.study`); nothing in
the library imports it.

- `train`: a MatTA run (TA + nested Students, optionally a Teacher) on an embedded task or a
  user data file; saves the TA as `.keras` and returns every head's test metrics.
- `extract`: one width (or Mix'n'Match spec) of a saved TA as a standalone stock-Keras model.
- `evaluate`: a saved model's metrics on a task's split, with its parameters and FLOPs.
- `search`: the Pareto front of a saved TA's width specs on a task's validation split, under a
  budget; prints a table, writes JSON and a PNG.

`keras-matta demo` runs `keras_matta.study.demo.run_demo`.
"""

from keras_matta.commands.common import config_for
from keras_matta.commands.common import load_model
from keras_matta.commands.evaluate import evaluate
from keras_matta.commands.extract import extract
from keras_matta.commands.search import search
from keras_matta.commands.train import train
