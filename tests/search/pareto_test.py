"""`pareto_front` against the definition: no other point is at least as good on both axes."""

import numpy as np
import pytest

from keras_matta.search import pareto_front

pytestmark = pytest.mark.backend_agnostic


def brute_force_front(costs, qualities):
    """Every point no other point dominates (O(n^2)), first of exact duplicates kept."""
    front = []
    for i, (c, q) in enumerate(zip(costs, qualities)):
        dominated = any(
            (cj <= c and qj >= q and (cj < c or qj > q)) or (cj == c and qj == q and j < i)
            for j, (cj, qj) in enumerate(zip(costs, qualities)) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: costs[i])


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force_on_random_points_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    # Few distinct values, so equal costs, equal qualities and duplicates all occur.
    costs = rng.integers(0, 8, n).tolist()
    qualities = rng.integers(0, 8, n).tolist()
    assert pareto_front(costs, qualities) == brute_force_front(costs, qualities)


def test_front_is_increasing_in_cost_and_quality():
    rng = np.random.default_rng(0)
    costs, qualities = rng.random(200).tolist(), rng.random(200).tolist()
    front = pareto_front(costs, qualities)
    assert all(costs[a] < costs[b] and qualities[a] < qualities[b]
               for a, b in zip(front, front[1:]))


def test_empty_and_length_mismatch():
    assert pareto_front([], []) == []
    with pytest.raises(ValueError, match="differ in length"):
        pareto_front([1, 2], [1])
