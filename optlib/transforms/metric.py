"""Metric-driven learning-rate schedulers: ReduceLROnPlateau and GreedyLR as optax transforms.

torch and transformers step these schedulers on the host with ``float(metric)``, which forces
a device sync every step. Here each one is an ``optax.GradientTransformationExtraArgs`` whose
counters live in the optimizer state, so a whole training step, metric included, stays on
device under ``jit``/``pjit``:

* ``tx.update(updates, state, params, value=metric)`` multiplies the updates by ``-lr_k`` (the
  rate in effect before ``metric`` is seen) and then steps the scheduler on ``metric``: the order
  of torch's ``optimizer.step(); scheduler.step(metric)``. Without ``value`` the scheduler does
  not step.
* ``report_metric(opt_state, metric)`` steps every metric-driven state found anywhere inside a
  (nested) optax state, for epoch loops and Flax ``TrainState`` (whose ``apply_gradients`` does
  not forward ``value``).
* ``optlib.current_learning_rate(opt_state)`` reads the rate the next update applies.

**The hyperparameters live in the state.** ``report_metric`` has no access to the transform
that built the state, so each state carries its scheduler's hyperparameters as arrays (a
``...Config`` field) and one pure step function per scheduler does the math for both paths.
Consequently the hyperparameters are checkpointed with the state, and a restored state keeps
the hyperparameters it was saved with (the transform's arguments only build the initial state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization as flax_serialization

from optlib._numerics import INT32_MAX, as_float, float_dtype, safe_increment
from optlib._registry import register
from optlib._state_tree import find_states, map_states, register_learning_rate_state
from optlib._validation import (
    check_bool,
    check_choice,
    check_int,
    check_interval,
    check_non_negative,
    is_traced,
)
from optlib.transforms.learning_rate import scale_updates

__all__ = [
    "GreedyLRConfig",
    "GreedyLRState",
    "PlateauConfig",
    "ReduceLROnPlateauState",
    "StaticFlag",
    "greedy_lr",
    "reduce_lr_on_plateau",
    "report_metric",
]


# --------------------------------------------------------------------------- states


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class StaticFlag:
    """A boolean carried in a state as tree metadata (no leaf, part of the tree structure).

    For options that decide what is *compiled*, not what is computed: GreedyLR's ``verbose``
    must not put a host callback into every quiet training step. Being metadata it is not
    written to checkpoints; it comes back from the restore target (``jax.eval_shape(tx.init,
    params)``), like the rest of the tree structure.

    Attributes:
      value: the flag.
    """

    value: bool

    def __bool__(self) -> bool:
        return self.value


# flax.serialization.to_bytes/from_bytes (checkpoints): a flag writes nothing and is restored
# from the target, like the rest of the tree structure.
flax_serialization.register_serialization_state(
    StaticFlag, lambda flag: {}, lambda target, state: target
)


class PlateauConfig(NamedTuple):
    """``reduce_lr_on_plateau``'s hyperparameters, as arrays carried in its state.

    Attributes:
      factor: float, ``new_lr = lr * factor``.
      patience: int32, bad epochs tolerated before a reduction.
      threshold: float, the significance threshold of an improvement.
      maximize: bool, ``mode == "max"``.
      relative: bool, ``threshold_mode == "rel"``.
      cooldown: int32, epochs to ignore bad epochs after a reduction.
      min_lr: float, the floor of the learning rate.
      eps: float, reductions smaller than this are skipped.
    """

    factor: jax.Array
    patience: jax.Array
    threshold: jax.Array
    maximize: jax.Array
    relative: jax.Array
    cooldown: jax.Array
    min_lr: jax.Array
    eps: jax.Array


@register_learning_rate_state
class ReduceLROnPlateauState(NamedTuple):
    """State of ``reduce_lr_on_plateau`` (torch's scheduler attributes, as arrays).

    Attributes:
      learning_rate: the rate the next update applies (torch's ``param_group["lr"]``).
      best: the best metric so far (``inf`` / ``-inf`` before the first one).
      num_bad_epochs: int32, epochs since the last improvement (saturating).
      cooldown_counter: int32, cooldown epochs left.
      count: int32, metrics seen (torch's ``last_epoch``; saturating).
      config: the hyperparameters (``PlateauConfig``).
    """

    learning_rate: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    cooldown_counter: jax.Array
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    config: PlateauConfig


class GreedyLRConfig(NamedTuple):
    """``greedy_lr``'s hyperparameters, as arrays carried in its state.

    Attributes:
      factor: float, ``lr * factor`` on a plateau, ``lr / factor`` on sustained improvement.
      patience: int32, good (bad) epochs needed before an increase (a decrease).
      threshold: float, the significance threshold of an improvement.
      maximize: bool, ``mode == "max"``.
      relative: bool, ``threshold_mode == "rel"``.
      cooldown: int32, epochs to sit out after a decrease.
      warmup: int32, epochs to sit out after an increase.
      min_lr: float, the floor of the learning rate.
      max_lr: float, the ceiling of the learning rate.
      eps: float, changes smaller than this are skipped.
      verbose: ``StaticFlag``, print HF's messages (through ``jax.debug.callback``); static,
        so a quiet scheduler compiles without any host callback.
      smooth: bool, compare the streaming average of the metric instead of the metric.
      reset_start: int32, reductions at ``min_lr`` before the scheduler resets.
      initial_learning_rate: float, the rate a reset restores.
    """

    factor: jax.Array
    patience: jax.Array
    threshold: jax.Array
    maximize: jax.Array
    relative: jax.Array
    cooldown: jax.Array
    warmup: jax.Array
    min_lr: jax.Array
    max_lr: jax.Array
    eps: jax.Array
    verbose: StaticFlag
    smooth: jax.Array
    reset_start: jax.Array
    initial_learning_rate: jax.Array


@register_learning_rate_state
class GreedyLRState(NamedTuple):
    """State of ``greedy_lr`` (HF's scheduler attributes, as arrays).

    Attributes:
      learning_rate: the rate the next update applies (HF's ``param_group["lr"]``).
      best: the best (smoothed) metric so far (``inf`` / ``-inf`` initially and after a reset).
      num_bad_epochs: int32, consecutive epochs without improvement (saturating).
      num_good_epochs: int32, consecutive epochs with improvement (saturating).
      cooldown_counter: int32, cooldown epochs left.
      warmup_counter: int32, warm-up epochs left.
      reset_countdown: int32, reductions at ``min_lr`` left before a reset (HF's
        ``reset_start`` attribute).
      count: int32, metrics seen (HF's ``last_epoch``; saturating).
      window: float ring buffer of the last ``window_size`` metrics (one unused slot when
        ``smooth=False``).
      window_index: int32, the slot the next metric is written to (the oldest one when full).
      window_fill: int32, how many slots hold metrics.
      window_sum: float, HF's running sum of the window (kept running, not recomputed, so
        that a NaN stays in it as it does in HF).
      config: the hyperparameters (``GreedyLRConfig``).
    """

    learning_rate: jax.Array
    best: jax.Array
    num_bad_epochs: jax.Array
    num_good_epochs: jax.Array
    cooldown_counter: jax.Array
    warmup_counter: jax.Array
    reset_countdown: jax.Array
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    window: jax.Array
    window_index: jax.Array
    window_fill: jax.Array
    window_sum: jax.Array
    config: GreedyLRConfig


# ------------------------------------------------------------------ shared math


def _int32(value: int) -> jax.Array:
    return jnp.asarray(min(value, INT32_MAX), jnp.int32)


def _worst(maximize: jax.Array, dtype: Any) -> jax.Array:
    """The ``best`` before any metric: ``inf`` for ``mode="min"``, ``-inf`` for ``"max"``."""
    return jnp.where(maximize, -jnp.inf, jnp.inf).astype(dtype)


def _is_better(current: jax.Array, best: jax.Array, config: Any) -> jax.Array:
    """Whether ``current`` improves on ``best`` by more than the threshold.

    ``min``/``rel``: ``current < best * (1 - threshold)``; ``min``/``abs``: ``current < best -
    threshold``; ``max`` mirrors them with ``+``. A NaN is never an improvement (every
    comparison with NaN is false), as in torch and HF.
    """
    one = jnp.ones_like(config.threshold)
    lower = jnp.where(
        config.relative,
        current < best * (one - config.threshold),
        current < best - config.threshold,
    )
    higher = jnp.where(
        config.relative,
        current > best * (config.threshold + one),
        current > best + config.threshold,
    )
    return jnp.where(config.maximize, higher, lower)


def _reduced(lr: jax.Array, config: Any) -> jax.Array:
    """``max(lr * factor, min_lr)``, applied only if it lowers ``lr`` by more than ``eps``."""
    new = jnp.maximum(lr * config.factor, config.min_lr)
    return jnp.where(lr - new > config.eps, new, lr)


def _increased(lr: jax.Array, config: GreedyLRConfig) -> jax.Array:
    """``min(lr / factor, max_lr)``, applied only if it raises ``lr`` by more than ``eps``."""
    new = jnp.minimum(lr / config.factor, config.max_lr)
    return jnp.where(new - lr > config.eps, new, lr)


def _as_metric(metric: Any, dtype: Any) -> jax.Array:
    metric = jnp.asarray(metric)
    if metric.ndim != 0:
        raise ValueError(f"the metric must be a scalar, got an array of shape {metric.shape}")
    return metric.astype(dtype)


def _check_scalar_bound(name: str, value: Any) -> float:
    if isinstance(value, (list, tuple)):
        raise TypeError(
            f"{name} must be a number, got a {type(value).__name__}: optax has no param groups; "
            "use optax.partition with one scheduler per group instead."
        )
    return check_non_negative(name, value)


def _check_initial_rate(learning_rate: Any) -> Any:
    if callable(learning_rate):
        raise TypeError(
            "learning_rate of a metric-driven scheduler must be a number (its initial rate), "
            f"got {learning_rate!r}; to warm up first, chain a schedule before it: "
            "optax.chain(..., optlib.scale_by_learning_rate(warmup, flip_sign=False), "
            "optlib.reduce_lr_on_plateau(lr))."
        )
    return check_non_negative("learning_rate", learning_rate)


def _check_count(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, jax.Array):  # e.g. wrapped whole in ``optax.inject_hyperparams``
        raise TypeError(
            f"{name} must be a Python int, got an array ({value!r}). A metric-driven scheduler "
            "keeps its hyperparameters in its state (``state.config``); do not wrap it whole in "
            "optax.inject_hyperparams (wrapping a factory that takes only learning_rate is fine)."
        )
    return check_int(name, value, minimum=minimum)


def _update_stepping(step_fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """The ``update`` both schedulers share: ``u = -lr_k * u``, then ``state = step(state, value)``.

    Built once per scheduler type (not per instance) and reading nothing but the state, so
    ``jax.jit(tx.update)`` is the same cache entry for every ``tx`` of that type: rebuilding an
    optimizer with other hyperparameters does not recompile.
    """

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args  # ``optax.chain`` forwards every extra argument to us
        updates = scale_updates(updates, -state.learning_rate)
        if value is not None:
            state = step_fn(state, value)
        return updates, state

    return update_fn


# ---------------------------------------------------------------- ReduceLROnPlateau


def _plateau_step(state: ReduceLROnPlateauState, metric: Any) -> ReduceLROnPlateauState:
    """One ``ReduceLROnPlateau.step(metric)``: the single place of its math.

    An improvement resets the bad-epoch count (``best`` is tracked even during cooldown);
    cooldown epochs count down and zero it; once it *exceeds* ``patience`` the rate is reduced
    and the cooldown starts.
    """
    config = state.config
    current = _as_metric(metric, state.best.dtype)
    better = _is_better(current, state.best, config)
    best = jnp.where(better, current, state.best)
    bad = jnp.where(better, 0, safe_increment(state.num_bad_epochs))
    in_cooldown = state.cooldown_counter > 0
    cooldown = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
    bad = jnp.where(in_cooldown, 0, bad)
    reduce = bad > config.patience
    return ReduceLROnPlateauState(
        learning_rate=jnp.where(reduce, _reduced(state.learning_rate, config), state.learning_rate),
        best=best,
        num_bad_epochs=jnp.where(reduce, 0, bad),
        cooldown_counter=jnp.where(reduce, config.cooldown, cooldown),
        count=safe_increment(state.count),
        config=config,
    )


_plateau_update = _update_stepping(_plateau_step)


def _plateau_options(
    learning_rate, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps
) -> Callable[[], dict]:
    """Checks the options ReduceLROnPlateau and GreedyLR share (``factor``'s range differs and
    is checked by each); returns the builder of their config fields (called inside ``init``)."""
    _check_initial_rate(learning_rate)
    check_choice("mode", mode, ("min", "max"))
    check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
    patience = _check_count("patience", patience, minimum=0)
    cooldown = _check_count("cooldown", cooldown, minimum=0)
    check_non_negative("threshold", threshold)
    _check_scalar_bound("min_lr", min_lr)
    check_non_negative("eps", eps)

    def fields() -> dict:
        return dict(
            factor=as_float(factor),
            patience=_int32(patience),
            threshold=as_float(threshold),
            maximize=jnp.asarray(mode == "max"),
            relative=jnp.asarray(threshold_mode == "rel"),
            cooldown=_int32(cooldown),
            min_lr=as_float(min_lr),
            eps=as_float(eps),
        )

    return fields


def reduce_lr_on_plateau(
    learning_rate: float,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    """Scales updates by ``-lr`` and reduces ``lr`` when a metric stops improving.

    Mirrors ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (names, defaults, semantics): a
    metric is an improvement if ``m < best * (1 - threshold)`` (``mode="min"``,
    ``threshold_mode="rel"``; ``best - threshold`` for ``"abs"``, mirrored for ``"max"``); a NaN
    never is. When the count of epochs without improvement *exceeds* ``patience``,
    ``lr <- max(lr * factor, min_lr)`` (skipped if that changes ``lr`` by ``eps`` or less) and
    ``cooldown`` epochs follow in which bad epochs are not counted.

    One scheduler step per ``update(..., value=metric)`` (after scaling by the rate in effect
    before ``metric``), or per ``optlib.report_metric(opt_state, metric)``. The hyperparameters
    live in the state (``PlateauConfig``), so they are checkpointed with it.

    Deviations: one parameter group (``min_lr`` is a number; use ``optax.partition`` for
    groups); ``learning_rate`` is a number (chain a warm-up schedule before this transform);
    negative ``factor``/``patience``/``cooldown``/``threshold``/``min_lr``/``eps`` raise.

    Args:
      learning_rate: the initial rate (torch's optimizer ``lr``), ``>= 0``.
      mode: ``"min"`` or ``"max"``.
      factor: ``new_lr = lr * factor``, in ``[0, 1)``.
      patience: epochs without improvement tolerated, ``>= 0``.
      threshold: the significance threshold, ``>= 0``.
      threshold_mode: ``"rel"`` or ``"abs"``.
      cooldown: epochs to wait after a reduction, ``>= 0``.
      min_lr: the floor of the rate, ``>= 0``.
      eps: minimal change applied to the rate, ``>= 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is ``ReduceLROnPlateauState``.
    """
    check_interval("factor", factor, 0.0, 1.0, high_closed=False)
    shared = _plateau_options(
        learning_rate, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps
    )

    def init_fn(params):
        del params
        config = PlateauConfig(**shared())
        return ReduceLROnPlateauState(
            learning_rate=as_float(learning_rate),
            best=_worst(config.maximize, float_dtype()),
            num_bad_epochs=_int32(0),
            cooldown_counter=_int32(0),
            count=_int32(0),
            config=config,
        )

    return optax.GradientTransformationExtraArgs(init_fn, _plateau_update)


# ------------------------------------------------------------------------- GreedyLR


def _streaming_average(state: GreedyLRState, metric: jax.Array):
    """HF's ``StreamingAverage.streamavg`` on the ring buffer: returns (average, window fields).

    ``sum += m``; once more than ``window_size`` values are held the oldest leaves and
    ``sum -= oldest``; the average is ``sum / len``. The sum is a running one like HF's, so a
    NaN that entered it stays.
    """
    size = state.window.shape[0]
    full = state.window_fill >= size
    oldest = jnp.where(full, state.window[state.window_index], jnp.zeros_like(metric))
    window_sum = jnp.where(full, (state.window_sum + metric) - oldest, state.window_sum + metric)
    window = state.window.at[state.window_index].set(metric)
    index = (state.window_index + 1) % size
    fill = jnp.minimum(state.window_fill + 1, size)
    average = window_sum / fill.astype(window_sum.dtype)
    return average, (window, index, fill, window_sum)


def _window_fields(state: GreedyLRState) -> tuple[jax.Array, ...]:
    return state.window, state.window_index, state.window_fill, state.window_sum


def _empty_window(window: jax.Array) -> tuple[jax.Array, ...]:
    return jnp.zeros_like(window), _int32(0), _int32(0), jnp.zeros([], window.dtype)


def _print_events(increased, reduced, reset, epoch, increased_lr, reduced_lr) -> None:
    """``verbose=True``: HF's messages, printed on the host for the steps where events happen."""
    jax.lax.cond(
        increased | reduced | reset,
        lambda: jax.debug.callback(
            _print_on_host, increased, reduced, reset, epoch, increased_lr, reduced_lr
        ),
        lambda: None,
    )


def _print_on_host(increased, reduced, reset, epoch, increased_lr, reduced_lr) -> None:
    # Arrays may carry a batch axis under ``vmap`` (where the ``cond`` above runs both
    # branches): print for each element with an event, in order.
    for up, down, again, at, up_lr, down_lr in np.broadcast(
        increased, reduced, reset, epoch, increased_lr, reduced_lr
    ):
        if up:
            print(f"Epoch {int(at)}: increasing learning rate of group 0 to {float(up_lr):.4e}.")
        if down:
            print(f"Epoch {int(at)}: reducing learning rate of group 0 to {float(down_lr):.4e}.")
        if again:
            print("Scheduler reset to initial state.")


def _greedy_step(state: GreedyLRState, metric: Any) -> GreedyLRState:
    """One ``GreedyLR.step(metric)``: the single place of its math.

    The (optionally smoothed) metric is compared only outside cooldown and warm-up; more than
    ``patience`` consecutive improvements divide the rate by ``factor`` (bounded by ``max_lr``)
    and start the warm-up; more than ``patience`` consecutive non-improvements multiply it by
    ``factor`` (bounded by ``min_lr``) and start the cooldown. A reduction that leaves the rate
    at ``min_lr`` counts down ``reset_start``; at zero the scheduler returns to its initial
    state (rate, ``best``, counters, window), then the cooldown starts as after any reduction.
    """
    config = state.config
    dtype = state.best.dtype
    raw = _as_metric(metric, dtype)
    average, smoothed_window = _streaming_average(state, raw)
    current = jnp.where(config.smooth, average, raw)
    window_fields = tuple(
        jnp.where(config.smooth, new, old)
        for new, old in zip(smoothed_window, _window_fields(state))
    )
    count = safe_increment(state.count)

    in_cooldown = state.cooldown_counter > 0
    in_warmup = ~in_cooldown & (state.warmup_counter > 0)
    active = ~in_cooldown & ~in_warmup
    better = _is_better(current, state.best, config)
    best = jnp.where(active & better, current, state.best)
    good = jnp.where(active & better, safe_increment(state.num_good_epochs), 0)
    bad = jnp.where(active & ~better, safe_increment(state.num_bad_epochs), 0)
    cooldown = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
    warmup = jnp.where(in_warmup, state.warmup_counter - 1, state.warmup_counter)
    countdown = state.reset_countdown
    lr = state.learning_rate

    increase = active & (good > config.patience)
    increased_lr = _increased(lr, config)
    lr = jnp.where(increase, increased_lr, lr)
    warmup = jnp.where(increase, config.warmup, warmup)
    good = jnp.where(increase, 0, good)
    countdown = jnp.where(increase, config.reset_start, countdown)

    reduce = active & ~increase & (bad > config.patience)
    reduced_lr = _reduced(lr, config)
    lr = jnp.where(reduce, reduced_lr, lr)
    at_min = reduce & ~(lr > config.min_lr)
    countdown = jnp.where(at_min, countdown - 1, countdown)
    reset = at_min & (countdown <= 0)
    lr = jnp.where(reset, config.initial_learning_rate, lr)
    best = jnp.where(reset, _worst(config.maximize, dtype), best)
    good = jnp.where(reset, 0, good)
    warmup = jnp.where(reset, 0, warmup)
    countdown = jnp.where(reset, config.reset_start, countdown)
    window_fields = tuple(
        jnp.where(reset & config.smooth, empty, field)
        for empty, field in zip(_empty_window(state.window), window_fields)
    )
    cooldown = jnp.where(reduce, config.cooldown, cooldown)
    bad = jnp.where(reduce, 0, bad)

    if config.verbose:  # static: quiet schedulers compile no host callback at all
        _print_events(
            increase & (increased_lr != state.learning_rate),
            reduce & (reduced_lr != state.learning_rate),
            reset,
            count,
            increased_lr,
            reduced_lr,
        )

    window, window_index, window_fill, window_sum = window_fields
    return GreedyLRState(
        learning_rate=lr,
        best=best,
        num_bad_epochs=bad,
        num_good_epochs=good,
        cooldown_counter=cooldown,
        warmup_counter=warmup,
        reset_countdown=countdown,
        count=count,
        window=window,
        window_index=window_index,
        window_fill=window_fill,
        window_sum=window_sum,
        config=config,
    )


_greedy_update = _update_stepping(_greedy_step)


def greedy_lr(
    learning_rate: float,
    mode: str = "min",
    factor: float = 0.95,
    patience: int = 10,
    threshold: float = 1e-6,
    threshold_mode: str = "abs",
    cooldown: int = 0,
    warmup: int = 0,
    min_lr: float = 1e-3,
    max_lr: float = 1.0,
    eps: float = 1e-8,
    verbose: bool = False,
    smooth: bool = False,
    window_size: int = 50,
    reset_start: int = 500,
) -> optax.GradientTransformationExtraArgs:
    """Scales updates by ``-lr`` and raises or lowers ``lr`` from a metric (GreedyLR).

    Mirrors ``transformers.optimization.GreedyLR`` (names, defaults, semantics). Outside
    cooldown and warm-up each metric (or, with ``smooth=True``, the average of the last
    ``window_size`` metrics) is compared to ``best`` like ``ReduceLROnPlateau`` does (a NaN is
    never an improvement). More than ``patience`` consecutive improvements:
    ``lr <- min(lr / factor, max_lr)`` and ``warmup`` epochs are sat out; more than
    ``patience`` consecutive non-improvements: ``lr <- max(lr * factor, min_lr)`` and
    ``cooldown`` epochs are sat out (each change skipped if it is ``eps`` or less). After
    ``reset_start`` reductions that leave ``lr`` at ``min_lr`` (counted since the last
    increase) the scheduler resets to its initial rate, ``best``, counters and window.

    One scheduler step per ``update(..., value=metric)`` (after scaling by the rate in effect
    before ``metric``), or per ``optlib.report_metric(opt_state, metric)``. The hyperparameters
    live in the state (``GreedyLRConfig``), so they are checkpointed with it; the smoothing
    window is a fixed ``window_size`` ring buffer in the state.

    ``verbose=True`` prints HF's messages ("Epoch 12: reducing learning rate of group 0 to
    9.5000e-02.") through ``jax.debug.callback`` on the steps where the rate changes or the
    scheduler resets: the one option that talks to the host. It is a static flag of the state
    (``StaticFlag``), so with the default ``verbose=False`` no callback is compiled.

    Deviations: one parameter group (``min_lr``/``max_lr`` are numbers); ``learning_rate`` is a
    number; raises where HF would fail later or silently misbehave: ``factor <= 0``,
    ``min_lr > max_lr``, negative ``patience``/``cooldown``/``warmup``/``reset_start``,
    ``window_size < 1``.

    Args:
      learning_rate: the initial rate (the optimizer's ``lr``), restored by a reset.
      mode: ``"min"`` or ``"max"``.
      factor: multiplier on a plateau, divisor on improvement, in ``(0, 1)``.
      patience: consecutive good or bad epochs tolerated, ``>= 0``.
      threshold: the significance threshold, ``>= 0``.
      threshold_mode: ``"rel"`` or ``"abs"``.
      cooldown: epochs to sit out after a decrease, ``>= 0``.
      warmup: epochs to sit out after an increase, ``>= 0``.
      min_lr: the floor of the rate.
      max_lr: the ceiling of the rate, ``>= min_lr``.
      eps: minimal change applied to the rate, ``>= 0``.
      verbose: print a message per change (host callback).
      smooth: compare the streaming average of the metric.
      window_size: the streaming-average window, ``>= 1``.
      reset_start: reductions at ``min_lr`` before a reset, ``>= 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is ``GreedyLRState``.
    """
    check_interval("factor", factor, 0.0, 1.0, low_closed=False, high_closed=False)
    shared = _plateau_options(
        learning_rate, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps
    )
    warmup = _check_count("warmup", warmup, minimum=0)
    window_size = _check_count("window_size", window_size, minimum=1)
    reset_start = _check_count("reset_start", reset_start, minimum=0)
    low = _check_scalar_bound("min_lr", min_lr)
    high = _check_scalar_bound("max_lr", max_lr)
    if not is_traced(low) and not is_traced(high) and low > high:
        raise ValueError(f"min_lr must be <= max_lr, got min_lr={min_lr!r} > max_lr={max_lr!r}")
    verbose = check_bool("verbose", verbose)
    smooth = check_bool("smooth", smooth)

    def init_fn(params):
        del params
        config = GreedyLRConfig(
            **shared(),
            warmup=_int32(warmup),
            max_lr=as_float(max_lr),
            verbose=StaticFlag(verbose),
            smooth=jnp.asarray(smooth),
            reset_start=_int32(reset_start),
            initial_learning_rate=as_float(learning_rate),
        )
        window, window_index, window_fill, window_sum = _empty_window(
            jnp.zeros([window_size if smooth else 1], float_dtype())
        )
        return GreedyLRState(
            learning_rate=as_float(learning_rate),
            best=_worst(config.maximize, float_dtype()),
            num_bad_epochs=_int32(0),
            num_good_epochs=_int32(0),
            cooldown_counter=_int32(0),
            warmup_counter=_int32(0),
            reset_countdown=_int32(reset_start),
            count=_int32(0),
            window=window,
            window_index=window_index,
            window_fill=window_fill,
            window_sum=window_sum,
            config=config,
        )

    return optax.GradientTransformationExtraArgs(init_fn, _greedy_update)


# -------------------------------------------------------------------- report_metric

_STEP_OF_STATE: dict[type, Callable[[Any, Any], Any]] = {
    ReduceLROnPlateauState: _plateau_step,
    GreedyLRState: _greedy_step,
}


def report_metric(opt_state: Any, metric: Any) -> Any:
    """Steps every metric-driven scheduler inside ``opt_state`` on ``metric``.

    The equivalent of torch's ``scheduler.step(metric)`` for epoch loops: finds the
    ``reduce_lr_on_plateau`` / ``greedy_lr`` states anywhere in a (nested) optax state
    (``chain``, ``named_chain``, ``partition``/``multi_transform``, ``inject_hyperparams``,
    ``MultiSteps``, a Flax ``TrainState.opt_state``) and returns the state with each of them
    stepped once. Jit-able, no host transfer. Works without the transform because the
    hyperparameters are in the state. With Flax:
    ``state = state.replace(opt_state=optlib.report_metric(state.opt_state, val_loss))``.

    Args:
      opt_state: an optax optimizer state.
      metric: a scalar (Python number or array), e.g. the validation loss.

    Returns:
      ``opt_state`` with its metric-driven scheduler states stepped.

    Raises:
      ValueError: if ``opt_state`` holds no metric-driven scheduler state, or ``metric`` is
        not a scalar.
    """
    types = tuple(_STEP_OF_STATE)
    if not find_states(opt_state, types):
        raise ValueError(
            "report_metric: no metric-driven scheduler state (reduce_lr_on_plateau, greedy_lr) "
            "found in this optimizer state; put optlib.reduce_lr_on_plateau(...) or "
            "optlib.greedy_lr(...) in the optimizer (e.g. as the last element of optax.chain)."
        )
    return map_states(opt_state, types, lambda state: _STEP_OF_STATE[type(state)](state, metric))


# ------------------------------------------------------------------------- registry

register(
    "ReduceLROnPlateau",
    reduce_lr_on_plateau,
    "torch.optim.lr_scheduler.ReduceLROnPlateau",
    family="torch",
)
register(
    "reduce_lr_on_plateau",
    reduce_lr_on_plateau,
    "transformers.get_reduce_on_plateau_schedule",
    family="hf",
)
register("GreedyLR", greedy_lr, "transformers.optimization.GreedyLR", family="torch")
register("greedy", greedy_lr, "transformers.optimization.get_greedy_schedule", family="hf")
