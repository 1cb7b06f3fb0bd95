"""Where an optimizer step's time goes on PyTorch's eager backend: a `torch.profiler` table.

The variables are those of `shampoo_step_time.py`'s byte LM (keras-hub, 2 blocks, width 128);
the gradients are fixed random tensors, so only the optimizer's `apply` is measured, first as
mean CPU milliseconds per step against Keras' Adam (whose torch update is fused with
`torch._foreach_*`), then op by op over `--steps` steps. The README's PyTorch reading of the
step-time goals quotes it.

Usage:
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/optimizer_profile.py \\
        [--optimizer shampoo] [--steps 10]
"""

import argparse
import sys
import time

import keras
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from shampoo_step_time import make_optimizer  # noqa: E402
from shampoo_step_time import transformer_lm  # noqa: E402


def cpu_milliseconds(optimizer, gradients, variables, steps):
    start = time.process_time()
    for _ in range(steps):
        optimizer.apply(gradients, variables)
    return 1e3 * (time.process_time() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", default="shampoo", choices=["shampoo", "shampoo_vectors",
                                                                   "soap"])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if keras.backend.backend() != "torch":
        parser.error("run with KERAS_BACKEND=torch: this profiles PyTorch's eager update")
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    keras.utils.set_random_seed(0)
    variables = transformer_lm(256, 128, 128, 4).trainable_variables
    rng = np.random.default_rng(0)
    gradients = [torch.tensor(rng.standard_normal(v.shape).astype("float32"))
                 for v in variables]
    optimizer = make_optimizer(args.optimizer, "eigh", precondition_frequency=10,
                               start_preconditioning_step=1)
    adam = keras.optimizers.Adam()
    for candidate in (optimizer, adam):  # build, compile nothing, pass the first refresh
        for _ in range(12):
            candidate.apply(gradients, variables)
    print(f"{args.optimizer}: {cpu_milliseconds(optimizer, gradients, variables, 20):.1f} ms "
          f"CPU per step; Keras Adam: {cpu_milliseconds(adam, gradients, variables, 20):.1f} ms")
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        for _ in range(args.steps):
            optimizer.apply(gradients, variables)
    print(f"{args.steps} steps ({args.steps // 10} refresh(es)):")
    print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
