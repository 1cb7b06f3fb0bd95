"""Which Student widths a MatTA training step runs."""

import itertools
import random

STRATEGIES = ("all", "sandwich", "random")


class WidthSampler:
    """Picks the Student widths of each training step, reproducibly.

    A *configuration* is a sorted tuple of Student indices (positions in `student_widths`).

    - `"all"`: every Student on every step (one configuration).
    - `"sandwich"`: the largest and the smallest Student plus `num_random_widths` of the
      others, drawn uniformly without replacement (the "sandwich rule" of slimmable networks).
    - `"random"`: `num_random_widths` Students drawn uniformly without replacement.

    The draw for step `t` depends only on `(seed, t)`: a run resumed from a checkpoint draws
    what the uninterrupted run would have drawn, and there is no sampler state to save. Every
    configuration is a static set of widths, so a compiled train function can be cached per
    configuration; `configurations()` bounds how many there are.

    Args:
        strategy: one of `"all"`, `"sandwich"`, `"random"`.
        sizes: one number per Student ordering them by size (the largest and smallest Students
            of `"sandwich"` are the arg-max and arg-min).
        num_random_widths: how many Students are drawn at random: for `"sandwich"` the number
            besides the largest and the smallest (default: 1, or 0 with only two Students), for
            `"random"` the number drawn (default 1). Unused by `"all"`.
        seed: an int.

    Example:

    ```python
    sampler = keras_matta.training.WidthSampler("sandwich", sizes=[0.25, 0.5, 0.75, 0.9],
                                                seed=0)
    sampler.configurations()   # [(0, 1, 3), (0, 2, 3)]: smallest, largest and one other
    step_7 = sampler.sample(7)  # one of them, the same for step 7 on every run
    assert step_7 in sampler.configurations() and sampler.sample(7) == step_7
    ```
    """

    def __init__(self, strategy, sizes, num_random_widths=None, seed=0):
        if strategy not in STRATEGIES:
            raise ValueError(f"`strategy` must be one of {STRATEGIES}; got {strategy!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`seed` must be an int; got {seed!r}.")
        self.strategy = strategy
        self.sizes = list(sizes)
        self.seed = seed
        count = len(self.sizes)
        order = sorted(range(count), key=lambda i: (self.sizes[i], i))
        self._smallest, self._largest = order[0], order[-1]
        self._others = tuple(i for i in range(count) if i not in (self._smallest, self._largest))
        if strategy == "sandwich":
            available, default = len(self._others), min(1, len(self._others))
            low = 0
        else:
            available, default, low = count, 1, 1
        if num_random_widths is None:
            num_random_widths = default
        elif isinstance(num_random_widths, bool) or not isinstance(num_random_widths, int):
            raise TypeError(f"`num_random_widths` must be an int; got {num_random_widths!r}.")
        elif strategy != "all" and not low <= num_random_widths <= available:
            raise ValueError(
                f"`num_random_widths` must be in [{low}, {available}] for strategy "
                f"'{strategy}' with {count} Student widths; got {num_random_widths}."
            )
        self.num_random_widths = num_random_widths

    def configurations(self):
        """Every configuration `sample` can return."""
        everyone = tuple(range(len(self.sizes)))
        if self.strategy == "all":
            return [everyone]
        if self.strategy == "random":
            return list(itertools.combinations(everyone, self.num_random_widths))
        ends = {self._smallest, self._largest}
        return [
            tuple(sorted(ends.union(extra)))
            for extra in itertools.combinations(self._others, self.num_random_widths)
        ]

    def sample(self, step):
        """The configuration of training step `step` (an int)."""
        if self.strategy == "all":
            return tuple(range(len(self.sizes)))
        # A string seed is hashed with SHA-512: the same stream on every run and platform.
        rng = random.Random(f"{self.seed}/{int(step)}")
        if self.strategy == "random":
            return tuple(sorted(rng.sample(range(len(self.sizes)), self.num_random_widths)))
        extra = rng.sample(self._others, self.num_random_widths)
        return tuple(sorted({self._smallest, self._largest, *extra}))
