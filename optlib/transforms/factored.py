"""Hugging Face Adafactor as chainable transforms (``transformers.optimization.Adafactor``).

HF's step for one parameter ``p`` with gradient ``g`` at step ``t = 1, 2, ...`` is, in order::

    v_t  = factored (or full) EMA of g**2 + eps[0], decay beta2_t = 1 - t**decay_rate
    u    = g / sqrt(v_t)                                 -> scale_by_factored_rms
    u    = u / max(1, RMS(u) / clip_threshold)           -> clip_by_update_rms
    lr_t = rho_t * max(eps[1], RMS(p))                   -> scale_by_param_rms (the RMS part)
                                                            scale_by_relative_step_size (rho_t)
    u    = lr_t * u
    m_t  = beta1 * m_{t-1} + (1 - beta1) * u; u = m_t    -> ema_of_updates
    p    = p - weight_decay * lr_t * p - u               -> add_decayed_weights_scaled_by_
                                                            learning_rate

torch.optim.Adafactor (``optlib.torch_adafactor``) is a different algorithm built from the
same pieces: ``scale_by_torch_factored_rms`` (the same statistics, eps placed elsewhere),
``clip_by_update_rms``, ``scale_by_param_rms`` and ``scale_by_capped_relative_step``
(``rho_t = min(lr, 1/sqrt(t))`` and torch's ``lr * weight_decay`` decay).

Every transform computes in float32 for bf16/fp16 inputs (as HF does; float64 stays float64),
keeps its statistics in ``optlib._numerics.statistics_dtype`` and returns updates in the
dtype they came in.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optlib._double import Double, settled
from optlib._numerics import (
    DEFAULT_STATISTICS_DTYPE,
    TorchRounding,
    as_float,
    cast,
    check_statistics_dtype,
    ema,
    safe_increment,
    update_number,
)
from optlib._numerics import statistics_dtype as statistics_dtype_of
from optlib._partition import register_state_partition, state_leaf, without_axis
from optlib._state_tree import register_learning_rate_state
from optlib._validation import (
    check_bool,
    check_interval,
    check_learning_rate,
    check_non_negative,
    check_positive,
    check_real,
    is_traced,
)
from optlib.transforms.learning_rate import (
    LearningRate,
    learning_rate_at,
    learning_rate_tracker,
    scale_updates,
)
from optlib.transforms.moments import in_statistics_dtype, lerp

__all__ = [
    "ScaleByCappedRelativeStepState",
    "ScaleByFactoredRmsState",
    "ScaleByParamRmsState",
    "ScaleByRelativeStepSizeState",
    "add_decayed_weights_scaled_by_learning_rate",
    "clip_by_update_rms",
    "ema_of_updates",
    "relative_step_size",
    "scale_by_capped_relative_step",
    "scale_by_factored_rms",
    "scale_by_param_rms",
    "scale_by_relative_step_size",
    "scale_by_torch_factored_rms",
]


# --- shared numerics --------------------------------------------------------------------------


@jax.custom_jvp
def _safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` for ``x >= 0`` whose derivative at ``x = 0`` is 0 instead of ``inf``."""
    return jnp.sqrt(x)


@_safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    root = jnp.sqrt(x)
    positive = x > 0
    slope = jax.lax.select(
        positive, 0.5 / jax.lax.select(positive, root, jnp.ones_like(root)), jnp.zeros_like(root)
    )
    return root, slope * dx


def _rms(x: jax.Array) -> jax.Array:
    """Root mean square of all entries (HF's ``_rms``: ``norm(x) / sqrt(numel)``).

    At ``x = 0`` (a zero-initialised bias, a zero update) the value is 0 and the derivative
    0, not the NaN of ``sqrt``'s infinite slope, so that gradients through updates stay finite.
    The forward pass is a plain ``sqrt(mean(x**2))`` (the mean has one consumer, so XLA fuses
    it into the square root as it does optax's; a ``select`` on ``mean > 0`` would keep the
    mean as a separate kernel per leaf).
    """
    return _safe_sqrt(jnp.mean(jnp.square(x)))


def _compute_dtype(x: jax.Array) -> jnp.dtype:
    """float32 for bf16/fp16 (HF upcasts), else the array's own float dtype."""
    return statistics_dtype_of(x.dtype)


def _param_scale(param: jax.Array, eps: float) -> jax.Array:
    """HF's parameter scale ``max(eps, RMS(p))``, computed in the statistics dtype."""
    return jnp.maximum(eps, _rms(param.astype(_compute_dtype(param))))


def check_decay_rate(decay_rate: float) -> float:
    decay_rate = check_real("decay_rate", decay_rate)
    if not is_traced(decay_rate) and decay_rate > 0:  # traced: injected
        raise ValueError(
            f"decay_rate must be <= 0 so that beta2_t = 1 - t**decay_rate stays in [0, 1), "
            f"got {decay_rate!r}"
        )
    return decay_rate


def check_clip_threshold(clip_threshold: float) -> float:
    clip_threshold = check_real("clip_threshold", clip_threshold, allow_inf=True)
    if not is_traced(clip_threshold) and clip_threshold <= 0:
        raise ValueError(f"clip_threshold must be > 0, got {clip_threshold!r}")
    return clip_threshold


# --- second moments ---------------------------------------------------------------------------


class ScaleByFactoredRmsState(NamedTuple):
    """State of ``scale_by_factored_rms`` (HF's ``exp_avg_sq_row/col`` and ``exp_avg_sq``).

    Each statistics tree has the structure of the params; per parameter ``p`` (float32 for
    bf16/fp16 params, else p's dtype):

    * ``p.ndim >= 2`` (factored): ``exp_avg_sq_row`` has shape ``p.shape[:-1]`` (the mean over
      p's last axis; it keeps every parameter axis but the last, with the same sharding),
      ``exp_avg_sq_col`` has shape ``p.shape[:-2] + p.shape[-1:]`` (the mean over axis -2; it
      keeps every axis but the second-to-last), ``exp_avg_sq`` is a scalar placeholder.
    * ``p.ndim < 2``: ``exp_avg_sq`` has p's shape (and sharding); the row and column entries
      are scalar placeholders.

    Attributes:
      count: int32 number of updates so far (saturating); HF's ``step`` is ``count + 1``.
      exp_avg_sq_row: row statistics (see above).
      exp_avg_sq_col: column statistics (see above).
      exp_avg_sq: unfactored statistics (see above).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    exp_avg_sq_row: optax.Updates
    exp_avg_sq_col: optax.Updates
    exp_avg_sq: optax.Updates


register_state_partition(ScaleByFactoredRmsState, "exp_avg_sq_row", without_axis(-1))
register_state_partition(ScaleByFactoredRmsState, "exp_avg_sq_col", without_axis(-2))
register_state_partition(
    ScaleByFactoredRmsState, "exp_avg_sq", lambda spec, ndim: spec if ndim < 2 else ()
)


def _is_factored(param: jax.Array) -> bool:
    """HF factors every tensor with at least two dims, over its last two (no size threshold)."""
    return param.ndim >= 2


def _init_row(param, dtype):
    if _is_factored(param):
        return state_leaf(param, 0.0, dtype, drop_axis=-1)
    return state_leaf(param, 0.0, dtype, scalar=True)


def _init_col(param, dtype):
    if _is_factored(param):
        return state_leaf(param, 0.0, dtype, drop_axis=-2)
    return state_leaf(param, 0.0, dtype, scalar=True)


def _init_full(param, dtype):
    return state_leaf(param, 0.0, dtype, scalar=_is_factored(param))


def _approx_rsqrt_second_moment(row: jax.Array, col: jax.Array) -> jax.Array:
    """HF's ``_approx_sq_grad``: the factored estimate of ``1/sqrt(E[g**2])``.

    ``rsqrt(row / mean(row over its last axis))[..., :, None] * rsqrt(col)[..., None, :]``,
    i.e. ``V ~ row col^T / mean(row)`` inverted and square-rooted, rows first.
    """
    row_factor = jax.lax.rsqrt(row / jnp.mean(row, axis=-1, keepdims=True))[..., :, None]
    col_factor = jax.lax.rsqrt(col)[..., None, :]
    return row_factor * col_factor


def scale_by_factored_rms(
    eps: float = 1e-30,
    decay_rate: float = -0.8,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Divides updates by HF Adafactor's (factored) RMS of past gradients.

    At HF step ``t = count + 1``, with ``beta2_t = 1 - t**decay_rate`` and ``G = g**2 + eps``:

    * ``g.ndim >= 2``, factored over the last two axes (every such tensor, no size
      threshold)::

          R_t = beta2_t R_{t-1} + (1 - beta2_t) mean(G, axis=-1)      # p.shape[:-1]
          C_t = beta2_t C_{t-1} + (1 - beta2_t) mean(G, axis=-2)      # p.shape[:-2] + p.shape[-1:]
          u   = rsqrt(R_t / mean(R_t, axis=-1))[..., :, None] * rsqrt(C_t)[..., None, :] * g

    * ``g.ndim < 2`` (scalars, vectors)::

          V_t = beta2_t V_{t-1} + (1 - beta2_t) G;   u = rsqrt(V_t) * g

    Mirrors the second-moment part of ``transformers.optimization.Adafactor`` (``eps`` is its
    ``eps[0]``). Differs from ``optax.scale_by_factored_rms``, which factors only dims of size
    >= 128 and picks the two largest axes; this is why it is not reused. Statistics are float32
    for bf16/fp16 params (HF computes in float32); updates keep their dtype.

    Args:
      eps: added to the squared gradient (HF ``eps[0]``), ``>= 0``.
      decay_rate: exponent of ``beta2_t = 1 - t**decay_rate``; ``<= 0`` so that
        ``beta2_t`` is in ``[0, 1)`` (``0`` means no averaging).
      statistics_dtype: dtype of the statistics and of the computation (at least this wide;
        None: the parameters' dtype, which HF does not do: it always computes in float32).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleByFactoredRmsState``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    eps = check_non_negative("eps", eps)
    decay_rate = check_decay_rate(decay_rate)

    def update_leaf(grad, row, col, full, beta2, grad_dtype, rounding, t):
        del rounding, t
        squared = jnp.square(grad) + eps
        if _is_factored(grad):
            row = ema(row, jnp.mean(squared, axis=-1), beta2)
            col = ema(col, jnp.mean(squared, axis=-2), beta2)
            update = _approx_rsqrt_second_moment(row, col) * grad
        else:
            full = ema(full, squared, beta2)
            update = jax.lax.rsqrt(full) * grad
        return update.astype(grad_dtype), row, col, full

    return _scale_by_second_moment(decay_rate, update_leaf, statistics_dtype)


def _scale_by_second_moment(
    decay_rate, update_leaf, statistics_dtype: Any, narrow_scalars=None
) -> optax.GradientTransformation:
    """The transform HF's and torch's Adafactor share.

    State ``ScaleByFactoredRmsState`` kept in ``statistics_dtype``; ``beta2_t = 1 -
    t**decay_rate``; ``update_leaf(grad, row, col, full, beta2, grad_dtype, rounding, t) ->
    (update, row, col, full)`` per parameter (its own normalization; ``grad_dtype`` is the
    incoming gradient's, ``rounding`` the statistics' ``TorchRounding``, ``t`` the 1-based
    step, or ``narrow_scalars(t)`` when given and some leaf's statistics are narrow: scalars
    computed once per update) sees the gradient and the statistics in float32 or wider, as
    both references compute, and the new statistics are stored back rounded once;
    ``update_leaf`` returns the update in the dtype it is to have (the gradient's, or
    float32 where it rounds as torch: ``rounding.update``).
    """

    def init_fn(params):
        return ScaleByFactoredRmsState(
            count=jnp.zeros([], jnp.int32),
            exp_avg_sq_row=jax.tree.map(lambda p: _init_row(p, statistics_dtype), params),
            exp_avg_sq_col=jax.tree.map(lambda p: _init_col(p, statistics_dtype), params),
            exp_avg_sq=jax.tree.map(lambda p: _init_full(p, statistics_dtype), params),
        )

    def step_leaf(grad, row, col, full, beta2, t):
        stored = row.dtype  # the statistics dtype, chosen from the param at init
        dtype = statistics_dtype_of(stored)
        wide = (x.astype(dtype) for x in (grad, row, col, full))
        rounding = TorchRounding.of(stored)
        update, *new = update_leaf(*wide, beta2.astype(dtype), grad.dtype, rounding, t)
        return (update, *(x.astype(stored) for x in new))

    def update_fn(updates, state, params=None):
        del params
        t = update_number(state.count)
        beta2 = 1 - jnp.power(t, decay_rate)
        grads, treedef = jax.tree.flatten(updates)
        old_rows = treedef.flatten_up_to(state.exp_avg_sq_row)
        if narrow_scalars is not None and any(TorchRounding.of(x.dtype).narrow for x in old_rows):
            t = narrow_scalars(t)
        per_leaf = [
            step_leaf(grad, row, col, full, beta2, t)
            for grad, row, col, full in zip(
                grads,
                old_rows,
                treedef.flatten_up_to(state.exp_avg_sq_col),
                treedef.flatten_up_to(state.exp_avg_sq),
            )
        ]
        new_updates = [update for update, *_ in per_leaf]
        rows, cols, fulls = ([leaf[i] for leaf in per_leaf] for i in (1, 2, 3))
        new_state = ScaleByFactoredRmsState(
            count=safe_increment(state.count),
            exp_avg_sq_row=treedef.unflatten(rows),
            exp_avg_sq_col=treedef.unflatten(cols),
            exp_avg_sq=treedef.unflatten(fulls),
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_torch_factored_rms(
    beta2_decay: float = -0.8,
    eps: float | None = None,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Divides updates by torch.optim.Adafactor's (factored) RMS of past gradients.

    At step ``t = count + 1``, with ``beta2_t = 1 - t**beta2_decay`` (HF's ``decay_rate``)::

        g.ndim >= 2:  R_t = beta2_t R_{t-1} + (1 - beta2_t) mean(g**2, axis=-1)
                      C_t = beta2_t C_{t-1} + (1 - beta2_t) mean(g**2, axis=-2)
                      V_t = R_t[..., :, None] C_t[..., None, :] / max(mean(R_t), eps)
        g.ndim < 2:   V_t = beta2_t V_{t-1} + (1 - beta2_t) g**2
        u = g / max(sqrt(V_t), eps)

    The same statistics, shapes and state as ``scale_by_factored_rms`` (HF's); what differs is
    where ``eps`` goes: torch adds nothing to ``g**2`` and clamps the row mean and the final
    estimate instead (torch's ``eps[0]``; ``None`` means ``finfo(param dtype).eps``, torch's
    default). With bf16/fp16 statistics (``statistics_dtype=None`` on bf16/fp16 parameters)
    the leaf is torch's sequence of tensor ops, each rounded to their dtype (its norms of the
    gradient, ``lerp_`` with torch's Python-double weight ``t**beta2_decay``, the outer
    product, ``rsqrt_`` as ``1 / sqrt``), and the update comes back in float32 (its
    bf16/fp16 value) for ``scale_by_capped_relative_step(..., torch_step=...)``.

    Args:
      beta2_decay: exponent of ``1 - beta2_t = t**beta2_decay``; ``<= 0``.
      eps: torch's ``eps[0]`` (``>= 0``), or ``None`` for the parameter dtype's epsilon.
      statistics_dtype: dtype of the statistics (at least this wide; None: the parameters'
        dtype, as torch keeps them), computed in float32 or wider.

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleByFactoredRmsState``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    beta2_decay = check_real("beta2_decay", beta2_decay)
    if not isinstance(beta2_decay, jax.core.Tracer) and beta2_decay > 0:
        raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay} (beta2_decay)")
    if eps is not None:
        eps = check_non_negative("eps", eps)

    def update_leaf(grad, row, col, full, beta2, grad_dtype, rounding, t):
        floor = jnp.finfo(grad_dtype).eps if eps is None else eps
        if rounding.narrow:  # t is narrow_scalars(t): torch's lerp weight
            return _torch_rounded_leaf(grad, row, col, full, floor, t, rounding)
        squared = jnp.square(grad)
        if _is_factored(grad):
            row = ema(row, jnp.mean(squared, axis=-1), beta2)
            col = ema(col, jnp.mean(squared, axis=-2), beta2)
            row_mean = jnp.maximum(jnp.mean(row, axis=-1, keepdims=True), floor)
            estimate = row[..., :, None] * col[..., None, :] / row_mean[..., None]
        else:
            full = ema(full, squared, beta2)
            estimate = full
        update = jax.lax.rsqrt(jnp.maximum(estimate, floor * floor)) * grad
        return update.astype(grad_dtype), row, col, full

    def narrow_scalars(t):
        # torch's weight: step ** beta2_decay in Python doubles, converted to float32
        if isinstance(beta2_decay, (int, float)):
            return settled(lambda: Double.exact(t).real_power(float(beta2_decay)).hi, t > 0)
        return jnp.power(t, beta2_decay)

    return _scale_by_second_moment(beta2_decay, update_leaf, statistics_dtype, narrow_scalars)


def _torch_norm(x: jax.Array, r: TorchRounding, axis=None) -> jax.Array:
    """torch's ``x.norm(2, dim)`` of a bf16/fp16 tensor: computed in float32, rounded."""
    return r.keep(jnp.sqrt(jnp.sum(jnp.square(x), axis=axis)))


def _torch_rounded_leaf(grad, row, col, full, floor, weight, r: TorchRounding):
    """``scale_by_torch_factored_rms``'s step for bf16/fp16 statistics: torch's sequence of
    tensor ops, each rounded to the statistics' dtype (``r.keep``); the update is returned in
    float32 (its bf16/fp16 value), for the parameter step to scale as torch does.

    torch: ``norm(g, dim).square_().div_(n)`` (the norm a bf16/fp16 tensor), ``lerp_`` of the
    statistics with weight ``t**beta2_decay``; ``row_var @ col_var`` divided by
    ``row_var.mean().clamp_(min=eps)``; then ``clamp_(min=eps**2).rsqrt_()`` (``1 / sqrt``)
    and ``mul_(g)``.
    """
    weight = cast(weight, r.compute)
    if _is_factored(grad):
        rows, cols = grad.shape[-1], grad.shape[-2]
        row_mean = r.keep(r.keep(jnp.square(_torch_norm(grad, r, axis=-1))) / rows)
        row = r.keep(lerp(row, row_mean, weight))
        col_mean = r.keep(r.keep(jnp.square(_torch_norm(grad, r, axis=-2))) / cols)
        col = r.keep(lerp(col, col_mean, weight))
        product = r.keep(row[..., :, None] * col[..., None, :])
        row_scale = r.keep(jnp.maximum(r.keep(jnp.mean(row, axis=-1, keepdims=True)), floor))
        estimate = r.keep(product / row_scale[..., None])
    else:
        full = r.keep(lerp(full, r.keep(grad * grad), weight))
        estimate = full
    inverse = r.keep(1 / jnp.sqrt(r.keep(jnp.maximum(estimate, floor * floor))))
    return r.update(r.keep(inverse * grad), grad), row, col, full


# --- clipping ---------------------------------------------------------------------------------


def clip_by_update_rms(clip_threshold: float = 1.0) -> optax.GradientTransformation:
    """Shrinks each update tensor whose RMS exceeds ``clip_threshold`` (HF Adafactor).

    ``u = u / max(1, RMS(u) / clip_threshold)`` per tensor, ``RMS(u) = sqrt(mean(u**2))``.

    Mirrors the update clipping of ``transformers.optimization.Adafactor``. The formula is
    ``optax.clip_by_block_rms``'s; this version computes the RMS in float32 for bf16/fp16
    updates, as HF does, and keeps the update dtype. ``clip_threshold=inf`` disables it.

    Args:
      clip_threshold: the largest update RMS left untouched, ``> 0``.

    Returns:
      An ``optax.GradientTransformation`` (stateless).
    """
    clip_threshold = check_clip_threshold(clip_threshold)

    def clip_leaf(update):
        wide = update.astype(_compute_dtype(update))
        clipped = wide / jnp.maximum(1, _rms(wide) / clip_threshold)
        return clipped.astype(update.dtype)

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(clip_leaf, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


# --- HF's learning rate: relative step size x parameter scale ---------------------------------


@register_learning_rate_state
class ScaleByParamRmsState(NamedTuple):
    """State of ``scale_by_param_rms``.

    Attributes:
      learning_rate: each parameter's scale ``max(eps, RMS(p))`` as used by the last update
        (before any update: the one the first update will use), a tree like the parameters
        of scalars. It is a per-parameter factor of the rate HF Adafactor applies, so
        ``optlib.current_learning_rate`` gives a tree of per-parameter rates: HF's
        ``Adafactor._get_lr`` of each parameter (``AdafactorSchedule.get_last_lr()[0]`` is
        the entry of the group's first torch parameter).
    """

    learning_rate: Any


# One scalar per parameter: replicated whatever the parameter's sharding.
register_state_partition(ScaleByParamRmsState, "learning_rate", lambda spec, ndim: ())


def _param_scales(params, eps: float) -> Any:
    return jax.tree.map(lambda param: _param_scale(param, eps), params)


def scale_by_param_rms(
    eps: float = 1e-3, *, report_scale: bool = True
) -> optax.GradientTransformation:
    """Multiplies each update tensor by its parameter's scale ``max(eps, RMS(p))``.

    ``u = u * max(eps, RMS(p))`` with ``p`` the parameter before the update, per tensor.

    HF Adafactor's ``scale_parameter=True`` (``eps`` is its ``eps[1]``), which folds this
    factor into the learning rate. The formula is ``optax.scale_by_param_block_rms``'s; this
    version computes the RMS in float32 for bf16/fp16 params (as HF does) and records each
    parameter's scale so that ``optlib.current_learning_rate`` reports HF's per-parameter rates.

    Args:
      eps: the smallest scale (HF ``eps[1]``), ``>= 0``.
      report_scale: record each parameter's scale as a factor of its learning rate (HF's
        rate includes it); ``False`` keeps no state (torch.optim.Adafactor's ``lr`` does not
        include it).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleByParamRmsState`` (or
      ``optax.EmptyState`` without ``report_scale``); needs ``params``.
    """
    eps = check_non_negative("eps", eps)
    report_scale = check_bool("report_scale", report_scale)

    def new_state(scales):
        return ScaleByParamRmsState(scales) if report_scale else optax.EmptyState()

    def init_fn(params):
        return new_state(_param_scales(params, eps))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        del state
        scales = _param_scales(params, eps)
        updates = jax.tree.map(
            lambda u, scale: (u.astype(_compute_dtype(u)) * scale).astype(u.dtype),
            updates,
            scales,
        )
        return updates, new_state(scales)

    return optax.GradientTransformation(init_fn, update_fn)


def relative_step_size(warmup_init: bool = False) -> optax.Schedule:
    """HF Adafactor's relative step size as an optax schedule of the update count.

    ``rho(count) = min(1e-2, 1 / sqrt(t))``, or ``min(1e-6 * t, 1 / sqrt(t))`` with
    ``warmup_init``, where ``t = count + 1`` is HF's 1-based step
    (``transformers.optimization.Adafactor._get_lr`` with ``relative_step=True``).

    Args:
      warmup_init: grow the step linearly from ``1e-6`` instead of starting at ``1e-2``.

    Returns:
      A schedule ``count -> rho`` (default float dtype).
    """
    warmup_init = check_bool("warmup_init", warmup_init)

    def schedule(count):
        step = update_number(count)
        ceiling = 1e-6 * step if warmup_init else as_float(1e-2)
        return jnp.minimum(ceiling, 1 / jnp.sqrt(step))

    return schedule


@register_learning_rate_state
class ScaleByRelativeStepSizeState(NamedTuple):
    """State of ``scale_by_relative_step_size``.

    Attributes:
      count: int32 number of updates so far (saturating); HF's ``step`` is ``count + 1``.
      learning_rate: the relative step size of the last update, HF step ``max(count, 1)``
        (what ``AdafactorSchedule`` reports after the step, times the param scale).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    learning_rate: jax.Array


def scale_by_relative_step_size(warmup_init: bool = False) -> optax.GradientTransformation:
    """Multiplies updates by ``-rho_t``, HF Adafactor's relative step size (descent sign).

    ``u = -rho(count) * u`` with ``rho = relative_step_size(warmup_init)``. This owns the
    learning rate of ``optlib.adafactor(relative_step=True)``. It is not
    ``scale_by_learning_rate(relative_step_size(...))`` only because of what it records:
    HF's ``AdafactorSchedule`` reports, after step ``t``, the rate step ``t`` applied, so the
    state keeps ``rho`` of the last update (of the first update before any), whereas
    ``scale_by_learning_rate`` keeps the next update's rate (torch scheduler semantics).

    Args:
      warmup_init: HF's ``warmup_init`` (``rho_t = min(1e-6 t, 1/sqrt(t))``).

    Returns:
      An ``optax.GradientTransformation`` with state ``ScaleByRelativeStepSizeState``.
    """
    schedule = relative_step_size(warmup_init)

    def init_fn(params):
        del params
        count = jnp.zeros([], jnp.int32)
        return ScaleByRelativeStepSizeState(count, schedule(count))

    def update_fn(updates, state, params=None):
        del params
        rate = schedule(state.count)
        updates = scale_updates(updates, -rate)
        return updates, ScaleByRelativeStepSizeState(safe_increment(state.count), rate)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByCappedRelativeStepState(NamedTuple):
    """State of ``scale_by_capped_relative_step``.

    Attributes:
      count: int32 number of updates so far (saturating); torch's ``step`` is ``count + 1``.
      learning_rate_state: the state that follows ``learning_rate`` (torch's group ``lr``;
        ``optlib.current_learning_rate`` reads it).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    learning_rate_state: Any


def scale_by_capped_relative_step(
    learning_rate: LearningRate = 1e-2,
    weight_decay: float = 0.0,
    *,
    torch_step: tuple[float, float] | None = None,
) -> optax.GradientTransformation:
    """torch.optim.Adafactor's use of ``lr``: the cap of the relative step, and weight decay.

    At step ``t = count + 1``, with ``lr_t`` the learning rate of this update::

        u = -min(lr_t, 1 / sqrt(t)) * u - lr_t * weight_decay * p

    i.e. torch's ``rho_t = min(lr, 1/sqrt(t))`` (HF's relative step size has the constant
    ``1e-2`` where torch has ``lr``) and its decoupled decay ``p.mul_(1 - lr * weight_decay)``,
    which scales by ``lr``, not by ``rho_t`` or the parameter scale. Both use the same
    ``lr``, so one transform owns it; ``learning_rate`` may be a float, a schedule or a
    metric-driven transform (``optlib.reduce_lr_on_plateau(...)``). Place it last.

    With ``torch_step=(d, eps2)`` it is all of torch's parameter step (the chain then has no
    ``clip_by_update_rms`` / ``scale_by_param_rms`` links; ``optlib.torch_adafactor`` with
    ``statistics_dtype=None``), rounded as torch rounds it for bf16/fp16 parameters::

        alpha = max(eps2, norm(p) / sqrt(numel)) * rho_t;  denom = max(1, norm(u) / (sqrt(numel) d))
        p.mul_(1 - lr * weight_decay);  p.add_(u, alpha=-alpha / denom)

    with ``norm`` torch's norm of the bf16/fp16 tensor (rounded to its dtype), the scalars
    torch's Python doubles (``Double``), ``-alpha / denom`` rounded to the parameter's dtype
    as ``add_`` rounds its ``alpha``, and each in-place op rounded; the update returned is
    the parameter's change (float32 for bf16/fp16 parameters), so that
    ``optax.apply_updates`` gives torch's parameter exactly.

    Args:
      learning_rate: torch's ``lr`` (>= 0).
      weight_decay: torch's ``weight_decay`` (>= 0).
      torch_step: ``None``, or torch's ``(d, eps[1])`` for the whole rounded step.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      ``ScaleByCappedRelativeStepState``; needs ``params`` when ``weight_decay != 0`` or with
      ``torch_step``.
    """
    weight_decay = check_non_negative("weight_decay", weight_decay)
    if torch_step is not None:
        if not isinstance(torch_step, tuple) or len(torch_step) != 2:
            raise TypeError(f"torch_step must be None or a pair (d, eps2), got {torch_step!r}")
        torch_step = (
            check_positive("torch_step[0]", torch_step[0]),
            check_non_negative("torch_step[1]", torch_step[1]),
        )
    tracker = learning_rate_tracker(learning_rate)
    decays = isinstance(weight_decay, jax.Array) or weight_decay != 0  # traced: keep it

    def init_fn(params):
        return ScaleByCappedRelativeStepState(jnp.zeros([], jnp.int32), tracker.init(params))

    def step_leaf(update, param, rate, rho):
        dtype = _compute_dtype(update)
        step = -rho.astype(dtype) * update.astype(dtype)
        if decays:
            step = step - rate.astype(dtype) * weight_decay * param.astype(dtype)
        return step.astype(update.dtype)

    def torch_steps(updates, params, count, rate):
        """torch's ``p.mul_(1 - lr * wd)`` and ``p.add_(u, alpha=-alpha / denom)``, rounded."""
        d, eps2 = torch_step
        leaves, treedef = jax.tree.flatten(params)
        roundings = [TorchRounding.of(p.dtype) for p in leaves]
        wides = [cast(p, r.compute) for p, r in zip(leaves, roundings)]
        steps = [cast(u, r.compute) for u, r in zip(treedef.flatten_up_to(updates), roundings)]
        # torch's norms of the bf16/fp16 tensors (bf16/fp16 values), one entry per leaf
        norms = [
            jnp.stack([as_float(_torch_norm(x, r)) for x, r in zip(xs, roundings)])
            for xs in (wides, steps)
        ]
        # 1 / sqrt(numel) (0 for an empty parameter, which nothing moves)
        inverse_roots = np.array([1 / math.sqrt(p.size) if p.size else 0.0 for p in leaves])
        # 1 / (sqrt(numel) * d) on the host for a float d (0 for d = inf, as in torch)
        clip_scale = Double.of(inverse_roots / d) if isinstance(d, (int, float)) else None

        def scalars():
            # torch's Python doubles for every leaf at once (one conditional, see settled):
            # rho = min(lr, 1 / step**0.5), alpha = max(eps2, norm(p) / sqrt(numel)) * rho,
            # denom = max(1, norm(u) / (sqrt(numel) * d)), and 1 - lr * weight_decay
            exact_rate = Double.lift(learning_rate if isinstance(learning_rate, float) else rate)
            rho = (1 / Double.exact(update_number(count)).sqrt()).minimum(exact_rate)
            alpha = (Double.exact(norms[0]) * Double.of(inverse_roots)).maximum(eps2) * rho
            clip = clip_scale if clip_scale is not None else Double.of(inverse_roots) / d
            denom = (Double.exact(norms[1]) * clip).maximum(1.0)
            return (-alpha / denom).hi, (1 - exact_rate * weight_decay).hi

        scales, decay_factor = settled(scalars, count >= 0)

        def leaf(i, r, wide, step):
            moved = wide
            if decays:
                moved = r.keep(wide * cast(decay_factor, r.compute))  # p.mul_(1 - lr * wd)
            moved = r.keep(moved + r.alpha(scales[i]) * step)  # p.add_(u, alpha=-alpha/denom)
            return r.update(moved - wide, step)  # exact: p + u is torch's parameter

        return treedef.unflatten(
            [leaf(i, *args) for i, args in enumerate(zip(roundings, wides, steps))]
        )

    def update_fn(updates, state, params=None, **extra_args):
        if (decays or torch_step is not None) and params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        rate = as_float(tracker.rate(state.learning_rate_state))
        if torch_step is None:
            rho = jnp.minimum(rate, jax.lax.rsqrt(update_number(state.count)))
            leaves = updates if params is None else params
            updates = jax.tree.map(lambda u, p: step_leaf(u, p, rate, rho), updates, leaves)
        elif jax.tree.leaves(params):
            updates = torch_steps(updates, params, state.count, rate)
        rate_state = tracker.step(state.learning_rate_state, params, extra_args)
        return updates, ScaleByCappedRelativeStepState(safe_increment(state.count), rate_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --- momentum and weight decay ----------------------------------------------------------------


def ema_of_updates(
    decay: float, *, statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE
) -> optax.GradientTransformation:
    """Replaces updates by their exponential moving average (HF Adafactor's ``beta1``).

    ``m_t = decay * m_{t-1} + (1 - decay) * u_t`` with ``m_0 = 0``, no bias correction;
    ``u_t = m_t``. In HF Adafactor the average is taken of the learning-rate-scaled update,
    so this goes after the learning rate in the chain.

    This is ``optax.ema(decay, debias=False)`` (reused), with its average kept in the
    statistics dtype of each parameter (float32 for bf16/fp16, float64 for float64) rather
    than one dtype for the whole tree; updates keep their dtype.

    Args:
      decay: HF's ``beta1``, in ``[0, 1)``.
      statistics_dtype: dtype of the average (at least this wide; None: the parameters'
        dtype; HF keeps it in float32).

    Returns:
      An ``optax.GradientTransformation`` with state ``optax.EmaState``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    decay = check_interval("decay", decay, 0.0, 1.0, high_closed=False)
    return in_statistics_dtype(optax.ema(decay, debias=False), statistics_dtype=statistics_dtype)


class AddDecayedWeightsScaledByLearningRateState(NamedTuple):
    """State of ``add_decayed_weights_scaled_by_learning_rate``.

    Attributes:
      count: int32 number of updates so far (saturating), to evaluate the schedule.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax


def add_decayed_weights_scaled_by_learning_rate(
    weight_decay: float,
    learning_rate: float | optax.Schedule,
    *,
    param_scale_eps: float | None = None,
) -> optax.GradientTransformation:
    """Adds the decoupled weight-decay step ``-weight_decay * lr_t * p`` to descent updates.

    ``u = u - weight_decay * lr(count) * s(p) * p`` with ``s(p) = max(param_scale_eps, RMS(p))``
    (or 1 when ``param_scale_eps`` is None): HF Adafactor's ``p -= weight_decay * lr * p``
    with its own rate ``lr = rho_t * s(p)``, which HF applies after (and outside) the
    ``beta1`` average.

    Why it takes the rate again: the decay must skip the momentum that comes after the
    learning rate, and an ``optax.chain`` cannot hand the rate from one transform to a later
    one, so this evaluates the same float or schedule (e.g. ``relative_step_size(...)``) with
    its own count. The rate must therefore be a float or a schedule, not a metric-driven
    transform. Place it after the transform that applied ``-lr``.

    Args:
      weight_decay: HF's ``weight_decay``, ``>= 0``.
      learning_rate: the step size (float or schedule of the update count) of the transform
        that scales the updates.
      param_scale_eps: HF's ``eps[1]`` when ``scale_parameter=True``, else None.

    Returns:
      An ``optax.GradientTransformation``; needs ``params``.
    """
    weight_decay = check_non_negative("weight_decay", weight_decay)
    check_learning_rate(learning_rate)
    if param_scale_eps is not None:
        param_scale_eps = check_non_negative("param_scale_eps", param_scale_eps)

    def decay_leaf(update, param, rate):
        dtype = _compute_dtype(param)
        scale = 1 if param_scale_eps is None else _param_scale(param, param_scale_eps)
        step = weight_decay * rate.astype(dtype) * scale * param.astype(dtype)
        return (update.astype(dtype) - step).astype(update.dtype)

    def init_fn(params):
        del params
        return AddDecayedWeightsScaledByLearningRateState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        rate = learning_rate_at(learning_rate, state.count)
        updates = jax.tree.map(lambda u, p: decay_leaf(u, p, rate), updates, params)
        return updates, AddDecayedWeightsScaledByLearningRateState(safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)
