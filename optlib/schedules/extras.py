"""Two popular schedules that neither torch nor transformers ships.

* ``cosine_annealing_warm_up_restarts``: the ``CosineAnnealingWarmUpRestarts(optimizer, T_0,
  T_mult, eta_max, T_up, gamma)`` scheduler, a torch ``_LRScheduler`` subclass widely shared
  in PyTorch tutorials and blog posts. It extends SGDR's cosine annealing with warm restarts
  (Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017):
  each cycle opens with a linear warm-up, cycle lengths grow by ``T_mult`` and peaks shrink
  by ``gamma``.
* ``linear_decay``: a constant hold, then a straight line from the initial to a final
  learning rate, the linear decay ``lr_t = lr_0 - (lr_0 - lr_T) * t / T`` that PyTorch
  training loops commonly write by hand (torch has no class for it with a hold phase).

Both follow Hugging Face's calling convention in ``optlib.get_scheduler`` (family
``"optlib"``): ``learning_rate`` is the optimizer's lr.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from optlib._numerics import INT32_MAX, as_float, float_dtype
from optlib._registry import register
from optlib._validation import check_int, check_non_negative
from optlib.schedules._steps import Schedule, check_step_count, hf_step, ratio

__all__ = ["cosine_annealing_warm_up_restarts", "linear_decay"]


def _cycle_starts(T_0: int, T_mult: int, T_up: int) -> tuple[np.ndarray, np.ndarray]:
    """First step and cosine length of every cycle that starts within the int32 count.

    Cycle ``c`` lasts ``(T_0 - T_up) * T_mult**c + T_up`` steps (the scheduler's
    ``T_i = (T_i - T_up) * T_mult + T_up``); its cosine part is that minus ``T_up``.
    Exact Python integers, so the table holds no rounding.
    """
    starts, spans = [0], [T_0 - T_up]
    while starts[-1] + spans[-1] + T_up <= INT32_MAX:
        starts.append(starts[-1] + spans[-1] + T_up)
        spans.append(spans[-1] * T_mult)
    return np.asarray(starts, np.int64), np.asarray(spans, np.float64)


def _locate_in_cycle(step, T_0: int, T_mult: int, T_up: int):
    """``(cycle, T_cur, T_i - T_up)`` after ``step`` scheduler steps.

    ``T_mult == 1``: ``divmod(step, T_0)``, endless. Otherwise a search in the table of cycle
    starts (at most 31 cycles fit in an int32 count).
    """
    if T_mult == 1:
        cycle, t_cur = jnp.divmod(step, T_0)
        return cycle, t_cur, float(T_0 - T_up)
    starts, spans = _cycle_starts(T_0, T_mult, T_up)
    cycle = jnp.searchsorted(jnp.asarray(starts, step.dtype), step, side="right") - 1
    t_cur = step - jnp.asarray(starts, step.dtype)[cycle]
    return cycle, t_cur, jnp.asarray(spans, float_dtype())[cycle]


def cosine_annealing_warm_up_restarts(
    learning_rate: float,
    T_0: int,
    T_mult: int = 1,
    eta_max: float = 0.1,
    T_up: int = 0,
    gamma: float = 1.0,
) -> Schedule:
    """Cosine annealing with warm restarts, each cycle opening with a linear warm-up.

    The community ``CosineAnnealingWarmUpRestarts`` scheduler (a torch ``_LRScheduler``
    subclass: SGDR, Loshchilov & Hutter 2017, with a warm-up per cycle), stepped without an
    epoch argument. With ``b = learning_rate`` (the
    optimizer's lr, the scheduler's ``base_lr``), cycle ``c`` of length
    ``T_c = (T_0 - T_up) * T_mult**c + T_up`` and ``t`` steps into it, the peak
    ``eta_c = eta_max * gamma**c`` and::

        lr = b + (eta_c - b) * t / T_up                                  if t < T_up
        lr = b + (eta_c - b) * (1 + cos(pi * (t - T_up) / (T_c - T_up))) / 2   otherwise

    so each cycle climbs linearly from ``b`` to ``eta_c`` and anneals back towards ``b``;
    cycles repeat forever. Cycles are located with exact integer arithmetic.

    Deviations: the class's ``step(epoch)`` form (a different cycle formula) is not
    modelled; ``T_up >= T_0`` raises (the cosine part would never run, and with
    ``T_mult > 1`` cycle lengths would shrink to zero); non-integer ``T_0``/``T_mult``/
    ``T_up`` raise ``TypeError`` (the class raises ``ValueError``).

    Args:
      learning_rate: the optimizer's lr, the floor each cycle anneals to (the usual recipe
        gives the optimizer ``lr=0``).
      T_0: length of the first cycle, in steps (>= 1).
      T_mult: cycle length growth factor (integer >= 1); the cosine part is multiplied.
      eta_max: the first cycle's peak learning rate.
      T_up: warm-up steps at the start of every cycle (0 <= T_up < T_0).
      gamma: the peak is multiplied by ``gamma`` at every restart.

    Returns:
      A schedule ``step -> lr``.
    """
    base_lr = check_non_negative("learning_rate", learning_rate)
    T_0 = check_step_count("T_0", T_0, minimum=1)
    T_mult = check_int("T_mult", T_mult, minimum=1)
    T_up = check_step_count("T_up", T_up)
    if T_up >= T_0:
        raise ValueError(f"T_up must be smaller than T_0 ({T_0}), got {T_up!r}")
    eta_max = check_non_negative("eta_max", eta_max)
    gamma = check_non_negative("gamma", gamma)

    def schedule(step):
        cycle, t_cur, cosine_steps = _locate_in_cycle(hf_step(step), T_0, T_mult, T_up)
        rise = eta_max * jnp.power(gamma, as_float(cycle)) - base_lr
        warming = rise * ratio(t_cur, max(T_up, 1)) + base_lr
        angle = math.pi * as_float(t_cur - T_up) / cosine_steps
        annealing = base_lr + rise * (1.0 + jnp.cos(angle)) / 2.0
        return jnp.where(t_cur < T_up, warming, annealing)

    return schedule


def linear_decay(
    learning_rate: float,
    final_learning_rate: float,
    num_training_steps: int,
    num_hold_steps: int = 0,
) -> Schedule:
    """Hold the learning rate, then decay it linearly to a final value, then keep that.

    Linear decay after a constant phase, as PyTorch training loops write it by hand::

        lr = learning_rate                                        k < num_hold_steps
        lr = learning_rate - (learning_rate - final_learning_rate)
             * (k - num_hold_steps) / (num_training_steps - num_hold_steps)   otherwise

    Past ``num_training_steps`` (where such a loop stops) the rate stays at
    ``final_learning_rate``, the value the line reaches there. The usual hand-written names
    map as ``initial_lr -> learning_rate``, ``final_lr -> final_learning_rate``,
    ``total_iterations -> num_training_steps``, ``warmup_iterations -> num_hold_steps``
    (it is a hold, not a warm-up). With ``num_hold_steps=0`` it is plain linear decay.

    Args:
      learning_rate: the initial learning rate (the optimizer's lr).
      final_learning_rate: the rate reached at ``num_training_steps`` and kept after.
      num_training_steps: the step at which the decay ends.
      num_hold_steps: steps at ``learning_rate`` before the decay starts
        (``<= num_training_steps``).

    Returns:
      A schedule ``step -> lr``.
    """
    initial = check_non_negative("learning_rate", learning_rate)
    final = check_non_negative("final_learning_rate", final_learning_rate)
    num_training_steps = check_step_count("num_training_steps", num_training_steps)
    num_hold_steps = check_step_count("num_hold_steps", num_hold_steps)
    if num_hold_steps > num_training_steps:
        raise ValueError(
            f"num_hold_steps must not exceed num_training_steps ({num_training_steps}), "
            f"got {num_hold_steps!r}"
        )
    decay_steps = max(1, num_training_steps - num_hold_steps)

    def schedule(step):
        step = hf_step(step)
        # the same line, written from its end so the steps left are counted exactly
        line = final + (initial - final) * ratio(num_training_steps - step, decay_steps)
        value = jnp.where(step < num_hold_steps, initial, line)
        return jnp.where(step >= num_training_steps, final, value).astype(float_dtype())

    return schedule


_WARM_UP_RESTARTS_REFERENCE = (
    "CosineAnnealingWarmUpRestarts (community torch _LRScheduler: SGDR, Loshchilov & Hutter "
    "2017, with a linear warm-up per cycle)"
)
for _name in ("cosine_annealing_warm_up_restarts", "CosineAnnealingWarmUpRestarts"):
    register(_name, cosine_annealing_warm_up_restarts, _WARM_UP_RESTARTS_REFERENCE, family="optlib")
register(
    "linear_decay",
    linear_decay,
    "linear decay after a constant hold (lr_t = lr_0 - (lr_0 - lr_T) * t / T, as PyTorch "
    "loops write it by hand)",
    family="optlib",
    forwards=("num_training_steps",),
    requires=("num_training_steps",),
)
del _name
