"""Callbacks that keep a MatTA run's work safe: atomic checkpoints, exact mid-epoch resumption,
a stop on non-finite losses that keeps the last good weights, and batch-end callbacks kept on
the training thread (multi-device JAX on CPU)."""

from keras_matta.callbacks.atomic import AtomicModelCheckpoint
from keras_matta.callbacks.atomic import save_atomically
from keras_matta.callbacks.backup_and_restore import BackupAndRestore
from keras_matta.callbacks.non_finite import StopOnNonFiniteLoss
from keras_matta.callbacks.synchronous import SynchronousCallbacks
