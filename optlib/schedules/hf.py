"""Every step-based Hugging Face schedule (``transformers.optimization``) as a jit-able Schedule.

Each function keeps the name and keywords of its ``transformers`` twin, minus ``optimizer``,
and takes the optimizer's learning rate first as ``learning_rate``; ``last_epoch=k`` (a
``LambdaLR`` resumed after step ``k``: its constructor steps to ``k + 1``) gives
``sched(c) = fresh(c + k + 1)``, HF's numbers:

=====================================  ===================================================
HF ``SchedulerType`` / ``get_scheduler``  function (here and in ``transformers``)
=====================================  ===================================================
``"constant"``                         ``get_constant_schedule``
``"constant_with_warmup"``             ``get_constant_schedule_with_warmup``
``"linear"``                           ``get_linear_schedule_with_warmup``
``"cosine"``                           ``get_cosine_schedule_with_warmup``
``"cosine_with_restarts"``             ``get_cosine_with_hard_restarts_schedule_with_warmup``
``"polynomial"``                       ``get_polynomial_decay_schedule_with_warmup``
``"inverse_sqrt"``                     ``get_inverse_sqrt_schedule``
``"cosine_with_min_lr"``               ``get_cosine_with_min_lr_schedule_with_warmup``
``"cosine_warmup_with_min_lr"``        ``get_cosine_with_min_lr_schedule_with_warmup_lr_rate``
``"warmup_stable_decay"``              ``get_wsd_schedule``
=====================================  ===================================================

``schedule(k)`` is ``learning_rate * lr_lambda(k)``, the rate HF's ``LambdaLR`` sets after ``k``
scheduler steps. HF evaluates ``lr_lambda`` in Python float64; here it runs on device, so the
step arithmetic is done on integers first (``num_training_steps - step``, whole cycles split
off with ``divmod``) and only bounded quantities are turned into floats. That keeps float32
within a few ulps of HF's float64 even for horizons near ``2**31`` steps and for cosines that
keep oscillating past ``num_training_steps``.

Besides HF's own errors, bad arguments that HF accepts but that fail or give nonsense later
(negative step counts, ``power < 0``, ``num_training_steps == num_warmup_steps`` for the
polynomial decay, which divides by zero at that step, ...) raise ``ValueError`` here at
construction time.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from optlib._numerics import INT32_MAX, as_float, float_dtype
from optlib._registry import register
from optlib._validation import (
    check_choice,
    check_interval,
    check_learning_rate,
    check_non_negative,
    check_positive,
    check_real,
)
from optlib.schedules._core import takes_last_epoch
from optlib.schedules._steps import Schedule, check_last_epoch, check_step_count, hf_step, ratio

__all__ = [
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_inverse_sqrt_schedule",
    "get_linear_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_wsd_schedule",
]

_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


# --------------------------------------------------------------------------- checks


def _check_min_lr_rate(learning_rate: Any, min_lr: Any, min_lr_rate: Any) -> float:
    """HF's ``min_lr`` xor ``min_lr_rate`` rule; returns the rate ``min_lr / learning_rate``."""
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError(
            f"Only one of min_lr or min_lr_rate should be set, got min_lr={min_lr!r} and "
            f"min_lr_rate={min_lr_rate!r}"
        )
    if min_lr is None and min_lr_rate is None:
        raise ValueError(
            "One of min_lr or min_lr_rate should be set (through `scheduler_specific_kwargs`)"
        )
    if min_lr_rate is not None:
        return check_interval("min_lr_rate", min_lr_rate, 0.0, 1.0)
    learning_rate = check_positive("learning_rate (with min_lr)", learning_rate)
    min_lr = check_interval("min_lr", min_lr, 0.0, learning_rate)
    return min_lr / learning_rate


# --------------------------------------------------------------------------- building blocks
# One place for each piece of math; the public functions below only combine them.


def _linear_warmup(step: jax.Array, num_warmup_steps: int) -> jax.Array:
    """HF's warm-up multiplier ``step / max(1, num_warmup_steps)``."""
    return ratio(step, max(1, num_warmup_steps))


def _add_mod(a: jax.Array, b: jax.Array, modulus: int) -> jax.Array:
    """``(a + b) mod modulus`` for ``a, b`` in ``[0, modulus)``, without overflowing int32."""
    return jnp.where(a >= modulus - b, a - (modulus - b), a + b)


def _multiply_mod(factor: int, value: jax.Array, modulus: int) -> jax.Array:
    """``(factor * value) mod modulus`` for ``value`` in ``[0, modulus)``, exactly in int32.

    Double-and-add over the bits of the Python int ``factor`` (a handful of ops), so the
    product never overflows even for horizons near ``2**31``.
    """
    result = jnp.zeros_like(value)
    addend = value
    remaining = abs(factor)
    while remaining:
        if remaining & 1:
            result = _add_mod(result, addend, modulus)
        addend = _add_mod(addend, addend, modulus)
        remaining >>= 1
    if factor < 0:
        result = jnp.where(result == 0, result, modulus - result)
    return result


def _cycle_phase(step: jax.Array, start: int, period: int, num_cycles: float) -> jax.Array:
    """``frac(num_cycles * (step - start) / period)``: the position inside the current wave.

    HF computes ``num_cycles * progress`` in float64 with ``progress = (step - start) / period``
    growing without bound past the end of training. Here whole periods are split off exactly
    (``step - start = q * period + r``) and whole cycles are dropped in integer arithmetic
    before anything becomes a float, so the phase stays accurate in float32 and, for a whole
    ``num_cycles``, restarts land on exactly HF's steps::

        frac(c * (q*period + r) / period)
          = frac((c_whole * r mod period) / period + c_frac * r / period + frac(c_frac * q))

    with ``c = c_whole + c_frac``. The integer part is kept strictly below 1 after rounding
    (a phase of ``1 - 1/period`` must not round to a restart). ``start`` may be ``-1`` (HF's
    ``step + 1`` variant): the extra step is added to ``r`` with a carry, so nothing
    overflows at ``step = 2**31 - 1``. Only meaningful for ``step >= start``.
    """
    whole = math.floor(num_cycles)
    frac = num_cycles - whole
    lead = max(-start, 0)
    quotient, rest = jnp.divmod(jnp.maximum(step - max(start, 0), 0), period)
    if lead:
        rest = rest + lead
        carry = rest >= period
        quotient = quotient + carry
        rest = jnp.where(carry, rest - period, rest)
    below_one = jnp.nextafter(jnp.asarray(1.0, float_dtype()), 0.0)
    phase = jnp.minimum(ratio(_multiply_mod(whole, rest, period), period), below_one)
    if frac:
        quotient_part = frac * as_float(quotient)
        phase = phase + frac * ratio(rest, period) + (quotient_part - jnp.floor(quotient_part))
        phase = phase - jnp.floor(phase)
    return phase


def _cosine_wave(step: jax.Array, start: int, period: int, num_cycles: float) -> jax.Array:
    """HF's ``0.5 * (1 + cos(pi * num_cycles * 2 * (step - start) / period))``."""
    phase = _cycle_phase(step, start, period, num_cycles)
    return 0.5 * (1.0 + jnp.cos(2.0 * math.pi * phase))


def _floor_at(factor: jax.Array, min_rate: float) -> jax.Array:
    """HF's ``max(0, factor * (1 - min_rate) + min_rate)``: ``[0, 1]`` to ``[min_rate, 1]``."""
    return jnp.maximum(factor * (1.0 - min_rate) + min_rate, 0.0)


def _scaled(learning_rate: Any, lr_lambda: Callable[[jax.Array], jax.Array]) -> Schedule:
    """``step -> learning_rate * lr_lambda(step)``, what torch's ``LambdaLR`` sets.

    ``learning_rate`` may itself be a schedule; it is then evaluated at the same step.
    """

    def schedule(step):
        step = hf_step(step)
        factor = lr_lambda(step)
        base = learning_rate(step) if callable(learning_rate) else learning_rate
        return base * factor

    return schedule


def _with_linear_warmup(
    num_warmup_steps: int, after_warmup: Callable[[jax.Array], jax.Array]
) -> Callable[[jax.Array], jax.Array]:
    """HF's common shape: ``step / max(1, w)`` for ``step < w``, then ``after_warmup(step)``."""

    def lr_lambda(step):
        return jnp.where(
            step < num_warmup_steps, _linear_warmup(step, num_warmup_steps), after_warmup(step)
        )

    return lr_lambda


def resume_after(schedule: Schedule, last_epoch: int) -> Schedule:
    """HF's ``last_epoch``: a ``LambdaLR`` built with ``last_epoch = k`` sets ``lr(k + 1)``
    at construction, so count ``c`` gives the fresh schedule's value at ``c + k + 1``.

    Args:
      schedule: a schedule of this module.
      last_epoch: ``-1`` (unchanged) or the last step taken, ``>= 0``.

    Returns:
      The shifted schedule.
    """
    if check_last_epoch(last_epoch) == -1:
        return schedule
    shift = last_epoch + 1

    def resumed(step):
        step = hf_step(step)
        return schedule(jnp.minimum(step, INT32_MAX - shift) + shift)

    return resumed


_takes_last_epoch = takes_last_epoch(
    resume_after,
    "      last_epoch: HF's ``last_epoch``: ``-1`` (default) starts fresh; ``k >= 0`` resumes\n"
    "        after step ``k`` (count ``c`` gives the fresh value at ``c + k + 1``).\n",
)


# --------------------------------------------------------------------------- schedules


@_takes_last_epoch
def get_constant_schedule(learning_rate: Any) -> Schedule:
    """A constant learning rate (``transformers.get_constant_schedule``).

    ``lr(k) = learning_rate``.

    Args:
      learning_rate: the optimizer's learning rate (a float, or a schedule passed through).

    Returns:
      A schedule ``step -> lr``.
    """
    check_learning_rate(learning_rate)
    return _scaled(learning_rate, lambda step: jnp.ones(jnp.shape(step), float_dtype()))


@_takes_last_epoch
def get_constant_schedule_with_warmup(learning_rate: Any, num_warmup_steps: int) -> Schedule:
    """Linear warm-up from 0, then constant (``transformers.get_constant_schedule_with_warmup``).

    ``lr(k) = learning_rate * k / max(1, w)`` for ``k < w``, else ``learning_rate``.

    Args:
      learning_rate: the optimizer's learning rate (a float or a schedule).
      num_warmup_steps: ``w``, the number of warm-up steps.

    Returns:
      A schedule ``step -> lr``.
    """
    check_learning_rate(learning_rate)
    num_warmup_steps = check_step_count("num_warmup_steps", num_warmup_steps)
    return _scaled(
        learning_rate,
        _with_linear_warmup(
            num_warmup_steps, lambda step: jnp.ones(jnp.shape(step), float_dtype())
        ),
    )


@_takes_last_epoch
def get_linear_schedule_with_warmup(
    learning_rate: Any, num_warmup_steps: int, num_training_steps: int
) -> Schedule:
    """Linear warm-up from 0, then linear decay to 0.

    ``transformers.get_linear_schedule_with_warmup``.

    ``lr(k) = learning_rate * k / max(1, w)`` for ``k < w``, else
    ``learning_rate * max(0, (T - k) / max(1, T - w))``: 0 from ``T`` on.

    Args:
      learning_rate: the optimizer's learning rate (a float or a schedule).
      num_warmup_steps: ``w``, the number of warm-up steps.
      num_training_steps: ``T``, the step at which the rate reaches 0.

    Returns:
      A schedule ``step -> lr``.
    """
    check_learning_rate(learning_rate)
    num_warmup_steps = check_step_count("num_warmup_steps", num_warmup_steps)
    num_training_steps = check_step_count("num_training_steps", num_training_steps)
    decay_steps = max(1, num_training_steps - num_warmup_steps)

    def decay(step):
        return jnp.maximum(ratio(num_training_steps - step, decay_steps), 0.0)

    return _scaled(learning_rate, _with_linear_warmup(num_warmup_steps, decay))


@_takes_last_epoch
def get_cosine_schedule_with_warmup(
    learning_rate: Any, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5
) -> Schedule:
    """Linear warm-up from 0, then a cosine wave (``transformers.get_cosine_schedule_with_warmup``).

    ``lr(k) = learning_rate * k / max(1, w)`` for ``k < w``, else
    ``learning_rate * 0.5 * (1 + cos(2 * pi * num_cycles * (k - w) / max(1, T - w)))``.
    With the default half cycle the rate reaches 0 at ``T``; like HF it rises again after
    ``T`` (the wave keeps going).

    Args:
      learning_rate: the optimizer's learning rate (a float or a schedule).
      num_warmup_steps: ``w``, the number of warm-up steps.
      num_training_steps: ``T``, the total number of training steps.
      num_cycles: number of cosine waves between ``w`` and ``T`` (0.5: one decay to 0).

    Returns:
      A schedule ``step -> lr``.
    """
    check_learning_rate(learning_rate)
    return _cosine_with_floor(learning_rate, num_warmup_steps, num_training_steps, num_cycles, 0.0)


@_takes_last_epoch
def get_cosine_with_min_lr_schedule_with_warmup(
    learning_rate: Any,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
) -> Schedule:
    """Cosine decay to a floor (``transformers.get_cosine_with_min_lr_schedule_with_warmup``).

    The cosine of ``get_cosine_schedule_with_warmup`` rescaled from ``[0, 1]`` to
    ``[m, 1]``: ``lr(k) = learning_rate * (cos_factor(k) * (1 - m) + m)`` after the warm-up,
    with ``m = min_lr_rate`` or ``min_lr / learning_rate`` (exactly one must be given).

    Args:
      learning_rate: the optimizer's learning rate (a float; it must be > 0 with ``min_lr``).
      num_warmup_steps: ``w``, the number of warm-up steps.
      num_training_steps: ``T``, the total number of training steps.
      num_cycles: number of cosine waves between ``w`` and ``T``.
      min_lr: the floor as an absolute learning rate, in ``[0, learning_rate]``.
      min_lr_rate: the floor as a fraction of ``learning_rate``, in ``[0, 1]``.

    Returns:
      A schedule ``step -> lr``.
    """
    check_learning_rate(learning_rate)
    rate = _check_min_lr_rate(learning_rate, min_lr, min_lr_rate)
    return _cosine_with_floor(learning_rate, num_warmup_steps, num_training_steps, num_cycles, rate)


def _cosine_with_floor(
    learning_rate: Any,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float,
    min_lr_rate: float,
) -> Schedule:
    """The body shared by ``cosine`` and ``cosine_with_min_lr`` (HF shares one lambda too)."""
    num_warmup_steps = check_step_count("num_warmup_steps", num_warmup_steps)
    num_training_steps = check_step_count("num_training_steps", num_training_steps)
    num_cycles = check_real("num_cycles", num_cycles)
    period = max(1, num_training_steps - num_warmup_steps)

    def cosine(step):
        return _floor_at(_cosine_wave(step, num_warmup_steps, period, num_cycles), min_lr_rate)

    return _scaled(learning_rate, _with_linear_warmup(num_warmup_steps, cosine))


@_takes_last_epoch
def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
    learning_rate: Any,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
) -> Schedule:
    """Cosine to a floor, one step ahead, with a warm-up from a rate
    (``transformers.get_cosine_with_min_lr_schedule_with_warmup_lr_rate``,
    ``"cosine_warmup_with_min_lr"``).

    Warm-up (``k < w``): ``(k + 1) / max(1, w)`` without ``warmup_lr_rate``, else
    ``r + (1 - r) * k / max(1, w - 1)`` with ``r = warmup_lr_rate``. Then
    ``cos_factor * (1 - m) + m`` with the cosine's progress ``(k - w + 1) / max(1, T - w)``
    (one step ahead of ``cosine_with_min_lr``, as in HF) and ``m`` as in
    ``get_cosine_with_min_lr_schedule_with_warmup``.

    Args:
      learning_rate: the optimizer's learning rate (a float; it must be > 0 with ``min_lr``).
      num_warmup_steps: ``w``, the number of warm-up steps.
      num_training_steps: ``T``, the total number of training steps.
      num_cycles: number of cosine waves between ``w`` and ``T``.
      min_lr: the floor as an absolute learning rate, in ``[0, learning_rate]``.
      min_lr_rate: the floor as a fraction of ``learning_rate``, in ``[0, 1]``.
      warmup_lr_rate: the first warm-up step's rate as a fraction of ``learning_rate``, in
        ``[0, 1]``; ``None`` starts at ``1 / w``.

    Returns:
      A schedule ``step -> lr``.
    """
    check_learning_rate(learning_rate)
    rate = _check_min_lr_rate(learning_rate, min_lr, min_lr_rate)
    num_warmup_steps = check_step_count("num_warmup_steps", num_warmup_steps)
    num_training_steps = check_step_count("num_training_steps", num_training_steps)
    num_cycles = check_real("num_cycles", num_cycles)
    if warmup_lr_rate is not None:
        warmup_lr_rate = check_interval("warmup_lr_rate", warmup_lr_rate, 0.0, 1.0)
    period = max(1, num_training_steps - num_warmup_steps)

    def warmup(step):
        if warmup_lr_rate is None:
            return ratio(step + 1, max(1, num_warmup_steps))  # step + 1 <= w here: no overflow
        ramp = ratio(step, max(1, num_warmup_steps - 1))
        return warmup_lr_rate + (1.0 - warmup_lr_rate) * ramp

    def lr_lambda(step):
        warm = warmup(jnp.minimum(step, num_warmup_steps))
        cosine = _floor_at(_cosine_wave(step, num_warmup_steps - 1, period, num_cycles), rate)
        return jnp.where(step < num_warmup_steps, warm, cosine)

    return _scaled(learning_rate, lr_lambda)


@_takes_last_epoch
def get_cosine_with_hard_restarts_schedule_with_warmup(
    learning_rate: Any, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1
) -> Schedule:
    """Cosine decays to 0 with hard restarts
    (``transformers.get_cosine_with_hard_restarts_schedule_with_warmup``).

    After the warm-up, with ``p = (k - w) / max(1, T - w)``:
    ``lr(k) = learning_rate * 0.5 * (1 + cos(pi * frac(num_cycles * p)))`` for ``p < 1``
    and 0 from ``T`` on. Each of the ``num_cycles`` cycles jumps back to ``learning_rate``;
    the restart steps are found with integer arithmetic, so they land on HF's steps.

    Args:
      learning_rate: the optimizer's learning rate (a float or a schedule).
      num_warmup_steps: ``w``, the number of warm-up steps.
      num_training_steps: ``T``, the total number of training steps.
      num_cycles: number of hard-restart cycles (>= 0).

    Returns:
      A schedule ``step -> lr``.
    """
    check_learning_rate(learning_rate)
    num_warmup_steps = check_step_count("num_warmup_steps", num_warmup_steps)
    num_training_steps = check_step_count("num_training_steps", num_training_steps)
    cycles = check_non_negative("num_cycles", num_cycles)
    period = max(1, num_training_steps - num_warmup_steps)

    def restarts(step):
        phase = _cycle_phase(step, num_warmup_steps, period, cycles)
        wave = jnp.maximum(0.5 * (1.0 + jnp.cos(math.pi * phase)), 0.0)
        return jnp.where(step - num_warmup_steps >= period, 0.0, wave)

    return _scaled(learning_rate, _with_linear_warmup(num_warmup_steps, restarts))


@_takes_last_epoch
def get_polynomial_decay_schedule_with_warmup(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: float = 1e-7,
    power: float = 1.0,
) -> Schedule:
    """Linear warm-up, then polynomial decay to ``lr_end``
    (``transformers.get_polynomial_decay_schedule_with_warmup``, BERT/fairseq style).

    ``lr(k) = (lr0 - lr_end) * ((T - k) / (T - w)) ** power + lr_end`` for ``w <= k <= T``
    and ``lr_end`` after ``T``, with ``lr0 = learning_rate``.

    HF raises when ``lr_end >= learning_rate``; so does this. It also raises (HF fails only
    when the step comes) for ``num_training_steps == num_warmup_steps`` (division by zero at
    that step) and ``power < 0`` (``0 ** power`` at step ``T``), and for ``lr_end < 0``.

    Args:
      learning_rate: the optimizer's learning rate ``lr0`` (a float, > ``lr_end``).
      num_warmup_steps: ``w``, the number of warm-up steps.
      num_training_steps: ``T``, the step at which ``lr_end`` is reached.
      lr_end: the final learning rate.
      power: the polynomial's power (1: linear).

    Returns:
      A schedule ``step -> lr``.
    """
    lr_init = check_non_negative("learning_rate", learning_rate)
    lr_end = check_non_negative("lr_end", lr_end)
    if not lr_init > lr_end:
        raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
    power = check_non_negative("power", power)
    num_warmup_steps = check_step_count("num_warmup_steps", num_warmup_steps)
    num_training_steps = check_step_count("num_training_steps", num_training_steps)
    if num_training_steps == num_warmup_steps:
        raise ValueError(
            "num_training_steps must differ from num_warmup_steps for the polynomial decay "
            f"(HF divides by their difference), got both = {num_training_steps}"
        )
    decay_steps = max(1, num_training_steps - num_warmup_steps)

    def decay(step):
        remaining = jnp.clip(ratio(num_training_steps - step, decay_steps), 0.0, 1.0)
        polynomial = (lr_init - lr_end) * remaining**power + lr_end
        return jnp.where(step > num_training_steps, lr_end, polynomial) / lr_init

    return _scaled(lr_init, _with_linear_warmup(num_warmup_steps, decay))


@_takes_last_epoch
def get_inverse_sqrt_schedule(
    learning_rate: Any, num_warmup_steps: int, timescale: int | None = None
) -> Schedule:
    """Linear warm-up, then inverse square-root decay (``transformers.get_inverse_sqrt_schedule``).

    ``lr(k) = learning_rate / sqrt((k - w + timescale) / timescale)`` for ``k >= w``: equal to
    ``learning_rate`` at ``k = w``. ``timescale`` defaults as in HF to ``num_warmup_steps``, or
    10_000 when that is 0.

    Args:
      learning_rate: the optimizer's learning rate (a float or a schedule).
      num_warmup_steps: ``w``, the number of warm-up steps.
      timescale: the decay's time scale (> 0).

    Returns:
      A schedule ``step -> lr``.
    """
    check_learning_rate(learning_rate)
    num_warmup_steps = check_step_count("num_warmup_steps", num_warmup_steps)
    scale = check_positive(
        "timescale", num_warmup_steps or 10_000 if timescale is None else timescale
    )

    def decay(step):
        shifted = as_float(jnp.maximum(step - num_warmup_steps, 0)) + scale
        return 1.0 / jnp.sqrt(shifted / scale)

    return _scaled(learning_rate, _with_linear_warmup(num_warmup_steps, decay))


def _wsd_warmup(progress: jax.Array, warmup_type: str) -> jax.Array:
    """HF WSD warm-up shapes, rising from 0 to 1 as ``progress`` goes from 0 to 1."""
    progress = jnp.clip(progress, 0.0, 1.0)
    if warmup_type == "linear":
        return progress
    if warmup_type == "cosine":
        return 0.5 * (1.0 - jnp.cos(math.pi * progress))
    return 1.0 - jnp.sqrt(1.0 - progress)  # "1-sqrt"


@_takes_last_epoch
def get_wsd_schedule(
    learning_rate: Any,
    num_warmup_steps: int,
    num_decay_steps: int,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0,
    num_cycles: float = 0.5,
) -> Schedule:
    """Warmup-stable-decay (``transformers.get_wsd_schedule``, ``"warmup_stable_decay"``).

    Three phases, with ``m = min_lr_ratio``:

    1. warm-up (``k < w``): from ``m`` to 1 following ``warmup_type``
       (``linear``: ``p``; ``cosine``: ``(1 - cos(pi p)) / 2``; ``1-sqrt``: ``1 - sqrt(1 - p)``,
       ``p = k / max(1, w)``), rescaled to ``[m, 1]``;
    2. stable (``num_stable_steps`` steps): 1;
    3. decay (``num_decay_steps`` steps): from 1 towards ``m`` following ``decay_type``
       (``linear``: ``1 - p``; ``cosine``: ``(1 + cos(2 pi num_cycles p)) / 2``; ``1-sqrt``:
       ``1 - sqrt(p)``), rescaled to ``[m, 1]``; then ``m`` for good.

    ``lr(k) = learning_rate * multiplier(k)``. ``num_stable_steps`` defaults to
    ``num_training_steps - num_warmup_steps - num_decay_steps`` (HF); given both, HF warns and
    uses ``num_stable_steps``, and so does this. Deviation: a negative stable phase
    (warm-up plus decay longer than ``num_training_steps``) raises instead of overlapping.

    Args:
      learning_rate: the optimizer's learning rate (a float or a schedule).
      num_warmup_steps: ``w``, the number of warm-up steps.
      num_decay_steps: the number of decay steps.
      num_training_steps: total steps (warm-up + stable + decay), used when
        ``num_stable_steps`` is not given.
      num_stable_steps: the number of steps at the full rate.
      warmup_type: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.
      decay_type: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.
      min_lr_ratio: ``m``, the start and end rate as a fraction of ``learning_rate``, in ``[0, 1]``.
      num_cycles: cosine waves over the decay phase (``decay_type="cosine"``).

    Returns:
      A schedule ``step -> lr``.
    """
    check_learning_rate(learning_rate)
    if num_training_steps is None and num_stable_steps is None:
        raise ValueError("Either num_training_steps or num_stable_steps must be specified.")
    if num_training_steps is not None and num_stable_steps is not None:
        warnings.warn(
            "Both num_training_steps and num_stable_steps are specified. "
            "num_stable_steps will be used.",
            stacklevel=2,
        )
    if warmup_type not in _WSD_SHAPES:
        check_choice("warmup_type", warmup_type, _WSD_SHAPES)
    if decay_type not in _WSD_SHAPES:
        check_choice("decay_type", decay_type, _WSD_SHAPES)
    num_warmup_steps = check_step_count("num_warmup_steps", num_warmup_steps)
    num_decay_steps = check_step_count("num_decay_steps", num_decay_steps)
    if num_stable_steps is None:
        num_training_steps = check_step_count("num_training_steps", num_training_steps)
        num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
        if num_stable_steps < 0:
            raise ValueError(
                f"num_warmup_steps + num_decay_steps ({num_warmup_steps} + {num_decay_steps}) must "
                f"not exceed num_training_steps ({num_training_steps})"
            )
    num_stable_steps = check_step_count("num_stable_steps", num_stable_steps)
    min_lr_ratio = check_interval("min_lr_ratio", min_lr_ratio, 0.0, 1.0)
    num_cycles = check_real("num_cycles", num_cycles)
    decay_start = min(num_warmup_steps + num_stable_steps, INT32_MAX)
    decay_end = min(decay_start + num_decay_steps, INT32_MAX)
    decay_steps = max(1, num_decay_steps)

    def decay(step):
        if decay_type == "cosine":
            return _cosine_wave(step, decay_start, decay_steps, num_cycles)
        if decay_type == "linear":  # 1 - p, with the integer count of steps left
            return ratio(decay_steps - (step - decay_start), decay_steps)
        return 1.0 - jnp.sqrt(jnp.clip(ratio(step - decay_start, decay_steps), 0.0, 1.0))

    def lr_lambda(step):
        warm = _wsd_warmup(_linear_warmup(step, num_warmup_steps), warmup_type)
        return jnp.select(
            [step < num_warmup_steps, step < decay_start, step < decay_end],
            [_floor_at(warm, min_lr_ratio), 1.0, _floor_at(decay(step), min_lr_ratio)],
            min_lr_ratio,
        ).astype(float_dtype())

    return _scaled(learning_rate, lr_lambda)


# --------------------------------------------------------------------------- registry rows
# forwards/requires follow transformers.get_scheduler: which of num_warmup_steps /
# num_training_steps it passes on, and which it insists on (in its order).

_BOTH = ("num_warmup_steps", "num_training_steps")
_WARMUP = ("num_warmup_steps",)

for _name, _factory, _forwards, _requires in (
    ("constant", get_constant_schedule, (), ()),
    ("constant_with_warmup", get_constant_schedule_with_warmup, _WARMUP, _WARMUP),
    ("linear", get_linear_schedule_with_warmup, _BOTH, _BOTH),
    ("cosine", get_cosine_schedule_with_warmup, _BOTH, _BOTH),
    ("cosine_with_restarts", get_cosine_with_hard_restarts_schedule_with_warmup, _BOTH, _BOTH),
    ("polynomial", get_polynomial_decay_schedule_with_warmup, _BOTH, _BOTH),
    ("inverse_sqrt", get_inverse_sqrt_schedule, _WARMUP, _WARMUP),
    ("cosine_with_min_lr", get_cosine_with_min_lr_schedule_with_warmup, _BOTH, _BOTH),
    (
        "cosine_warmup_with_min_lr",
        get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
        _BOTH,
        _BOTH,
    ),
    ("warmup_stable_decay", get_wsd_schedule, _BOTH, _WARMUP),
):
    register(
        _name,
        _factory,
        f"transformers.{_factory.__name__}",
        family="hf",
        forwards=_forwards,
        requires=_requires,
    )
del _name, _factory, _forwards, _requires
