"""torch.optim.Muon: momentum, Newton–Schulz orthogonalisation, shape-adjusted lr."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optlib._numerics import DEFAULT_STATISTICS_DTYPE, cast, float_dtype, parameter_move
from optlib._numerics import statistics_dtype as statistics_dtype_of
from optlib._validation import check_choice, check_non_negative
from optlib.optimizers._links import (
    learning_rate_link,
    momentum_from,
    named_chain,
    recorded_optimizer,
)
from optlib.transforms.learning_rate import LearningRate, learning_rate_tracker
from optlib.transforms.moments import trace_ema_momentum
from optlib.transforms.orthogonalize import (
    ADJUST_LR_FNS,
    NS_COEFFICIENTS,
    adjusted_lr_ratio,
    scale_by_newton_schulz,
    scale_by_shape,
)
from optlib.transforms.regularization import add_decoupled_weight_decay

__all__ = ["muon"]


def _torch_muon_step(
    learning_rate: LearningRate, weight_decay: float, adjust_lr_fn: str | None
) -> optax.GradientTransformationExtraArgs:
    """Muon's last link with ``statistics_dtype=None``: torch's parameter step, rounded as
    torch rounds it.

    torch: ``param.mul_(1 - lr * weight_decay)`` (rounded to the parameter's dtype), then
    ``param.add_(O, alpha=-lr * ratio)`` with ``O`` the bf16 Newton–Schulz result. That
    ``add_`` computes in the promoted dtype of the parameter and ``O`` (bf16 for a bf16
    parameter, float32 for a fp16 or float32 one) and takes ``alpha`` in it: rounded to bf16
    for a bf16 parameter. ``lr * ratio`` and ``1 - lr * weight_decay`` are torch's Python
    doubles for a float ``learning_rate``. Each leaf's step is the parameter's exact move
    (float32 for bf16/fp16 parameters), so ``optax.apply_updates`` lands on torch's value.
    The state is ``apply_learning_rate(learning_rate)``'s, stepped the same way.
    """
    tracker = learning_rate_tracker(learning_rate)
    constant = isinstance(learning_rate, (int, float))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("muon with statistics_dtype=None needs params in update")
        rate = tracker.rate(state)

        def leaf(o, p):
            compute = statistics_dtype_of(p.dtype)
            ratio = adjusted_lr_ratio(p.shape, adjust_lr_fn)
            if constant:  # torch's doubles
                alpha = np.asarray(learning_rate * ratio, float_dtype())
                decay = np.asarray(1 - learning_rate * weight_decay, float_dtype())
            else:
                alpha, decay = rate * ratio, 1 - rate * weight_decay
            alpha = cast(cast(jnp.asarray(alpha), jnp.promote_types(p.dtype, o.dtype)), compute)
            wide_p = cast(p, compute)
            decayed = cast(cast(wide_p * cast(jnp.asarray(decay), compute), p.dtype), compute)
            moved = cast(cast(decayed - alpha * cast(o, compute), p.dtype), compute)
            return parameter_move(moved, wide_p)

        new_state = tracker.step(state, params, extra_args)
        return jax.tree.map(leaf, updates, params), new_state

    return optax.GradientTransformationExtraArgs(tracker.init, update_fn)


@recorded_optimizer
def muon(
    learning_rate: LearningRate = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    *,
    ns_dtype: Any = "bfloat16",
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Muon (torch.optim.Muon), for 2-D parameters (the hidden layers' matrices).

    ``chain(trace_ema_momentum, scale_by_newton_schulz, scale_by_shape,
    add_decoupled_weight_decay, apply_learning_rate)``::

        B_t = lerp(B_{t-1}, g_t, 1 - momentum)                     (B_0 = 0)
        U_t = lerp(g_t, B_t, momentum)  if nesterov else  B_t
        O_t = NewtonSchulz(U_t; ns_coefficients, ns_steps, eps)    (in bfloat16)
        p  <- p * (1 - lr * weight_decay) - lr * ratio(rows, cols) * O_t

    with ``ratio = sqrt(max(1, rows / cols))`` (``adjust_lr_fn=None`` / ``"original"``) or
    ``0.2 * sqrt(max(rows, cols))`` (``"match_rms_adamw"``). As in torch, the weight decay
    uses the plain lr and only the orthogonalised update the adjusted one, and the
    Newton–Schulz iteration runs in bfloat16 (products accumulated in float32, each of
    torch's operations rounded once; see ``optlib.newton_schulz``); ``ns_dtype="float32"``
    or ``"float64"`` runs it more exactly. A ``MomentumSchedule`` ``learning_rate`` drives
    ``momentum`` (torch's ``OneCycleLR`` / ``CyclicLR`` with ``cycle_momentum=True`` set
    Muon's ``momentum``). The momentum buffer is float32 or wider by default
    (``statistics_dtype``; torch's has the parameter's dtype, which ``statistics_dtype=None``
    keeps; for bf16 parameters with ``nesterov=False`` torch 2.13 also normalises that buffer
    in place, since ``grad.bfloat16()`` returns the buffer itself, which is not reproduced).

    With ``statistics_dtype=None`` the step is torch's ops with torch's roundings: the
    buffer and the Nesterov look-ahead are rounded to the parameters' dtype after each
    ``lerp``, the Newton–Schulz result stays in ``ns_dtype``, and the last link is torch's
    parameter step, ``param.mul_(1 - lr * weight_decay)`` then ``param.add_(O, alpha=-lr *
    ratio)``, each rounded to the parameters' dtype (``alpha`` too for bf16 parameters), so
    the chain has no ``adjust_lr`` / ``decoupled_weight_decay`` links. For bf16/fp16
    parameters the buffer then equals torch's bit for bit, and so does the parameter given
    the same Newton–Schulz result; the iteration itself is not bit-identical to torch's, as
    its bf16 products accumulate in float32 in XLA's order rather than oneDNN's.

    Every leaf must be 2-D, as in torch: give biases, norms, embeddings and the output head
    to another optimizer with ``optlib.param_groups`` (see the README's recipe).

    ``optax.contrib.muon`` differs: its default lr ratio is ``sqrt(max(1, cols / rows))``
    (torch's is ``rows / cols``), ``eps=1e-8`` is added to the norm instead of bounding it,
    the iteration runs in the input's dtype, the momentum is bias-corrected, the weight
    decay defaults to 0, and non-2-D leaves silently go to a built-in AdamW.

    Args:
      learning_rate: lr (>= 0): float, schedule, ``MomentumSchedule`` (drives
        ``momentum``) or lr transform.
      weight_decay: decoupled weight decay coefficient (>= 0), scaled by the plain lr.
      momentum: momentum factor in [0, 1) (torch only rejects < 0).
      nesterov: use the Nesterov look-ahead of the momentum.
      ns_coefficients: ``(a, b, c)`` of the quintic Newton–Schulz step.
      eps: lower bound of the norm the update is divided by (>= 0).
      ns_steps: Newton–Schulz iterations, in [1, 100).
      adjust_lr_fn: ``None`` / ``"original"`` or ``"match_rms_adamw"``.
      ns_dtype: dtype of the Newton–Schulz iteration (``"bfloat16"`` as torch; ``None``: the
        updates' dtype).
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype and torch's roundings, as torch does.

    Returns:
      An ``optax.GradientTransformation`` (with ``statistics_dtype=None`` its ``update``
      needs ``params``, as the default's decoupled weight decay does).

    Raises:
      ValueError / TypeError: for bad arguments, naming the parameter; ``init`` raises
        torch's "Muon only supports 2D parameters ..." for a leaf that is not 2-D.
    """
    momentum_link = (
        "momentum",
        trace_ema_momentum(
            momentum_from(learning_rate, momentum), nesterov, statistics_dtype=statistics_dtype
        ),
    )
    if statistics_dtype is None:  # torch's roundings: its parameter step is the last link
        check_choice("adjust_lr_fn", adjust_lr_fn, ADJUST_LR_FNS)
        weight_decay = check_non_negative("weight_decay", weight_decay)
        return named_chain(
            momentum_link,
            (
                "newton_schulz",
                scale_by_newton_schulz(
                    ns_coefficients, ns_steps, eps, ns_dtype, keep_ns_dtype=True
                ),
            ),
            ("learning_rate", _torch_muon_step(learning_rate, weight_decay, adjust_lr_fn)),
            complex_unsupported="torch.optim.Muon does not support complex parameters",
        )
    return named_chain(
        momentum_link,
        ("newton_schulz", scale_by_newton_schulz(ns_coefficients, ns_steps, eps, ns_dtype)),
        ("adjust_lr", scale_by_shape(adjust_lr_fn)),
        ("decoupled_weight_decay", add_decoupled_weight_decay(weight_decay)),
        learning_rate_link(learning_rate),
        complex_unsupported="torch.optim.Muon does not support complex parameters",
    )
