"""The scalings of torch.optim.RAdam, Adamax and Rprop, one transform each.

Like ``moments.py`` (whose pieces they reuse: torch's ``lerp`` first moment, the
``b2 * v + (1 - b2) * g**2`` second moment, statistics in float32 or wider), each transform
returns its updates without the learning rate, except ``scale_by_rprop``: Rprop's steps
are sizes in parameter units, which torch initialises from ``lr`` and then adapts on its own;
and ``scale_by_radam(learning_rate=...)``, where torch multiplies the rate inside a rounded
product (``optlib.radam`` with ``statistics_dtype=None``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optlib._double import Double, settled
from optlib._numerics import (
    DEFAULT_STATISTICS_DTYPE,
    TorchRounding,
    cast,
    check_statistics_dtype,
    float_dtype,
    safe_increment,
    torch_sign,
    update_number,
)
from optlib._validation import check_learning_rate, check_non_negative, check_real
from optlib.transforms.learning_rate import (
    LearningRate,
    initial_learning_rate,
    learning_rate_at,
)
from optlib.transforms.moments import (
    check_betas,
    decay_add_square,
    first_moment_weight,
    lerp,
    map_leaves,
    map_statistics,
    statistics_like,
)

__all__ = [
    "ScaleByAdamaxState",
    "ScaleByRadamState",
    "ScaleByRpropState",
    "scale_by_adamax",
    "scale_by_radam",
    "scale_by_rprop",
]


# ---------------------------------------------------------------------------------------------
# RAdam.


class ScaleByRadamState(NamedTuple):
    """State of ``scale_by_radam`` (torch's ``step``, ``exp_avg``, ``exp_avg_sq``).

    Attributes:
      count: int32 updates so far (saturating).
      exp_avg: first moment.
      exp_avg_sq: second moment.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates


_RECTIFICATION_THRESHOLD = 5.0  # torch rectifies when rho_t > 5


def _torch_rho(beta2: float, step: int) -> float:
    """torch's ``rho_t`` at ``step``, in Python float64 arithmetic as torch computes it."""
    t = float(step)
    bias_correction2 = 1 - beta2**t
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * t * (beta2**t) / bias_correction2


def _first_rectified_step(beta2: float) -> int | None:
    """The first step at which torch's ``rho_t > 5`` (``None``: never, ``rho_inf <= 5``).

    ``rho_t`` increases with the step towards ``rho_inf``, so the switch happens once; the
    step is found with torch's own float64 formula, so it is torch's step exactly.
    """
    if not 2 / (1 - beta2) - 1 > _RECTIFICATION_THRESHOLD:
        return None
    step = 1
    while not _torch_rho(beta2, step) > _RECTIFICATION_THRESHOLD:
        step += 1
    return step


# 1 - x / (exp(x) - 1) = x/2 - x^2/12 + x^4/720 - ... (Bernoulli numbers), below 0.5.
_RHO_SERIES = (
    1 / 2,
    -1 / 12,
    0.0,
    1 / 720,
    0.0,
    -1 / 30240,
    0.0,
    1 / 1209600,
    0.0,
    -1 / 47900160,
    0.0,
    691 / 1307674368000,
    0.0,
    -7 / 6 / math.factorial(14),
)


def _one_minus_x_over_expm1(x: jax.Array) -> jax.Array:
    """``1 - x / (exp(x) - 1)`` for ``x >= 0``, accurate to a few ulps (no cancellation)."""
    small = jnp.minimum(x, 0.5)
    series = jnp.zeros_like(small)
    for coefficient in reversed(_RHO_SERIES):
        series = (series + coefficient) * small
    return jnp.where(x < 0.5, series, 1 - x / jnp.expm1(jnp.maximum(x, 0.5)))


def _coth_gap(beta2, c):
    """``rho_inf - 2 / c`` with ``c = -log(beta2)``: ``coth(c/2) - 2/c``, a small positive
    number for ``beta2`` near 1 (series below ``c = 0.1``, where the difference cancels)."""
    xp = np if isinstance(beta2, float) else jnp
    series = c / 6 - c**3 / 360 + c**5 / 15120 - c**7 / 604800
    with np.errstate(divide="ignore", invalid="ignore"):
        direct = (1 + beta2) / (1 - beta2) - 2 / c
    return xp.where(c < 0.1, series, direct)


def _rectification(beta2, first_rectified, t: jax.Array):
    """``(rectified, rect, bias_correction2)`` of step ``t`` (a float step number).

    ``rho_t = rho_inf - 2 t b^t / (1 - b^t)`` is torch's length of the approximated SMA. Its
    two terms nearly cancel (``rho_inf`` is ~2000 for ``b = 0.999`` and ``rho_t`` ~5), so it
    is computed as ``(2/c) * (1 - x / expm1(x)) + (rho_inf - 2/c)`` with ``c = -log(b)``,
    ``x = c t``: every term positive, exact to a few ulps in float32 as in float64 (torch's
    float64 formula loses ~3 digits, which stay below float64's 1e-13).
    """
    dtype = float_dtype()
    c: Any
    gap: Any
    rho_inf: Any
    two_over_c: Any
    if isinstance(beta2, float):
        c = math.inf if beta2 == 0 else -math.log(beta2)
        gap = float(_coth_gap(beta2, c))
        rho_inf = 2 / (1 - beta2) - 1
        two_over_c = 2 / c
    else:  # traced (optax.inject_hyperparams): the same formulas on arrays
        beta2 = jnp.asarray(beta2, dtype)
        c = -jnp.log(beta2)
        gap = _coth_gap(beta2, c)
        rho_inf = 2 / (1 - beta2) - 1
        two_over_c = 2 / c
    x = jnp.asarray(c, dtype) * t
    bias_correction2 = -jnp.expm1(-x)
    rho = jnp.asarray(two_over_c, dtype) * _one_minus_x_over_expm1(x) + jnp.asarray(gap, dtype)
    if first_rectified is None and isinstance(beta2, float):
        rectified = jnp.zeros([], bool)
    elif first_rectified is None:
        rectified = rho > _RECTIFICATION_THRESHOLD
    else:
        rectified = t >= first_rectified
    ratio = (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
    rect = jnp.sqrt(jnp.where(rectified, jnp.maximum(ratio, 0.0), 1.0))
    return rectified, rect, bias_correction2


def _torch_scalars(beta1, b1: jax.Array, beta2, t: jax.Array):
    """``(1 - b1**t, sqrt(1 - b2**t), r_t)``: torch's Python-double scalars of step ``t``
    converted to float32 (``Double``), as its bf16/fp16 tensor ops take them.

    ``r_t`` is torch's rectification term computed by torch's formula (NaN where
    ``rho_t <= 4``, a step torch does not rectify); ``b1`` is ``beta1``'s value (a schedule's
    float32 value is taken as it is).
    """

    def compute():
        first = Double.of(beta1) if isinstance(beta1, float) else Double.exact(b1)
        second = Double.of(beta2) if isinstance(beta2, float) else Double.exact(beta2)
        second_t = second.power(t)
        bias_correction2 = 1 - second_t
        if isinstance(beta2, float):
            rho_inf_value = 2 / (1 - beta2) - 1
            rho_inf = Double.of(rho_inf_value)
            scale = Double.of((rho_inf_value - 4) * (rho_inf_value - 2))
        else:
            rho_inf = 2 / (1 - second) - 1
            scale = (rho_inf - 4) * (rho_inf - 2)
        rho = rho_inf - 2 * Double.exact(t) * second_t / bias_correction2
        rect = ((rho - 4) * (rho - 2) * rho_inf / (scale * rho)).sqrt()
        return (1 - first.power(t)).hi, bias_correction2.sqrt().hi, rect.hi

    return settled(compute, t > 0)


def scale_by_radam(
    betas: tuple[float | optax.Schedule, float] = (0.9, 0.999),
    eps: float = 1e-8,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
    learning_rate: float | optax.Schedule | None = None,
) -> optax.GradientTransformation:
    """RAdam's scaling (torch.optim.RAdam), without weight decay and learning rate.

    With ``b1 = betas[0](count)``, Adam's moments (``scale_by_adam``'s pieces) and::

        rho_inf = 2 / (1 - b2) - 1;   rho_t = rho_inf - 2 t b2**t / (1 - b2**t)
        m_hat   = m_t / (1 - b1**t)
        u_t     = m_hat * sqrt(1 - b2**t) / (sqrt(v_t) + eps) * r_t    if rho_t > 5
        u_t     = m_hat                                                otherwise
        r_t     = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))

    The switch to the rectified update happens at torch's step exactly: for a float ``b2``
    that step is found at construction with torch's own float64 arithmetic (step 6 for
    ``b2 = 0.999``; never for ``b2 <= 2/3``). ``rho_t`` itself is evaluated without the
    cancellation of the textbook formula (see ``_rectification``), so float32 runs are as
    accurate as float64 ones. Where torch's float64 ``rho_t`` has lost every digit
    (``b2`` within ~1e-8 of 1, steps 4-5) optlib uses the exact value.

    With bf16/fp16 statistics (``statistics_dtype=None`` on bf16/fp16 parameters) the leaf is
    torch's sequence of tensor ops, each result rounded to the statistics' dtype:
    ``exp_avg.lerp_``, ``exp_avg_sq.mul_(b2).addcmul_``, ``exp_avg / bc1``, ``* lr``,
    ``sqrt(v).add_(eps)`` (``eps`` rounded first, as ``add_`` rounds a scalar),
    ``sqrt(bc2) / ...`` (torch's ``reciprocal() * sqrt(bc2)``), ``*`` and ``* r_t``, with
    ``bc1``, ``sqrt(bc2)`` and ``r_t`` torch's Python-double values converted to float32
    (``optlib._double.Double``: float32 arithmetic is often one unit off); the update comes
    back in float32 for the parameter step to round once (``TorchRounding.update``).

    ``optax.scale_by_radam`` differs: ``eps`` is added to ``sqrt(v_t / (1 - b2**t))``
    (torch adds it to ``sqrt(v_t)``), and it rectifies from ``rho_t >= 5``.

    Args:
      betas: ``(beta1, beta2)``, each in [0, 1); ``beta1`` may be a schedule of the count.
      eps: added to the denominator (>= 0).
      statistics_dtype: dtype of the moments (at least this wide; None: the parameters'
        dtype, as torch).
      learning_rate: ``None`` (the updates come without the rate, for a chain that ends
        with ``apply_learning_rate``), or torch's ``lr``, a float or a schedule of the count:
        the updates then include it, multiplied in where torch multiplies it
        (``exp_avg / bc1 * lr * ...``, inside the rounded product), for a chain that ends
        with ``torch_parameter_step(lr, rate_applied=True)`` (``optlib.radam`` with
        ``statistics_dtype=None``).

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      TypeError: a metric-driven ``learning_rate`` (its rate lives in the chain's last link).
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    beta1, beta2 = check_betas(betas)
    eps = check_non_negative("eps", eps)
    first_rectified = _first_rectified_step(beta2) if isinstance(beta2, float) else None
    if learning_rate is not None:
        if isinstance(learning_rate, optax.GradientTransformation):
            raise TypeError(
                "scale_by_radam: learning_rate must be a float or a schedule (a metric-driven "
                "rate lives in the chain's last link; leave learning_rate=None)"
            )
        check_learning_rate(learning_rate)

    def init_fn(params):
        return ScaleByRadamState(
            jnp.zeros([], jnp.int32),
            statistics_like(params, 0.0, statistics_dtype),
            statistics_like(params, 0.0, statistics_dtype),
        )

    def update_fn(updates, state, params=None):
        del params
        t = update_number(state.count)
        b1 = learning_rate_at(beta1, state.count)
        bias_correction1 = 1 - b1**t
        rectified, rect, bias_correction2 = _rectification(beta2, first_rectified, t)
        bias_correction2_sqrt = jnp.sqrt(bias_correction2)
        rate = None if learning_rate is None else learning_rate_at(learning_rate, state.count)
        # torch's Python-double scalars, converted to float32, where torch's rounding is
        # followed (bf16/fp16 statistics); not traced at all otherwise
        narrow = any(TorchRounding.of(m.dtype).narrow for m in jax.tree.leaves(state.exp_avg))
        if narrow:
            torch_bc1, torch_bc2_sqrt, torch_rect = _torch_scalars(beta1, b1, beta2, t)

        def leaf(r, g, exp_avg, exp_avg_sq):
            dtype = exp_avg.dtype
            g32 = cast(g, dtype)
            exp_avg = r.keep(lerp(exp_avg, g32, first_moment_weight(beta1, b1, dtype)))
            exp_avg_sq = decay_add_square(exp_avg_sq, g32, beta2, r)
            if not r.narrow:
                corrected = exp_avg / cast(bias_correction1, dtype)
                if rate is not None:
                    corrected = corrected * cast(rate, dtype)
                adaptive = cast(bias_correction2_sqrt, dtype) / (jnp.sqrt(exp_avg_sq) + eps)
                u = jnp.where(rectified, corrected * adaptive * cast(rect, dtype), corrected)
                return r.update(u, g), exp_avg, exp_avg_sq
            # torch: exp_avg / bc1 * lr * (sqrt(bc2) / (sqrt(v) + eps)) * rect, every tensor
            # op rounded; a float divided by a tensor is torch's reciprocal() * float
            corrected = r.keep(exp_avg / cast(torch_bc1, dtype))
            if rate is not None:
                corrected = r.keep(corrected * cast(rate, dtype))
            denom = r.keep(r.keep(jnp.sqrt(exp_avg_sq)) + r.alpha(eps))
            adaptive = r.keep(r.keep(1 / denom) * cast(torch_bc2_sqrt, dtype))
            rectified_u = r.keep(r.keep(corrected * adaptive) * cast(torch_rect, dtype))
            u = jnp.where(rectified, rectified_u, corrected)
            return r.update(u, g), exp_avg, exp_avg_sq

        updates, exp_avg, exp_avg_sq = map_statistics(
            leaf, updates, state.exp_avg, state.exp_avg_sq, rounding=True
        )
        return updates, ScaleByRadamState(safe_increment(state.count), exp_avg, exp_avg_sq)

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Adamax.


class ScaleByAdamaxState(NamedTuple):
    """State of ``scale_by_adamax`` (torch's ``step``, ``exp_avg``, ``exp_inf``).

    Attributes:
      count: int32 updates so far (saturating).
      exp_avg: first moment.
      exp_inf: exponentially weighted infinity norm.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    exp_avg: optax.Updates
    exp_inf: optax.Updates


def scale_by_adamax(
    betas: tuple[float | optax.Schedule, float] = (0.9, 0.999),
    eps: float = 1e-8,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Adamax's scaling (torch.optim.Adamax), without weight decay and learning rate.

    With ``b1 = betas[0](count)`` (a float or a schedule, torch's ``cycle_momentum``)::

        m_t = lerp(m_{t-1}, g_t, 1 - b1);   u_t = max(b2 * u_{t-1}, |g_t| + eps)
        u_t = m_t / u_t / (1 - b1**t)

    torch's order: ``eps`` inside the maximum, the bias correction with the current ``b1``.
    With bf16/fp16 statistics (``statistics_dtype=None`` on bf16/fp16 parameters) each of
    torch's ops is rounded to their dtype as torch rounds it (``exp_avg.lerp_``,
    ``exp_inf.mul_(b2)``, ``g.abs().add_(eps)`` with ``eps`` rounded first) and the update
    comes back in float32, for the parameter step to round once as torch's ``addcdiv_``.
    ``optax.scale_by_adamax`` computes the same numbers up to round-off (no ``b1`` schedule).

    Args:
      betas: ``(beta1, beta2)``, each in [0, 1); ``beta1`` may be a schedule of the count.
      eps: added to ``|g|`` inside the maximum (>= 0).
      statistics_dtype: dtype of the moments (at least this wide; None: the parameters'
        dtype, as torch).

    Returns:
      An ``optax.GradientTransformation``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    beta1, beta2 = check_betas(betas)
    eps = check_non_negative("eps", eps)

    def init_fn(params):
        return ScaleByAdamaxState(
            jnp.zeros([], jnp.int32),
            statistics_like(params, 0.0, statistics_dtype),
            statistics_like(params, 0.0, statistics_dtype),
        )

    def update_fn(updates, state, params=None):
        del params
        t = update_number(state.count)
        b1 = learning_rate_at(beta1, state.count)
        bias_correction = 1 - b1**t

        def leaf(r, g, exp_avg, exp_inf):
            dtype = exp_avg.dtype
            g32 = cast(g, dtype)
            # torch: exp_avg.lerp_(g, 1 - b1); maximum(exp_inf.mul_(b2), g.abs().add_(eps))
            exp_avg = r.keep(lerp(exp_avg, g32, first_moment_weight(beta1, b1, dtype)))
            exp_inf = jnp.maximum(r.keep(exp_inf * beta2), r.keep(jnp.abs(g32) + r.alpha(eps)))
            u = exp_avg / exp_inf / cast(bias_correction, dtype)
            return r.update(u, g), exp_avg, exp_inf

        updates, exp_avg, exp_inf = map_statistics(
            leaf, updates, state.exp_avg, state.exp_inf, rounding=True
        )
        return updates, ScaleByAdamaxState(safe_increment(state.count), exp_avg, exp_inf)

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Rprop.


class ScaleByRpropState(NamedTuple):
    """State of ``scale_by_rprop`` (torch's ``step``, ``prev`` and ``step_size``).

    Attributes:
      count: int32 number of updates so far (saturating); torch's ``step``.
      prev: the previous gradient, zeroed where its sign had flipped.
      step_size: the per-element step sizes (the initial rate until the first update).
    """

    count: jax.Array  # type: ignore[assignment]
    prev: optax.Updates
    step_size: optax.Updates


def _check_pair(name: str, value: Any) -> tuple[Any, Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a pair, got {value!r}")
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair, got {value!r}")
    return tuple(value)


def check_etas(etas) -> tuple[float, float]:
    """torch's Rprop check ``0 < etas[0] < 1 < etas[1]`` ("Invalid eta values")."""
    eta_minus, eta_plus = _check_pair("etas", etas)
    eta_minus = check_real("etas[0]", eta_minus)
    eta_plus = check_real("etas[1]", eta_plus, allow_inf=True)
    if isinstance(eta_minus, float) and isinstance(eta_plus, float):
        if not 0.0 < eta_minus < 1.0 < eta_plus:
            raise ValueError(
                f"etas must satisfy 0 < etas[0] < 1 < etas[1] (torch: 'Invalid eta values: "
                f"{eta_minus}, {eta_plus}'), got {etas!r}"
            )
    return eta_minus, eta_plus


def check_step_sizes(step_sizes) -> tuple[float, float]:
    """``(minimum, maximum)`` with ``0 <= minimum <= maximum`` (torch does not check)."""
    minimum, maximum = _check_pair("step_sizes", step_sizes)
    minimum = check_non_negative("step_sizes[0]", minimum)
    maximum = check_real("step_sizes[1]", maximum, allow_inf=True)
    if isinstance(minimum, float) and isinstance(maximum, float) and not minimum <= maximum:
        raise ValueError(
            f"step_sizes must be (minimum, maximum) with step_sizes[0] <= step_sizes[1], "
            f"got {step_sizes!r}"
        )
    return minimum, maximum


def scale_by_rprop(
    learning_rate: LearningRate = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Rprop's step (torch.optim.Rprop): the per-element step sizes times the gradient's sign.

    With ``s_0 = lr`` (the rate of the first update) and ``prev_0 = 0``::

        f_t    = etas[1] if g_t * prev > 0,  etas[0] if g_t * prev < 0,  1 otherwise
        s_t    = clip(s_{t-1} * f_t, step_sizes[0], step_sizes[1])
        g'_t   = 0 where g_t * prev < 0, else g_t;   prev <- g'_t
        u_t    = s_t * sign(g'_t)           (torch's sign: 0 for NaN, so "otherwise" above
                                             includes a NaN product)

    Follow with ``-1`` (``optlib.rprop`` ends with ``track_learning_rate``). As in torch the
    first step moves every element by ``clip(lr)`` (``f_1 = 1``), and ``lr`` is read once, at
    the first update (when torch creates the state): a learning-rate schedule only sets the
    initial step sizes (its value at count 0, or a metric-driven rate's initial rate), later
    values are ignored, as torch's Rprop ignores the ``group['lr']`` a scheduler writes after
    the first step. A rate injected before the first update (``optax.inject_hyperparams``,
    like setting ``group['lr']`` before the first ``step()``) is the one used.

    ``optax.scale_by_rprop`` differs: it applies the previous step's ``s * sign(g)`` (its
    first update is 0) and keeps ``s`` unclipped when ``g * prev = 0``.

    Args:
      learning_rate: the initial step size (>= 0): a float, or a schedule / metric-driven rate
        whose initial value is used.
      etas: ``(etaminus, etaplus)``, ``0 < etaminus < 1 < etaplus``.
      step_sizes: ``(minimum, maximum)`` step size, ``0 <= minimum <= maximum``.
      statistics_dtype: dtype of ``prev`` and the step sizes (at least this wide; None: the
        parameters' dtype, as torch).

    Returns:
      An ``optax.GradientTransformation``.
    """
    metric_driven = isinstance(learning_rate, optax.GradientTransformation)
    if not metric_driven:  # a metric-driven rate is checked where it is built
        check_learning_rate(learning_rate)
    eta_minus, eta_plus = check_etas(etas)
    minimum, maximum = check_step_sizes(step_sizes)
    statistics_dtype = check_statistics_dtype(statistics_dtype)

    def init_fn(params):
        rate = initial_learning_rate(learning_rate, params)
        return ScaleByRpropState(
            count=jnp.zeros([], jnp.int32),
            prev=statistics_like(params, 0.0, statistics_dtype),
            step_size=statistics_like(params, rate, statistics_dtype),
        )

    def update_fn(updates, state, params=None):
        del params
        first = state.count == 0
        # the rate of the first update, read now (an injected rate may have replaced init's)
        rate = (
            None if metric_driven else learning_rate_at(learning_rate, jnp.zeros_like(state.count))
        )

        def leaf(g, prev, step_size):
            if rate is not None:
                step_size = jnp.where(first, cast(rate, step_size.dtype), step_size)
            g32 = cast(g, prev.dtype)
            product = g32 * prev
            dtype = prev.dtype

            def scaled(factor):
                return jnp.clip(step_size * jnp.asarray(factor, dtype), minimum, maximum)

            # torch's factor is sign(g * prev) with its signs replaced by the etas; torch's
            # sign of NaN is 0 (factor 1). Selected last, the new step size is an expression
            # of several arrays, which XLA computes once and reads back in the parameter
            # update; a clip of one array last would be recomputed there from the old step
            # sizes, and XLA would copy that donated buffer before overwriting it.
            step_size = jnp.where(
                product > 0,
                scaled(eta_plus),
                jnp.where(product < 0, scaled(eta_minus), scaled(1.0)),
            )
            g32 = jnp.where(product < 0, jnp.zeros_like(g32), g32)
            return cast(torch_sign(g32) * step_size, g.dtype), g32, step_size

        # Computed in the statistics' own dtype, not widened (map_leaves): torch multiplies a
        # bf16/fp16 step size by a tensor of etas in that dtype, so under
        # statistics_dtype=None this rounds exactly as torch does.
        updates, prev, step_size = map_leaves(leaf, updates, state.prev, state.step_size)
        return updates, ScaleByRpropState(safe_increment(state.count), prev, step_size)

    return optax.GradientTransformation(init_fn, update_fn)
