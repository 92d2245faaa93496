"""The transform that owns the learning rate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optlib._numerics import as_float, cast, float_dtype, parameter_move, safe_increment
from optlib._numerics import statistics_dtype as statistics_dtype_of
from optlib._state_tree import (
    current_learning_rate,
    is_learning_rate_state,
    register_learning_rate_state,
)
from optlib._validation import check_bool, check_learning_rate, check_non_negative
from optlib.schedules import MomentumSchedule

__all__ = [
    "LearningRate",
    "LearningRateTracker",
    "ResolvedLearningRate",
    "ScaleByLearningRateState",
    "apply_learning_rate",
    "learning_rate_at",
    "learning_rate_tracker",
    "resolve_learning_rate",
    "scale_by_learning_rate",
    "scale_updates",
    "torch_parameter_step",
    "track_learning_rate",
]


LearningRate: TypeAlias = float | optax.Schedule | optax.GradientTransformation
"""What an optimizer's ``learning_rate`` may be.

* a float (torch's ``lr``);
* an ``optax.Schedule`` of the update count, including a ``MomentumSchedule`` (torch's
  ``OneCycleLR`` / ``CyclicLR`` with ``cycle_momentum=True``, whose ``.momentum`` then drives
  the optimizer's momentum or ``betas[0]``);
* a metric-driven learning-rate transform (``optlib.reduce_lr_on_plateau(...)``,
  ``optlib.greedy_lr(...)``), which scales the updates by ``-lr`` itself.
"""


def learning_rate_at(learning_rate: float | optax.Schedule, count: jax.Array) -> jax.Array:
    """The rate a float or a schedule gives at update ``count`` (default float dtype)."""
    if callable(learning_rate):
        return as_float(learning_rate(count))
    return as_float(learning_rate)


def scale_updates(updates: optax.Updates, step_size) -> optax.Updates:
    """``step_size * u`` for every update leaf, in the leaf's dtype: the one multiplication by
    ``-lr`` that every learning-rate transform (schedules, metric-driven, relative step) ends
    with."""
    return jax.tree.map(lambda u: cast(step_size * u, u.dtype), updates)


def _step_size(sign: float, learning_rate, count: jax.Array) -> jax.Array | np.ndarray:
    """``sign * lr(count)`` in the default float dtype.

    For a float rate it is a numpy constant (the same number), which each leaf multiplies as
    a literal, like ``optax.scale``: large trees then trace and compile as fast as optax's.
    """
    if isinstance(learning_rate, (int, float)):
        return np.asarray(sign * learning_rate, float_dtype())  # sign is +-1: exact
    return sign * learning_rate_at(learning_rate, count)


@register_learning_rate_state
class ScaleByLearningRateState(NamedTuple):
    """State of ``scale_by_learning_rate``.

    Attributes:
      count: int32 number of updates applied so far (saturates at 2**31 - 1).
      learning_rate: the rate the next update applies, ``schedule(count)``; kept in the
        state so ``current_learning_rate`` can read it without knowing the schedule.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    learning_rate: jax.Array


def scale_by_learning_rate(
    learning_rate: float | optax.Schedule, *, flip_sign: bool = True
) -> optax.GradientTransformation:
    """Multiplies updates by ``-learning_rate`` (``+`` with ``flip_sign=False``).

    ``u_t = -lr(t) * u_t`` where ``lr(t)`` is the float or ``schedule(count)``. This is
    ``optax.scale_by_learning_rate`` plus the rate in the state, so that
    ``optlib.current_learning_rate`` works for every optimizer whatever its learning rate is.
    Updates keep their dtype.

    Args:
      learning_rate: a non-negative float or an ``optax.Schedule`` of the update count.
      flip_sign: multiply by ``-lr`` (descent, the default) rather than ``lr``.

    Returns:
      An ``optax.GradientTransformation``.
    """
    check_learning_rate(learning_rate)
    sign = -1.0 if check_bool("flip_sign", flip_sign) else 1.0

    def init_fn(params):
        del params
        count = jnp.zeros([], jnp.int32)
        return ScaleByLearningRateState(count, learning_rate_at(learning_rate, count))

    def update_fn(updates, state, params=None):
        del params
        # Recomputed from the closure rather than read from the state, so that a rate
        # injected by ``optax.inject_hyperparams`` takes effect on this very update.
        step_size = _step_size(sign, learning_rate, state.count)
        updates = scale_updates(updates, step_size)
        count = safe_increment(state.count)
        return updates, ScaleByLearningRateState(count, learning_rate_at(learning_rate, count))

    return optax.GradientTransformation(init_fn, update_fn)


class ResolvedLearningRate(NamedTuple):
    """What an optimizer's ``learning_rate`` contributes to its chain.

    Attributes:
      transform: the last link, which multiplies the updates by ``-lr``.
      momentum: a ``MomentumSchedule``'s ``.momentum`` (torch's ``cycle_momentum``), which
        replaces the optimizer's momentum / ``betas[0]``; ``None`` otherwise.
    """

    transform: optax.GradientTransformation
    momentum: optax.Schedule | None


def resolve_learning_rate(learning_rate: LearningRate) -> ResolvedLearningRate:
    """The one place that tells the kinds of ``learning_rate`` apart (see ``LearningRate``).

    * a float or an ``optax.Schedule``: ``scale_by_learning_rate`` (which checks it);
    * a ``MomentumSchedule``: the same, plus its momentum schedule;
    * a learning-rate transform (``optlib.reduce_lr_on_plateau(...)``, ``optlib.greedy_lr(...)``,
      ``optlib.scale_by_learning_rate(...)``: a transformation whose state is a registered
      learning-rate state, see ``optlib.register_learning_rate_state``): used as is.

    Raises:
      TypeError: for any other ``optax`` transformation (e.g. ``optax.adam(1e-3)``), which
        would otherwise be chained in silently as a second optimizer.
    """
    if isinstance(learning_rate, optax.GradientTransformation):
        _check_learning_rate_transform(learning_rate)
        return ResolvedLearningRate(learning_rate, None)
    momentum = learning_rate.momentum if isinstance(learning_rate, MomentumSchedule) else None
    return ResolvedLearningRate(scale_by_learning_rate(learning_rate), momentum)


def _check_learning_rate_transform(transform: optax.GradientTransformation) -> None:
    state = jax.eval_shape(transform.init, jnp.zeros([], jnp.float32))
    if not is_learning_rate_state(state):
        raise TypeError(
            "learning_rate must be a float, a schedule, or a learning-rate transformation "
            "(optlib.reduce_lr_on_plateau(...), optlib.greedy_lr(...)); got an optax "
            f"transformation whose state is {type(state).__name__}, which would be chained in "
            "as a second optimizer"
        )


def apply_learning_rate(learning_rate: LearningRate) -> optax.GradientTransformation:
    """The step that multiplies updates by ``-lr``, whatever ``learning_rate`` is.

    Every optlib optimizer ends with this (``resolve_learning_rate(lr).transform``), so its
    ``learning_rate`` may be a float, a schedule (a ``MomentumSchedule`` too) or a
    metric-driven scheduler (``optlib.reduce_lr_on_plateau(...)``, ``optlib.greedy_lr(...)``),
    which scales by ``-lr`` itself and is used as is.

    Args:
      learning_rate: a float, a schedule, or a learning-rate ``GradientTransformation``.

    Returns:
      An ``optax.GradientTransformation`` (``...ExtraArgs`` for metric-driven ones).
    """
    return resolve_learning_rate(learning_rate).transform


def torch_parameter_step(
    learning_rate: LearningRate,
    *,
    rate_rounded: bool = False,
    decoupled_weight_decay: Any = None,
    rate_applied: bool = False,
    quotients: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """``apply_learning_rate`` that applies the step as torch's in-place ops on the parameter
    round it (the last link of optimizers built with ``statistics_dtype=None``).

    The state is ``apply_learning_rate(learning_rate)``'s, stepped the same way. The step is
    returned in the parameters' compute dtype (float32 for bf16/fp16 parameters, as the
    updates of statistics kept in the parameters' dtype, see ``TorchRounding.update``), so
    that ``optax.apply_updates`` adds it and rounds the parameter once, as torch's final
    in-place op computes in float32 and rounds once. Besides:

    * ``rate_rounded``: the step is ``-round(lr) * u``, the rate rounded to the parameter's
      dtype, as torch's ``p.add_(u, alpha=-lr)`` rounds its ``alpha`` (SGD, Adadelta,
      RMSprop with momentum); other steps (``addcdiv_``'s ``value``) keep it in float32;
    * ``decoupled_weight_decay``: ``round(p * (1 - lr * wd)) - p`` is added to the step
      (exact in float32): torch's ``p.mul_(1 - lr * weight_decay)`` before the step (AdamW,
      NAdam, RAdam), rounded to the parameter's dtype as torch rounds it;
    * ``rate_applied``: the updates already include the rate, multiplied in by the transform
      where torch multiplies it, inside a rounded tensor op (RAdam's
      ``exp_avg / bc1 * lr * ...``, see ``scale_by_radam``'s ``learning_rate``), so the step
      is ``-u`` (torch's ``p.add_(x, alpha=-1.0)``); the rate is still followed here (the
      state, ``current_learning_rate``) and scales the decoupled decay;
    * ``quotients``: torch's step is ``p.addcdiv_(n, d, value=-lr * c)``, once (Adagrad,
      RMSprop without momentum) or twice (NAdam), and each update leaf is the tuple of its
      ``(c, n, d)`` operands, ``c`` a scalar coefficient or None for 1 (the transforms'
      ``quotients`` option; a leaf whose statistics are not narrower than float32 is a
      plain update, stepped as usual). Each moves the parameter to
      ``round(p + (-lr * c) * n / d)``, computed in torch's order (the scalar first, the
      division last: no multiply-add that XLA would fuse into an FMA, as it fuses
      ``p + (-lr) * u``), one after the other, after the decoupled decay if any; the step
      is the parameter's total move (exact in float32).

    For float32/float64 parameters both are the usual arithmetic. The rate is the one
    ``apply_learning_rate`` applies in this update (``learning_rate_tracker``): a float, a
    schedule or a metric-driven rate.

    Args:
      learning_rate: a float, a schedule, or a learning-rate ``GradientTransformation``.
      rate_rounded: round the rate to the parameters' dtype (torch's ``add_(alpha=-lr)``).
      decoupled_weight_decay: the decoupled decay coefficient, or None for none.
      rate_applied: the updates already include the rate (step ``-u``).
      quotients: the updates are tuples of torch's ``addcdiv_`` operands.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (needs ``params`` in ``update``).
    """
    quotients = check_bool("quotients", quotients)
    rate_rounded = check_bool("rate_rounded", rate_rounded)
    rate_applied = check_bool("rate_applied", rate_applied)
    if decoupled_weight_decay is not None:
        decoupled_weight_decay = check_non_negative(
            "decoupled_weight_decay", decoupled_weight_decay
        )
    transform = optax.with_extra_args_support(apply_learning_rate(learning_rate))
    tracker = learning_rate_tracker(learning_rate)
    weight_decay = decoupled_weight_decay

    def decay_factor(rate):
        if isinstance(learning_rate, (int, float)) and isinstance(weight_decay, (int, float)):
            return np.asarray(1 - learning_rate * weight_decay, float_dtype())  # torch's double
        return 1 - rate * weight_decay

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("the torch parameter step needs params in update")
        rate = tracker.rate(state)
        scaled, new_state = transform.update(updates, state, params, **extra_args)

        def decayed(wide_p, p):
            """torch's ``p.mul_(1 - lr * weight_decay)``, rounded to the parameter's dtype."""
            factor = cast(decay_factor(rate), wide_p.dtype)
            return cast(cast(wide_p * factor, p.dtype), wide_p.dtype)

        def leaf(u, step, p):
            compute = statistics_dtype_of(p.dtype)
            step = cast(step, compute)
            if rate_applied:
                step = -cast(u, compute)
            elif rate_rounded:
                step = -cast(cast(rate, p.dtype), compute) * cast(u, compute)
            if weight_decay is not None:
                wide_p = cast(p, compute)
                step = step + parameter_move(decayed(wide_p, p), wide_p)
            return step

        def quotients_leaf(p, pairs, scaled_pairs):
            """torch's ``p.addcdiv_(n, d, value=-lr * c)`` for each ``(c, n, d)``, rounded."""
            if not isinstance(pairs, tuple):  # statistics float32 or wider: the usual step
                return leaf(pairs, scaled_pairs, p)
            compute = statistics_dtype_of(p.dtype)
            wide_p = cast(p, compute)
            moved = decayed(wide_p, p) if weight_decay is not None else wide_p
            for c, n, d in pairs:
                value = -cast(rate, compute) * (1 if c is None else cast(c, compute))
                moved = cast(cast(moved + value * cast(n, compute) / d, p.dtype), compute)
            return parameter_move(moved, wide_p)

        if quotients:  # the tuples of pairs are subtrees at the params' leaves
            return jax.tree.map(quotients_leaf, params, updates, scaled), new_state
        return jax.tree.map(leaf, updates, scaled, params), new_state

    return optax.GradientTransformationExtraArgs(transform.init, update_fn)


def initial_learning_rate(learning_rate: LearningRate, params: optax.Params) -> Any:
    """The rate of the first update: the float, ``schedule(0)``, or a metric-driven rate's
    initial rate (read from its freshly initialised state for ``params``)."""
    if isinstance(learning_rate, optax.GradientTransformation):
        return current_learning_rate(learning_rate.init(params))
    return learning_rate_at(learning_rate, jnp.zeros([], jnp.int32))


def track_learning_rate(learning_rate: LearningRate) -> optax.GradientTransformationExtraArgs:
    """Negates the updates, and keeps ``learning_rate``'s state without scaling by it.

    The last link of an optimizer whose updates already have their size (torch.optim.Rprop,
    where ``lr`` only sets the initial step sizes). Its state is ``apply_learning_rate``'s,
    stepped as usual (a schedule's count advances, a metric-driven rate steps on
    ``value=``), so ``current_learning_rate`` reads what torch's ``group['lr']`` would hold
    under the same scheduler, while the updates are only negated (descent).

    Args:
      learning_rate: a float, a schedule, or a learning-rate ``GradientTransformation``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.
    """
    tracker = learning_rate_tracker(learning_rate)

    def update_fn(updates, state, params=None, **extra_args):
        return jax.tree.map(jnp.negative, updates), tracker.step(state, params, extra_args)

    return optax.GradientTransformationExtraArgs(tracker.init, update_fn)


class LearningRateTracker(NamedTuple):
    """The rate of a ``LearningRate``, for a transform whose step size is a function of it.

    Attributes:
      init: ``params -> state``, the state of ``apply_learning_rate(learning_rate)``.
      rate: ``state -> lr``, the rate that ``apply_learning_rate`` would apply next (torch's
        ``param_group["lr"]`` during the coming ``optimizer.step()``).
      step: ``(state, params, extra_args) -> state``, that state after one update (for a
        metric-driven rate: one scheduler step on ``extra_args["value"]``, if given).
    """

    init: Callable[[Any], Any]
    rate: Callable[[Any], jax.Array]
    step: Callable[[Any, Any, dict], Any]


def learning_rate_tracker(learning_rate: LearningRate) -> LearningRateTracker:
    """Follows ``learning_rate`` without scaling anything by it.

    Some torch optimizers use ``lr`` inside a formula rather than as a factor (ASGD's
    ``eta = lr / (1 + lambd * lr * t)**alpha``, Adafactor's ``min(lr, 1/sqrt(t))``); their
    transform owns the rate and nests the state of ``apply_learning_rate(learning_rate)``,
    stepped by ``step``. The nested state is the usual one (``ScaleByLearningRateState`` or
    a metric-driven scheduler's), so ``optlib.current_learning_rate`` reads the rate and
    ``optlib.report_metric`` steps a metric-driven one, as for every other optimizer.

    Args:
      learning_rate: a float, a schedule or a metric-driven learning-rate transform.

    Returns:
      A ``LearningRateTracker``.
    """
    transform = optax.with_extra_args_support(apply_learning_rate(learning_rate))
    if isinstance(learning_rate, optax.GradientTransformation):
        rate = lambda state: state.learning_rate
    else:
        # From the closure (not the state), so an injected hyperparameter applies at once.
        rate = lambda state: learning_rate_at(learning_rate, state.count)

    def step(state, params, extra_args):
        return transform.update((), state, params, **extra_args)[1]

    return LearningRateTracker(transform.init, rate, step)
