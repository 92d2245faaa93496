"""The ``schedulefree`` package's optimizers (Defazio et al., 2024), each one named chain.

Arguments are the reference classes' names and defaults, with ``learning_rate`` for ``lr``
(``foreach`` is an implementation switch and is not taken; the numbers are those of both
code paths). Hugging Face's ``Trainer`` calls them ``optim="schedule_free_adamw"``,
``"schedule_free_sgd"`` and ``"schedule_free_radam"``; it passes ``weight_decay``,
``warmup_steps`` (not to RAdam) and ``optim_args`` ``r`` / ``weight_lr_power``.

Train / eval mode: the parameters you hold and differentiate are the reference's train-mode
parameters ``y``; evaluate (validation loss, checkpoints for inference) at
``optlib.schedule_free_eval_params(params, opt_state)``, which is what the reference's
parameters hold after ``optimizer.eval()``. There is no mode to switch back.

``learning_rate`` may be a float or a schedule of the update count: the reference reads its
group's ``lr`` at every step, so a torch scheduler stepped after each ``optimizer.step()``
(``sched(k)`` used by update ``k``) gives the same numbers; the warm-up (``warmup_steps``) or
RAdam's rectification multiplies it, as in the reference. A ``MomentumSchedule`` (torch's
``OneCycleLR`` / ``CyclicLR`` with ``cycle_momentum=True``) also drives ``betas[0]`` /
``momentum``, as torch's scheduler overwrites them. A metric-driven learning rate
(``optlib.reduce_lr_on_plateau(...)``) is rejected: the schedule-free step needs the rate
inside its arithmetic (averaging weights, ``z`` and ``y`` steps), not as a final scale.

Step counting is the reference's: ``k = 0`` on the first update, used for the warm-up
``(k + 1) / warmup_steps``, the weights ``(k + 1)**r``, the bias correction
``1 - beta2**(k + 1)``, and ``learning_rate(k)`` (optax's and torch's scheduler convention).
``optax.contrib.schedule_free_adamw`` / ``schedule_free_sgd`` are one step off: their
schedule-free wrapper counts from 1 and evaluates ``learning_rate`` there (for the averaging
weights), while the base optimizer inside evaluates the same schedule from 0 (for the ``z``
step). With ``warmup_steps`` (or any schedule) optax's ``z`` step therefore uses the previous
step's rate (0 on the first step) where the reference uses the current one. optax also has no
``r``, starts ``lr_max`` at 0 instead of -1 and recomputes ``x`` each step; without warm-up or
schedule and with ``r = 0`` its arithmetic is the reference's up to round-off.

Round-off: the step-only scalars are computed without float32 cancellation (the bias
correction as ``-expm1((k + 1) log beta2)``, RAdam's ``rho_t`` by a cancellation-free form,
see ``optlib.transforms.schedule_free.rectification``), so float32 runs stay within ~1e-6 of
the reference's float32 run (which computes these scalars in Python doubles). In float64
RAdam's rectification is the exact value, where the reference's own formula is off by up to
~3e-12 relative in the first adaptive steps.

Low precision: with ``statistics_dtype=None`` the state (``z``, ``exp_avg_sq``) is kept in the
bf16/fp16 parameters' dtype as the reference keeps it, every in-place op of the reference's
step is rounded to that dtype where the reference rounds it, and its Python-double scalars
(the bias correction, the averaging weight ``ckp1`` and the rates) are computed to the
double's float32 rounding (see ``apply_schedule_free``): 100 steps equal the reference's
bf16/fp16 run bit for bit, parameters and state (tested for the three optimizers, with
weight decay and warm-up). Two scalars stay float32 approximations of the reference's
doubles: a schedule's rate (torch's scheduler computes in double) and RAdam's
rectification factor.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from optlib._numerics import DEFAULT_STATISTICS_DTYPE
from optlib._validation import check_bool, check_interval, check_learning_rate, check_real
from optlib.optimizers._links import momentum_from, named_chain, recorded_optimizer
from optlib.transforms.learning_rate import LearningRate, learning_rate_at
from optlib.transforms.moments import check_betas
from optlib.transforms.regularization import add_decoupled_weight_decay, add_weight_decay
from optlib.transforms.schedule_free import (
    apply_schedule_free,
    rectification,
    scale_by_second_moment,
)

__all__ = ["schedule_free_adamw", "schedule_free_radam", "schedule_free_sgd"]

# AdamWScheduleFree / RAdamScheduleFree square a complex gradient as a complex number (g * g,
# not |g|**2): no pairs-of-reals arithmetic to reproduce. SGDScheduleFree is linear in the
# gradient, so its complex arithmetic is the real pairs'.
_SQUARES_COMPLEX = "schedulefree squares complex gradients as complex numbers (g * g, not |g|**2)"


def _check_rate(learning_rate: LearningRate, name: str) -> LearningRate:
    if isinstance(learning_rate, optax.GradientTransformation):
        raise ValueError(
            f"{name}: learning_rate must be a float or a schedule, got a metric-driven "
            f"learning-rate transform {learning_rate!r:.80}; the schedule-free step uses the "
            "rate inside its averaging, so it cannot be applied as a final scale"
        )
    return check_learning_rate(learning_rate)


def _beta1(learning_rate: LearningRate, betas) -> tuple:
    """``betas`` checked; ``betas[0]`` in (0, 1) (``x`` is recovered through ``1 / beta1``)."""
    beta1, beta2 = check_betas(betas)
    if not callable(beta1):
        check_interval("betas[0]", beta1, 0.0, 1.0, low_closed=False, high_closed=False)
    return momentum_from(learning_rate, beta1), beta2


@recorded_optimizer
def schedule_free_adamw(
    learning_rate: LearningRate = 0.0025,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Schedule-Free AdamW (schedulefree.AdamWScheduleFree; HF Trainer ``schedule_free_adamw``).

    ``named_chain(second_moment, decoupled_weight_decay, schedule_free)``; with ``k`` the
    update count, ``lr_k = lr(k) * min(1, (k + 1) / warmup_steps)`` and ``g`` the gradient at
    the parameters ``y``::

        v <- beta2 v + (1 - beta2) g**2;   u = g / (sqrt(v / (1 - beta2**(k+1))) + eps)
        u <- u + weight_decay * y                       (decay at y, after the normalisation)
        y <- y + c_k (z - y) + lr_k (beta1 (1 - c_k) - 1) u;   z <- z - lr_k u

    with the averaging weight ``c_k`` of ``apply_schedule_free`` (``r``, ``weight_lr_power``).
    Evaluate at ``optlib.schedule_free_eval_params(params, opt_state)``. See the module
    docstring for how ``optax.contrib.schedule_free_adamw`` differs.

    Args:
      learning_rate: lr (>= 0): float, schedule, or ``MomentumSchedule`` (drives ``betas[0]``).
      betas: ``(beta1, beta2)``: ``beta1`` in (0, 1) (the reference divides by it in
        ``eval()``), ``beta2`` in [0, 1).
      eps: added to the denominator (>= 0).
      weight_decay: decay coefficient, applied at ``y`` (>= 0).
      warmup_steps: linear warm-up length (>= 0).
      r: polynomial weighting power of the average.
      weight_lr_power: power of the largest lr so far in the averaging weights (>= 0).
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as the reference does.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params``.

    Raises:
      ValueError: for bad values, or a metric-driven ``learning_rate``.
    """
    learning_rate = _check_rate(learning_rate, "schedule_free_adamw")
    beta1, beta2 = _beta1(learning_rate, betas)
    return named_chain(
        ("second_moment", scale_by_second_moment(beta2, eps, statistics_dtype=statistics_dtype)),
        ("decoupled_weight_decay", add_decoupled_weight_decay(weight_decay)),
        (
            "schedule_free",
            apply_schedule_free(
                learning_rate,
                beta1,
                warmup_steps=warmup_steps,
                r=r,
                weight_lr_power=weight_lr_power,
                statistics_dtype=statistics_dtype,
            ),
        ),
        complex_unsupported=_SQUARES_COMPLEX,
    )


@recorded_optimizer
def schedule_free_sgd(
    learning_rate: LearningRate = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Schedule-Free SGD (schedulefree.SGDScheduleFree; HF Trainer ``schedule_free_sgd``).

    ``named_chain(weight_decay, schedule_free)``; with ``lr_k`` warmed up as in
    ``schedule_free_adamw`` and ``g`` the gradient at the parameters ``y``::

        u = g + weight_decay * y
        y <- y + c_k (z - y) + lr_k (momentum (1 - c_k) - 1) u;   z <- z - lr_k u

    ``momentum`` plays ``beta1``'s role. Evaluate at
    ``optlib.schedule_free_eval_params(params, opt_state)``.

    Args:
      learning_rate: lr (>= 0): float, schedule, or ``MomentumSchedule`` (drives ``momentum``).
      momentum: interpolation coefficient, in (0, 1) ("Momentum must be between 0 and 1
        exclusive", as the reference).
      weight_decay: L2 coefficient, added to the gradient at ``y`` (>= 0).
      warmup_steps: linear warm-up length (>= 0).
      r: polynomial weighting power of the average.
      weight_lr_power: power of the largest lr so far in the averaging weights (>= 0).
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as the reference does.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params``.

    Raises:
      ValueError: for bad values, or a metric-driven ``learning_rate``.
    """
    learning_rate = _check_rate(learning_rate, "schedule_free_sgd")
    if not callable(momentum):
        value = check_real("momentum", momentum)
        if isinstance(value, float) and not 0.0 < value < 1.0:  # a traced value passes
            raise ValueError(f"momentum must be between 0 and 1 exclusive, got {momentum!r}")
    return named_chain(
        ("weight_decay", add_weight_decay(weight_decay)),
        (
            "schedule_free",
            apply_schedule_free(
                learning_rate,
                momentum_from(learning_rate, momentum),
                warmup_steps=warmup_steps,
                r=r,
                weight_lr_power=weight_lr_power,
                statistics_dtype=statistics_dtype,
            ),
        ),
    )


def _rectified(learning_rate, beta2: float, silent_sgd_phase: bool):
    """``lr(k) * rect_{k+1}``, with 0 (silent) or 1 as the SGD phase's factor."""
    sgd_phase = 0.0 if silent_sgd_phase else 1.0

    def schedule(count):
        adaptive, rect = rectification(beta2, count)
        return learning_rate_at(learning_rate, count) * jnp.where(adaptive, rect, sgd_phase)

    return schedule


@recorded_optimizer
def schedule_free_radam(
    learning_rate: LearningRate = 0.0025,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    silent_sgd_phase: bool = True,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Schedule-Free RAdam (schedulefree.RAdamScheduleFree; HF Trainer ``schedule_free_radam``).

    ``named_chain(second_moment (rectified), decoupled_weight_decay, schedule_free)``. With
    ``t = k + 1`` and RAdam's ``rho_t`` / ``rect_t`` (``optlib.transforms.schedule_free``)::

        v <- beta2 v + (1 - beta2) g**2
        u = g / (sqrt(v / (1 - beta2**t)) + eps)  if rho_t > 4  else  g
        u <- u + weight_decay * y
        lr_k = lr(k) * (rect_t  if rho_t > 4  else  (0 if silent_sgd_phase else 1))

    then the schedule-free step of ``schedule_free_adamw`` with ``lr_k``. No warm-up
    argument: the rectification is the warm-up (with ``silent_sgd_phase`` the first steps,
    ``t <= 5`` for ``beta2 = 0.999``, only accumulate ``v``).

    Args:
      learning_rate: lr (>= 0): float, schedule, or ``MomentumSchedule`` (drives ``betas[0]``).
      betas: ``(beta1, beta2)``: ``beta1`` in (0, 1), ``beta2`` in [0, 1).
      eps: added to the denominator (>= 0).
      weight_decay: decay coefficient, applied at ``y`` (>= 0).
      r: polynomial weighting power of the average.
      weight_lr_power: power of the largest lr so far in the averaging weights (>= 0).
      silent_sgd_phase: no parameter change while ``rho_t <= 4`` (else plain SGD steps).
      statistics_dtype: dtype of the optimizer's statistics, at least this wide (default
        float32: bf16/fp16 parameters get float32 statistics); None keeps the parameters'
        dtype, as the reference does.

    Returns:
      An ``optax.GradientTransformation``; its ``update`` needs ``params``.

    Raises:
      ValueError: for bad values, or a metric-driven ``learning_rate``.
    """
    learning_rate = _check_rate(learning_rate, "schedule_free_radam")
    beta1, beta2 = _beta1(learning_rate, betas)
    silent_sgd_phase = check_bool("silent_sgd_phase", silent_sgd_phase)
    return named_chain(
        (
            "second_moment",
            scale_by_second_moment(beta2, eps, rectify=True, statistics_dtype=statistics_dtype),
        ),
        ("decoupled_weight_decay", add_decoupled_weight_decay(weight_decay)),
        (
            "schedule_free",
            apply_schedule_free(
                _rectified(learning_rate, beta2, silent_sgd_phase),
                beta1,
                r=r,
                weight_lr_power=weight_lr_power,
                statistics_dtype=statistics_dtype,
            ),
        ),
        complex_unsupported=_SQUARES_COMPLEX,
    )
