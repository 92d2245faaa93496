"""torch.optim.Adafactor as one optax chain (``optlib.adafactor`` is Hugging Face's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import optax

from optlib._numerics import DEFAULT_STATISTICS_DTYPE, rounds_like_torch
from optlib._validation import check_non_negative, check_real
from optlib.optimizers._links import (
    maximize_link,
    named_chain,
    recorded_optimizer,
    reject_momentum_schedule,
)
from optlib.transforms.factored import (
    clip_by_update_rms,
    scale_by_capped_relative_step,
    scale_by_param_rms,
    scale_by_torch_factored_rms,
)
from optlib.transforms.learning_rate import LearningRate

__all__ = ["torch_adafactor"]


def _traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)  # injected by optax.inject_hyperparams


def _check_eps(eps) -> tuple[float | None, float]:
    if isinstance(eps, (str, bytes)) or not isinstance(eps, Sequence) or len(eps) != 2:
        raise TypeError(f"eps must be a pair (eps1 or None, eps2), got {eps!r}")
    eps1, eps2 = eps
    if eps1 is not None:
        eps1 = check_real("eps[0]", eps1)
        if not _traced(eps1) and eps1 < 0:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps1} (eps[0])")
    eps2 = check_real("eps[1]", eps2)
    if not _traced(eps2) and eps2 < 0:
        raise ValueError(f"epsilon2 should be >= 0 but is: {eps2} (eps[1])")
    return eps1, eps2


def _check_d(d) -> float:
    d = check_real("d", d, allow_inf=True)
    if not _traced(d) and not d >= 1.0:
        raise ValueError(f"Clipping threshold d should be >= 1 but is: {d} (d)")
    return d


@recorded_optimizer
def torch_adafactor(
    learning_rate: LearningRate = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Adafactor with torch's semantics (torch.optim.Adafactor).

    ``chain(maximize?, scale_by_torch_factored_rms, clip_by_update_rms(d),
    scale_by_param_rms(eps[1]), scale_by_capped_relative_step)`` (with
    ``statistics_dtype=None``: ``chain(maximize?, scale_by_torch_factored_rms,
    scale_by_capped_relative_step(..., torch_step=(d, eps[1])))``, torch's rounded ops, its
    bf16/fp16 norms and its double scalars); at step ``t``::

        beta2_t = 1 - t**beta2_decay;  V_t: factored (>= 2-D, last two dims) or full EMA of g**2
        U = g / max(sqrt(V_t), eps[0]),  V_t = R C / max(mean(R), eps[0]) when factored
        U = U / max(1, RMS(U) / d)
        p <- p * (1 - lr * weight_decay) - max(eps[1], RMS(p)) * min(lr, 1/sqrt(t)) * U

    It differs from Hugging Face's Adafactor (``optlib.adafactor``): ``lr`` caps the relative
    step ``rho_t`` (HF: the constant 1e-2, or ``lr`` replaces ``rho_t``), ``eps[0]`` clamps
    the estimate instead of being added to ``g**2``, there is no ``beta1`` and the decay is
    ``lr * weight_decay``. ``eps[0] = None`` means ``finfo(param dtype).eps``, as in torch.
    ``learning_rate`` may be a float, a schedule or a metric-driven transform;
    ``optlib.current_learning_rate`` is torch's group ``lr``.

    Args:
      learning_rate: lr (>= 0), the cap of ``rho_t`` and the weight-decay scale.
      beta2_decay: ``1 - beta2_t = t**beta2_decay`` (<= 0).
      eps: ``(eps1, eps2)``: the clamp of the second-moment estimate (>= 0, or None), and the
        smallest parameter scale (>= 0).
      d: clipping threshold of the update's RMS (>= 1).
      weight_decay: decoupled weight decay coefficient (>= 0).
      maximize: maximize the objective instead of minimizing.
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as torch does.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: for bad values (torch's messages), or a momentum-cycling ``learning_rate``.
      TypeError: a non-numeric value or ``eps`` that is not a pair.
    """
    reject_momentum_schedule(learning_rate, "torch_adafactor")
    eps1, eps2 = _check_eps(eps)
    d = _check_d(d)
    check_non_negative("weight_decay", weight_decay)
    # with statistics rounded like torch's, the last link is all of torch's parameter step
    # (its norms and scalars rounded as torch's), so there are no clip / param_scale links
    torch_step = (d, eps2) if rounds_like_torch(statistics_dtype) else None
    return named_chain(
        maximize_link(maximize),
        (
            "factored_rms",
            scale_by_torch_factored_rms(beta2_decay, eps1, statistics_dtype=statistics_dtype),
        ),
        None if torch_step else ("clip", clip_by_update_rms(d)),
        None if torch_step else ("param_scale", scale_by_param_rms(eps2, report_scale=False)),
        (
            "learning_rate",
            scale_by_capped_relative_step(learning_rate, weight_decay, torch_step=torch_step),
        ),
        complex_unsupported="torch.optim.Adafactor does not support complex parameters",
    )
