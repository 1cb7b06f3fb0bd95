"""PyTorch: data-parallel `fit` over `torch.distributed`, which Keras has no engine for.

`keras.distribution` is JAX's, and Keras' torch trainer never talks to other processes;
`synchronize_gradients` averages the gradients across processes with hooks on the variables.
`torch` is imported when it is called, so that importing keras_matta on another backend never
imports PyTorch.
"""

import keras


class GradientSynchronization:
    """Handle returned by `synchronize_gradients`: `remove()` stops the synchronization.

    Also a context manager that calls `remove()` on exit.

    Args:
        handles: the `torch` hook handles `synchronize_gradients` registered (one per
            trainable variable).

    Example:

    ```python
    import os

    import torch.distributed as dist

    # One process here; `torchrun` starts one per device, each with its rank and world size.
    dist.init_process_group("gloo", init_method=f"file://{os.path.abspath('rendezvous')}",
                            rank=0, world_size=1)
    model = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(4)])
    model.compile("sgd", "mse")
    sync = keras_matta.distribution.synchronize_gradients(model)   # a GradientSynchronization
    model.fit(np.random.rand(16, 8), np.random.rand(16, 4), verbose=0)   # averaged gradients
    sync.remove()                                  # from here on, each process trains alone
    dist.destroy_process_group()
    ```
    """

    def __init__(self, handles):
        self._handles = list(handles)

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()


def synchronize_gradients(model, process_group=None, source_rank=0):
    """PyTorch backend: makes `model.fit` data-parallel over the processes of `torch.distributed`.

    Keras 3.15 has no distribution engine for PyTorch (`keras.distribution` is JAX-only) and
    `fit` never communicates with other processes, while `torch.nn.parallel.
    DistributedDataParallel` needs the forward pass to run through its wrapper, which
    `fit`, and MatTA's extra Student passes in `compute_loss`, do not. This does what DDP does
    to the gradients, with `fit` unchanged:

    1. broadcasts every variable of `model` (and of a `MatTA`'s frozen teacher) from
       `source_rank`, so that all processes start from the same weights and seed states;
    2. registers on each trainable variable a hook that runs once its gradient is complete
       after `backward()` and replaces it by the mean over the processes
       (`all_reduce(SUM) / world_size`).

    Each process then calls `fit` on its own equal share of every batch (e.g.
    `x[rank::world_size]` of each global batch, with `batch_size = global_batch / world_size`)
    and every optimizer, Shampoo included, applies the same averaged gradient to the same
    weights: the processes stay identical, and the step equals a single-process step on the
    global batch. Every process computes all of Shampoo's inverse roots (the statistics are not
    split across processes on this backend).

    Not synchronized: the logged losses and metrics (each process reports its own shard; use
    rank 0's, or all-reduce them in a callback), non-trainable variables updated in the
    forward pass (e.g. `BatchNormalization` statistics), and `evaluate`/`predict`. Write
    checkpoints from one rank. Hooks fire in the same order on every process because every
    process runs the same computation; a Student strategy other than `"all"` is fine since the
    Students of a step are a function of `(seed, step)`, equal on all ranks (give `MatTA` the
    same `seed` everywhere).

    Args:
        model: a built `keras.Model` (e.g. a compiled `MatTA`).
        process_group: the `torch.distributed` group; defaults to the default group.
        source_rank: the rank whose initial variables are broadcast. Defaults to 0.

    Returns:
        A `GradientSynchronization`; call `.remove()` (or use it as a context manager) to stop.

    Example:

    ```python
    import os

    import torch.distributed as dist

    # One process here; `torchrun` starts one per device, each with its rank and world size
    # (then `dist.init_process_group("gloo")` reads them from the environment).
    dist.init_process_group("gloo", init_method=f"file://{os.path.abspath('rendezvous')}",
                            rank=0, world_size=1)
    rank, world_size, global_batch = dist.get_rank(), dist.get_world_size(), 16
    x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 3, size=(64,))
    ta = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(32, activation="relu"),
                           keras_matta.MatDense(3, nested=False)])
    mat_ta = keras_matta.MatTA(ta, [0.25, 0.5], seed=0)   # the same seed on every rank
    mat_ta.compile(keras_matta.optimizers.Shampoo(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mat_ta(x[:1])                                              # build the variables first
    with keras_matta.distribution.synchronize_gradients(mat_ta):
        mat_ta.fit(x[rank::world_size], y[rank::world_size],
                   batch_size=global_batch // world_size, epochs=1, verbose=0)
    dist.destroy_process_group()
    ```

    Reference:
        Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training",
        VLDB 2020 (the gradient all-reduce DDP performs).
    """
    if keras.backend.backend() != "torch":
        raise ValueError(
            "synchronize_gradients is for the PyTorch backend; on "
            f"'{keras.backend.backend()}' use keras.distribution (JAX) or tf.distribute (TF)."
        )
    import torch
    import torch.distributed as dist

    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "synchronize_gradients needs an initialized torch.distributed process group: call "
            "torch.distributed.init_process_group(...) first."
        )
    if not model.built or not model.trainable_variables:
        raise ValueError(
            f"`model` ('{model.name}') has no variables yet: build it (call it on a batch) "
            "before synchronize_gradients."
        )
    world_size = dist.get_world_size(process_group)
    variables = list(model.variables)
    teacher = getattr(model, "teacher", None)  # MatTA keeps its frozen teacher untracked
    if isinstance(teacher, keras.Model):
        variables += teacher.variables
    with torch.no_grad():
        for variable in variables:
            dist.broadcast(variable.value.data, src=source_rank, group=process_group)

    def average(parameter):
        dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM, group=process_group)
        parameter.grad.div_(world_size)

    return GradientSynchronization(
        variable.value.register_post_accumulate_grad_hook(average)
        for variable in model.trainable_variables
    )
