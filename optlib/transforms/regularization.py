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

import jax
import optax

from optlib._numerics import TorchRounding, cast
from optlib._validation import check_non_negative

__all__ = ["add_decoupled_weight_decay", "add_weight_decay", "negate_gradients"]


def add_weight_decay(weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adds the L2 penalty's gradient: ``g_t <- g_t + weight_decay * p_t``.

    torch's coupled ``weight_decay`` (``grad = grad.add(param, alpha=weight_decay)``) in SGD,
    Adam, Adagrad, RMSprop, Adadelta and NAdam: put it before the statistics transform. This is
    ``optax.add_decayed_weights``'s arithmetic (and, like it, no work when ``weight_decay ==
    0``, as torch), with torch's rounding for bf16/fp16 gradients: ``g + wd * p`` is computed
    in float32 and rounded once, ``wd`` rounded to the gradients' dtype first (optax rounds
    ``wd * p`` and the sum separately).

    Args:
      weight_decay: the L2 coefficient (>= 0).

    Returns:
      A stateless ``optax.GradientTransformation`` (needs ``params`` in ``update``).

    Raises:
      ValueError: if ``weight_decay`` is negative ("Invalid weight_decay value" in torch).
    """
    weight_decay = check_non_negative("weight_decay", weight_decay)
    skip = isinstance(weight_decay, (int, float)) and weight_decay == 0

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs the params: pass them to update")
        if skip:
            return updates, state

        def leaf(g, p):
            if g is None:
                return None
            # torch's grad.add(param, alpha=wd): one rounding to the gradient's dtype, with
            # alpha rounded to it first (a no-op for float32/float64)
            r = TorchRounding.of(g.dtype)
            return cast(cast(g, r.compute) + r.alpha(weight_decay) * cast(p, r.compute), g.dtype)

        return jax.tree.map(leaf, updates, params, is_leaf=lambda x: x is None), state

    return optax.GradientTransformation(init_fn, update_fn)


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
