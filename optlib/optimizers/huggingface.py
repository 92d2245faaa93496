"""Hugging Face Adafactor (``transformers.optimization.Adafactor``) as one optax chain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import optax

from optlib._numerics import DEFAULT_STATISTICS_DTYPE
from optlib._validation import (
    check_bool,
    check_interval,
    check_learning_rate,
    check_non_negative,
)
from optlib.optimizers._links import named_chain, recorded_optimizer
from optlib.transforms.factored import (
    add_decayed_weights_scaled_by_learning_rate,
    check_clip_threshold,
    check_decay_rate,
    clip_by_update_rms,
    ema_of_updates,
    relative_step_size,
    scale_by_factored_rms,
    scale_by_param_rms,
    scale_by_relative_step_size,
)
from optlib.transforms.learning_rate import apply_learning_rate

__all__ = ["adafactor"]


def _check_eps_pair(eps) -> tuple[float, float]:
    if isinstance(eps, (str, bytes)) or not isinstance(eps, Sequence):
        raise TypeError(f"eps must be a pair (eps_sq, eps_scale) of floats, got {eps!r}")
    if len(eps) != 2:
        raise ValueError(f"eps must be a pair (eps_sq, eps_scale) of floats, got {eps!r}")
    return check_non_negative("eps[0]", eps[0]), check_non_negative("eps[1]", eps[1])


def _check_learning_rate_mode(learning_rate, relative_step: bool, warmup_init: bool, weight_decay):
    if learning_rate is not None and relative_step:
        raise ValueError(
            "Cannot combine a manual learning_rate with relative_step=True (HF: manual `lr` and "
            f"`relative_step=True`); got learning_rate={learning_rate!r}"
        )
    if warmup_init and not relative_step:
        raise ValueError("warmup_init=True requires relative_step=True")
    if relative_step:
        return
    if learning_rate is None:
        raise ValueError("learning_rate is required when relative_step=False, got None")
    if isinstance(learning_rate, optax.GradientTransformation):
        if weight_decay != 0:
            raise ValueError(
                "weight_decay != 0 needs a float or schedule learning_rate (HF decays by "
                "weight_decay * lr outside the beta1 average); got weight_decay="
                f"{weight_decay!r} with a metric-driven learning_rate"
            )
        return
    check_learning_rate(learning_rate)


@recorded_optimizer
def adafactor(
    learning_rate: float | optax.Schedule | optax.GradientTransformation | None = None,
    eps: tuple[float, float] = (1e-30, 1e-3),
    clip_threshold: float = 1.0,
    decay_rate: float = -0.8,
    beta1: float | None = None,
    weight_decay: float = 0.0,
    scale_parameter: bool = True,
    relative_step: bool = True,
    warmup_init: bool = False,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Adafactor with Hugging Face's semantics (``transformers.optimization.Adafactor``).

    Per parameter ``p`` at HF step ``t``::

        u    = g / sqrt(V_t)            V_t: factored EMA of g**2 + eps[0] (>= 2-D, last two dims),
                                        full EMA otherwise; beta2_t = 1 - t**decay_rate
        u    = u / max(1, RMS(u) / clip_threshold)
        lr_t = rho_t * (max(eps[1], RMS(p)) if scale_parameter else 1)
               rho_t = min(1e-2, 1/sqrt(t))  (relative_step), min(1e-6 t, 1/sqrt(t))
               (warmup_init), or learning_rate (relative_step=False)
        u    = lr_t * u;  with beta1: m_t = beta1 m_{t-1} + (1 - beta1) u, u = m_t
        p    = p - weight_decay * lr_t * p - u

    Same names and defaults as HF (``learning_rate`` for ``lr``). With
    ``relative_step=False``, ``learning_rate`` may be a float, an optax schedule of the update
    count, or a metric-driven scheduler (``optlib.reduce_lr_on_plateau(...)``; not together
    with ``weight_decay``). Statistics are float32 for bf16/fp16 params; updates keep the
    param dtype.

    ``optlib.current_learning_rate(state)`` is HF's ``Adafactor._get_lr`` after the step:
    ``rho`` times the scale ``max(eps[1], RMS(p))`` that the last update used. With
    ``scale_parameter`` that differs per parameter, so it is a tree like the parameters
    (``rate["w"]`` for parameter ``w``); ``AdafactorSchedule(optimizer).get_last_lr()[0]`` is
    the entry of the first parameter given to the torch optimizer (``model.parameters()``
    order, which need not be ``jax.tree.leaves`` order). Without ``scale_parameter`` it is one
    scalar.
    With ``relative_step=True``, ``rho`` is the relative step size of the last update; before
    any update we give the rate the first update will apply (``AdafactorSchedule`` reports
    its placeholder ``initial_lr`` there). With ``relative_step=False``, ``rho`` is
    ``learning_rate`` as for every optlib optimizer: for a schedule or a metric-driven
    scheduler, its value for the next update (HF: the group's ``lr`` after
    ``scheduler.step()``).

    Args:
      learning_rate: the external rate; must be None when ``relative_step=True``.
      eps: ``(eps_sq, eps_scale)``: added to ``g**2``, and the smallest parameter scale.
      clip_threshold: largest RMS of the normalized update, ``> 0`` (``inf`` disables).
      decay_rate: ``beta2_t = 1 - t**decay_rate``, ``<= 0``.
      beta1: momentum of the lr-scaled update in ``[0, 1)``, or None for none.
      weight_decay: decoupled decay ``p -= weight_decay * lr_t * p``, ``>= 0``.
      scale_parameter: multiply the rate by the parameter's RMS (at least ``eps[1]``).
      relative_step: use the relative step size instead of ``learning_rate``.
      warmup_init: linear warm-up of the relative step size (needs ``relative_step``).
      statistics_dtype: dtype of the statistics, at least this wide (default float32, as HF
        keeps and computes them); None keeps the parameters' dtype (less memory, not HF's
        numbers for bf16/fp16).

    Returns:
      An ``optax.GradientTransformation`` (``...ExtraArgs`` with a metric-driven rate)
      returning descent updates for ``optax.apply_updates``.

    Raises:
      ValueError/TypeError: for the invalid combinations HF rejects (a ``learning_rate`` with
        ``relative_step=True``, ``warmup_init`` without ``relative_step``) and for values
        that make no sense (negative ``eps``, ``clip_threshold <= 0``, ``decay_rate > 0``,
        ``beta1`` outside ``[0, 1)``, negative ``weight_decay``, no ``learning_rate`` with
        ``relative_step=False``), naming the parameter.
    """
    scale_parameter = check_bool("scale_parameter", scale_parameter)
    relative_step = check_bool("relative_step", relative_step)
    warmup_init = check_bool("warmup_init", warmup_init)
    eps_sq, eps_scale = _check_eps_pair(eps)
    check_clip_threshold(clip_threshold)
    check_decay_rate(decay_rate)
    if beta1 is not None:
        check_interval("beta1", beta1, 0.0, 1.0, high_closed=False)
    check_non_negative("weight_decay", weight_decay)
    _check_learning_rate_mode(learning_rate, relative_step, warmup_init, weight_decay)

    if relative_step:
        scale_by_step_size = scale_by_relative_step_size(warmup_init)
        step_size = relative_step_size(warmup_init)
    else:
        scale_by_step_size = apply_learning_rate(learning_rate)
        step_size = learning_rate
    return named_chain(
        (
            "factored_rms",
            scale_by_factored_rms(
                eps=eps_sq, decay_rate=decay_rate, statistics_dtype=statistics_dtype
            ),
        ),
        ("clip", clip_by_update_rms(clip_threshold)),
        # HF folds the parameter scale into its lr, so it comes before beta1 and the decay.
        ("param_scale", scale_by_param_rms(eps_scale)) if scale_parameter else None,
        ("learning_rate", scale_by_step_size),
        (
            ("momentum", ema_of_updates(beta1, statistics_dtype=statistics_dtype))
            if beta1 is not None
            else None
        ),
        (
            "decoupled_weight_decay",
            add_decayed_weights_scaled_by_learning_rate(
                weight_decay, step_size, param_scale_eps=eps_scale if scale_parameter else None
            ),
        )
        # An array weight_decay (optax.inject_hyperparams) may be traced: keep the transform.
        if isinstance(weight_decay, jax.Array) or weight_decay
        else None,
        complex_unsupported="transformers' Adafactor computes on complex values (g**2, rsqrt) "
        "instead of pairs of reals",
    )
