"""A float64 NumPy reference of one MatTA step for a 2-layer MatDense MLP, by hand.

Model: `z = relu(x @ W1[:, :k] + b1[:k]) @ W2[:k, :] + b2` (the TA at `k = units`), sparse
softmax cross-entropy as the task loss, softmax-KL distillation. Gradients are derived by hand
(no autodiff), so the same numbers check every backend.
"""

import numpy as np
from distillation_reference import log_softmax


def forward(params, x, k):
    w1, b1, w2, b2 = params
    pre = x @ w1[:, :k] + b1[:k]
    hidden = np.maximum(pre, 0.0)
    return hidden @ w2[:k, :] + b2, (pre, hidden)


def backward(params, x, k, cache, dz):
    """Gradients of `sum(dz * z)` w.r.t. the full parameters (zero outside the width-k slice)."""
    w1, _, w2, _ = params
    pre, hidden = cache
    grads = [np.zeros_like(p) for p in params]
    grads[2][:k, :] = hidden.T @ dz
    grads[3] = dz.sum(axis=0)
    dpre = (dz @ w2[:k, :].T) * (pre > 0)
    grads[0][:, :k] = x.T @ dpre
    grads[1][:k] = dpre.sum(axis=0)
    return grads


def task_loss(labels, z):
    """Mean sparse cross-entropy and its gradient w.r.t. the logits."""
    batch = z.shape[0]
    log_p = log_softmax(z)
    value = -log_p[np.arange(batch), labels].mean()
    dz = np.exp(log_p)
    dz[np.arange(batch), labels] -= 1.0
    return value, dz / batch


def kd_loss(teacher, student, tau):
    """`tau^2 * mean_b KL(softmax(t/tau) || softmax(s/tau))` and gradients w.r.t. t and s."""
    batch = teacher.shape[0]
    log_p, log_q = log_softmax(teacher / tau), log_softmax(student / tau)
    p, q = np.exp(log_p), np.exp(log_q)
    kl = (p * (log_p - log_q)).sum(axis=-1)
    value = tau**2 * kl.mean()
    d_student = tau * (q - p) / batch
    d_teacher = tau * p * ((log_p - log_q) - kl[:, None]) / batch
    return value, d_teacher, d_student


def matta_step(params, x, labels, teacher_logits, widths, *, beta, alpha, gamma_t,
               beta_teacher, alpha_teacher, tau, student_weights, detach_ta):
    """Total loss, every unweighted term and the gradient of the total.

    Returns:
        `(total, terms, grads)`; `terms` uses the names MatTA logs, with Students labelled by
        their int width.
    """
    units = params[0].shape[1]
    z_ta, ta_cache = forward(params, x, units)
    terms = {}
    terms["ta_task_loss"], dz_ta = task_loss(labels, z_ta)
    total = beta * terms["ta_task_loss"]
    dz_ta = beta * dz_ta
    if teacher_logits is not None:
        terms["ta_kd_teacher_loss"], _, d = kd_loss(teacher_logits, z_ta, tau)
        total += beta_teacher * terms["ta_kd_teacher_loss"]
        dz_ta += beta_teacher * d
    grads = [np.zeros_like(p) for p in params]
    for k, w in zip(widths, student_weights):
        head = f"student_{k}"
        z, cache = forward(params, x, k)
        terms[f"{head}_task_loss"], d_task = task_loss(labels, z)
        terms[f"{head}_kd_ta_loss"], d_ta, d_kd = kd_loss(z_ta, z, tau)
        dz = alpha * d_task + gamma_t * d_kd
        total += w * (alpha * terms[f"{head}_task_loss"] + gamma_t * terms[f"{head}_kd_ta_loss"])
        if not detach_ta:
            dz_ta += w * gamma_t * d_ta
        if teacher_logits is not None:
            terms[f"{head}_kd_teacher_loss"], _, d = kd_loss(teacher_logits, z, tau)
            total += w * alpha_teacher * terms[f"{head}_kd_teacher_loss"]
            dz += alpha_teacher * d
        for g, gi in zip(grads, backward(params, x, k, cache, w * dz)):
            g += gi
    for g, gi in zip(grads, backward(params, x, units, ta_cache, dz_ta)):
        g += gi
    return total, terms, grads
