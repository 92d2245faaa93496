"""Optimizers of reference packages that Hugging Face Trainer offers.

Each is ``named_chain`` of optlib transforms with the reference's argument names and
defaults (``learning_rate`` for ``lr``); the name Trainer's ``TrainingArguments.optim`` uses
for it is given in each docstring:

* ``lion`` -- bitsandbytes' 32-bit Lion (``optim="lion_32bit"``);
* ``ademamix`` -- bitsandbytes' 32-bit AdEMAMix (``optim="ademamix"``);
* ``stable_adamw`` -- torch-optimi's StableAdamW (``optim="stable_adamw"``).

bitsandbytes keeps its 32-bit state in float32 and computes in float32 whatever the
parameters' dtype; optlib keeps statistics in float32 or wider (float64 parameters: float64),
so float32 runs reproduce bitsandbytes and float64 runs its math without float32 rounding.
With ``statistics_dtype=None`` bf16/fp16 parameters keep bf16/fp16 statistics, rounded where
the pure-torch references round them when run on bf16/fp16 tensors: ``lion_pytorch.Lion``,
bitsandbytes' ``_ReferenceAdEMAMix`` and ``optimi.StableAdamW(kahan_sum=False)``; with a
float or scheduled ``learning_rate`` the parameters then equal those references' bit for
bit (a metric-driven rate is applied by the last link, as with float32 statistics).
Storage switches of the references (``optim_bits``, ``min_8bit_size``, ``is_paged``,
optimi's ``foreach``/``triton``/``gradient_release``) have no meaning here and are not taken.
"""

from __future__ import annotations

from typing import Any

import optax

from optlib._numerics import DEFAULT_STATISTICS_DTYPE, rounds_like_torch
from optlib._validation import check_bool, check_non_negative, check_positive
from optlib.optimizers._links import (
    cycled_betas,
    learning_rate_link,
    momentum_from,
    named_chain,
    recorded_optimizer,
    reject_momentum_schedule,
    weight_decay_links,
)
from optlib.transforms.extra_moments import (
    check_ademamix_betas,
    scale_by_ademamix,
    scale_by_lion,
    scale_by_stable_adam,
)
from optlib.transforms.learning_rate import LearningRate, torch_parameter_step

__all__ = ["ademamix", "lion", "stable_adamw"]


def _rate_inside(learning_rate: LearningRate, statistics_dtype: Any) -> bool:
    """Whether the statistics transform applies the rate itself: where the reference
    multiplies ``lr`` into a rounded tensor op and the statistics are rounded like its
    (``rounds_like_torch``); a metric-driven rate stays in the last link."""
    return rounds_like_torch(statistics_dtype) and not isinstance(
        learning_rate, optax.GradientTransformation
    )


@recorded_optimizer
def lion(
    learning_rate: LearningRate = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Lion (bitsandbytes.optim.Lion, 32-bit; Trainer's ``optim="lion_32bit"``).

    ``chain(scale_by_lion, add_decoupled_weight_decay, apply_learning_rate)``::

        c_t = b1 * m_{t-1} + (1 - b1) * g_t;   m_t = b2 * m_{t-1} + (1 - b2) * g_t
        p  <- p * (1 - lr * weight_decay) - lr * sign(c_t)

    The same numbers as ``lion_pytorch.Lion`` (its default ``decoupled_weight_decay=False``).
    Trainer builds it with ``lr=learning_rate``, ``betas=(adam_beta1, adam_beta2)`` and
    ``weight_decay`` from its ``TrainingArguments`` (so ``betas=(0.9, 0.999)`` there by
    default); these defaults are bitsandbytes'. ``optax.lion`` has the same update.

    Args:
      learning_rate: lr (>= 0): float, schedule, ``MomentumSchedule`` (drives ``betas[0]``,
        as torch's ``cycle_momentum`` does) or lr transform.
      betas: ``(beta1, beta2)``, each in [0, 1).
      weight_decay: decoupled weight decay coefficient (>= 0).
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32, as the 32-bit reference keeps them); None keeps the parameters' dtype and
        rounds as ``lion_pytorch.Lion`` does on bf16/fp16 tensors, its parameter step
        ``p.mul_(1 - lr * wd)`` and ``p.add_(update, alpha=-lr)`` included.

    Returns:
      An ``optax.GradientTransformation``.
    """
    _, decoupled = weight_decay_links(weight_decay, True, statistics_dtype)
    return named_chain(
        (
            "lion",
            scale_by_lion(cycled_betas(learning_rate, betas), statistics_dtype=statistics_dtype),
        ),
        decoupled,
        # lion_pytorch: p.mul_(1 - lr * wd); p.add_(update, alpha=-lr)
        learning_rate_link(
            learning_rate,
            statistics_dtype=statistics_dtype,
            rate_rounded=True,
            decoupled_weight_decay=weight_decay,
        ),
        complex_unsupported="bitsandbytes' Lion drops the imaginary part and lion_pytorch takes "
        "the complex sign z / |z|; neither treats it as a pair of reals",
    )


@recorded_optimizer
def ademamix(
    learning_rate: LearningRate = 1e-3,
    betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
    alpha: float = 5.0,
    t_alpha: int | None = None,
    t_beta3: int | None = None,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """AdEMAMix (bitsandbytes.optim.AdEMAMix, 32-bit; Trainer's ``optim="ademamix"``).

    ``chain(scale_by_ademamix, add_decoupled_weight_decay, apply_learning_rate)``::

        p <- p * (1 - lr * weight_decay)
               - lr * (m1_t / (1 - b1**t) + alpha_t * m2_t) / (sqrt(nu_t / (1 - b2**t)) + eps)

    with a fast (``beta1``) and a slow (``beta3``, warmed up over ``t_beta3`` steps) moving
    average of the gradients and ``alpha`` warmed up linearly over ``t_alpha`` steps (see
    ``scale_by_ademamix``). Trainer passes ``betas=(beta1, beta2, beta3)``, ``alpha``,
    ``eps``, ``t_alpha``, ``t_beta3`` from ``optim_args`` (defaults ``adam_beta1``,
    ``adam_beta2``, 0.9999, 5.0, ``adam_epsilon``), ``lr`` and ``weight_decay``.
    ``optax.contrib.ademamix`` has the same update for constant ``alpha`` and ``beta3``
    (no ``t_alpha``/``t_beta3`` warm-ups).

    Args:
      learning_rate: lr (>= 0): float, schedule, ``MomentumSchedule`` (drives ``betas[0]``)
        or lr transform.
      betas: ``(beta1, beta2, beta3)``, each in [0, 1).
      alpha: weight of the slow average (>= 0).
      t_alpha: warm-up steps of ``alpha`` (``None`` or 0: none).
      t_beta3: warm-up steps of ``beta3`` (``None`` or 0: none); needs beta1, beta3 > 0.
      eps: added to the denominator (>= 0).
      weight_decay: decoupled weight decay coefficient (>= 0).
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32, as the 32-bit reference keeps them); None keeps the parameters' dtype and
        rounds as bitsandbytes' pure-torch ``_ReferenceAdEMAMix`` does on bf16/fp16 tensors,
        whose step is ``p.add_(-lr * (u + weight_decay * p))`` (with a float or scheduled
        ``learning_rate``; a metric-driven one decays as above).

    Returns:
      An ``optax.GradientTransformation``.
    """
    beta1, beta2, beta3 = check_ademamix_betas(betas)
    _, decoupled = weight_decay_links(weight_decay, True, statistics_dtype)
    # With statistics rounded like the reference's, the transform ends with its rounded
    # update.add_(p, alpha=weight_decay) and -lr * update; the last link adds that step
    inside = _rate_inside(learning_rate, statistics_dtype)
    scaling = scale_by_ademamix(
        (momentum_from(learning_rate, beta1), beta2, beta3),
        alpha,
        t_alpha,
        t_beta3,
        eps,
        weight_decay if inside else 0.0,
        statistics_dtype=statistics_dtype,
        learning_rate=learning_rate if inside else None,
    )
    return named_chain(
        ("ademamix", scaling),
        decoupled,
        ("learning_rate", torch_parameter_step(learning_rate, rate_applied=True))
        if inside
        else learning_rate_link(
            learning_rate, statistics_dtype=statistics_dtype, decoupled_weight_decay=weight_decay
        ),
        complex_unsupported="bitsandbytes' AdEMAMix does not treat complex parameters as pairs "
        "of reals",
    )


@recorded_optimizer
def stable_adamw(
    learning_rate: LearningRate,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 1e-2,
    eps: float = 1e-6,
    decouple_lr: bool = False,
    max_lr: float | None = None,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """StableAdamW (optimi.StableAdamW from torch-optimi; Trainer's ``optim="stable_adamw"``).

    ``chain(scale_by_stable_adam, apply_learning_rate)``: AdamW with debiased betas whose
    step size is divided, per tensor, by ``max(1, rms_t)``,
    ``rms_t = sqrt(mean(g_t**2 / max(v_t, eps**2)))``::

        lr_t = lr / max(1, rms_t)
        p   <- p * (1 - lr_t * weight_decay) - lr_t * m_t / (sqrt(v_t) + eps)

    With ``decouple_lr=True`` the decay is "fully decoupled", ``1 - lr_t / max_lr *
    weight_decay``, i.e. ``weight_decay / max_lr`` in the chain. optimi's ``kahan_sum`` only
    acts on float16/bfloat16 parameters (float32/float64 numbers are the same with or without
    it) and is not taken: optimi turns it on by default for those, and bf16/fp16 runs here
    (``statistics_dtype=None``) are optimi's with ``kahan_sum=False``. Like optimi,
    ``learning_rate`` has no default. optimi stores ``beta1`` outside a ``betas`` entry, so
    torch's ``cycle_momentum`` cannot drive it; a momentum-cycling ``learning_rate`` is
    rejected the same way. Trainer passes ``lr``, ``betas=(adam_beta1,
    adam_beta2)``, ``eps=adam_epsilon``, ``weight_decay`` and ``decouple_lr``, ``max_lr``,
    ``kahan_sum`` from ``optim_args``. ``optax.adamw`` has no update clipping nor debiased betas.

    Args:
      learning_rate: lr (>= 0): float, schedule or lr transform.
      betas: ``(beta1, beta2)``, each in [0, 1).
      weight_decay: decoupled weight decay coefficient (>= 0).
      eps: added to the denominator (>= 0).
      decouple_lr: fully decoupled weight decay (not scaled by ``lr / max_lr``'s lr).
      max_lr: the largest scheduled lr, for ``decouple_lr`` (> 0); default: the float
        ``learning_rate`` (required with ``decouple_lr`` when it is a schedule).
      statistics_dtype: dtype of the moments, at least this wide (default float32); None
        keeps the parameters' dtype and rounds as optimi does on bf16/fp16 tensors without
        its ``kahan_sum`` (``kahan_sum=False``), its per-tensor ``p.mul_(1 - lr_t * wd)`` and
        ``p.addcdiv_`` included (with a float or scheduled ``learning_rate``).

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: for bad values, a momentum-cycling ``learning_rate``, or ``decouple_lr``
        without a usable ``max_lr``.
    """
    reject_momentum_schedule(learning_rate, "stable_adamw")
    weight_decay = check_non_negative("weight_decay", weight_decay)
    decouple_lr = check_bool("decouple_lr", decouple_lr)
    if max_lr is not None:
        max_lr = check_positive("max_lr", max_lr)
    if decouple_lr:
        if max_lr is None:
            if not isinstance(learning_rate, (int, float)) or isinstance(learning_rate, bool):
                raise ValueError(
                    "decouple_lr=True with a scheduled learning_rate needs max_lr (the largest "
                    f"scheduled rate), got max_lr=None and learning_rate={learning_rate!r}"
                )
            max_lr = check_positive("max_lr (= learning_rate)", learning_rate)
        weight_decay = weight_decay / max_lr
    # With statistics rounded like optimi's, the transform applies its per-tensor rate
    # (p.mul_(1 - lr_t * wd), p.addcdiv_(..., value=-lr_t)); the last link adds that step
    inside = _rate_inside(learning_rate, statistics_dtype)
    return named_chain(
        (
            "stable_adam",
            scale_by_stable_adam(
                betas,
                eps,
                weight_decay,
                statistics_dtype=statistics_dtype,
                learning_rate=learning_rate if inside else None,
            ),
        ),
        ("learning_rate", torch_parameter_step(learning_rate, rate_applied=True))
        if inside
        else learning_rate_link(learning_rate),
        complex_unsupported="optimi.StableAdamW does not support complex parameters",
    )
