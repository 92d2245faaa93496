"""Weight decay (coupled L2 and decoupled) and torch's ``maximize``.

Both kinds of weight decay are the same arithmetic, ``u + weight_decay * p``; what makes them
different is *where in the chain* it happens:

* coupled L2 (torch's ``weight_decay`` in SGD, Adam, Adagrad, RMSprop, Adadelta, NAdam): first,
  on the gradient, so the decay term flows through the moment statistics;
* decoupled (AdamW, NAdam's ``decoupled_weight_decay``, HF Adafactor): last, on the finished
  update right before ``apply_learning_rate``, so it is scaled by the learning rate only:
  ``p - lr * (u + wd * p) == p * (1 - lr * wd) - lr * u``, torch's ``p.mul_(1 - lr * wd)``.
"""

from __future__ import annotations

import optax

from optlib._validation import check_non_negative

__all__ = ["add_decoupled_weight_decay", "add_weight_decay", "negate_gradients"]


def add_weight_decay(weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adds the L2 penalty's gradient: ``g_t <- g_t + weight_decay * p_t``.

    torch's coupled ``weight_decay`` (``grad = grad.add(param, alpha=weight_decay)``) in SGD,
    Adam, Adagrad, RMSprop, Adadelta and NAdam: put it before the statistics transform. This is
    ``optax.add_decayed_weights``, which already computes exactly this (and skips the work when
    ``weight_decay == 0``, as torch does), so we reuse it and only add torch's argument check.

    Args:
      weight_decay: the L2 coefficient (>= 0).

    Returns:
      A stateless ``optax.GradientTransformation`` (needs ``params`` in ``update``).

    Raises:
      ValueError: if ``weight_decay`` is negative ("Invalid weight_decay value" in torch).
    """
    weight_decay = check_non_negative("weight_decay", weight_decay)
    return optax.add_decayed_weights(weight_decay)


def add_decoupled_weight_decay(weight_decay: float = 1e-2) -> optax.GradientTransformation:
    """Decoupled weight decay, scaled by the learning rate: ``u_t <- u_t + weight_decay * p_t``.

    Placed right before ``apply_learning_rate(lr)``, the step becomes
    ``p - lr * u - lr * weight_decay * p``: torch AdamW's (and NAdam's
    ``decoupled_weight_decay=True``) ``param.mul_(1 - lr * weight_decay)`` and HF Adafactor's
    ``p -= weight_decay * lr * p``. The arithmetic is ``add_weight_decay``'s; only the position
    in the chain differs, and the name says which one is meant.

    Args:
      weight_decay: the decoupled decay coefficient (>= 0); torch AdamW's default is 1e-2.

    Returns:
      A stateless ``optax.GradientTransformation`` (needs ``params`` in ``update``).

    Raises:
      ValueError: if ``weight_decay`` is negative.
    """
    return add_weight_decay(weight_decay)


def negate_gradients() -> optax.GradientTransformation:
    """torch's ``maximize=True``: ``g_t <- -g_t``, so the optimizer ascends the objective.

    Put it first in the chain (torch negates the gradient before weight decay and statistics).
    ``optax.scale(-1.0)`` is an exact sign flip that keeps the dtype, so it is reused.

    Returns:
      A stateless ``optax.GradientTransformation``.
    """
    return optax.scale(-1.0)
