"""Every step-based ``torch.optim.lr_scheduler`` scheduler as a jit-traceable schedule.

``sched(k)`` is the learning rate torch's optimizer holds after ``k`` calls of
``scheduler.step()`` (the rate of the ``k``-th update), for a fresh optimizer and scheduler.
Each function takes ``learning_rate`` (the optimizer's ``lr``, torch's base lr) and then the
scheduler's own keywords with torch's names and defaults (minus ``optimizer`` and
``verbose``), and torch's ``last_epoch`` as a keyword: ``last_epoch=k`` is the scheduler
torch builds on an optimizer resumed after step ``k`` (its constructor steps once, to
``k + 1``): a closed-form scheduler then gives the fresh value at ``c + k + 1``, a recursive
one keeps the lr after step ``k`` for one more step, as torch does. A keyword torch requires
defaults to ``None`` here and raises ``ValueError`` when missing, as ``get_scheduler``
promises.

The schedules are closed forms in the step, so they run under ``jit``/``vmap``/``pjit`` and
compile once. Cycle indices and positions (StepLR, MultiStepLR, CyclicLR,
CosineAnnealingWarmRestarts, OneCycleLR phases, CosineAnnealingLR's period) are integer
arithmetic on the int32 update count, so values stay exact up to step ``2**31 - 1``.

torch's schedulers are recursive (each step multiplies the current lr); the closed forms
agree with them to float64 rounding. Where torch's own float64 arithmetic loses digits
(``1 + cos(x)`` near a cosine minimum), optlib computes the exact value; see the tests.

Steps are clipped to ``[0, 2**31 - 1]``; a non-integer step is a ``TypeError``, except for
CosineAnnealingWarmRestarts, where a float step is a fractional epoch as in torch.

``step_lr(0.1, step_size=30)`` counts updates; for a recipe that calls ``scheduler.step()``
once per epoch use ``optlib.per_epoch(step_lr(0.1, step_size=30), steps_per_epoch)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optlib._numerics import as_float
from optlib._registry import register
from optlib._validation import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_interval,
    check_non_negative,
    check_positive,
)
from optlib.schedules._core import MomentumSchedule, takes_last_epoch
from optlib.schedules._steps import check_last_epoch, check_step_count
from optlib.schedules._torch_compose import chain_schedules, sequence_schedules
from optlib.schedules._torch_rules import (
    INT32_MAX,
    Absolute,
    Composite,
    CosineAnnealing,
    Scaled,
    TorchSchedule,
    cosine_anneal,
    count_reached,
    div_mod,
    minus,
    power,
    reached,
    shifted_step,
    step_array,
    user_step,
)

__all__ = [
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "one_cycle_lr",
    "polynomial_lr",
    "sequential_lr",
    "step_lr",
]


# ------------------------------------------------------------------------------- arguments


def _required(name: str, value, scheduler: str):
    if value is None:
        raise ValueError(f"{scheduler} requires `{name}`, please provide that argument.")
    return value


def _base_lr(learning_rate) -> float:
    """torch's base lr: the optimizer's ``lr``, a number >= 0 (a schedule makes no sense)."""
    return check_non_negative("learning_rate", learning_rate)


def _gamma(gamma) -> float:
    """A decay factor > 0 (``gamma <= 0`` would zero or flip the sign of the lr)."""
    return check_positive("gamma", gamma)


def _on_steps(fn: Callable) -> Callable:
    """A ``step -> value`` function of a raw step (converted like ``TorchSchedule``'s)."""
    return lambda step: as_float(fn(step_array(step)))


def _bounded_step(step: jax.Array, bound: int) -> jax.Array:
    """``min(step, bound)`` for a Python ``bound`` of any size."""
    return jnp.minimum(step, min(bound, INT32_MAX))


def _ratio_since(factor: Callable, steps_changing: int) -> Callable:
    """``partial(a, b) = factor(b) / factor(a)`` for a factor that is positive on
    ``[0, steps_changing)`` and constant from ``steps_changing`` on (torch stops multiplying
    there, so the product of multipliers is 1 even where ``factor`` has reached 0)."""

    def partial(a, b):
        frozen = reached(a, steps_changing)
        return jnp.where(frozen, 1.0, factor(b) / jnp.where(frozen, 1.0, factor(a)))

    return partial


# ----------------------------------------------------------------------------- last_epoch

_LAST_EPOCH_DOC = (
    "      last_epoch: torch's ``last_epoch``: ``-1`` (default) starts fresh; ``k >= 0`` is\n"
    "        the scheduler resumed after step ``k``, with torch's numbers\n"
    "        (``TorchSchedule.resumed``).\n"
)


def resume_after(schedule: Any, last_epoch: int) -> Any:
    """``schedule`` as torch's scheduler built with ``last_epoch`` (``TorchSchedule.resumed``).

    Args:
      schedule: a ``TorchSchedule`` or a ``MomentumSchedule`` of one (momentum shifts too).
      last_epoch: ``-1`` (unchanged) or the last step taken, ``>= 0``.

    Returns:
      The shifted schedule, of the same kind.
    """
    if check_last_epoch(last_epoch) == -1:
        return schedule
    if isinstance(schedule, MomentumSchedule):
        momentum = schedule.momentum
        return MomentumSchedule(
            resume_after(schedule.learning_rate, last_epoch),
            lambda step: momentum(shifted_step(step, last_epoch + 1)),
        )
    if isinstance(schedule.rule, Composite):
        raise ValueError(
            f"{schedule.name} with last_epoch={last_epoch}: torch's SequentialLR does not resume "
            "from last_epoch (its constructor restarts the first scheduler from its initial lr); "
            "resume a torch run with optlib.from_torch_state_dict, whose counts carry the "
            "scheduler's position, or evaluate the fresh schedule at count + last_epoch + 1"
        )
    return dataclasses.replace(schedule, last_epoch=last_epoch)


_takes_last_epoch = takes_last_epoch(resume_after, _LAST_EPOCH_DOC)


# ------------------------------------------------------------------ multiplicative schedulers


@_takes_last_epoch
def step_lr(
    learning_rate: float, step_size: int | None = None, gamma: float = 0.1
) -> TorchSchedule:
    """Decays the lr by ``gamma`` every ``step_size`` steps (torch.optim.lr_scheduler.StepLR).

    ``lr_t = learning_rate * gamma ** (t // step_size)``, with ``t // step_size`` on integers.

    Args:
      learning_rate: the base lr (torch's optimizer ``lr``).
      step_size: steps between decays, an integer >= 1 (torch divides by it). Required.
      gamma: the decay factor, > 0.

    Returns:
      A ``step -> lr`` schedule.
    """
    base = _base_lr(learning_rate)
    step_size = check_int("step_size", _required("step_size", step_size, "StepLR"), minimum=1)
    gamma = _gamma(gamma)

    def decays(step):
        return div_mod(step, step_size)[0]

    return TorchSchedule(
        "StepLR",
        base,
        Scaled(
            factor=lambda t: power(gamma, decays(t)),
            partial=lambda a, b: power(gamma, decays(b) - decays(a)),
            milestone_factor=1.0,
        ),
    )


def _milestone_list(milestones) -> list[int]:
    """torch's ``milestones``: integers >= 0 (a negative one is never reached by torch's
    recursion but counted by its closed form)."""
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Iterable):
        raise TypeError(f"milestones must be a list of integers, got {milestones!r}")
    return [check_int(f"milestones[{i}]", m, minimum=0) for i, m in enumerate(milestones)]


@_takes_last_epoch
def multi_step_lr(
    learning_rate: float, milestones: Sequence[int] | None = None, gamma: float = 0.1
) -> TorchSchedule:
    """Decays the lr by ``gamma`` at each milestone (torch.optim.lr_scheduler.MultiStepLR).

    ``lr_t = learning_rate * gamma ** #{m in milestones : m <= t}``. A milestone listed twice
    decays twice, as torch counts milestones; order does not matter.

    Args:
      learning_rate: the base lr.
      milestones: steps (integers >= 0) at which to decay. Required.
      gamma: the decay factor, > 0.

    Returns:
      A ``step -> lr`` schedule.
    """
    base = _base_lr(learning_rate)
    milestones = _milestone_list(_required("milestones", milestones, "MultiStepLR"))
    gamma = _gamma(gamma)
    reachable = [m for m in milestones if m <= INT32_MAX]

    def passed(step):
        return count_reached(reachable, step)

    return TorchSchedule(
        "MultiStepLR",
        base,
        Scaled(
            factor=lambda t: power(gamma, passed(t)),
            partial=lambda a, b: power(gamma, passed(b) - passed(a)),
            milestone_factor=gamma ** milestones.count(0),
        ),
    )


@_takes_last_epoch
def exponential_lr(learning_rate: float, gamma: float | None = None) -> TorchSchedule:
    """Decays the lr by ``gamma`` every step (torch.optim.lr_scheduler.ExponentialLR).

    ``lr_t = learning_rate * gamma ** t``.

    Args:
      learning_rate: the base lr.
      gamma: the decay factor, > 0. Required.

    Returns:
      A ``step -> lr`` schedule.
    """
    base = _base_lr(learning_rate)
    gamma = _gamma(_required("gamma", gamma, "ExponentialLR"))
    return TorchSchedule(
        "ExponentialLR",
        base,
        Scaled(
            factor=lambda t: power(gamma, t),
            partial=lambda a, b: power(gamma, b - a),
            milestone_factor=1.0,
        ),
    )


@_takes_last_epoch
def linear_lr(
    learning_rate: float,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
    total_iters: int = 5,
) -> TorchSchedule:
    """Moves the lr factor linearly from ``start_factor`` to ``end_factor``
    (torch.optim.lr_scheduler.LinearLR).

    ``lr_t = learning_rate * (start * (T - m) + end * m) / T`` with ``m = min(t, T)``,
    ``T = total_iters``; constant after ``T``.

    Args:
      learning_rate: the base lr.
      start_factor: factor at step 0, in (0, 1] (torch's check).
      end_factor: factor from ``total_iters`` on, in [0, 1] (torch's check).
      total_iters: steps of the ramp, >= 1 (with 0 torch divides by zero in its closed form
        and its recursion never leaves ``start_factor``).

    Returns:
      A ``step -> lr`` schedule.
    """
    base = _base_lr(learning_rate)
    start = check_interval("start_factor", start_factor, 0.0, 1.0, low_closed=False)
    end = check_interval("end_factor", end_factor, 0.0, 1.0)
    total = check_step_count("total_iters", total_iters, minimum=1)

    def factor(step):
        done = _bounded_step(step, total)
        return (start * -minus(done, total) + end * as_float(done)) / total

    return TorchSchedule(
        "LinearLR",
        base,
        Scaled(factor=factor, partial=_ratio_since(factor, total), milestone_factor=start),
    )


@_takes_last_epoch
def constant_lr(
    learning_rate: float, factor: float = 1.0 / 3, total_iters: int = 5
) -> TorchSchedule:
    """Scales the lr by ``factor`` for ``total_iters`` steps (torch.optim.lr_scheduler.ConstantLR).

    ``lr_t = learning_rate * factor`` for ``t < total_iters``, ``learning_rate`` after.
    ``total_iters=0`` gives ``learning_rate * factor`` at every step: torch's recursion
    applies ``factor`` at construction and never undoes it (its closed form would say
    ``learning_rate``; optlib follows the numbers torch's loop produces).

    Args:
      learning_rate: the base lr.
      factor: in [0, 1] (torch's check); 0 only with ``total_iters=0`` (torch divides the lr
        by ``factor`` at step ``total_iters``).
      total_iters: steps at the reduced rate, >= 0.

    Returns:
      A ``step -> lr`` schedule.
    """
    base = _base_lr(learning_rate)
    scale = check_interval("factor", factor, 0.0, 1.0)
    total = check_int("total_iters", total_iters, minimum=0)
    if scale == 0 and total > 0:
        raise ValueError(
            f"factor=0 with total_iters={total}: torch divides the lr by factor at step "
            "total_iters (ZeroDivisionError); use factor > 0"
        )
    if total == 0:  # torch applies `factor` at construction; its step 0 never comes again
        rule = Scaled(
            factor=lambda t: jnp.full(jnp.shape(t), scale),
            partial=lambda a, b: jnp.ones(jnp.shape(b)),
            milestone_factor=1.0,
        )
    else:
        rule = Scaled(
            factor=lambda t: jnp.where(reached(t, total), 1.0, scale),
            partial=lambda a, b: jnp.where(
                ~reached(a, total) & reached(b, total), 1.0 / scale, 1.0
            ),
            milestone_factor=scale,
        )
    return TorchSchedule("ConstantLR", base, rule)


@_takes_last_epoch
def polynomial_lr(learning_rate: float, total_iters: int = 5, power: float = 1.0) -> TorchSchedule:
    """Decays the lr polynomially to 0 in ``total_iters`` steps
    (torch.optim.lr_scheduler.PolynomialLR).

    ``lr_t = learning_rate * ((T - min(t, T)) / T) ** power`` with ``T = total_iters``.

    Args:
      learning_rate: the base lr.
      total_iters: steps of the decay, >= 1 (with 0 torch's closed form divides by zero).
      power: the exponent, >= 0 (a negative power divides by zero at ``total_iters``).

    Returns:
      A ``step -> lr`` schedule.
    """
    base = _base_lr(learning_rate)
    total = check_step_count("total_iters", total_iters, minimum=1)
    exponent = check_non_negative("power", power)

    def factor(step):
        remaining = -minus(_bounded_step(step, total), total)
        # torch's 0.0 ** power past total_iters: 0 for any power > 0 (a power below float32's
        # range would round to 0 and give 0 ** 0 = 1), 1 for power 0.
        return jnp.where(remaining > 0, (remaining / total) ** exponent, float(exponent == 0))

    return TorchSchedule(
        "PolynomialLR",
        base,
        Scaled(factor=factor, partial=_ratio_since(factor, total), milestone_factor=1.0),
    )


@_takes_last_epoch
def multiplicative_lr(learning_rate: float, lr_lambda: Callable | None = None) -> TorchSchedule:
    """Multiplies the lr by ``lr_lambda(t)`` at every step t >= 1
    (torch.optim.lr_scheduler.MultiplicativeLR).

    ``lr_t = learning_rate * lr_lambda(1) * ... * lr_lambda(t)``. A general ``lr_lambda`` has
    no closed form, so the product is a ``fori_loop`` over ``1..t``: cost O(t) per call. For a
    constant factor prefer ``exponential_lr`` (O(1) and exact at any horizon).

    Args:
      learning_rate: the base lr.
      lr_lambda: a jax-traceable ``step -> factor``, called with an integer scalar (the
        default int dtype, as torch passes a Python int). Required.

    Returns:
      A ``step -> lr`` schedule.
    """
    base = _base_lr(learning_rate)
    lr_lambda = _check_traceable_factor("lr_lambda", lr_lambda, "MultiplicativeLR")

    def times_factor(k, product):  # torch's multiplier of step k + 1
        return product * as_float(lr_lambda(user_step(k + 1)))

    def partial(a, b):  # lr_lambda(a + 1) * ... * lr_lambda(b), in torch's order
        return jax.lax.fori_loop(a, b, times_factor, as_float(jnp.ones(jnp.shape(b))))

    def factor(step):
        return partial(jnp.zeros_like(step), step)

    return TorchSchedule(
        "MultiplicativeLR", base, Scaled(factor=factor, partial=partial, milestone_factor=None)
    )


# ------------------------------------------------------------------------ cosine annealing


def _eta_min(eta_min) -> float:
    """torch's ``eta_min``: a number >= 0 (a negative floor makes the lr negative)."""
    return check_non_negative("eta_min", eta_min)


@_takes_last_epoch
def cosine_annealing_lr(
    learning_rate: float, T_max: int | None = None, eta_min: float = 0.0
) -> TorchSchedule:
    """Cosine annealing from ``learning_rate`` to ``eta_min`` in ``T_max`` steps
    (torch.optim.lr_scheduler.CosineAnnealingLR).

    ``lr_t = eta_min + (learning_rate - eta_min) * (1 + cos(pi * t / T_max)) / 2``. Like torch,
    it keeps oscillating past ``T_max`` (back up to ``learning_rate`` at ``2 * T_max``). The
    cosine is evaluated from the integer position in its ``2 * T_max`` period, as
    ``sin(pi * d / (2 T_max)) ** 2`` with ``d`` the integer distance to the minimum: exact at
    any step, including near the minimum where torch's ``1 + cos`` loses digits.

    Args:
      learning_rate: the base lr.
      T_max: half period, an integer >= 1 (torch divides by it). Required.
      eta_min: the minimum lr, >= 0.

    Returns:
      A ``step -> lr`` schedule.
    """
    base = _base_lr(learning_rate)
    t_max = check_step_count("T_max", _required("T_max", T_max, "CosineAnnealingLR"), minimum=1)
    return TorchSchedule("CosineAnnealingLR", base, CosineAnnealing(t_max, _eta_min(eta_min), base))


@_takes_last_epoch
def cosine_annealing_warm_restarts(
    learning_rate: float, T_0: int | None = None, T_mult: int = 1, eta_min: float = 0.0
) -> TorchSchedule:
    """Cosine annealing restarted every cycle, cycles growing by ``T_mult``
    (torch.optim.lr_scheduler.CosineAnnealingWarmRestarts).

    Cycle ``n`` lasts ``T_i = T_0 * T_mult ** n`` steps; inside it
    ``lr = eta_min + (learning_rate - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``. Cycle index
    and ``T_cur`` are integers (a table of cycle starts when ``T_mult > 1``); cycles never end.

    A float step is a fractional epoch: ``sched(epoch + i / iters)`` is the lr after torch's
    ``scheduler.step(epoch + i / iters)`` (the idiom of torch's docs), from torch's
    ``step(epoch)`` formula: ``T_cur = epoch % T_0`` for ``T_mult = 1``; else the cycle
    ``n = int(log(epoch / T_0 * (T_mult - 1) + 1, T_mult))`` and
    ``T_cur = epoch - T_0 * (T_mult**n - 1) / (T_mult - 1)``. The cycle comes from the table of
    cycle starts, except at an epoch equal to a cycle start, where torch's float ``log`` can
    fall just below the integer (``log(243, 3) = 4.999...``): there torch's own ``n``
    (computed here in Python, as torch does) is used, so that such epochs give torch's
    ``eta_min`` rather than the restart value. Integer steps are unchanged.

    Args:
      learning_rate: the base lr.
      T_0: length of the first cycle, an integer >= 1. Required.
      T_mult: growth of the cycle length, an integer >= 1.
      eta_min: the minimum lr, >= 0.

    Returns:
      A ``step -> lr`` schedule.
    """
    base = _base_lr(learning_rate)
    first = check_int("T_0", _required("T_0", T_0, "CosineAnnealingWarmRestarts"), minimum=1)
    growth = check_int("T_mult", T_mult, minimum=1)
    floor = _eta_min(eta_min)

    if growth == 1:

        def position(step):
            return div_mod(step, first)[1], as_float(first)

        def epoch_position(epoch):
            return jnp.remainder(epoch, first), as_float(first)

    else:
        starts, lengths = [0], [first]
        while starts[-1] + lengths[-1] <= INT32_MAX:
            starts.append(starts[-1] + lengths[-1])
            lengths.append(lengths[-1] * growth)
        start_table = np.asarray(starts, dtype=np.int32)
        length_table = np.asarray(lengths, dtype=np.float64)
        # torch's cycle at an epoch equal to the start of cycle k: its float log's verdict.
        torch_cycle_at_start = np.asarray(
            [0] + [int(math.log(s / first * (growth - 1) + 1, growth)) for s in starts[1:]],
            dtype=np.int32,
        )

        def position(step):
            cycle = count_reached(start_table, step) - 1
            return step - jnp.asarray(start_table)[cycle], as_float(length_table)[cycle]

        def epoch_position(epoch):
            start_floats = as_float(start_table)
            cycle = jnp.sum(epoch[..., None] >= start_floats, axis=-1, dtype=jnp.int32) - 1
            at_start = epoch == start_floats[cycle]
            cycle = jnp.where(at_start, jnp.asarray(torch_cycle_at_start)[cycle], cycle)
            return epoch - start_floats[cycle], as_float(length_table)[cycle]

    def anneal(elapsed, length):
        return cosine_anneal(base, floor, elapsed, length - elapsed, length)

    def value(step):
        elapsed, length = position(step)
        return anneal(as_float(elapsed), length)

    def fractional(epoch):
        return anneal(*epoch_position(epoch))

    return TorchSchedule(
        "CosineAnnealingWarmRestarts", base, Absolute(value), fractional=fractional
    )


# ----------------------------------------------------------------------- lambda schedulers


def _check_traceable_factor(name: str, fn: Callable | None, scheduler: str) -> Callable:
    """``fn`` (``lr_lambda``, ``scale_fn``) traced once on an abstract integer step, as ``jit``
    will call it: a Python ``if`` on the step, a host conversion or a non-scalar result
    raises here, naming the argument, instead of at the first jitted update."""
    fn = check_callable(name, _required(name, fn, scheduler))
    try:
        out = jax.eval_shape(lambda t: fn(user_step(t)), jax.ShapeDtypeStruct((), jnp.int32))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError) as error:
        raise TypeError(
            f"{name} must be jax-traceable: it is called with a traced integer step inside "
            "jit, so Python control flow on the step (if/else, min/max, int(step)) cannot run; "
            f"use jnp.where / jnp.minimum instead. Tracing it raised {type(error).__name__}: "
            f"{str(error).splitlines()[0]}"
        ) from error
    except Exception as error:
        raise TypeError(
            f"{name} failed when traced with an integer step array ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    leaves = jax.tree.leaves(out)
    if len(leaves) != 1 or leaves[0].shape != () or not jnp.issubdtype(leaves[0].dtype, jnp.number):
        described = ", ".join(f"{leaf.dtype}{list(leaf.shape)}" for leaf in leaves) or repr(out)
        raise ValueError(f"{name} must return one real scalar factor per step, got {described}")
    if jnp.issubdtype(leaves[0].dtype, jnp.complexfloating):
        raise ValueError(f"{name} must return a real factor, got {leaves[0].dtype}")
    return fn


@_takes_last_epoch
def lambda_lr(learning_rate: float, lr_lambda: Callable | None = None) -> TorchSchedule:
    """``lr_t = learning_rate * lr_lambda(t)`` (torch.optim.lr_scheduler.LambdaLR).

    Args:
      learning_rate: the base lr.
      lr_lambda: a jax-traceable ``step -> factor``, called with an integer array (the default
        int dtype, as torch passes a Python int). Required.

    Returns:
      A ``step -> lr`` schedule.
    """
    base = _base_lr(learning_rate)
    lr_lambda = _check_traceable_factor("lr_lambda", lr_lambda, "LambdaLR")
    return TorchSchedule(
        "LambdaLR", base, Absolute(lambda t: base * as_float(lr_lambda(user_step(t))))
    )


# -------------------------------------------------------------------------- cyclic policies


def _momentum_pair(base_momentum, max_momentum) -> tuple[float, float]:
    return (
        check_non_negative("base_momentum", base_momentum),
        check_non_negative("max_momentum", max_momentum),
    )


def _optimizer_lr(learning_rate) -> float | None:
    return None if learning_rate is None else _base_lr(learning_rate)


@_takes_last_epoch
def cyclic_lr(
    learning_rate: float | None = None,
    base_lr: float | None = None,
    max_lr: float | None = None,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable | None = None,
    scale_mode: str = "cycle",
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
) -> TorchSchedule | MomentumSchedule:
    """The cyclical learning-rate policy (torch.optim.lr_scheduler.CyclicLR).

    With ``up = step_size_up``, ``down = step_size_down`` (default ``up``) and integer
    ``cycle_index = t // (up + down)``, ``p = t % (up + down)``: the height is ``p / up`` on the
    way up (``p <= up``) and ``(up + down - p) / down`` on the way down, and
    ``lr = base_lr + (max_lr - base_lr) * height * scale``. ``scale`` is 1 (``triangular``),
    ``2 ** -cycle_index`` (``triangular2``), ``gamma ** t`` (``exp_range``) or
    ``scale_fn(cycle_index + 1)`` / ``scale_fn(t)`` (``scale_mode`` ``'cycle'`` /
    ``'iterations'``; torch passes the same integers). With ``cycle_momentum`` the momentum
    moves the other way, ``max_momentum - (max_momentum - base_momentum) * height * scale``.

    ``learning_rate`` is torch's optimizer lr, which CyclicLR overwrites with ``base_lr``: it
    does not change this schedule. It may be left ``None``; ``get_scheduler`` passes it.

    Args:
      learning_rate: the optimizer's lr (unused by the values; see above).
      base_lr: lower boundary of the cycle, >= 0. Required.
      max_lr: upper boundary of the cycle, >= 0. Required.
      step_size_up: steps of the increasing half, an integer >= 1.
      step_size_down: steps of the decreasing half, an integer >= 0; ``None`` means
        ``step_size_up``.
      mode: ``'triangular'``, ``'triangular2'`` or ``'exp_range'``; ignored with ``scale_fn``
        (as in torch).
      gamma: ``exp_range``'s factor, > 0.
      scale_fn: a jax-traceable ``int -> scale``, replacing ``mode``.
      scale_mode: ``'cycle'`` or ``'iterations'``: what ``scale_fn`` receives (torch forces
        ``'cycle'`` for triangular modes and ``'iterations'`` for ``exp_range``).
      cycle_momentum: also return the momentum schedule.
      base_momentum: momentum at the peak lr, >= 0.
      max_momentum: momentum at ``base_lr``, >= 0.

    Returns:
      A ``step -> lr`` schedule; with ``cycle_momentum`` a ``MomentumSchedule`` whose
      ``.momentum`` is the momentum (SGD) or ``beta1`` (Adam family) torch sets.
    """
    optimizer_lr = _optimizer_lr(learning_rate)
    low = check_non_negative("base_lr", _required("base_lr", base_lr, "CyclicLR"))
    high = check_non_negative("max_lr", _required("max_lr", max_lr, "CyclicLR"))
    up = check_step_count("step_size_up", step_size_up, minimum=1)
    down = (
        up
        if step_size_down is None
        else check_step_count("step_size_down", step_size_down, minimum=0)
    )
    if scale_fn is None:
        check_choice("mode", mode, ("triangular", "triangular2", "exp_range"))
        scale_mode = "iterations" if mode == "exp_range" else "cycle"
    else:
        _check_traceable_factor("scale_fn", scale_fn, "CyclicLR")
        check_choice("scale_mode", scale_mode, ("cycle", "iterations"))
    gamma = _gamma(gamma)
    cycle_momentum = check_bool("cycle_momentum", cycle_momentum)
    low_momentum, high_momentum = _momentum_pair(base_momentum, max_momentum)
    period = up + down

    def scale(step, cycle_index):
        if scale_fn is not None:
            argument = cycle_index + 1 if scale_mode == "cycle" else step
            return as_float(scale_fn(user_step(argument)))
        if mode == "triangular2":
            return jnp.exp2(-as_float(cycle_index))
        if mode == "exp_range":
            return power(gamma, step)
        return as_float(1.0)

    def height(step):
        """``height * scale``, the fraction of the way from the base to the peak."""
        cycle_index, position = div_mod(step, period)
        rising = as_float(position) / up
        falling = -minus(position, period) / max(down, 1)
        return jnp.where(reached(position, up + 1), falling, rising) * scale(step, cycle_index)

    schedule = TorchSchedule(
        "CyclicLR", optimizer_lr, Absolute(lambda t: low + (high - low) * height(t)), initial_lr=low
    )
    if not cycle_momentum:
        return schedule
    return MomentumSchedule(
        schedule,
        _on_steps(lambda t: high_momentum - (high_momentum - low_momentum) * height(t)),
    )


def _one_cycle_phases(total: int, pct_start: float, three_phase: bool) -> list[float]:
    """torch's phase end steps (floats, computed with torch's expressions)."""
    if three_phase:
        return [float(pct_start * total) - 1, float(2 * pct_start * total) - 2, total - 1]
    return [float(pct_start * total) - 1, total - 1]


def _check_phases_reachable(ends: list[float], total: int, pct_start: float) -> None:
    """Raises where torch would divide by zero: a zero-length phase some step in
    ``[0, total_steps]`` falls in (torch picks the first phase with ``step <= end``)."""
    start = 0.0
    earlier_end = -math.inf
    for index, end in enumerate(ends):
        last = index == len(ends) - 1
        lowest = max(0, math.floor(earlier_end) + 1) if earlier_end > -math.inf else 0
        highest = total if last else min(total, math.floor(end))
        if lowest <= highest and end == start:
            raise ValueError(
                f"OneCycleLR with total_steps={total}, pct_start={pct_start!r}: phase {index + 1} "
                f"has zero length and torch divides by zero at step {lowest}; change pct_start "
                "or total_steps"
            )
        earlier_end = max(earlier_end, end)
        start = end


@_takes_last_epoch
def one_cycle_lr(
    learning_rate: float | None = None,
    max_lr: float | None = None,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> TorchSchedule | MomentumSchedule:
    """The 1cycle policy (torch.optim.lr_scheduler.OneCycleLR).

    The lr goes from ``max_lr / div_factor`` up to ``max_lr`` in ``pct_start * total_steps``
    steps, then down to ``max_lr / div_factor / final_div_factor`` (``three_phase``: back to
    the initial lr first, then down), annealing each phase by ``anneal_strategy`` (``'cos'``
    or ``'linear'``), with torch's phase ends ``pct_start * total - 1``,
    (``2 * pct_start * total - 2``,) ``total - 1``. Phase positions are integer step minus the
    phase start, so fractional phase ends are exact at any step. With ``cycle_momentum`` the
    momentum moves the other way between ``max_momentum`` and ``base_momentum``.

    Deviation: torch raises ``ValueError`` when stepped past ``total_steps``; a jitted schedule
    cannot raise, so optlib holds the value of step ``total_steps`` (torch's last legal one).

    ``learning_rate`` is torch's optimizer lr, which OneCycleLR overwrites (it starts at
    ``max_lr / div_factor``): it does not change this schedule. It may be left ``None``;
    ``get_scheduler`` passes it.

    Args:
      learning_rate: the optimizer's lr (unused by the values; see above).
      max_lr: the peak lr, >= 0. Required.
      total_steps: steps of the cycle, an integer >= 1; else ``epochs * steps_per_epoch``.
      epochs: with ``steps_per_epoch``, when ``total_steps`` is ``None``.
      steps_per_epoch: with ``epochs``, when ``total_steps`` is ``None``.
      pct_start: fraction of the cycle spent increasing, in [0, 1].
      anneal_strategy: ``'cos'`` or ``'linear'``.
      cycle_momentum: also return the momentum schedule.
      base_momentum: momentum at the peak lr, >= 0.
      max_momentum: momentum at the low lr, >= 0.
      div_factor: ``initial_lr = max_lr / div_factor``, > 0.
      final_div_factor: ``min_lr = initial_lr / final_div_factor``, > 0.
      three_phase: use torch's three-phase schedule.

    Returns:
      A ``step -> lr`` schedule; with ``cycle_momentum`` a ``MomentumSchedule`` whose
      ``.momentum`` is the momentum (SGD) or ``beta1`` (Adam family) torch sets.
    """
    optimizer_lr = _optimizer_lr(learning_rate)
    peak = check_non_negative("max_lr", _required("max_lr", max_lr, "OneCycleLR"))
    if total_steps is not None:
        total = check_int("total_steps", total_steps, minimum=1)
    elif epochs is not None and steps_per_epoch is not None:
        total = check_int("epochs", epochs, minimum=1) * check_int(
            "steps_per_epoch", steps_per_epoch, minimum=1
        )
    else:
        raise ValueError(
            "OneCycleLR requires `total_steps` or both `epochs` and `steps_per_epoch`, "
            "please provide them."
        )
    pct_start = check_interval("pct_start", pct_start, 0.0, 1.0)
    check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    cycle_momentum = check_bool("cycle_momentum", cycle_momentum)
    three_phase = check_bool("three_phase", three_phase)
    low_momentum, high_momentum = _momentum_pair(base_momentum, max_momentum)
    initial = peak / check_positive("div_factor", div_factor)
    final = initial / check_positive("final_div_factor", final_div_factor)

    ends = _one_cycle_phases(total, pct_start, three_phase)
    _check_phases_reachable(ends, total, pct_start)
    starts = [0.0] + ends[:-1]
    if three_phase:
        lr_path = [(initial, peak), (peak, initial), (initial, final)]
        momentum_path = [
            (high_momentum, low_momentum),
            (low_momentum, high_momentum),
            (high_momentum, high_momentum),
        ]
    else:
        lr_path = [(initial, peak), (peak, final)]
        momentum_path = [(high_momentum, low_momentum), (low_momentum, high_momentum)]

    def anneal(start_value, end_value, done, remaining, length):
        if anneal_strategy == "cos":
            return cosine_anneal(start_value, end_value, done, remaining, length)
        return (start_value * remaining + end_value * done) / length

    def follow(path):
        def value(step):
            step = jnp.minimum(step, min(total, INT32_MAX))
            in_phase, values = [], []
            for (start_value, end_value), start, end in zip(path, starts, ends):
                length = (end - start) or 1.0  # a zero-length phase is unreachable (checked)
                done, remaining = minus(step, start), -minus(step, end)
                values.append(anneal(start_value, end_value, done, remaining, length))
                in_phase.append(step <= min(math.floor(end), INT32_MAX))
            in_phase[-1] = jnp.ones_like(in_phase[-1])  # torch's last phase takes the rest
            return jnp.select(in_phase, values)

        return value

    schedule = TorchSchedule(
        "OneCycleLR", optimizer_lr, Absolute(follow(lr_path)), initial_lr=initial
    )
    if not cycle_momentum:
        return schedule
    return MomentumSchedule(schedule, _on_steps(follow(momentum_path)))


# ------------------------------------------------------------------------------ composites


@_takes_last_epoch
def sequential_lr(
    learning_rate: float,
    schedulers: Sequence[TorchSchedule | MomentumSchedule] | None = None,
    milestones: Sequence[int] | None = None,
) -> TorchSchedule | MomentumSchedule:
    """Runs ``schedulers`` one after the other, switching at ``milestones``
    (torch.optim.lr_scheduler.SequentialLR).

    Reproduces torch's numbers, quirks included: scheduler ``i`` starts at step
    ``milestones[i-1]`` from its own step 0, taken from torch's closed form (so a
    ``constant_lr(..., total_iters=0)`` after a milestone gives ``learning_rate``, not
    ``learning_rate * factor``), except ``multiplicative_lr``, which torch has no closed form
    for: at the milestone it multiplies the lr the previous scheduler left by ``lr_lambda(0)``.
    A milestone listed twice skips the scheduler between; a milestone 0 skips the first. If
    any scheduler cycles momentum, the result is a ``MomentumSchedule`` whose momentum is the
    one torch's optimizer holds (the last value set, by a scheduler's construction or step).

    Limits (``ValueError``): a SequentialLR or ChainedScheduler inside another (torch raises
    ``NotImplementedError`` at their milestones), a OneCycleLR anywhere but first (it
    overwrites the optimizer's ``initial_lr`` that the others were built on), schedules
    whose ``learning_rate`` is not the base lr torch would give them.

    Args:
      learning_rate: the optimizer's lr (torch's base lr). Each scheduler must have been built
        with the base lr torch gives it: this value, or, after a CyclicLR / OneCycleLR listed
        first, that scheduler's ``base_lr`` / ``max_lr / div_factor``.
      schedulers: optlib torch schedules (``step_lr(...)``, ``get_scheduler("StepLR", ...)``),
        in the order torch builds them. Required.
      milestones: ``len(schedulers) - 1`` sorted integers >= 0. Required.

    Returns:
      A ``step -> lr`` schedule (a ``MomentumSchedule`` if a scheduler cycles momentum).
    """
    base = _base_lr(learning_rate)
    schedulers = _required("schedulers", schedulers, "SequentialLR")
    milestones = _milestone_list(_required("milestones", milestones, "SequentialLR"))
    return sequence_schedules(base, schedulers, milestones)


def chained_scheduler(
    learning_rate: float, schedulers: Sequence[TorchSchedule | MomentumSchedule] | None = None
) -> TorchSchedule | MomentumSchedule:
    """Steps every scheduler at each step, each on the lr the previous one left
    (torch.optim.lr_scheduler.ChainedScheduler).

    torch runs the schedulers' recursive forms one after the other on one lr. optlib's closed
    form of that recursion:

    * after the last "absolute" scheduler (LambdaLR, CyclicLR, OneCycleLR,
      CosineAnnealingWarmRestarts, which set the lr from the step alone and discard what came
      before), each later scheduler applies its own step-``t`` multiplier (or, for
      CosineAnnealingLR, its affine step) to that value;
    * with no absolute scheduler, multiplicative schedulers multiply their factors:
      ``lr_t = learning_rate * prod_i factor_i(t)``;
    * one CosineAnnealingLR with ``eta_min=0`` among them: the same product until
      ``T_max``; one step after each minimum torch *adds* ``base * (1 - cos(pi/T_max)) / 2``
      to an lr of 0, dropping the other schedulers' accumulated factors, so from there on
      only their multipliers since that restart count.

    Limits (``ValueError``, no closed form): without a later absolute scheduler, a
    CosineAnnealingLR with ``eta_min != 0`` next to another scheduler (torch's recursion
    ``lr <- eta_min + r_t * (q_t * lr - eta_min)`` accumulates a sum over all past steps), or
    two CosineAnnealingLR. Also as for ``sequential_lr``: no nested composites, OneCycleLR
    only first, and each schedule built with the base lr torch gives it. If schedulers cycle
    momentum, the momentum is the last one's (torch steps them in order).

    Args:
      learning_rate: the optimizer's lr (torch's base lr); see ``sequential_lr``.
      schedulers: optlib torch schedules, in the order torch builds them. Required.

    Returns:
      A ``step -> lr`` schedule (a ``MomentumSchedule`` if a scheduler cycles momentum).
    """
    base = _base_lr(learning_rate)
    schedulers = _required("schedulers", schedulers, "ChainedScheduler")
    return chain_schedules(base, schedulers)


# ------------------------------------------------------------------------------- registry

for _name, _factory in (
    ("StepLR", step_lr),
    ("MultiStepLR", multi_step_lr),
    ("ExponentialLR", exponential_lr),
    ("CosineAnnealingLR", cosine_annealing_lr),
    ("LinearLR", linear_lr),
    ("LambdaLR", lambda_lr),
    ("MultiplicativeLR", multiplicative_lr),
    ("ConstantLR", constant_lr),
    ("PolynomialLR", polynomial_lr),
    ("CosineAnnealingWarmRestarts", cosine_annealing_warm_restarts),
    ("CyclicLR", cyclic_lr),
    ("OneCycleLR", one_cycle_lr),
    ("SequentialLR", sequential_lr),
    ("ChainedScheduler", chained_scheduler),
):
    register(_name, _factory, f"torch.optim.lr_scheduler.{_name}", family="torch")
del _name, _factory
