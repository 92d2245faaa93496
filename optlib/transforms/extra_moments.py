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

With ``statistics_dtype=None`` a bf16/fp16 parameter's statistics stay in its dtype, as in
the references' pure-torch runs (``lion_pytorch.Lion``, bitsandbytes' ``_ReferenceAdEMAMix``,
``optimi.StableAdamW`` without ``kahan_sum``), and each of the references' tensor ops is
rounded as torch rounds it (``TorchRounding``), with the per-step scalars the references
compute in Python's double precision (bias corrections, debiased betas, optimi's clipped
rate) computed to double precision here too; updates then come back in float32, for the
parameter step to round once. Where the reference multiplies the learning rate into a
rounded tensor op (AdEMAMix's ``p.add_(-lr * update)``, optimi's per-tensor
``lr / max(1, rms)``) the transform takes the rate as ``learning_rate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optlib._double import Double, settled, torch_bias_corrections
from optlib._numerics import (
    DEFAULT_STATISTICS_DTYPE,
    TorchRounding,
    cast,
    check_statistics_dtype,
    float_dtype,
    log_of,
    parameter_move,
    safe_increment,
    torch_sign,
    update_number,
)
from optlib._validation import (
    check_int,
    check_interval,
    check_learning_rate,
    check_non_negative,
    is_traced,
)
from optlib.transforms.learning_rate import learning_rate_at
from optlib.transforms.moments import (
    check_betas,
    decay_add_square,
    lerp,
    map_statistics,
    statistics_like,
)

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


def _coefficients(r: TorchRounding, beta, value=None, one_minus_value=None) -> tuple:
    """``(beta, 1 - beta)`` as the references' ``mul_(beta).add_(g, alpha=1 - beta)`` take them.

    For a float ``beta`` both come from Python's double precision: ``mul_``'s scalar in
    float32, ``add_``'s ``alpha`` rounded to the statistic's dtype (``TorchRounding.alpha``;
    the same float32 number for float32 statistics). For a schedule, from its traced
    ``value`` and ``1 - value`` (or ``one_minus_value`` where that is computed more
    accurately). Both in the compute dtype.
    """
    if isinstance(beta, float):
        return np.asarray(beta, r.compute), r.alpha(1.0 - beta)
    one_minus = 1 - value if one_minus_value is None else one_minus_value
    return cast(value, r.compute), r.alpha(cast(one_minus, r.compute))


def _ema(r: TorchRounding, average: jax.Array, g: jax.Array, coefficients: tuple) -> jax.Array:
    """``beta * average + (1 - beta) * g``: the references' ``mul_(beta).add_(g, alpha=1-beta)``,
    each of the two ops rounded as torch rounds it (``r.keep``: nothing for float32 or wider
    statistics)."""
    decay, weight = coefficients
    return r.keep(r.keep(decay * average) + weight * g)


def _check_rate(name: str, learning_rate) -> None:
    """A transform's own ``learning_rate``: None, a float or a schedule (a metric-driven rate
    is a chain's last link, which the transform cannot read)."""
    if learning_rate is None:
        return
    if isinstance(learning_rate, optax.GradientTransformation):
        raise TypeError(
            f"{name}: learning_rate must be a float or a schedule (a metric-driven rate lives "
            "in the chain's last link; leave learning_rate=None)"
        )
    check_learning_rate(learning_rate)


def _any_narrow(statistics: Any) -> bool:
    """Whether some leaf of ``statistics`` is kept narrower than it is computed (the
    references' scalars are then needed as they compute them)."""
    return any(TorchRounding.of(leaf.dtype).narrow for leaf in jax.tree.leaves(statistics))


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

    A momentum kept in bf16/fp16 (``statistics_dtype=None``) is rounded as lion_pytorch's
    ``exp_avg.mul_(beta).add_(grad, alpha=1 - beta)`` rounds it: after the product and after
    the sum, with ``1 - beta`` rounded to that dtype as ``add_``'s ``alpha`` (the
    interpolation ``c_t`` likewise, before its sign). The sign then comes back in float32.

    Args:
      betas: ``(beta1, beta2)``, each in [0, 1) (bitsandbytes' check); ``beta1`` may be a
        schedule of the count.
      statistics_dtype: dtype of the momentum (at least this wide; None: the parameters'
        dtype, as the reference, rounded as it rounds it).

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

        def leaf(r, g, exp_avg):
            g32 = cast(g, r.compute)
            # lion_pytorch: exp_avg.clone().mul_(beta1).add(grad, alpha=1 - beta1).sgn_()
            u = torch_sign(_ema(r, exp_avg, g32, _coefficients(r, beta1, b1)))
            exp_avg = _ema(r, exp_avg, g32, _coefficients(r, beta2))
            return r.update(u, g), exp_avg

        updates, exp_avg = map_statistics(leaf, updates, state.exp_avg, rounding=True)
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
    weight_decay: float = 0.0,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
    learning_rate: float | optax.Schedule | None = None,
) -> optax.GradientTransformation:
    """AdEMAMix's scaling (bitsandbytes.optim.AdEMAMix), by default without decay and lr.

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

    ``weight_decay`` and ``learning_rate`` make it end as bitsandbytes' pure-torch
    ``_ReferenceAdEMAMix`` does, ``u_t <- lr * (u_t + weight_decay * p)`` (its
    ``update.add_(p, alpha=weight_decay)`` and ``p.add_(-lr * update)``: follow with
    ``torch_parameter_step(learning_rate, rate_applied=True)``). bitsandbytes' own kernel
    computes ``p * (1 - lr * wd) - lr * u_t``, the same numbers up to rounding, which
    ``add_decoupled_weight_decay`` and ``apply_learning_rate`` after this transform give.

    Averages kept in bf16/fp16 (``statistics_dtype=None``) are rounded as that reference,
    run on bf16/fp16 tensors, rounds them: after each ``mul_`` and ``add_`` / ``addcmul_``
    (``1 - beta`` rounded to their dtype as ``add_``'s ``alpha``), and the update after each
    of its tensor ops (``m1.div(bc1)``, ``alpha * m2``, their sum, ``nu.sqrt()``, its
    division by ``sqrt(bc2)``, ``.add(eps)``, the quotient, the decay and ``-lr * update``),
    with the bias corrections computed as the reference's Python doubles. The update then
    comes back in float32.

    Args:
      betas: ``(beta1, beta2, beta3)``, each in [0, 1); ``beta1`` may be a schedule.
      alpha: weight of the slow average (>= 0).
      t_alpha: steps of ``alpha``'s linear warm-up; ``None`` (or 0, as in bitsandbytes): none.
      t_beta3: steps of ``beta3``'s warm-up from ``beta1``; ``None`` (or 0): none. Needs
        ``beta1 > 0`` and ``beta3 > 0`` (the schedule takes their logarithms).
      eps: added to the denominator (>= 0).
      weight_decay: ``_ReferenceAdEMAMix``'s decay added to the update (>= 0; default 0:
        none, needs no ``params``).
      statistics_dtype: dtype of the averages (at least this wide; None: the parameters'
        dtype, as the reference, rounded as it rounds it).
      learning_rate: a float or a schedule that multiplies the update here (its negation
        is left to the last link); default None: the update without it.

    Returns:
      An ``optax.GradientTransformation`` (needs ``params`` in ``update`` when
      ``weight_decay`` is not 0).

    Raises:
      TypeError: for a metric-driven ``learning_rate`` (it belongs in the chain's last link).
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    beta1, beta2, beta3 = check_ademamix_betas(betas)
    alpha = check_non_negative("alpha", alpha)
    t_alpha = _check_warmup_steps("t_alpha", t_alpha)
    t_beta3 = _check_warmup_steps("t_beta3", t_beta3)
    eps = check_non_negative("eps", eps)
    weight_decay = check_non_negative("weight_decay", weight_decay)
    decays = is_traced(weight_decay) or weight_decay != 0
    _check_rate("scale_by_ademamix", learning_rate)
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
        if decays and params is None:
            raise ValueError("scale_by_ademamix needs params (for its weight_decay)")
        t = update_number(state.count)
        b1 = learning_rate_at(beta1, state.count)
        bias_correction1 = 1 - b1**t
        bias_correction2_sqrt = jnp.sqrt(1 - beta2**t)
        torch_bias_correction1 = torch_bias_correction2_sqrt = None
        if _any_narrow(state.exp_avg):  # the reference's Python doubles, converted to float32
            n = safe_increment(state.count)
            torch_bias_correction1, torch_bias_correction2_sqrt = torch_bias_corrections(
                b1 if callable(beta1) else beta1, beta2, n
            )
        alpha_t = alpha if t_alpha is None else jnp.minimum(t * alpha / t_alpha, alpha)
        b3, one_minus_b3 = beta3_schedule(b1, t)
        rate = None if learning_rate is None else learning_rate_at(learning_rate, state.count)

        def leaf(r, g, *rest):
            p, (m1, m2, nu) = (rest[0] if decays else None), rest[-3:]
            g32 = cast(g, r.compute)
            # _ReferenceAdEMAMix: m1.mul_(beta1).add_(grad, alpha=1 - beta1), m2 likewise
            # with beta3, nu.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            m1 = _ema(r, m1, g32, _coefficients(r, beta1, b1))
            slow = (
                _coefficients(r, beta3)
                if t_beta3 is None
                else _coefficients(r, None, b3, one_minus_b3)
            )
            m2 = _ema(r, m2, g32, slow)
            nu = decay_add_square(nu, g32, beta2, r)
            # (m1.div(bc1) + alpha * m2) / (nu.sqrt() / bc2**0.5).add(eps), each op rounded
            alpha_c = cast(jnp.asarray(alpha_t), r.compute)
            if r.narrow:
                bc1, bc2_sqrt = (
                    cast(x, r.compute)
                    for x in (torch_bias_correction1, torch_bias_correction2_sqrt)
                )
                mixed = r.keep(r.keep(r.divide(m1, bc1)) + r.keep(alpha_c * m2))
                root = r.keep(r.divide(r.keep(jnp.sqrt(nu)), bc2_sqrt))
            else:
                mixed = m1 / cast(bias_correction1, r.compute) + alpha_c * m2
                root = jnp.sqrt(nu) / cast(bias_correction2_sqrt, r.compute)
            u = r.keep(mixed / r.add_scalar(root, eps))
            if decays:  # update.add_(p, alpha=weight_decay)
                u = r.keep(u + r.alpha(weight_decay) * cast(p, r.compute))
            if rate is not None:  # -lr * update (the sign is the last link's)
                u = r.keep(cast(rate, r.compute) * u)
            return r.update(u, g), m1, m2, nu

        inputs = (params,) if decays else ()
        updates, m1, m2, nu = map_statistics(
            leaf,
            updates,
            state.exp_avg,
            state.exp_avg_slow,
            state.exp_avg_sq,
            inputs=inputs,
            rounding=True,
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


def _torch_debiased(beta, n: jax.Array) -> tuple:
    """``(beta_hat, 1 - beta_hat)`` as optimi computes them in Python's double precision from
    a float ``beta`` (``debias_beta``), converted to float32 (or float64 under x64); ``n``
    is the int32 step."""

    def compute():
        power = Double.lift(beta).power(n, bits=31)
        beta_hat = (power - beta) / (power - 1.0)
        return beta_hat.hi, (1 - beta_hat).hi

    return settled(compute, n > 0)


def _torch_clipped_rate(learning_rate, rate: jax.Array, clip: jax.Array, weight_decay) -> tuple:
    """optimi's ``lr = lr / max(1, rms)`` and its ``1 - lr * weight_decay``, Python doubles
    converted to float32 (or float64 under x64): ``(lr, decay factor)``.

    ``learning_rate`` is the float the double starts from (else the traced ``rate``);
    ``clip = max(1, rms)`` is a bf16/fp16 value. An infinite ``clip`` gives the rate 0.
    """
    finite = jnp.isfinite(clip)
    start = learning_rate if isinstance(learning_rate, (int, float)) else rate
    lr = (Double.lift(start) / Double.exact(jnp.where(finite, clip, 1))).where(finite, 0.0)
    return lr.hi, (1 - lr * weight_decay).hi


def scale_by_stable_adam(
    betas: tuple[float | optax.Schedule, float] = (0.9, 0.99),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
    learning_rate: float | optax.Schedule | None = None,
) -> optax.GradientTransformation:
    """StableAdamW's scaling (optimi.StableAdamW), decoupled weight decay included.

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
    With a ``learning_rate`` the update is multiplied by it here (``lr * u_t``, its negation
    left to the last link, ``torch_parameter_step(learning_rate, rate_applied=True)``).

    Moments kept in bf16/fp16 (``statistics_dtype=None``) follow optimi's
    ``_single_param_stableadamw`` on bf16/fp16 tensors (without ``kahan_sum``): each of its
    tensor ops is rounded to that dtype (``lerp_``, ``mul_``, ``addcmul_``; ``grad.pow(2)``,
    its division by ``exp_avg_sq.maximum(eps_sq)`` with ``eps**2`` a tensor of that dtype,
    the mean and its square root; ``exp_avg_sq.sqrt().add_(eps)``), with the debiased betas
    and, given ``learning_rate``, optimi's Python-double ``lr_t = lr / max(1, rms_t)`` and
    ``1 - lr_t * weight_decay``. The update is then optimi's whole parameter step,
    ``round(p * (1 - lr_t * wd)) - lr_t * m_t / denom - p`` negated, in float32: the
    parameter is rounded after the decay and after the step, as optimi's ``p.mul_`` and
    ``p.addcdiv_`` round it. Without ``learning_rate`` it is ``u_t`` above, from the rounded
    moments.

    Args:
      betas: ``(beta1, beta2)``, each in [0, 1); ``beta1`` may be a schedule of the count.
      eps: added to the denominator, and ``eps**2`` floors ``v_t`` in the RMS (>= 0).
      weight_decay: decoupled decay coefficient (>= 0), scaled by the clip.
      statistics_dtype: dtype of the moments (at least this wide; None: the parameters'
        dtype, as the reference, rounded as it rounds it).
      learning_rate: a float or a schedule applied here (see above); default None: the
        update without it.

    Returns:
      An ``optax.GradientTransformation`` (needs ``params`` in ``update``).

    Raises:
      TypeError: for a metric-driven ``learning_rate`` (it belongs in the chain's last link).
    """
    beta1, beta2 = check_betas(betas)
    eps = check_non_negative("eps", eps)
    weight_decay = check_non_negative("weight_decay", weight_decay)
    decays = is_traced(weight_decay) or weight_decay != 0
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    _check_rate("scale_by_stable_adam", learning_rate)

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
        b1 = learning_rate_at(beta1, state.count)
        beta1_hat = _debiased(b1, t)
        beta2_hat = _debiased(beta2, t)
        rate = None if learning_rate is None else learning_rate_at(learning_rate, state.count)
        if _any_narrow(state.exp_avg):  # optimi's Python doubles, converted to float32
            n = safe_increment(state.count)
            _, torch_beta1_comp = _torch_debiased(beta1 if isinstance(beta1, float) else b1, n)
            torch_beta2_hat, torch_beta2_comp = _torch_debiased(beta2, n)

        def leaf(r, g, p, exp_avg, exp_avg_sq):
            if r.narrow:
                return narrow_leaf(r, g, p, exp_avg, exp_avg_sq)
            dtype = exp_avg.dtype
            g32 = cast(g, dtype)
            exp_avg = lerp(exp_avg, g32, cast(1 - beta1_hat, dtype))
            exp_avg_sq = decay_add_square(exp_avg_sq, g32, cast(beta2_hat, dtype))
            eps_sq = np.asarray(eps * eps, dtype) if isinstance(eps, float) else eps * eps
            rms = jnp.sqrt(jnp.mean(g32 * g32 / jnp.maximum(exp_avg_sq, eps_sq)))
            direction = exp_avg / (jnp.sqrt(exp_avg_sq) + eps)
            if decays:
                direction = direction + r.alpha(weight_decay) * cast(p, dtype)
            # optimi's Python ``max(1, rms)``: 1 for a NaN rms (a non-finite gradient leaves
            # the rate unclipped there), not jnp.maximum's NaN
            u = direction / jnp.where(rms > 1, rms, jnp.ones_like(rms))
            if rate is not None:
                u = cast(rate, dtype) * u
            return r.update(u, g), exp_avg, exp_avg_sq

        def narrow_leaf(r, g, p, exp_avg, exp_avg_sq):
            """optimi's ``_single_param_stableadamw`` on bf16/fp16 tensors, each op rounded."""
            g32 = cast(g, r.compute)
            beta1_comp, beta2_hat, beta2_comp = (
                cast(x, r.compute) for x in (torch_beta1_comp, torch_beta2_hat, torch_beta2_comp)
            )
            exp_avg = r.keep(lerp(exp_avg, g32, beta1_comp))
            exp_avg_sq = r.keep(r.keep(beta2_hat * exp_avg_sq) + beta2_comp * g32 * g32)
            # rms = grad.pow(2).div_(exp_avg_sq.maximum(eps_sq)).mean().sqrt(), with eps_sq
            # a tensor of the parameter's dtype
            eps_sq = r.alpha(eps * eps)
            ratio = r.keep(r.keep(g32 * g32) / jnp.maximum(exp_avg_sq, eps_sq))
            rms = r.keep(jnp.sqrt(r.keep(r.divide(jnp.sum(ratio), ratio.size))))
            clip = jnp.where(rms > 1, rms, jnp.ones_like(rms))
            denom = r.add_scalar(r.keep(jnp.sqrt(exp_avg_sq)), eps)
            wide_p = cast(p, r.compute)
            if rate is None:  # the rate is the last link's: the default formula, rounded moments
                direction = exp_avg / denom
                if decays:
                    direction = direction + r.alpha(weight_decay) * wide_p
                return r.update(direction / clip, g), exp_avg, exp_avg_sq
            # p.mul_(1 - lr * wd); p.addcdiv_(exp_avg, denom, value=-lr), lr = lr / max(1, rms)
            lr, factor = _torch_clipped_rate(learning_rate, rate, clip, weight_decay)
            step = cast(lr, r.compute) * exp_avg / denom
            if decays:
                decayed = r.keep(wide_p * cast(factor, r.compute))
                step = step - parameter_move(decayed, wide_p)
            return r.update(step, g), exp_avg, exp_avg_sq

        new_updates, exp_avg, exp_avg_sq = map_statistics(
            leaf, updates, state.exp_avg, state.exp_avg_sq, inputs=(params,), rounding=True
        )
        new_state = ScaleByStableAdamState(safe_increment(state.count), exp_avg, exp_avg_sq)
        return new_updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)
