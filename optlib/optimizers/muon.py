"""torch.optim.Muon: momentum, Newton–Schulz orthogonalisation, shape-adjusted lr."""

from __future__ import annotations

from typing import Any

import optax

from optlib._numerics import DEFAULT_STATISTICS_DTYPE
from optlib.optimizers._links import (
    learning_rate_link,
    momentum_from,
    named_chain,
    recorded_optimizer,
)
from optlib.transforms.learning_rate import LearningRate
from optlib.transforms.moments import trace_ema_momentum
from optlib.transforms.orthogonalize import (
    NS_COEFFICIENTS,
    scale_by_newton_schulz,
    scale_by_shape,
)
from optlib.transforms.regularization import add_decoupled_weight_decay

__all__ = ["muon"]


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
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError / TypeError: for bad arguments, naming the parameter; ``init`` raises
        torch's "Muon only supports 2D parameters ..." for a leaf that is not 2-D.
    """
    return named_chain(
        (
            "momentum",
            trace_ema_momentum(
                momentum_from(learning_rate, momentum),
                nesterov,
                statistics_dtype=statistics_dtype,
            ),
        ),
        ("newton_schulz", scale_by_newton_schulz(ns_coefficients, ns_steps, eps, ns_dtype)),
        ("adjust_lr", scale_by_shape(adjust_lr_fn)),
        ("decoupled_weight_decay", add_decoupled_weight_decay(weight_decay)),
        learning_rate_link(learning_rate),
        complex_unsupported="torch.optim.Muon does not support complex parameters",
    )
