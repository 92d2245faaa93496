"""torch's heavy-ball momentum buffer, with momentum from a float or a schedule."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optlib._numerics import (
    DEFAULT_STATISTICS_DTYPE,
    cast,
    check_statistics_dtype,
    safe_increment,
)
from optlib._validation import check_bool, check_interval, check_non_negative, is_traced
from optlib.transforms.learning_rate import learning_rate_at
from optlib.transforms.moments import map_statistics, statistics_like

__all__ = ["TraceMomentumState", "check_momentum", "trace_momentum"]


def check_momentum(momentum, dampening: float = 0.0, nesterov: bool = False) -> tuple:
    """torch's SGD checks: ``momentum >= 0`` (unless a schedule), ``dampening`` in [0, 1],
    ``nesterov`` only with a momentum > 0 and zero dampening. Returns the checked pair."""
    scheduled = callable(momentum)
    if not scheduled:
        momentum = check_non_negative("momentum", momentum)
    dampening = check_interval("dampening", dampening, 0.0, 1.0)
    nesterov = check_bool("nesterov", nesterov)
    # Values traced under jit (injected by optax.inject_hyperparams) were checked at init.
    traced = is_traced(momentum) or is_traced(dampening)
    if nesterov and not traced and ((not scheduled and momentum <= 0) or dampening != 0):
        raise ValueError(
            "nesterov=True requires a momentum > 0 and zero dampening, got "
            f"momentum={momentum!r}, dampening={dampening!r}"
        )
    return momentum, dampening


class TraceMomentumState(NamedTuple):
    """State of ``trace_momentum``.

    Attributes:
      count: int32 updates so far (saturating); indexes a momentum schedule.
      has_buffer: bool scalar, whether the buffer exists yet (torch creates it on the first
        step with a non-zero momentum).
      momentum_buffer: the buffer, float32 or wider, same tree as the params; it starts as
        ``-0.0`` (see ``trace_momentum``).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    has_buffer: jax.Array
    momentum_buffer: optax.Updates


def trace_momentum(
    momentum: float | optax.Schedule,
    dampening: float = 0.0,
    nesterov: bool = False,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """torch's momentum buffer (torch.optim.SGD; also RMSprop's ``momentum``).

    With ``mu = momentum(count)``::

        b_1 = g_1                                  (first step: a copy, no dampening)
        b_t = mu * b_{t-1} + (1 - dampening) * g_t
        u_t = g_t + mu * b_t   if nesterov else   b_t

    A step whose ``mu`` is 0 leaves the buffer alone and passes ``g_t`` through (torch skips
    the momentum branch). The buffer starts as ``-0.0``, so that with ``dampening == 0`` the
    first-step copy is ``mu * (-0.0) + g = g`` exactly, signed zeros included: every step is
    then the one fused ``mu * b + g`` that ``optax.trace`` compiles to, with no per-step select.
    It is also RMSprop's zero-initialised ``buf = mu * buf + g / avg``. optax's
    ``optax.trace`` has no dampening and no momentum schedule, hence this transform.

    A constant ``momentum == 0`` keeps no buffer at all (``optax.identity()``), like torch.

    Args:
      momentum: momentum factor (>= 0), or a schedule of the update count (e.g. a
        ``MomentumSchedule``'s ``.momentum``, torch's ``cycle_momentum``).
      dampening: dampening for momentum, in [0, 1].
      nesterov: Nesterov momentum (needs momentum > 0 and zero dampening, as in torch).
      statistics_dtype: dtype of the buffer (at least this wide; None: the parameters'
        dtype, as torch).

    Returns:
      An ``optax.GradientTransformation``; updates keep the gradients' dtype, the buffer is
      float32 for bf16/fp16 gradients.

    Raises:
      ValueError: negative ``momentum``, ``dampening`` outside [0, 1], or ``nesterov`` with a
        zero momentum or a non-zero dampening.
    """
    # An array momentum (optax.inject_hyperparams) may change per step, like a schedule:
    # keep the buffer so that init and a jitted update agree on the state.
    varying = callable(momentum) or isinstance(momentum, jax.Array)
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    momentum, dampening = check_momentum(momentum, dampening, nesterov)
    if not varying and momentum == 0:
        return optax.identity()

    def init_fn(params):
        buffer = statistics_like(params, -0.0, statistics_dtype)
        return TraceMomentumState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.bool_), buffer)

    undampened = isinstance(dampening, float) and dampening == 0

    def update_fn(updates, state, params=None):
        del params
        mu = momentum if not varying else learning_rate_at(momentum, state.count)
        active = mu != 0

        def leaf(r, g, buf):
            g32 = cast(g, buf.dtype)
            m = cast(mu, buf.dtype) if varying else mu
            # torch: buf.mul_(mu).add_(g, alpha=1 - dampening); grad.add(buf, alpha=mu)
            if undampened:  # b_1 = mu * (-0.0) + g = g: no select needed (mu >= 0)
                new_buf = r.keep(r.keep(m * buf) + g32)
            else:
                continued = r.keep(r.keep(m * buf) + r.alpha(1 - dampening) * g32)
                new_buf = jax.lax.select(state.has_buffer, continued, g32)
            step = r.keep(g32 + r.alpha(m) * new_buf) if nesterov else new_buf
            if not varying:  # a constant momentum (> 0 here) is always active: no selects
                return r.update(step, g), new_buf
            return (
                r.update(jax.lax.select(active, step, g32), g),
                jax.lax.select(active, new_buf, buf),
            )

        new_updates, new_buffer = map_statistics(
            leaf, updates, state.momentum_buffer, rounding=True
        )
        new_state = TraceMomentumState(
            safe_increment(state.count), state.has_buffer | active, new_buffer
        )
        return new_updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)
