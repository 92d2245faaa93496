"""Gradient statistics of the reference-package optimizers that Hugging Face Trainer offers.

* ``scale_by_lion``: the sign of an interpolated momentum (bitsandbytes' / lion-pytorch's
  Lion, Trainer's ``lion_32bit``);
* ``scale_by_ademamix``: a mixture of a fast and a slow moving average over Adam's
  denominator, with the warm-up schedules of ``alpha`` and ``beta3`` (bitsandbytes'
  AdEMAMix, Trainer's ``ademamix``);
* ``scale_by_stable_adam``: Adam with debiased betas and a per-tensor update-RMS clip of the
  step size (torch-optimi's StableAdamW, Trainer's ``stable_adamw``).

Like the transforms of ``moments.py`` they return updates without the learning rate (the
chain ends with ``apply_learning_rate``), keep their statistics in float32 or wider and
return updates in the gradients' dtype. Coefficients that the references compute in Python
(double precision) from a float hyperparameter are computed the same way here, with numpy,
and rounded once to the statistics dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optlib._numerics import (
    DEFAULT_STATISTICS_DTYPE,
    cast,
    check_statistics_dtype,
    float_dtype,
    log_of,
    safe_increment,
    torch_sign,
    update_number,
)
from optlib._validation import check_int, check_interval, check_non_negative, is_traced
from optlib.transforms.learning_rate import learning_rate_at
from optlib.transforms.moments import (
    check_betas,
    decay_add_square,
    lerp,
    map_statistics,
    statistics_like,
)
from optlib.transforms.regularization import add_decoupled_weight_decay

__all__ = [
    "ScaleByAdemamixState",
    "ScaleByLionState",
    "ScaleByStableAdamState",
    "scale_by_ademamix",
    "scale_by_lion",
    "scale_by_stable_adam",
]


# ---------------------------------------------------------------------------------------------
# Shared pieces.


def _coefficients(beta, value: jax.Array, dtype) -> tuple:
    """``(beta, 1 - beta)`` in ``dtype``.

    For a float ``beta`` both come from Python's double precision, rounded once (what the
    references' ``mul_(beta).add_(g, alpha=1 - beta)`` do); for a schedule, from ``value``.
    """
    if isinstance(beta, float):
        return np.asarray(beta, dtype), np.asarray(1.0 - beta, dtype)
    return cast(value, dtype), cast(1 - value, dtype)


def _ema(average: jax.Array, g: jax.Array, coefficients: tuple) -> jax.Array:
    """``beta * average + (1 - beta) * g``: bitsandbytes' ``mul_(beta).add_(g, alpha=1-beta)``."""
    beta, one_minus_beta = coefficients
    return beta * average + one_minus_beta * g


# ---------------------------------------------------------------------------------------------
# Lion.


class ScaleByLionState(NamedTuple):
    """State of ``scale_by_lion``.

    Attributes:
      count: int32 updates so far (saturating); indexes a ``beta1`` schedule.
      exp_avg: the momentum (bitsandbytes' ``state1``, lion-pytorch's ``exp_avg``).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    exp_avg: optax.Updates


def scale_by_lion(
    betas: tuple[float | optax.Schedule, float] = (0.9, 0.99),
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Lion's scaling (bitsandbytes.optim.Lion, lion_pytorch.Lion), without decay and lr.

    With ``b1 = betas[0](count)``::

        u_t = sign(b1 * m_{t-1} + (1 - b1) * g_t)
        m_t = b2 * m_{t-1} + (1 - b2) * g_t                     (m_0 = 0)

    ``sign(0) = 0``, and ``sign(NaN) = 0`` as torch's (a NaN gradient entry does not move;
    it stays in the momentum, which freezes that entry from then on, as in both references).
    The update interpolates with ``b1`` but the momentum decays with ``b2``
    (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"). Follow with
    ``add_decoupled_weight_decay`` and ``apply_learning_rate`` for the references'
    ``p <- p * (1 - lr * wd) - lr * u_t``. ``optax.scale_by_lion`` computes the same update
    for a float ``b1``; this one also takes a ``b1`` schedule (torch's ``cycle_momentum``
    sets ``betas[0]``) and keeps float32 statistics for bf16/fp16 parameters.

    Args:
      betas: ``(beta1, beta2)``, each in [0, 1) (bitsandbytes' check); ``beta1`` may be a
        schedule of the count.
      statistics_dtype: dtype of the momentum (at least this wide; None: the parameters'
        dtype, as the reference).

    Returns:
      An ``optax.GradientTransformation``.
    """
    beta1, beta2 = check_betas(betas)
    statistics_dtype = check_statistics_dtype(statistics_dtype)

    def init_fn(params):
        return ScaleByLionState(
            jnp.zeros([], jnp.int32), statistics_like(params, 0.0, statistics_dtype)
        )

    def update_fn(updates, state, params=None):
        del params
        b1 = learning_rate_at(beta1, state.count)

        def leaf(g, exp_avg):
            dtype = exp_avg.dtype
            g32 = cast(g, dtype)
            u = torch_sign(_ema(exp_avg, g32, _coefficients(beta1, b1, dtype)))
            exp_avg = _ema(exp_avg, g32, _coefficients(beta2, None, dtype))
            return cast(u, g.dtype), exp_avg

        updates, exp_avg = map_statistics(leaf, updates, state.exp_avg)
        return updates, ScaleByLionState(safe_increment(state.count), exp_avg)

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# AdEMAMix.


def check_ademamix_betas(betas) -> tuple:
    """bitsandbytes' AdEMAMix check: three betas, each in [0, 1); ``betas[0]`` may be a
    schedule. Returns the checked triple."""
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence):
        raise TypeError(f"betas must be a triple (beta1, beta2, beta3), got {betas!r}")
    if len(betas) != 3:
        raise ValueError(f"betas must be a triple (beta1, beta2, beta3), got {betas!r}")
    beta1, beta2, beta3 = betas
    if not callable(beta1):
        beta1 = check_interval("betas[0]", beta1, 0.0, 1.0, high_closed=False)
    beta2 = check_interval("betas[1]", beta2, 0.0, 1.0, high_closed=False)
    beta3 = check_interval("betas[2]", beta3, 0.0, 1.0, high_closed=False)
    return beta1, beta2, beta3


def _check_warmup_steps(name: str, value) -> Any:
    """``None`` or an integer >= 0; 0 means no schedule (bitsandbytes tests ``if t_alpha:``)."""
    if value is None or is_traced(value):
        return value
    return check_int(name, value, minimum=0) or None


class ScaleByAdemamixState(NamedTuple):
    """State of ``scale_by_ademamix``.

    Attributes:
      count: int32 updates so far (saturating).
      exp_avg: the fast moving average ``m1`` (decay ``beta1``).
      exp_avg_slow: the slow moving average ``m2`` (decay ``beta3``, or its schedule).
      exp_avg_sq: the second moment ``nu`` (decay ``beta2``).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    exp_avg: optax.Updates
    exp_avg_slow: optax.Updates
    exp_avg_sq: optax.Updates


def scale_by_ademamix(
    betas: tuple[float | optax.Schedule, float, float] = (0.9, 0.999, 0.9999),
    alpha: float = 5.0,
    t_alpha: int | None = None,
    t_beta3: int | None = None,
    eps: float = 1e-8,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """AdEMAMix's scaling (bitsandbytes.optim.AdEMAMix), without weight decay and lr.

    With ``b1 = betas[0](count)`` and the step number ``t`` (1 on the first update)::

        m1_t = b1 * m1_{t-1} + (1 - b1) * g_t
        m2_t = b3_t * m2_{t-1} + (1 - b3_t) * g_t
        nu_t = b2 * nu_{t-1} + (1 - b2) * g_t**2
        u_t  = (m1_t / (1 - b1**t) + alpha_t * m2_t) / (sqrt(nu_t) / sqrt(1 - b2**t) + eps)

    with the warm-ups (Pagliardini et al. 2024, "The AdEMAMix Optimizer: Better, Faster,
    Older")::

        alpha_t = min(t * alpha / t_alpha, alpha)                      (alpha with no t_alpha)
        b3_t    = min(exp(ln b1 * ln b3 / ((1 - s) ln b3 + s ln b1)), b3),  s = t / t_beta3

    ``1 - b3_t`` is computed as ``-expm1(...)`` so that under float32 it keeps the precision
    bitsandbytes gets from computing it in Python's double precision.
    ``optax.contrib.scale_by_ademamix`` computes the same update for a constant ``alpha`` and
    ``b3``; it has no ``t_alpha``/``t_beta3`` warm-ups (it takes schedules of its own count
    instead) and no ``b1`` schedule.

    Args:
      betas: ``(beta1, beta2, beta3)``, each in [0, 1); ``beta1`` may be a schedule.
      alpha: weight of the slow average (>= 0).
      t_alpha: steps of ``alpha``'s linear warm-up; ``None`` (or 0, as in bitsandbytes): none.
      t_beta3: steps of ``beta3``'s warm-up from ``beta1``; ``None`` (or 0): none. Needs
        ``beta1 > 0`` and ``beta3 > 0`` (the schedule takes their logarithms).
      eps: added to the denominator (>= 0).
      statistics_dtype: dtype of the averages (at least this wide; None: the parameters'
        dtype, as the reference).

    Returns:
      An ``optax.GradientTransformation``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    beta1, beta2, beta3 = check_ademamix_betas(betas)
    alpha = check_non_negative("alpha", alpha)
    t_alpha = _check_warmup_steps("t_alpha", t_alpha)
    t_beta3 = _check_warmup_steps("t_beta3", t_beta3)
    eps = check_non_negative("eps", eps)
    if t_beta3 is not None:
        for name, value in (("betas[0]", beta1), ("betas[2]", beta3)):
            if isinstance(value, float) and value == 0.0:
                raise ValueError(f"t_beta3 needs {name} > 0 (its schedule takes logs), got 0.0")
        log_beta3 = log_of(beta3)

    def beta3_schedule(b1, t):
        """``(b3_t, 1 - b3_t)`` in the default float dtype."""
        if t_beta3 is None:
            return np.asarray(beta3, float_dtype()), np.asarray(1.0 - beta3, float_dtype())
        log_beta1 = log_of(beta1) if isinstance(beta1, float) else jnp.log(b1)
        s = t / t_beta3
        exponent = log_beta1 * log_beta3 / ((1 - s) * log_beta3 + s * log_beta1)
        capped = exponent >= log_beta3  # exp(exponent) >= beta3: min(..., beta3) = beta3
        one_minus_beta3 = np.asarray(1.0 - beta3, float_dtype())
        return (
            jnp.where(capped, np.asarray(beta3, float_dtype()), jnp.exp(exponent)),
            jnp.where(capped, one_minus_beta3, -jnp.expm1(exponent)),
        )

    def init_fn(params):
        zeros = [statistics_like(params, 0.0, statistics_dtype) for _ in range(3)]
        return ScaleByAdemamixState(jnp.zeros([], jnp.int32), *zeros)

    def update_fn(updates, state, params=None):
        del params
        t = update_number(state.count)
        b1 = learning_rate_at(beta1, state.count)
        bias_correction1 = 1 - b1**t
        bias_correction2_sqrt = jnp.sqrt(1 - beta2**t)
        alpha_t = alpha if t_alpha is None else jnp.minimum(t * alpha / t_alpha, alpha)
        b3, one_minus_b3 = beta3_schedule(b1, t)

        def leaf(g, m1, m2, nu):
            dtype = m1.dtype
            g32 = cast(g, dtype)
            m1 = _ema(m1, g32, _coefficients(beta1, b1, dtype))
            m2 = _ema(m2, g32, (cast(b3, dtype), cast(one_minus_b3, dtype)))
            nu = decay_add_square(nu, g32, beta2)
            mixed = m1 / cast(bias_correction1, dtype) + cast(jnp.asarray(alpha_t), dtype) * m2
            u = mixed / (jnp.sqrt(nu) / cast(bias_correction2_sqrt, dtype) + eps)
            return cast(u, g.dtype), m1, m2, nu

        updates, m1, m2, nu = map_statistics(
            leaf, updates, state.exp_avg, state.exp_avg_slow, state.exp_avg_sq
        )
        return updates, ScaleByAdemamixState(safe_increment(state.count), m1, m2, nu)

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# StableAdamW.


class ScaleByStableAdamState(NamedTuple):
    """State of ``scale_by_stable_adam``.

    Attributes:
      count: int32 updates so far (saturating).
      exp_avg: first moment (already debiased: see ``scale_by_stable_adam``).
      exp_avg_sq: second moment (already debiased).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates


def _debiased(beta, t: jax.Array) -> jax.Array:
    """torch-optimi's ``debias_beta``: ``(beta**t - beta) / (beta**t - 1)``.

    ``= beta * (1 - beta**(t-1)) / (1 - beta**t)``: the decay under which a plain moving
    average equals Adam's bias-corrected one (0 on the first step).
    """
    power = beta**t
    return (power - beta) / (power - 1)


def scale_by_stable_adam(
    betas: tuple[float | optax.Schedule, float] = (0.9, 0.99),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """StableAdamW's scaling (optimi.StableAdamW), decoupled weight decay included, no lr.

    With ``beta1``/``beta2`` debiased at step ``t``, ``b_hat = (b**t - b) / (b**t - 1)``::

        m_t   = lerp(m_{t-1}, g_t, 1 - b1_hat);  v_t = b2_hat * v_{t-1} + (1 - b2_hat) * g_t**2
        rms_t = sqrt(mean(g_t**2 / max(v_t, eps**2)))                 (per tensor)
        u_t   = (m_t / (sqrt(v_t) + eps) + weight_decay * p) / max(1, rms_t)

    so that ``apply_learning_rate(lr)`` gives optimi's ``lr_t = lr / max(1, rms_t)``,
    ``p <- p * (1 - lr_t * weight_decay) - lr_t * m_t / (sqrt(v_t) + eps)`` (Wortsman et al.
    2023, "Stable and low-precision training for large-scale vision-language models": AdamW
    with Adafactor's update clipping). The decay is inside this transform (it is
    ``add_decoupled_weight_decay``'s) because the per-tensor clip scales it too. The
    debiased betas replace Adam's bias corrections: the moments themselves are unbiased.

    Args:
      betas: ``(beta1, beta2)``, each in [0, 1); ``beta1`` may be a schedule of the count.
      eps: added to the denominator, and ``eps**2`` floors ``v_t`` in the RMS (>= 0).
      weight_decay: decoupled decay coefficient (>= 0), scaled by the clip.
      statistics_dtype: dtype of the moments (at least this wide; None: the parameters'
        dtype, as the reference).

    Returns:
      An ``optax.GradientTransformation`` (needs ``params`` in ``update``).
    """
    beta1, beta2 = check_betas(betas)
    eps = check_non_negative("eps", eps)
    decay = add_decoupled_weight_decay(weight_decay)
    statistics_dtype = check_statistics_dtype(statistics_dtype)

    def init_fn(params):
        return ScaleByStableAdamState(
            jnp.zeros([], jnp.int32),
            statistics_like(params, 0.0, statistics_dtype),
            statistics_like(params, 0.0, statistics_dtype),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_stable_adam needs params (for its weight decay)")
        t = update_number(state.count)
        beta1_hat = _debiased(learning_rate_at(beta1, state.count), t)
        beta2_hat = _debiased(beta2, t)

        def leaf(g, exp_avg, exp_avg_sq):
            dtype = exp_avg.dtype
            g32 = cast(g, dtype)
            exp_avg = lerp(exp_avg, g32, cast(1 - beta1_hat, dtype))
            exp_avg_sq = decay_add_square(exp_avg_sq, g32, cast(beta2_hat, dtype))
            eps_sq = np.asarray(eps * eps, dtype) if isinstance(eps, float) else eps * eps
            rms = jnp.sqrt(jnp.mean(g32 * g32 / jnp.maximum(exp_avg_sq, eps_sq)))
            direction = exp_avg / (jnp.sqrt(exp_avg_sq) + eps)
            # optimi's Python ``max(1, rms)``: 1 for a NaN rms (a non-finite gradient leaves
            # the rate unclipped there), not jnp.maximum's NaN
            return direction, jnp.where(rms > 1, rms, jnp.ones_like(rms)), exp_avg, exp_avg_sq

        directions, clips, exp_avg, exp_avg_sq = map_statistics(
            leaf, updates, state.exp_avg, state.exp_avg_sq
        )
        wide_params = jax.tree.map(lambda p, d: cast(p, d.dtype), params, directions)
        directions, _ = decay.update(directions, decay.init(wide_params), wide_params)
        new_updates = jax.tree.map(
            lambda d, clip, g: cast(d / clip, g.dtype), directions, clips, updates
        )
        return new_updates, ScaleByStableAdamState(safe_increment(state.count), exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)
