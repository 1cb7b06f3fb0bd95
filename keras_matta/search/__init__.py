"""Choosing the model to serve: the Pareto front of quality against cost over width specs.

`keras_matta.search(model, data, budget=..., objective=...)` is the entry point; the pieces
(the space of per-layer choices, the front, the strategies, the resumable cache) are public for
code that composes its own search.
"""

from keras_matta.search.cache import EvaluationCache
from keras_matta.search.costs import COSTS
from keras_matta.search.pareto import pareto_front
from keras_matta.search.pareto_search import Point
from keras_matta.search.pareto_search import SearchResult
from keras_matta.search.pareto_search import search
from keras_matta.search.space import SearchSpace
