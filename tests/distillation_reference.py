"""NumPy references of the distillation terms, shared by the loss and the MatTA tests."""

import numpy as np


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax_kl(t, s, tau):
    """tau^2 KL(softmax(t / tau) || softmax(s / tau)) per example."""
    log_p, log_q = log_softmax(t / tau), log_softmax(s / tau)
    return tau**2 * (np.exp(log_p) * (log_p - log_q)).sum(-1)


def bernoulli_kl(t, s, tau):
    """tau^2 times the mean over outputs of the Bernoulli KL of sigmoid(t/tau), sigmoid(s/tau)."""
    p, q = 1 / (1 + np.exp(-t / tau)), 1 / (1 + np.exp(-s / tau))
    return tau**2 * (p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))).mean(-1)
