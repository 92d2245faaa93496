"""Schedule-Free learning (Defazio et al., 2024), as the ``schedulefree`` package computes it.

Schedule-Free keeps three sequences per parameter: ``z`` (the base optimizer's iterate),
``x`` (a weighted average of the ``z``'s, where the model is evaluated) and their
interpolation ``y = (1 - beta1) * z + beta1 * x``, where the gradient is taken. Like
``schedulefree.AdamWScheduleFree`` / ``SGDScheduleFree`` / ``RAdamScheduleFree`` in train
mode, the parameters the user holds are ``y``; the state keeps ``z``; ``x`` is never stored
and ``schedule_free_eval_params`` computes it (the reference's ``optimizer.eval()``).

Two transforms, chained by ``optlib.schedule_free_adamw`` / ``schedule_free_sgd`` /
``schedule_free_radam``:

* ``scale_by_second_moment``: Adam's denominator without a first moment (the Adam and RAdam
  variants' gradient normalisation), RAdam's SGD phase with ``rectify=True``;
* ``apply_schedule_free``: owns the learning rate; updates ``y`` and ``z`` from the
  (normalised, weight-decayed) gradient.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optlib._double import Double, settled, torch_one_minus_power
from optlib._numerics import (
    DEFAULT_STATISTICS_DTYPE,
    as_float,
    cast,
    check_statistics_dtype,
    float_dtype,
    log_of,
    one_minus_power,
    parameter_move,
    safe_increment,
    update_number,
)
from optlib._partition import state_leaf
from optlib._state_tree import find_states, register_learning_rate_state
from optlib._validation import (
    check_bool,
    check_int,
    check_interval,
    check_learning_rate,
    check_non_negative,
    check_real,
)
from optlib.transforms.learning_rate import learning_rate_at
from optlib.transforms.moments import (
    compute_dtype,
    decay_add_square,
    lerp,
    map_statistics,
    statistics_like,
)

__all__ = [
    "ScaleBySecondMomentState",
    "ScheduleFreeState",
    "apply_schedule_free",
    "scale_by_second_moment",
    "schedule_free_eval_params",
]


def _coth_series() -> tuple[float, ...]:
    """Taylor coefficients of ``coth(x) - 1/x = sum_n 2**(2n) B_2n / (2n)! x**(2n-1)``."""
    bernoulli = [Fraction(1)]
    for m in range(1, 33):
        total = sum((math.comb(m + 1, k) * bernoulli[k] for k in range(m)), Fraction(0))
        bernoulli.append(-total / (m + 1))
    return tuple(
        float(2 ** (2 * n) * bernoulli[2 * n] / math.factorial(2 * n)) for n in range(1, 17)
    )


_COTH_SERIES = _coth_series()


def _coth_minus_reciprocal(x: jax.Array) -> jax.Array:
    """``coth(x) - 1/x`` for ``|x| < 1`` by its Taylor series (16 terms, converging like
    ``(x / pi)**2``: exact to float64 rounding), without the direct form's cancellation."""
    squared = x * x
    series = jnp.zeros_like(x)
    for coefficient in reversed(_COTH_SERIES):
        series = series * squared + coefficient
    return x * series


def rectification(beta2, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    """RAdam's variance rectification of update ``count`` (``t = count + 1``).

    ::

        rho_inf = 2 / (1 - beta2) - 1;   rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)
        rect_t  = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))

    While ``t (1 - beta2)`` is small, ``rho_t`` is O(t) but its two terms are
    O(1 / (1 - beta2)): in float32 the direct difference keeps ~4 digits (in the reference's
    doubles ~12). With ``L = -log(beta2)`` and ``g(x) = coth(x) - 1/x`` it equals
    ``t + g(L/2) - t g(t L/2)``, which has no cancellation; that form is used while
    ``t L / 2 < 1``, the direct one (then accurate: ``rho_t > 0.69 rho_inf``) beyond.

    Returns:
      ``(adaptive, rect)``: whether ``rho_t > 4`` (the adaptive phase), and ``rect_t`` there
      (1 elsewhere; the caller picks the SGD phase's factor).
    """
    step = update_number(count)
    half_log = -0.5 * as_float(log_of(beta2))
    rho_inf = 2 / (1 - beta2) - 1
    near = step * half_log < 1.0
    x = jnp.where(near, step * half_log, 0.5)  # keeps the unused series side finite
    rho_near = step + _coth_minus_reciprocal(half_log) - step * _coth_minus_reciprocal(x)
    one_minus = one_minus_power(beta2, step)
    rho_far = rho_inf - 2 * step * (1 - one_minus) / one_minus
    rho_t = jnp.where(near, rho_near, rho_far)
    adaptive = rho_t > 4.0
    ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
    # Both sides of a ``where`` are computed: keep the unused one finite (and its gradient).
    rect = jnp.where(adaptive, jnp.sqrt(jnp.where(adaptive, ratio, 1.0)), 1.0)
    return adaptive, rect


# ---------------------------------------------------------------------------------------------
# The gradient normalisation of the Adam and RAdam variants.


class ScaleBySecondMomentState(NamedTuple):
    """State of ``scale_by_second_moment``.

    Attributes:
      count: int32 updates so far (the reference's group ``k``), saturating.
      exp_avg_sq: the second moment (the reference's ``state["exp_avg_sq"]``).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    exp_avg_sq: optax.Updates


def scale_by_second_moment(
    beta2: float = 0.999,
    eps: float = 1e-8,
    rectify: bool = False,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Divides by Adam's bias-corrected RMS, without a first moment.

    The normalisation of schedulefree.AdamWScheduleFree (``rectify=False``) and
    schedulefree.RAdamScheduleFree (``rectify=True``), with ``t = k + 1``::

        v_t = beta2 * v_{t-1} + (1 - beta2) * g_t**2
        u_t = g_t / (sqrt(v_t / (1 - beta2**t)) + eps)
        u_t = g_t   while rho_t <= 4  (rectify=True: RAdam's SGD phase, see ``rectification``)

    For ``rectify=False`` this is ``optax.scale_by_rms(decay=beta2, eps=eps, eps_in_sqrt=False,
    bias_correction=True)``; here the statistics are float32 or wider for bf16/fp16 params.
    With ``statistics_dtype=None`` on bf16/fp16 parameters the second moment, the denominator
    and the normalised gradient are rounded to the parameters' dtype after each of the
    reference's in-place ops (``mul_``, ``addcmul_``, ``div``, ``sqrt_``, ``add_(eps)`` with
    ``eps`` rounded to that dtype, ``grad.div_``), as it keeps them there; the update is
    returned in the gradients' dtype, the reference's ``grad`` buffer.

    Args:
      beta2: decay of the second moment, in [0, 1).
      eps: added to the denominator, outside the square root (>= 0).
      rectify: RAdam's rule: leave the gradient unscaled while ``rho_t <= 4``.
      statistics_dtype: dtype of the second moment (at least this wide; None: the
        parameters' dtype, as the reference).

    Returns:
      An ``optax.GradientTransformation``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    beta2 = check_interval("beta2", beta2, 0.0, 1.0, high_closed=False)
    eps = check_non_negative("eps", eps)
    rectify = check_bool("rectify", rectify)

    def init_fn(params):
        sq = statistics_like(params, 0.0, statistics_dtype)
        return ScaleBySecondMomentState(jnp.zeros([], jnp.int32), sq)

    def update_fn(updates, state, params=None):
        del params
        step = update_number(state.count)
        bias_correction2 = one_minus_power(beta2, step)
        # bf16/fp16 statistics (only with statistics_dtype=None): torch's float32 scalar
        if statistics_dtype is None:
            torch_bias_correction2 = torch_one_minus_power(beta2, safe_increment(state.count))
        adaptive = rectification(beta2, state.count)[0] if rectify else None

        def leaf(r, g, exp_avg_sq):
            dtype = r.compute
            g32 = cast(g, dtype)
            # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            exp_avg_sq = decay_add_square(exp_avg_sq, g32, beta2, r)
            # exp_avg_sq.div(bias_correction2).sqrt_().add_(eps); grad.div_(denom)
            if r.narrow:
                scaled = r.divide(exp_avg_sq, torch_bias_correction2)
            else:
                scaled = exp_avg_sq / cast(bias_correction2, dtype)
            denom = r.keep(jnp.sqrt(r.keep(scaled)))
            u = r.keep(g32 / r.add_scalar(denom, eps))
            if rectify:
                u = jnp.where(adaptive, u, g32)
            return cast(u, g.dtype), exp_avg_sq

        updates, exp_avg_sq = map_statistics(leaf, updates, state.exp_avg_sq, rounding=True)
        return updates, ScaleBySecondMomentState(safe_increment(state.count), exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# The schedule-free step.


@register_learning_rate_state
class ScheduleFreeState(NamedTuple):
    """State of ``apply_schedule_free``.

    Attributes:
      count: int32 updates so far (the reference's group ``k``), saturating.
      learning_rate: the scheduled rate the next update applies (the reference's
        ``scheduled_lr`` of its next step), for ``optlib.current_learning_rate``.
      lr_max: the largest scheduled rate so far (-1 before the first update, as the reference).
      weight_sum: the sum of the averaging weights so far.
      beta1: the interpolation coefficient of the last update (``beta1`` / ``momentum``),
        which ``schedule_free_eval_params`` needs to recover ``x`` from ``y`` and ``z``.
      z: the base iterate ``z`` (the reference's ``state["z"]``), float32 or wider (the
        parameters' dtype with ``statistics_dtype=None``).
      low_parts: with ``statistics_dtype=None`` (float32 scalars), the float32 low parts of
        ``(lr_max, weight_sum, beta1)``, which the reference keeps in Python doubles: each
        is then the pair ``high + low`` (see ``apply_schedule_free``); None otherwise.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    learning_rate: jax.Array
    lr_max: jax.Array
    weight_sum: jax.Array
    beta1: jax.Array
    z: optax.Params
    low_parts: tuple[jax.Array, jax.Array, jax.Array] | None = None


def _warmed_up(learning_rate, warmup_steps: int):
    """``lr(k) * (k + 1) / warmup_steps`` for ``k < warmup_steps``, else ``lr(k)``."""
    if isinstance(warmup_steps, int) and warmup_steps == 0:
        return learning_rate

    def schedule(count):
        factor = jnp.where(count < warmup_steps, update_number(count) / warmup_steps, 1.0)
        return learning_rate_at(learning_rate, count) * factor

    return schedule


def apply_schedule_free(
    learning_rate: float | optax.Schedule = 0.0025,
    beta1: float | optax.Schedule = 0.9,
    *,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """The schedule-free step of the ``schedulefree`` package, on updates ``u`` taken at ``y``.

    The incoming updates are the base direction ``u_k`` (the gradient at ``y``, normalised by
    ``scale_by_second_moment`` in the Adam variants, plus ``weight_decay * y``); ``params``
    are ``y``. With ``k`` the update count (0 on the first update)::

        lr_k     = learning_rate(k) * min(1, (k + 1) / warmup_steps)
        lr_max   = max(lr_max, lr_k)                          (lr_max starts at -1)
        w_k      = (k + 1)**r * lr_max**weight_lr_power;   W_k = W_{k-1} + w_k
        c_k      = w_k / W_k   (0 while W_k == 0)
        y       <- y + c_k (z - y) + lr_k (beta1 (1 - c_k) - 1) u_k
        z       <- z - lr_k u_k

    which is the reference's in-place ``y.lerp_(z, ckp1); y.add_(u, alpha=...)`` and
    ``z.sub_(u, alpha=lr)``, returned as the update ``y_new - y``. ``y``'s step is computed as
    ``(beta1 (1 - c_k) - 1) (z - z_new)``: ``lr_k u_k`` up to one rounding of ``z`` (float64
    runs match the reference to ~1e-14 relative), read from the new ``z`` so that a jitted step with
    donated buffers keeps no extra copy of ``u`` or ``y``. ``x`` (the average, where
    to evaluate) is implicit: ``x = (y - (1 - beta1) z) / beta1``
    (``schedule_free_eval_params``).

    ``learning_rate`` is read every update as the reference reads its group's ``lr`` (a torch
    scheduler may change it); ``beta1`` may be a schedule too (torch's ``cycle_momentum``).

    With ``statistics_dtype=None`` on bf16/fp16 parameters (``z`` in their dtype, as the
    reference keeps it) the step is the reference's three in-place ops, each rounded to that
    dtype: ``y.lerp_(z, c_k)``, ``y.add_(u, alpha=lr_k (beta1 (1 - c_k) - 1))`` and
    ``z.sub_(u, alpha=lr_k)``, both ``alpha`` rounded to that dtype first as torch's
    ``add_`` / ``sub_`` round it; the update is ``y_new - y`` in float32 (exact), which
    ``optax.apply_updates`` adds without a further rounding. The scalars ``lr_k``, ``lr_max``,
    ``W_k``, ``c_k`` and both rates are then computed in pairs of float32s (``lr_max``,
    ``W_k`` and ``beta1`` keep their low parts in the state's ``low_parts``), as the
    reference's Python doubles: a float32 ``c_k`` is a few units off in most steps, and the
    ``lerp_`` weight rounds ``y`` with it.

    Args:
      learning_rate: the base rate (>= 0): a float or a schedule of the update count.
      beta1: the interpolation coefficient, in (0, 1]; ``x`` is recovered through
        ``1 / beta1``, so 0 is not allowed.
      warmup_steps: length of the reference's linear warm-up (>= 0; 0: none).
      r: power of the polynomial weighting ``(k + 1)**r`` of the average.
      weight_lr_power: power of ``lr_max`` in the averaging weights (>= 0; 0: unweighted).
      statistics_dtype: dtype of ``z`` (at least this wide; None: the parameters' dtype, as
        the reference).

    Returns:
      An ``optax.GradientTransformation`` that needs ``params`` (``y``) in ``update``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    check_learning_rate(learning_rate)
    if not callable(beta1):
        beta1 = check_interval("beta1", beta1, 0.0, 1.0, low_closed=False)
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
    r = check_real("r", r)
    weight_lr_power = check_non_negative("weight_lr_power", weight_lr_power)
    rate = _warmed_up(learning_rate, warmup_steps)
    # the reference's double scalars as float32 pairs where its statistics are bf16/fp16
    precise = statistics_dtype is None and float_dtype() == jnp.float32

    # beta1's low part (a float's), for schedule_free_eval_params
    beta1_low = np.float32(beta1 - float(np.float32(beta1)) if isinstance(beta1, float) else 0)

    def init_fn(params):
        count = jnp.zeros([], jnp.int32)
        zero = jnp.zeros([], jnp.float32)
        z = jax.tree.map(lambda p: state_leaf(p, p, statistics_dtype), params)  # a copy
        return ScheduleFreeState(
            count=count,
            learning_rate=learning_rate_at(rate, count),
            lr_max=as_float(-1.0),
            weight_sum=as_float(0.0),
            beta1=learning_rate_at(beta1, count),
            z=z,
            low_parts=(zero, zero, jnp.asarray(beta1_low)) if precise else None,
        )

    def exact_or_traced(value, count) -> Double:
        """A float hyperparameter as the reference's double, a schedule's float32 value."""
        if isinstance(value, (int, float)):
            return Double.of(float(value))
        return Double.exact(learning_rate_at(value, count))

    def power_of(base: Double, exponent) -> Double:
        """``base ** exponent``: exact for an integer ``exponent >= 0``, else in float32."""
        if isinstance(exponent, (int, float)) and float(exponent).is_integer() and exponent >= 0:
            return base.power(int(exponent))
        return Double.exact(base.hi**exponent)

    def torch_scalars(state):
        """The reference's step scalars, computed in pairs of float32s: the rate (with its
        warm-up), ``lr_max``, ``weight_sum`` and ``ckp1``, ``beta1 (1 - ckp1) - 1`` and the
        rate of y's step. Exact to the reference's doubles for a float ``learning_rate``,
        ``beta1`` and integer ``r`` / ``weight_lr_power``; a schedule's float32 value (or a
        power taken in float32) otherwise. Computed once per update (``settled``)."""
        count = state.count
        lr = exact_or_traced(learning_rate, count)
        step = Double.exact(update_number(count))
        if warmup_steps:
            lr = (lr * (step / float(warmup_steps))).where(count < warmup_steps, lr)
        lr_max = Double(state.lr_max, state.low_parts[0]).maximum(lr)
        weight = power_of(step, r) * power_of(lr_max, weight_lr_power)
        weight_sum = Double(state.weight_sum, state.low_parts[1]) + weight
        nonzero = weight_sum.hi != 0
        ckp1 = (weight / weight_sum.where(nonzero, 1.0)).where(nonzero, 0.0)
        z_step_weight = exact_or_traced(beta1, count) * (1 - ckp1) - 1
        y_rate = lr * z_step_weight
        low_parts = (lr_max.lo, weight_sum.lo, state.low_parts[2])
        return (lr.hi, lr_max.hi, weight_sum.hi, ckp1.hi, z_step_weight.hi, y_rate.hi, low_parts)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("apply_schedule_free needs params (y) in update")
        count = state.count
        if precise:
            lr, lr_max, weight_sum, ckp1, z_step_weight, y_rate, low_parts = settled(
                lambda: torch_scalars(state), count >= 0
            )
        else:
            lr = learning_rate_at(rate, count)
            b1 = learning_rate_at(beta1, count)
            lr_max = jnp.maximum(state.lr_max, lr)
            weight = update_number(count) ** r * lr_max**weight_lr_power
            weight_sum = state.weight_sum + weight
            nonzero = weight_sum != 0
            ckp1 = jnp.where(nonzero, weight / jnp.where(nonzero, weight_sum, 1.0), 0.0)
            z_step_weight = b1 * (1 - ckp1) - 1  # lr_k u_k, the z step, times this: y's step
            y_rate = None  # lr * z_step_weight, where a leaf needs it
            low_parts = state.low_parts

        def leaf(r, u, y, z):
            dtype = r.compute
            u32, y32 = cast(u, dtype), cast(y, dtype)
            if r.narrow:
                # The reference's in-place ops on bf16/fp16 tensors, each rounded to them:
                # y.lerp_(z, ckp1); y.add_(u, alpha=lr * (beta1 (1 - ckp1) - 1)) (alpha
                # rounded to the parameters' dtype); z.sub_(u, alpha=lr) (likewise).
                y_new = r.keep(lerp(y32, z, cast(ckp1, dtype)))
                y_step = lr * z_step_weight if y_rate is None else y_rate
                y_new = r.keep(y_new + r.alpha(y_step) * u32)
                z_new = r.keep(z - r.alpha(lr) * u32)
                return r.update(parameter_move(y_new, y32), u), z_new
            z_new = z - cast(lr, dtype) * u32
            # y's step from z's (z - z_new == lr_k u_k up to one rounding of z), not from u:
            # the loop that writes y then reads z_new instead of recomputing u, so XLA keeps
            # no copy of u (or of y) alongside the one of z it needs.
            delta = cast(ckp1, dtype) * (z - y32) + cast(z_step_weight, dtype) * (z - z_new)
            return cast(delta, y.dtype), z_new

        updates, z = map_statistics(leaf, updates, state.z, inputs=(params,), rounding=True)
        new_count = safe_increment(count)
        new_state = ScheduleFreeState(
            count=new_count,
            learning_rate=learning_rate_at(rate, new_count),
            lr_max=lr_max,
            weight_sum=weight_sum,
            beta1=learning_rate_at(beta1, new_count),
            z=z,
            low_parts=low_parts,
        )
        return updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def _is_array(node: Any) -> bool:
    return hasattr(node, "shape") and hasattr(node, "dtype")


def schedule_free_eval_params(params: Any, opt_state: Any) -> Any:
    """The parameters to evaluate at: ``x``, the reference's ``optimizer.eval()``.

    The parameters a schedule-free optimizer trains are ``y``; ``eval()`` in the
    ``schedulefree`` package replaces them with ``x = y + (1 - 1/beta1) (z - y)``
    (``p.lerp_(z, 1 - 1/beta1)``), and ``train()`` goes back. optlib never changes the
    parameters you hold: keep training ``params`` and evaluate ``schedule_free_eval_params(
    params, opt_state)``. Parameters without a schedule-free state (e.g. another parameter
    group's optimizer) are returned as they are, as the reference's ``eval()`` leaves
    parameters without ``z``. Before the first update ``x == y``. jit-able. With bf16/fp16
    ``z`` (``statistics_dtype=None``) it is the reference's ``lerp_`` computed in float32
    and rounded once, its weight ``1 - 1 / beta1`` computed from the double ``beta1`` (the
    pair in the state) as the reference computes it.

    Args:
      params: the trained parameters (``y``).
      opt_state: the state of an optimizer containing ``apply_schedule_free``
        (``optlib.schedule_free_adamw`` / ``schedule_free_sgd`` / ``schedule_free_radam``),
        possibly inside ``optax`` combinators (partitions, ``inject_hyperparams``, ...).

    Returns:
      ``x``, a tree like ``params`` with the same dtypes.

    Raises:
      ValueError: if ``opt_state`` contains no ``ScheduleFreeState``.
    """
    states = find_states(opt_state, ScheduleFreeState)
    if not states:
        raise ValueError(
            "schedule_free_eval_params: opt_state holds no ScheduleFreeState; build the "
            "optimizer with optlib.schedule_free_adamw / schedule_free_sgd / schedule_free_radam"
        )
    leaves, structure = jax.tree.flatten(params)
    treedef: Any = structure  # PyTreeDef's stubs lack flatten_up_to / unflatten
    evaluated = list(leaves)
    for state in states:
        weight = 1 - 1 / state.beta1
        for index, (y, z) in enumerate(zip(leaves, treedef.flatten_up_to(state.z))):
            if not _is_array(z):  # a masked leaf of another group
                continue
            compute = compute_dtype(z.dtype)
            if compute != z.dtype:  # bf16/fp16 z: the reference's p.lerp_(z, w), one rounding
                if state.low_parts is None:
                    w = cast((state.beta1 - 1) / state.beta1, compute)
                else:  # 1 - 1 / beta1 from the double beta1, as the reference
                    b1 = Double(state.beta1, state.low_parts[2])
                    w = ((b1 - 1.0) / b1).hi
                x = lerp(cast(jnp.asarray(y), compute), cast(z, compute), w)
                evaluated[index] = cast(x, y.dtype)
                continue
            y32 = cast(jnp.asarray(y), z.dtype)
            evaluated[index] = cast(y32 + cast(weight, z.dtype) * (z - y32), y.dtype)
    return treedef.unflatten(evaluated)
