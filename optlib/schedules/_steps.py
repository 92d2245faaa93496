"""The update count as the schedules see it: step counts, and the float-step rule per family.

optax calls a schedule with its update count, an int32 that saturates at ``2**31 - 1``; so
every horizon a schedule takes (``num_training_steps``, ``T_max``, ``total_iters``, ...) is a
step count in ``[0, 2**31 - 1]`` (``check_step_count``). What a schedule does with a float
step depends on the family whose semantics it mirrors:

* Hugging Face schedules and the other published ones (``transformers``' ``LambdaLR`` is
  stepped with integers): a float count is floored (``hf_step``);
* torch schedules: integer steps only, a float step raises ``TypeError``
  (``optlib.schedules._torch_rules.step_array``), except where torch itself takes a
  fractional epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from optlib._numerics import INT32_MAX, as_float
from optlib._validation import check_int

__all__ = ["Schedule", "check_last_epoch", "check_step_count", "hf_step", "ratio"]

Schedule = Callable[[Any], jax.Array]
"""A function of the update count, like ``optax.Schedule``."""


def check_step_count(name: str, value: Any, *, minimum: int = 0) -> int:
    """A number of steps: an integer in ``[minimum, 2**31 - 1]`` (optax's count is a saturating
    int32, and a larger Python integer cannot enter a jitted computation under 32-bit JAX)."""
    number = check_int(name, value, minimum=minimum)
    if number > INT32_MAX:
        raise ValueError(
            f"{name} must be <= 2**31 - 1 (optax's update count is an int32), got {value!r}"
        )
    return number


def check_last_epoch(last_epoch: Any) -> int:
    """torch's ``last_epoch``: ``-1`` (a fresh schedule) or the last step taken, below
    ``2**31 - 1`` (the resumed schedule is called with optax's int32 count plus it)."""
    last_epoch = check_int("last_epoch", last_epoch, minimum=-1)
    if last_epoch >= INT32_MAX:
        raise ValueError(
            f"last_epoch must be < 2**31 - 1 (optax's count is int32), got {last_epoch}"
        )
    return last_epoch


def hf_step(step: Any) -> jax.Array:
    """The update count as an integer array (a float count is floored)."""
    step = jnp.asarray(step)
    if not jnp.issubdtype(step.dtype, jnp.integer):
        step = jnp.floor(step).astype(jnp.result_type(int))
    return step


def ratio(numerator: jax.Array, denominator: int | float) -> jax.Array:
    """``float(numerator) / float(denominator)`` with an exact integer ``numerator``."""
    return as_float(numerator) / denominator
