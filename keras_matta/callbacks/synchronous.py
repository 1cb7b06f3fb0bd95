"""Run Keras' batch-end callbacks on the training thread, for JAX on several CPU devices."""

import keras


@keras.saving.register_keras_serializable(package="keras_matta")
class SynchronousCallbacks(keras.callbacks.Callback):
    """Makes `fit`, `evaluate` and `predict` run every batch-end callback on their own thread.

    On backends that Keras marks thread-safe (JAX, PyTorch), Keras 3 hands each step's
    batch-end callbacks, and the conversion of the step's logs to Python floats, to a thread
    pool whenever every callback keeps Keras' default `on_*_batch_end` (the progress bar and
    `History` do), so the next step starts while another thread reads the last one. Keras
    decides per callback: one that defines its own batch-end hooks brings all of them back to
    the training thread. This callback defines them, as no-ops; adding it is the whole fix.

    Why it exists: on JAX's CPU runtime with several devices (the simulated ones of
    `--xla_force_host_platform_device_count`), that overlap deadlocks a multi-device step.
    The log readers wait for the last step's buffers while the next step's replicas start;
    some replicas wait for their device's slot for in-flight computations, so the rest never
    complete the step's gradient all-reduce, and XLA aborts after its termination timeout
    ("Expected 8 threads to join the rendezvous, but only 7 of them arrived"). Measured with
    jaxlib 0.10.2 on a 2-core machine, in the distributed-training guide's `DataParallel`
    run at full size (MLP width 512, Shampoo blocks of 128, 8 devices, 60 steps): 6 of 6 runs
    aborted without this callback, whatever XLA's flags (its scheduler, Eigen threading,
    XNNPACK, the thunk runtime) or thread-pool size (`PJRT_NPROC=9`); 3 of 3 ran through
    with it. Smaller models deadlock rarely (the guide's smoke run: once in three test-suite
    runs). GPUs and TPUs run on other runtimes: leave it out there, where the overlap saves a
    little time per step.

    The cost is the overlap: each step waits until its logs are read.

    Example:

    ```python
    x, y = np.random.rand(64, 8).astype("float32"), np.random.randint(0, 3, size=(64,))
    ta = keras.Sequential([keras.Input((8,)), keras_matta.MatDense(32, activation="relu"),
                           keras_matta.MatDense(3, nested=False)])
    mat_ta = keras_matta.MatTA(ta, student_widths=[0.5])
    mat_ta.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # In a run under `keras.distribution.DataParallel()` on simulated CPU devices (JAX), as in
    # the distributed-training guide:
    mat_ta.fit(x, y, batch_size=16, verbose=0,
               callbacks=[keras_matta.callbacks.SynchronousCallbacks()])
    ```

    Reference:
        Keras 3's `CallbackList` (`keras/src/callbacks/callback_list.py`) chooses the
        asynchronous dispatch; jax-ml/jax#25861 is a related deadlock of JAX's asynchronous CPU
        dispatch, which the project's CI turns off as well (`JAX_CPU_ENABLE_ASYNC_DISPATCH`).
    """

    # Overriding the hooks is what Keras checks; their bodies have nothing to do.
    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_predict_batch_end(self, batch, logs=None):
        pass

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
