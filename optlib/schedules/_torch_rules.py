"""What one ``scheduler.step()`` of a torch scheduler does to ``group['lr']``.

Each optlib torch schedule is a ``TorchSchedule``: a callable ``step -> lr`` that also carries
its *rule*, the recursive form torch actually runs. ``SequentialLR`` and ``ChainedScheduler``
(``_torch_compose``) read the rules to reproduce torch's numbers in closed form. Three rules
cover every step-based scheduler:

* ``Scaled``: torch multiplies the current lr by a ratio each step (StepLR, MultiStepLR,
  ExponentialLR, LinearLR, ConstantLR, PolynomialLR, MultiplicativeLR). Alone,
  ``lr_t = base * factor(t)``.
* ``Absolute``: torch sets the lr from the step alone and ignores the current lr (LambdaLR,
  CyclicLR, OneCycleLR, CosineAnnealingWarmRestarts).
* ``CosineAnnealing``: torch's recursion ``lr <- eta_min + ratio_t * (lr - eta_min)``, with an
  additive restart one step after each minimum.

This module also holds the integer step arithmetic every periodic or staircase schedule uses:
optax counts are int32 and float32 cannot hold step numbers above 2**24 exactly, so cycle
indices and positions are computed on integers and only converted to float at the end.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from optlib._numerics import INT32_MAX, as_float

# ----------------------------------------------------------------------------- step arithmetic


def step_array(step) -> jax.Array:
    """The update count as int32, clipped to ``[0, 2**31 - 1]`` (where optax's count saturates)."""
    step = jnp.asarray(step)
    if not jnp.issubdtype(step.dtype, jnp.integer):
        raise TypeError(
            f"torch schedules take an integer step (optax's update count), got dtype {step.dtype}"
        )
    return jnp.clip(step, 0, INT32_MAX).astype(jnp.int32)


def shifted_step(step, offset: int) -> jax.Array:
    """``step_array(step) + offset``, saturating at ``2**31 - 1`` like optax's count."""
    step = step_array(step)
    if offset == 0:
        return step
    return jnp.minimum(step, INT32_MAX - offset) + offset


def is_fractional(step) -> bool:
    """Whether ``step`` is a float (a fractional epoch) rather than an update count."""
    return bool(jnp.issubdtype(jnp.asarray(step).dtype, jnp.floating))


def user_step(step: jax.Array) -> jax.Array:
    """The step handed to a user function (``lr_lambda``, ``scale_fn``), where torch passes a
    Python int: the default integer dtype, so that ``1 / (1 + step)`` is float64 under x64."""
    return jnp.asarray(step, dtype=int)


def div_mod(step: jax.Array, divisor: int) -> tuple[jax.Array, jax.Array]:
    """``(step // divisor, step % divisor)`` on int32, for a Python ``divisor >= 1`` of any size."""
    if divisor > INT32_MAX:  # every int32 step is below the divisor
        return jnp.zeros_like(step), step
    return step // divisor, step % divisor


def reached(step: jax.Array, count: int) -> jax.Array:
    """``step >= count`` for a Python ``count`` of any size."""
    if count > INT32_MAX:
        return jnp.zeros(jnp.shape(step), bool)
    return step >= count


def count_reached(table, step: jax.Array) -> jax.Array:
    """How many entries of the int32 ``table`` are ``<= step`` (torch's ``bisect_right``).

    An elementwise comparison: tables here are short (milestones, <= 32 cycle starts), and
    this compiles to far less than a binary search.
    """
    table = np.asarray(table, dtype=np.int32)
    if table.size == 0:
        return jnp.zeros_like(step)
    return jnp.sum(jnp.asarray(step)[..., None] >= table, axis=-1, dtype=jnp.int32)


def minus(step: jax.Array, offset: float) -> jax.Array:
    """``step - offset`` as a float, exact in the integer part.

    The integer part of ``offset`` is subtracted on int32 (no rounding, even above 2**24), its
    fraction on floats.
    """
    whole = min(max(math.floor(offset), 0), INT32_MAX)
    return as_float(step - whole) + (whole - offset)


def power(base: float, exponent: jax.Array) -> jax.Array:
    """``base ** exponent`` for ``base > 0`` and an integer array ``exponent``.

    Computed as ``exp(exponent * log(base))`` with ``log(base)`` taken in float64 by Python:
    a float32 ``base`` would carry its rounding error ``exponent`` times (2e-5 after 300 steps),
    this carries it once.
    """
    return jnp.exp(as_float(exponent) * math.log(base))


def half_cosine(remaining, length) -> jax.Array:
    """``(1 + cos(pi * (1 - remaining / length))) / 2``, a half cosine falling from 1 to 0.

    Written ``sin(pi/2 * remaining/length) ** 2``: exact near the minimum, where
    ``1 + cos(x)`` would cancel to a few ulps.
    """
    return jnp.sin((math.pi / 2) * (remaining / length)) ** 2


def cosine_anneal(start, end, done, remaining, length) -> jax.Array:
    """``end + (start - end) * (1 + cos(pi * done / length)) / 2``, from ``start`` at ``done=0``
    to ``end`` at ``done=length`` (``done + remaining = length``).

    Written ``start * half_cosine(remaining) + end * half_cosine(done)``: two positive terms,
    so exact relative to the value at both ends (the textbook form cancels when the value is
    far below ``start`` or ``end``).
    """
    return start * half_cosine(remaining, length) + end * half_cosine(done, length)


# --------------------------------------------------------------------------------- the rules


@dataclasses.dataclass(frozen=True)
class Scaled:
    """torch multiplies the current lr by a ratio at each step (a "chainable" scheduler).

    Attributes:
      factor: ``t -> factor(t)``: alone, torch's lr after ``t`` steps is ``base * factor(t)``
        (the construction step included: ``factor(0)`` is its multiplier).
      partial: ``(a, b) -> ratio(a+1) * ... * ratio(b)``, the product of the multipliers of
        steps ``a+1..b`` (``a >= 0``; ``a = -1`` only for ``milestone_factor=None``).
      milestone_factor: what ``SequentialLR`` sets at a milestone, where torch jumps to the
        scheduler's closed form at epoch 0: ``lr = base * milestone_factor``. ``None`` when
        torch has no closed form (MultiplicativeLR): the milestone then multiplies the current
        lr by ``partial(-1, 0)``.
    """

    factor: Callable[[jax.Array], jax.Array]
    partial: Callable[[jax.Array, jax.Array], jax.Array]
    milestone_factor: float | None

    def ratio(self, step: jax.Array) -> jax.Array:
        """The multiplier of step ``step`` (of the construction step for ``step = 0``)."""
        initial = self.factor(jnp.zeros_like(step))
        return jnp.where(step == 0, initial, self.partial(jnp.maximum(step - 1, 0), step))


@dataclasses.dataclass(frozen=True)
class Absolute:
    """torch sets the lr from the step alone, whatever the current lr is."""

    value: Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class CosineAnnealing:
    """torch.optim.lr_scheduler.CosineAnnealingLR's recursion.

    Each step ``lr <- eta_min + ratio_t * (lr - eta_min)`` with
    ``ratio_t = (1 + cos(pi t / T_max)) / (1 + cos(pi (t-1) / T_max))``, except one step after
    each minimum (``t = T_max + 1 (mod 2 T_max)``), where it adds
    ``(base - eta_min) * (1 - cos(pi / T_max)) / 2``. Alone this is the closed form
    ``eta_min + (base - eta_min) * (1 + cos(pi t / T_max)) / 2``, oscillating past ``T_max``.
    """

    t_max: int
    eta_min: float
    base: float

    def _to_minimum(self, step: jax.Array) -> jax.Array:
        """Integer distance from ``step`` to the nearest minimum (``T_max`` mod ``2 T_max``)."""
        _, phase = div_mod(step, 2 * self.t_max)  # position in the 2 * T_max period
        return jnp.abs(minus(phase, self.t_max))

    def factor(self, step: jax.Array) -> jax.Array:
        """``(1 + cos(pi * step / T_max)) / 2``."""
        return half_cosine(self._to_minimum(step), self.t_max)

    def value(self, step: jax.Array) -> jax.Array:
        to_minimum = self._to_minimum(step)
        return cosine_anneal(
            self.base, self.eta_min, self.t_max - to_minimum, to_minimum, self.t_max
        )

    def is_restart(self, step: jax.Array) -> jax.Array:
        """Whether ``step`` is one after a minimum, where torch adds instead of multiplying."""
        period = 2 * self.t_max
        restart_phase = (self.t_max + 1) % period
        if restart_phase > INT32_MAX:
            return jnp.zeros(jnp.shape(step), bool)
        _, phase = div_mod(step, period)
        return (step >= 1) & (phase == restart_phase)

    def restart_increment(self) -> float:
        """What torch adds one step after a minimum: ``(base - eta_min) * (1 - cos(pi/T)) / 2``."""
        return (self.base - self.eta_min) * math.sin(math.pi / (2 * self.t_max)) ** 2

    def apply(self, lr: jax.Array, step: jax.Array) -> jax.Array:
        """torch's step ``step`` applied to the current ``lr`` (step 0, construction: unchanged)."""
        restart = self.is_restart(step)
        previous = self.factor(jnp.maximum(step - 1, 0))
        ratio = self.factor(step) / jnp.where(restart, 1.0, previous)
        stepped = jnp.where(
            restart,
            lr + self.restart_increment(),
            self.eta_min + ratio * (lr - self.eta_min),
        )
        return jnp.where(step == 0, lr, stepped)


@dataclasses.dataclass(frozen=True)
class SwaAnnealing:
    """torch.optim.swa_utils.SWALR's step, which anneals from the lr it finds.

    Each step ``k`` torch recovers the lr it started from out of the current one
    (``(lr - a_{k-1} swa_lr) / (1 - a_{k-1})``) and sets ``swa_lr * a_k + start * (1 - a_k)``,
    ``a_k = anneal(min(1, k / anneal_epochs))``. So the lr goes from whatever it was when the
    scheduler took over (``start``) to ``swa_lr`` in ``anneal_epochs`` steps, then stays there.

    Attributes:
      base: torch's base lr (the start when SWALR runs from construction).
      swa_lr: the final lr.
      anneal_epochs: steps of the annealing (0: ``swa_lr`` from the start).
      cosine: ``anneal(t) = (1 - cos(pi t)) / 2`` if True, else ``anneal(t) = t``.
    """

    base: float
    swa_lr: float
    anneal_epochs: int
    cosine: bool

    def alpha(self, step: jax.Array) -> jax.Array:
        """``a_k`` for SWALR's step ``k`` (``max(1, k)`` when ``anneal_epochs == 0``)."""
        if self.anneal_epochs == 0:
            step = jnp.maximum(step, 1)
        progress = jnp.clip(as_float(step) / max(1, self.anneal_epochs), 0.0, 1.0)
        return (1 - jnp.cos(math.pi * progress)) / 2 if self.cosine else progress

    def from_start(self, start: jax.Array, step: jax.Array) -> jax.Array:
        """The lr after SWALR's step ``step`` when it took over at ``start``."""
        alpha = self.alpha(step)
        return self.swa_lr * alpha + start * (1 - alpha)

    def value(self, step: jax.Array) -> jax.Array:
        return self.from_start(as_float(self.base), step)


@dataclasses.dataclass(frozen=True)
class Composite:
    """SequentialLR / ChainedScheduler: not a rule torch can nest (see ``_torch_compose``)."""

    value: Callable[[jax.Array], jax.Array]


Rule = Scaled | Absolute | CosineAnnealing | SwaAnnealing | Composite


@dataclasses.dataclass(frozen=True)
class TorchSchedule:
    """A ``torch.optim.lr_scheduler`` schedule: ``step -> lr`` plus torch's recursive form.

    Calling it gives the learning rate torch's optimizer holds after ``step`` calls of
    ``scheduler.step()``, as the default float dtype. It is an ``optax.Schedule``.

    Attributes:
      name: the torch class, e.g. ``"StepLR"``.
      learning_rate: torch's base lr (the optimizer's ``lr``, ``group['initial_lr']``); for
        CyclicLR and OneCycleLR the optimizer lr they overwrite (may be ``None``).
      rule: what one ``scheduler.step()`` does to the lr (``Scaled``, ``Absolute``,
        ``CosineAnnealing`` or ``Composite``); read by SequentialLR / ChainedScheduler.
      initial_lr: for CyclicLR / OneCycleLR, the ``group['initial_lr']`` torch leaves when
        this scheduler is built first on a fresh optimizer (``base_lr``,
        ``max_lr / div_factor``): the base of the schedulers built after it.
      fractional: for a scheduler whose ``step(epoch)`` takes a fractional epoch
        (CosineAnnealingWarmRestarts), ``epoch -> lr`` for a float epoch; a float step
        then calls it (negative epochs are clipped to 0). ``None``: float steps raise.
      last_epoch: torch's ``last_epoch`` keyword: ``-1`` for a fresh scheduler, ``k >= 0`` for
        one resumed after step ``k`` (see ``resumed``).
    """

    name: str
    learning_rate: float | None
    rule: Rule
    initial_lr: float | None = None
    fractional: Callable[[jax.Array], jax.Array] | None = None
    last_epoch: int = -1

    def __call__(self, step) -> jax.Array:
        if self.fractional is not None and is_fractional(step):
            shift = self.last_epoch + 1
            return as_float(self.fractional(jnp.maximum(as_float(step), 0.0) + shift))
        step = step_array(step)
        if self.last_epoch >= 0:
            return as_float(self.resumed(step))
        rule = self.rule
        if isinstance(rule, Scaled):
            return self.learning_rate * as_float(rule.factor(step))  # type: ignore[operator]  # a Scaled rule always has a base lr
        return as_float(rule.value(step))

    def resumed(self, count: jax.Array) -> jax.Array:
        """The lr at ``count`` of torch's scheduler built with ``last_epoch = k`` (``k >= 0``).

        torch's constructor takes one step, to ``last_epoch = k + 1``; a scheduler that sets the
        lr from the step (``Absolute``, the composites) then gives its value at ``count + k +
        1``. A recursive one (``Scaled``, ``CosineAnnealing``) keeps the optimizer's lr at that
        construction step -- the lr after step ``k``, ``base * factor(k)`` -- and multiplies it by
        the multipliers of steps ``k + 2 ...`` from then on; after a cosine restart the history
        is gone (the lr passed ``eta_min``) and the fresh value holds again.
        """
        k = self.last_epoch
        t = shifted_step(count, k + 1)
        rule = self.rule
        start = jnp.full_like(t, k + 1)
        if isinstance(rule, Scaled):
            at_k = self.learning_rate * rule.factor(jnp.full_like(t, k))  # type: ignore[operator]
            return at_k * rule.partial(start, t)
        if isinstance(rule, CosineAnnealing):
            at_k = rule.value(jnp.full_like(t, k))
            first = rule.factor(start)
            ratio = rule.factor(t) / jnp.where(first > 0, first, 1.0)
            continued = rule.eta_min + (at_k - rule.eta_min) * ratio
            period = 2 * rule.t_max
            phase = (rule.t_max + 1) % period
            # the first restart step after k + 1 (steps = phase mod period, >= 1)
            cycles = max((k + 1 - phase) // period + 1, 0)
            restart = max(phase + cycles * period, 1)
            if restart <= k + 1:
                restart += period
            return jnp.where(reached(t, restart), rule.value(t), continued)
        return rule.value(t)  # Absolute and Composite
