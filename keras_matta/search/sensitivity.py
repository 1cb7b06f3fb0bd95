"""A cheap quality predictor from per-layer sensitivities, and which predictions to confirm.

Like the strategies, this module sees candidates as tuples of choice indices (each layer's
largest choice last) and calls back to evaluate one, so it holds no Keras code.
"""

import math


class AdditiveSensitivity:
    """Predicts a candidate's quality as the reference's plus each layer's own change.

    With `c* = (n_1 - 1, ..., n_L - 1)` (every layer at its largest choice), `c*[l <- j]` (layer
    `l` at choice `j`, every other at its largest) and `q` the objective measured on calibration
    data:

        delta_l(j) = q(c*[l <- j]) - q(c*)                        (the sensitivity of layer l)
        q_hat(c)   = q(c*) + sum_l delta_l(c_l)                   (additive: delta_l(n_l - 1) = 0)

    Measuring costs `1 + sum_l (n_l - 1)` evaluations, after which every prediction is a sum:
    a space of `prod_l n_l` candidates is ranked for the price of its one-layer narrowings.
    `q_hat` is exact (`q_hat(c) == q(c)`) for `c*` and every candidate that narrows one layer
    only; elsewhere it ignores how layers interact (narrowing two layers is assumed to hurt as
    much as narrowing each alone, summed), which is why a search confirms the best predictions
    by exact evaluation. For a loss, `delta_l(j) >= 0` is the loss increase of narrowing `l`;
    for accuracy it is a (negative) change as well, and the same sum applies.

    Args:
        sizes: the number of choices of each layer.
        evaluate: `candidate -> float`, the objective on the calibration data.
        is_valid: `candidate -> bool`; a one-layer narrowing it rejects (the only block of the
            model dropped) is not evaluated and never part of a valid candidate.

    Attributes:
        reference: `c*`.
        base: `q(c*)`.
        deltas: `deltas[l][j] = delta_l(j)` (`nan` where the narrowing is not valid).
        evaluations: how many times `evaluate` was called.

    Example:

    ```python
    from keras_matta.search.sensitivity import AdditiveSensitivity

    loss = lambda c: 10 - 2 * c[0] - c[1] + 0.5 * (c[0] == 0 and c[1] == 0)  # interacts at (0, 0)
    proxy = AdditiveSensitivity([3, 2], loss)
    assert proxy.reference == (2, 1) and proxy.evaluations == 1 + 2 + 1
    assert proxy.deltas == [[4.0, 2.0, 0.0], [1.0, 0.0]]
    assert proxy.predict((1, 1)) == loss((1, 1)) and proxy.predict((0, 0)) == 10.0  # loss: 10.5
    ```

    Reference:
        Cai et al., "ZeroQ: A Novel Zero Shot Quantization Framework", CVPR 2020 (per-layer
        sensitivities, each measured with only that layer changed, summed to rank mixed
        configurations for a Pareto front); Cai et al., "Once-for-All", ICLR 2020 (a cheap
        accuracy predictor ranks sub-networks, the chosen ones are evaluated); Muralidharan et
        al., "Compact Language Models via Pruning and Knowledge Distillation" (Minitron), 2024
        (per-layer importance on a small calibration set).
    """

    def __init__(self, sizes, evaluate, is_valid=None):
        self.reference = tuple(n - 1 for n in sizes)
        self.base = float(evaluate(self.reference))
        self.evaluations = 1
        self.deltas = []
        for layer, n in enumerate(sizes):
            row = []
            for choice in range(n - 1):
                probe = self.reference[:layer] + (choice,) + self.reference[layer + 1:]
                if is_valid is not None and not is_valid(probe):
                    row.append(math.nan)
                    continue
                row.append(float(evaluate(probe)) - self.base)
                self.evaluations += 1
            self.deltas.append(row + [0.0])

    def predict(self, candidate):
        """`q_hat(candidate)`: the reference's quality plus every layer's change."""
        return self.base + sum(self.deltas[layer][choice]
                               for layer, choice in enumerate(candidate))


def best_per_cost_bucket(candidates, cost, score, buckets, top):
    """The `top` best-scored candidates of each of `buckets` cost ranges of equal count.

    The candidates, sorted by cost, are cut into `min(buckets, len(candidates))` consecutive
    groups whose sizes differ by at most one; from each, the `top` with the highest `score`.
    Every part of the cost range gets its share of confirmations, so a predictor that is
    biased at small (or large) widths cannot spend them all at one end of the front.

    Args:
        candidates: the candidates (index tuples).
        cost: `candidate -> float`, lower is cheaper.
        score: `candidate -> float`, higher is better (a predicted quality).
        buckets: the number of cost ranges.
        top: how many to keep per range.

    Returns:
        At most `buckets * top` candidates, cheapest range first.

    Example:

    ```python
    from keras_matta.search.sensitivity import best_per_cost_bucket

    candidates = [(i,) for i in range(6)]                       # cost i, score -(i - 2) ** 2
    chosen = best_per_cost_bucket(candidates, lambda c: c[0], lambda c: -(c[0] - 2) ** 2,
                                  buckets=2, top=1)
    assert chosen == [(2,), (3,)]                                # groups (0, 1, 2), (3, 4, 5)
    ```
    """
    ordered = sorted(candidates, key=cost)
    groups = min(buckets, len(ordered))
    chosen = []
    for g in range(groups):
        group = ordered[g * len(ordered) // groups:(g + 1) * len(ordered) // groups]
        chosen += sorted(group, key=score, reverse=True)[:top]
    return chosen
