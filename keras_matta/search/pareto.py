"""The Pareto front of quality against cost."""


def pareto_front(costs, qualities):
    """Indices of the points no other point beats on both cost and quality.

    A point is on the front when no other point costs no more and scores at least as well,
    with one of the two strictly. Lower cost and higher quality are better (negate a quality
    that is minimised). Of exact duplicates the first is kept.

    One sort and one sweep, O(n log n): sorted by cost (ties: best quality first), a point is on
    the front exactly when it beats the best quality of every cheaper point.

    Args:
        costs: a sequence of numbers, lower is better.
        qualities: a sequence of numbers of the same length, higher is better.

    Returns:
        A list of indices into the inputs, in increasing cost (and increasing quality).

    Example:

    ```python
    from keras_matta.search import pareto_front

    costs, accuracy = [1, 2, 3, 2], [0.5, 0.7, 0.6, 0.8]
    assert pareto_front(costs, accuracy) == [0, 3]   # 2 and 1 cost more for less
    ```

    Reference:
        Kung, Luccio and Preparata, "On finding the maxima of a set of vectors", JACM 1975.
    """
    if len(costs) != len(qualities):
        raise ValueError(f"`costs` and `qualities` differ in length: {len(costs)} and "
                         f"{len(qualities)}.")
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -qualities[i], i))
    front, best = [], None
    for i in order:
        if best is None or qualities[i] > best:
            front.append(i)
            best = qualities[i]
    return front
