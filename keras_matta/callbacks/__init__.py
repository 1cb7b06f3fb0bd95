"""Callbacks that keep a MatTA run's work safe: atomic checkpoints, exact mid-epoch resumption,
and a stop on non-finite losses that keeps the last good weights."""

from keras_matta.callbacks.atomic import AtomicModelCheckpoint
from keras_matta.callbacks.atomic import save_atomically
from keras_matta.callbacks.backup_and_restore import BackupAndRestore
from keras_matta.callbacks.non_finite import StopOnNonFiniteLoss
