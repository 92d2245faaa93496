"""Averages of the parameters: torch.optim.swa_utils (SWA, EMA) and ASGD's ``ax``.

An averaging transform goes LAST in a chain. It sees the parameters before the update and
the finished update, so the model it averages is ``params + updates`` (what
``optax.apply_updates`` will produce), and it returns the updates unchanged. The average
lives in the state, where ``averaged_params(opt_state)`` finds it.

All averages here are ``avg <- avg + w * (p - avg)`` with a weight ``w`` that depends on the
averaging rule, and the first averaged step copies the parameters (as torch does):

* ``average_params("swa")``: ``w = 1 / (n + 1)`` after ``n`` averaged models, the equal-weight
  mean of ``AveragedModel``'s default;
* ``average_params("ema", decay=d)``: ``w = 1 - d`` (``get_ema_multi_avg_fn(d)``);
* ``asgd_average(t0)``: torch.optim.ASGD's ``ax`` with ``mu_t = 1 / max(1, t - t0)``.

The average is kept in the ``statistics_dtype`` option's dtype (float32 or wider by default:
the parameter's dtype for float32 / float64, as torch keeps it -- ``AveragedModel``
deep-copies the model, ASGD's ``ax`` is ``zeros_like(p)`` -- and float32 for bf16 / fp16
parameters, since an average over many steps in bf16 rounds most of each new term away);
``statistics_dtype=None`` keeps it in the parameters' dtype, as torch does for bf16 / fp16
models (computed in float32 and rounded once per step). It is created laid out like its
parameter (``optlib._partition.state_leaf``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optlib._double import Double, settled
from optlib._numerics import (
    DEFAULT_STATISTICS_DTYPE,
    TorchRounding,
    as_float,
    cast,
    check_statistics_dtype,
    safe_increment,
)
from optlib._partition import state_leaf
from optlib._state_tree import find_states
from optlib._validation import check_bool, check_choice, check_int, check_real
from optlib.transforms.learning_rate import LearningRate, learning_rate_tracker
from optlib.transforms.moments import lerp, map_statistics

__all__ = [
    "AverageParamsState",
    "ScaleByAsgdStepSizeState",
    "asgd_average",
    "average_params",
    "averaged_params",
    "scale_by_asgd_step_size",
]


class AverageParamsState(NamedTuple):
    """State of ``average_params`` and ``asgd_average``.

    Attributes:
      count: int32 number of updates seen (saturating).
      n_averaged: int32 number of models averaged so far (``AveragedModel.n_averaged``;
        saturating).
      average: the running average, same tree as the params (statistics dtype: see the
        module docstring). Before the first averaged step: a copy of the initial params
        (``average_params``, as ``AveragedModel`` deep-copies the model) or zeros
        (``asgd_average``, torch's ``ax``).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    n_averaged: jax.Array
    average: optax.Params


def _running_average(
    init_average: Callable[[jax.Array], jax.Array],
    averages_now: Callable[[jax.Array], jax.Array],
    weight: Callable[[jax.Array, jax.Array], jax.Array],
    copies: Callable[[jax.Array, jax.Array], jax.Array],
    blend: Callable[[jax.Array, jax.Array, jax.Array, TorchRounding], jax.Array],
) -> optax.GradientTransformation:
    """The averaging transform every rule shares.

    After update ``t = count + 1``, if ``averages_now(t)``: ``avg <- p + u`` where
    ``copies(t, n)``, else ``blend(avg, p + u, weight(t, n), rounding)``; ``n`` is
    ``n_averaged`` and ``rounding`` the average's ``TorchRounding`` (for a blend written as
    torch's in-place ops).
    """

    def init_fn(params):
        return AverageParamsState(
            count=jnp.zeros([], jnp.int32),
            n_averaged=jnp.zeros([], jnp.int32),
            average=jax.tree.map(init_average, params),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        step = safe_increment(state.count)
        now = averages_now(step)
        first = copies(step, state.n_averaged)
        w = weight(step, state.n_averaged)

        def leaf(r, model, average):
            model = model.astype(average.dtype)
            new = jnp.where(first, model, blend(average, model, w.astype(average.dtype), r))
            return (jnp.where(now, new, average),)

        models = optax.apply_updates(params, updates)  # the model, in the parameters' dtype
        (average,) = map_statistics(leaf, models, state.average, rounding=True)
        n_averaged = jnp.where(now, safe_increment(state.n_averaged), state.n_averaged)
        return updates, AverageParamsState(step, n_averaged, average)

    return optax.GradientTransformation(init_fn, update_fn)


def average_params(
    avg_fn: str = "swa",
    *,
    decay: float = 0.999,
    start_step: int = 0,
    every_n_steps: int = 1,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Keeps a running average of the parameters (torch.optim.swa_utils.AveragedModel).

    Place it last in a chain; updates pass through unchanged. After update ``t`` (1-based),
    when ``t > start_step`` and ``(t - start_step) % every_n_steps == 0``, the model
    ``p_t = params + updates`` is averaged in, exactly as ``AveragedModel.update_parameters``
    would after that update::

        n == 0:  avg = p_t                                 (the first averaged step copies)
        "swa":   avg = lerp(avg, p_t, 1 / (n + 1))         (default avg_fn: equal weights)
        "ema":   avg = lerp(avg, p_t, 1 - decay)           (get_ema_multi_avg_fn(decay))
        n <- n + 1

    torch's per-epoch recipe (``if epoch >= swa_start: swa_model.update_parameters(model)``
    after each epoch of ``steps_per_epoch`` updates) is
    ``start_step=swa_start * steps_per_epoch, every_n_steps=steps_per_epoch``. Read the
    average with ``optlib.averaged_params(opt_state)``; before the first averaged step it is
    the initial parameters (``AveragedModel``'s deep copy). Buffers (batch-norm statistics)
    are not parameters and are not averaged here (``use_buffers=False``; recompute them with
    the averaged parameters as ``torch.optim.swa_utils.update_bn`` does).

    Args:
      avg_fn: ``"swa"`` (equal-weight average) or ``"ema"`` (exponential moving average).
      decay: the EMA decay, in [0, 1] (``"ema"`` only; torch's default 0.999).
      start_step: updates before the averaging starts (>= 0).
      every_n_steps: average every this many updates (>= 1).
      statistics_dtype: dtype of the average (at least this wide; None: the parameters'
        dtype, as torch).

    Returns:
      An ``optax.GradientTransformation`` with state ``AverageParamsState``; needs ``params``.

    Raises:
      ValueError: an unknown ``avg_fn``, ``decay`` outside [0, 1] (torch's "Invalid decay
        value"), a negative ``start_step`` or ``every_n_steps < 1``; TypeError for
        non-integer steps.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    check_choice("avg_fn", avg_fn, ("swa", "ema"))
    decay = check_real("decay", decay)
    if not isinstance(decay, jax.core.Tracer) and not 0.0 <= decay <= 1.0:
        raise ValueError(
            f"decay must be in [0, 1] (torch: Invalid decay value {decay} provided. Please "
            "provide a value in [0,1] range.)"
        )
    start_step = check_int("start_step", start_step, minimum=0)
    every_n_steps = check_int("every_n_steps", every_n_steps, minimum=1)

    def averages_now(step):
        since = step - jnp.minimum(start_step, step)  # no int32 overflow for a huge start
        return (step > start_step) & (since % every_n_steps == 0)

    if avg_fn == "swa":
        weight = lambda step, n: 1 / (as_float(n) + 1)
    else:
        weight = lambda step, n: as_float(1 - decay)
    return _running_average(
        lambda param: state_leaf(param, param, statistics_dtype),  # AveragedModel's copy
        averages_now,
        weight,
        copies=lambda step, n: n == 0,
        blend=lambda average, model, w, r: lerp(average, model, w),
    )


def asgd_average(
    t0: float = 1e6, *, statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE
) -> optax.GradientTransformation:
    """torch.optim.ASGD's averaged parameters ``ax``, updated after every step.

    After update ``t`` (1-based), with ``p_t = params + updates``::

        mu_t = 1 / max(1, t - 1 - t0)     (the mu torch computed at the end of step t - 1)
        ax   = p_t  if mu_t == 1  else  ax + mu_t * (p_t - ax)

    so ``ax`` follows the parameters until step ``t0 + 2`` and then becomes their running mean
    since then (Polyak-Ruppert averaging). The blend is torch's
    ``ax.add_(p.sub(ax).mul_(mu))``, each op rounded to ``ax``'s dtype when that is
    bf16/fp16 (``statistics_dtype=None``). ``ax`` starts at zeros, as in torch; read it with
    ``optlib.averaged_params(opt_state)``. Place it last in the chain.

    Args:
      t0: the step at which the averaging starts (torch's ``t0``).
      statistics_dtype: dtype of ``ax`` (at least this wide; None: the parameters' dtype,
        as torch).

    Returns:
      An ``optax.GradientTransformation`` with state ``AverageParamsState``; needs ``params``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    t0 = check_real("t0", t0)

    def weight(step, n):
        del n
        return 1 / jnp.maximum(1, as_float(step) - 1 - t0)

    return _running_average(
        lambda param: state_leaf(param, 0.0, statistics_dtype),
        averages_now=lambda step: jnp.ones([], bool),
        weight=weight,
        copies=lambda step, n: weight(step, n) == 1,
        # torch: ax.add_(p.sub(ax).mul_(mu)), each op rounded to ax's dtype
        blend=lambda average, model, w, r: r.keep(average + r.keep(r.keep(model - average) * w)),
    )


def averaged_params(opt_state: Any) -> optax.Params:
    """The averaged parameters held in ``opt_state`` (``average_params`` or ASGD's ``ax``).

    Finds the one ``AverageParamsState`` anywhere inside the (nested) optax state, e.g.
    ``TrainState.opt_state``; jit-able.

    Args:
      opt_state: an optax optimizer state.

    Returns:
      The averaged tree (same structure as the params; dtype: see ``average_params``).

    Raises:
      ValueError: if the state holds no average, or more than one.
    """
    found = find_states(opt_state, AverageParamsState)
    if len(found) != 1:
        raise ValueError(
            f"averaged_params: expected one averaging state (optlib.average_params, "
            f"optlib.asgd) in this optimizer state, found {len(found)}."
        )
    return found[0].average


# --------------------------------------------------------------------------------- ASGD


class ScaleByAsgdStepSizeState(NamedTuple):
    """State of ``scale_by_asgd_step_size`` (torch's ASGD ``step`` and ``eta``).

    Attributes:
      count: int32 number of updates so far (torch's ``step``; saturating).
      eta: the step size the next update applies (torch's ``eta``).
      learning_rate_state: the state that follows ``learning_rate`` (torch's group ``lr``;
        ``optlib.current_learning_rate`` reads it).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    eta: jax.Array
    learning_rate_state: Any


def scale_by_asgd_step_size(
    learning_rate: LearningRate = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    *,
    torch_step: bool = False,
) -> optax.GradientTransformation:
    """Multiplies updates by ``-eta``, torch.optim.ASGD's decaying step size.

    ``u = -eta * u``, then, as torch does at the end of its step ``t``::

        eta <- lr_t / (1 + lambd * lr_t * t)**alpha

    where ``lr_t`` is the learning rate in effect for that step (torch's group ``lr``:
    ``schedule(t - 1)``, or a metric-driven rate before the step's metric). ``eta`` starts
    at the rate of the first update, so a schedule reaches ``eta`` one step late, as in
    torch. ASGD's decay ``p * (1 - lambd * eta)`` is L2 decay of coefficient ``lambd`` put
    before this transform (see ``optlib.asgd``).

    With ``torch_step`` the update is instead the change of the parameter under torch's two
    in-place ops, ``p.mul_(1 - lambd * eta)`` then ``p.add_(u, alpha=-eta)``, each rounded to
    the parameter's dtype (and ``-eta`` rounded to it first, as ``add_`` rounds its
    ``alpha``): the decay is this transform's (no L2 link before it), and the change comes
    back in float32 for bf16/fp16 parameters, so that ``optax.apply_updates`` lands on
    torch's parameter exactly (``optlib.asgd`` with ``statistics_dtype=None``); ``eta`` and
    ``1 - lambd * eta`` are then torch's Python-double values converted to float32
    (``optlib._double.Double``), not float32 arithmetic.

    Args:
      learning_rate: lr (>= 0): float, schedule or metric-driven lr transform.
      lambd: torch's ``lambd`` (>= 0).
      alpha: the power of the decay of ``eta``.
      torch_step: apply the decay and the step as torch's rounded in-place ops (needs
        ``params``).

    Returns:
      An ``optax.GradientTransformation`` (``...ExtraArgs``) with state
      ``ScaleByAsgdStepSizeState``.
    """
    lambd = check_real("lambd", lambd)
    if not isinstance(lambd, jax.core.Tracer) and lambd < 0:
        raise ValueError(f"lambd must be >= 0, got {lambd!r}")
    alpha = check_real("alpha", alpha)
    torch_step = check_bool("torch_step", torch_step)
    tracker = learning_rate_tracker(learning_rate)

    def torch_leaf(g, p, eta, decay_factor):
        r = TorchRounding.of(p.dtype)
        wide = cast(p, r.compute)
        decayed = r.keep(wide * cast(decay_factor, r.compute))  # p.mul_(1 - lambd * eta)
        stepped = r.keep(decayed + r.alpha(-eta) * cast(g, r.compute))  # p.add_(g, alpha=-eta)
        return r.update(stepped - wide, g)  # exact: p + u is torch's parameter

    def init_fn(params):
        rate_state = tracker.init(params)
        count = jnp.zeros([], jnp.int32)
        return ScaleByAsgdStepSizeState(count, as_float(tracker.rate(rate_state)), rate_state)

    def update_fn(updates, state, params=None, **extra_args):
        eta = state.eta
        if torch_step:
            if params is None:
                raise ValueError(optax.NO_PARAMS_MSG)
            # torch's double 1 - lambd * eta, converted to float32
            decay_factor = settled(
                lambda: (1 - Double.lift(lambd) * Double.exact(eta)).hi, state.count >= 0
            )
            updates = jax.tree.map(
                lambda g, p: torch_leaf(g, p, eta, decay_factor), updates, params
            )
        else:
            updates = jax.tree.map(lambda u: cast(-eta * u, u.dtype), updates)
        rate = as_float(tracker.rate(state.learning_rate_state))
        count = safe_increment(state.count)
        if torch_step and isinstance(alpha, (int, float)):
            # torch's Python doubles: lr / (1 + lambd * lr * step) ** alpha

            def torch_eta():
                exact_rate = (
                    Double.of(learning_rate)
                    if isinstance(learning_rate, (int, float))
                    else Double.exact(rate)
                )
                base = 1 + Double.lift(lambd) * exact_rate * Double.exact(as_float(count))
                return (exact_rate / base.real_power(float(alpha))).hi

            new_eta = settled(torch_eta, count > 0)
        else:
            new_eta = rate / (1 + lambd * rate * as_float(count)) ** alpha
        rate_state = tracker.step(state.learning_rate_state, params, extra_args)
        return updates, ScaleByAsgdStepSizeState(count, new_eta, rate_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
