"""Gradient statistics of torch.optim's adaptive optimizers, one transform each.

Each transform divides (or rescales) the incoming updates by its running statistics and
returns them *without* the learning rate: the chain ends with ``apply_learning_rate``, which
multiplies by ``-lr``. Statistics are kept in float32 or wider (``statistics_dtype``: bf16/fp16
parameters get float32 statistics), updates come back in the dtype they came in.

The formulas follow torch's single-tensor implementations term by term (torch 2.x,
``torch/optim/*.py``), including where ``eps`` sits and how bias corrections are applied, so
that float64 runs agree with torch to round-off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optlib._double import torch_bias_corrections, torch_one_minus_power
from optlib._numerics import (
    DEFAULT_STATISTICS_DTYPE,
    TorchRounding,
    cast,
    check_statistics_dtype,
    float_dtype,
    one_minus_power,
    rounds_like_torch,
    safe_increment,
    update_number,
)
from optlib._numerics import statistics_dtype as statistics_dtype_of
from optlib._partition import state_leaf
from optlib._validation import check_bool, check_interval, check_non_negative
from optlib.transforms.learning_rate import learning_rate_at

__all__ = [
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByNadamState",
    "TraceEmaMomentumState",
    "in_statistics_dtype",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_nadam",
    "scale_by_rms",
    "trace_ema_momentum",
]


# ---------------------------------------------------------------------------------------------
# Shared pieces (one place each; the transforms of ``torch_adaptive`` use them too).


def map_leaves(fn: Callable[..., tuple], tree: Any, *rest: Any) -> tuple:
    """``fn`` on matching leaves of ``tree`` and ``rest``; returns one tree per output of ``fn``.

    ``fn(leaf, *rest_leaves)`` returns a tuple ``(a, b, ...)``; the result is
    ``(tree_of_a, tree_of_b, ...)``, each with ``tree``'s structure.
    """
    treedef: Any  # jax has no type for PyTreeDef
    leaves, treedef = jax.tree.flatten(tree)
    others = [treedef.flatten_up_to(other) for other in rest]
    outputs = [fn(*args) for args in zip(leaves, *others)]
    if not outputs:
        return tuple(treedef.unflatten([]) for _ in range(_arity(fn, rest)))
    return tuple(treedef.unflatten(list(column)) for column in zip(*outputs))


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype a statistic kept in ``dtype`` is computed in: float32 or wider (torch also
    computes each op on bf16/fp16 tensors in float32, its ``opmath`` type)."""
    return statistics_dtype_of(dtype)


def map_statistics(
    fn: Callable[..., tuple],
    updates: Any,
    *statistics: Any,
    inputs: Sequence[Any] = (),
    rounding: bool = False,
) -> tuple:
    """``map_leaves`` for a transform's step on per-parameter statistics.

    ``fn(g, *input_leaves, *stats)`` sees each statistic in its ``compute_dtype`` (float32 or
    wider) and returns ``(*outputs, *new_stats)``, the new statistics last, in the order of
    ``statistics``; they are stored back in the dtype each statistic is kept in (the
    ``statistics_dtype`` option: a no-op for float32 statistics, a rounding for bf16/fp16
    ones under ``statistics_dtype=None``). ``inputs`` are further trees like ``updates``
    (e.g. the params) passed as they are. With ``rounding``, ``fn`` takes the leaf's
    ``TorchRounding`` first, ``fn(rounding, g, ...)``: a transform written as torch's
    sequence of in-place ops rounds each op's result with it (``rounding.keep``) and returns
    its update with ``rounding.update``.
    """
    count = len(statistics)
    given = len(inputs)

    def step(g, *rest):
        others, stats = rest[:given], rest[given:]
        head_args = (TorchRounding.of(stats[0].dtype), g) if rounding else (g,)
        outputs = fn(*head_args, *others, *(cast(s, compute_dtype(s.dtype)) for s in stats))
        head, new = outputs[: len(outputs) - count], outputs[len(outputs) - count :]
        return tuple(head) + tuple(cast(n, s.dtype) for n, s in zip(new, stats))

    return map_leaves(step, updates, *inputs, *statistics)


def _arity(fn: Callable[..., tuple], rest: tuple) -> int:
    """Number of outputs of ``fn``, for an empty tree (e.g. a parameter group with no leaves)."""
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    return len(jax.eval_shape(fn, *(scalar for _ in range(len(rest) + 1))))


def statistics_like(params: Any, fill: Any = 0.0, dtype: Any = DEFAULT_STATISTICS_DTYPE) -> Any:
    """A tree like ``params`` filled with ``fill``: one ``state_leaf`` per parameter.

    In the statistics dtype (``dtype`` is a transform's ``statistics_dtype`` option: float32
    or wider by default, None for the parameters' dtype), each leaf laid out like its
    parameter (sharded like it when the parameter is a sharded array).
    """
    return jax.tree.map(lambda p: state_leaf(p, fill, dtype), params)


def lerp(start: jax.Array, end: jax.Array, weight: jax.Array | np.ndarray) -> jax.Array:
    """torch's ``start.lerp_(end, weight)``: the exponential moving average of first moments.

    ``start + weight * (end - start)`` for ``|weight| < 0.5``, else
    ``end - (end - start) * (1 - weight)`` -- the two branches torch's CPU kernel uses.
    A ``weight`` known while tracing (a numpy value, see ``first_moment_weight``) picks its
    branch in Python: each leaf then compiles one branch instead of both and a select, which
    halves the ops per leaf and the compile time of large trees (same numbers).
    """

    def near_start():
        return start + weight * (end - start)

    def near_end():
        return end - (end - start) * (1 - weight)

    if isinstance(weight, np.ndarray):
        return near_start() if abs(weight) < 0.5 else near_end()
    return jax.lax.select(jnp.abs(weight) < 0.5, near_start(), near_end())


def first_moment_weight(beta1, b1: jax.Array, dtype) -> jax.Array | np.ndarray:
    """``1 - b1`` in ``dtype``: the ``lerp`` weight of the first moment (torch's ``1 - beta1``).

    For a float ``beta1`` it is torch's number, ``1 - beta1`` computed in Python (double) and
    then converted to ``dtype`` (``lerp_`` takes its weight in float32 for a float32, bf16 or
    fp16 tensor; ``1 - float32(0.9)`` would be one float32 unit larger), known while tracing.
    """
    if isinstance(beta1, float):
        return np.asarray(1 - beta1, dtype)
    return (1 - b1).astype(dtype)


def decay_add_square(
    average: jax.Array, g: jax.Array, decay: jax.Array, rounding: TorchRounding | None = None
) -> jax.Array:
    """``decay * average + (1 - decay) * g**2``, torch's ``mul_(decay).addcmul_(g, g, 1-decay)``.

    With a ``rounding``, each of the two ops is rounded as torch rounds it."""
    keep = rounding.keep if rounding is not None else lambda x: x
    return keep(keep(decay * average) + (1 - decay) * g * g)


def check_betas(betas) -> tuple:
    """torch's Adam/NAdam check: ``0 <= beta < 1``; ``betas[0]`` may be a schedule."""
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    beta1, beta2 = betas
    if not callable(beta1):
        beta1 = check_interval("betas[0]", beta1, 0.0, 1.0, high_closed=False)
    beta2 = check_interval("betas[1]", beta2, 0.0, 1.0, high_closed=False)
    return beta1, beta2


# ---------------------------------------------------------------------------------------------
# Adagrad.


class ScaleByAdagradState(NamedTuple):
    """State of ``scale_by_adagrad``: int32 ``count`` and the running ``sum`` of squares."""

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    sum: optax.Updates


def scale_by_adagrad(
    lr_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
    quotients: bool = False,
) -> optax.GradientTransformation:
    """Adagrad's scaling (torch.optim.Adagrad), without the learning rate.

    ::

        s_t = s_{t-1} + g_t**2                           (s_0 = initial_accumulator_value)
        u_t = g_t / (sqrt(s_t) + eps) / (1 + (t - 1) * lr_decay)

    so that ``apply_learning_rate(lr)`` gives torch's ``clr = lr / (1 + (t-1) * lr_decay)``
    exactly (the decay factor is a function of the step only, so it commutes with the lr).
    Unlike ``optax.scale_by_rss``, ``eps`` is added *outside* the square root and the
    accumulator starts at ``initial_accumulator_value`` (torch's default 0, optax's 0.1).

    With ``statistics_dtype=None`` on bf16/fp16 parameters, the sum, its root and
    ``root + eps`` are each rounded to the parameters' dtype as torch's in-place ops round
    them (``eps`` too, as ``add_`` rounds its scalar), and the update comes back in float32
    for the parameter step to round once (torch's ``p.addcdiv_(g, std, value=-clr)``); with
    ``quotients`` it is the operands of that ``addcdiv_``, ``((1 / (1 + (t - 1) *
    lr_decay), g, std),)`` (the coefficient None for ``lr_decay=0``), for
    ``torch_parameter_step(..., quotients=True)`` (the ``adagrad`` optimizer's chain).

    Args:
      lr_decay: learning-rate decay (>= 0).
      initial_accumulator_value: starting value of the sum of squares (>= 0).
      eps: added to the denominator (>= 0).
      statistics_dtype: dtype of the sum (at least this wide; None: the parameters' dtype,
        as torch).
      quotients: return a narrow leaf's update as the operands of torch's ``addcdiv_``.

    Returns:
      An ``optax.GradientTransformation``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    quotients = check_bool("quotients", quotients)
    lr_decay = check_non_negative("lr_decay", lr_decay)
    initial_accumulator_value = check_non_negative(
        "initial_accumulator_value", initial_accumulator_value
    )
    eps = check_non_negative("eps", eps)

    def init_fn(params):
        count = jnp.zeros([], jnp.int32)
        return ScaleByAdagradState(
            count, statistics_like(params, initial_accumulator_value, statistics_dtype)
        )

    def update_fn(updates, state, params=None):
        del params
        decay = 1 + (update_number(state.count) - 1) * lr_decay

        def leaf(r, g, acc):
            g32 = cast(g, acc.dtype)
            # torch: sum.addcmul_(g, g, value=1); std = sum.sqrt().add_(eps), each op rounded
            acc = r.keep(acc + g32 * g32)
            std = r.add_scalar(r.keep(jnp.sqrt(acc)), eps)
            if quotients and r.narrow:
                undecayed = isinstance(lr_decay, (int, float)) and lr_decay == 0
                return ((None if undecayed else 1 / decay, g32, std),), acc
            u = g32 / std / cast(decay, acc.dtype)
            return r.update(u, g), acc

        updates, sums = map_statistics(leaf, updates, state.sum, rounding=True)
        return updates, ScaleByAdagradState(safe_increment(state.count), sums)

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# RMSprop and Adadelta (optax's formulas and states), and the float32 wrapper of optax transforms.


def in_statistics_dtype(
    inner: optax.GradientTransformation,
    *,
    cast_like_params: bool = False,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformationExtraArgs:
    """Runs ``inner`` on float32 (or wider) copies of the gradients and params.

    optax's transforms keep their statistics in the parameter dtype; for bf16/fp16 parameters
    this wrapper makes them float32 (``statistics_dtype``): the updates, the params and the
    ``value`` / ``grad`` extra arguments (a line search's objective value and gradient) are
    widened, other extra arguments pass as they are. The results are cast back to the incoming
    updates' dtype, or with ``cast_like_params`` to the parameters' (a line search that follows
    a preconditioner whose steps are already float32). For float32/float64 parameters it
    changes nothing.

    Args:
      inner: an ``optax.GradientTransformation`` whose statistics follow the input dtype.
      cast_like_params: return the updates in the parameters' dtype (when ``params`` is given).
      statistics_dtype: the dtype to widen to (at least this wide). None keeps ``inner``'s
        state in the parameters' dtype (torch's storage) and still computes each step on
        float32-or-wider copies (the inputs and the state), rounding the new state once to
        the dtype it is kept in (torch computes each of its ops in float32 and rounds after
        each; see the README's deviations).

    Returns:
      The same transformation with float32-or-wider state.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    cast_like_params = check_bool("cast_like_params", cast_like_params)

    if not isinstance(inner, optax.GradientTransformation):
        raise TypeError(f"inner must be an optax.GradientTransformation, got {inner!r}")
    cast_like_params = check_bool("cast_like_params", cast_like_params)
    inner = optax.with_extra_args_support(inner)

    def widen(tree):
        def one(x):
            x = jnp.asarray(x)
            return cast(x, statistics_dtype_of(x.dtype, statistics_dtype))

        return jax.tree.map(one, tree)

    def compute(tree):
        return jax.tree.map(lambda x: cast(jnp.asarray(x), statistics_dtype_of(x.dtype)), tree)

    def init_fn(params):
        return inner.init(widen(params))

    def update_fn(updates, state, params=None, **extra_args):
        wide = {
            key: compute(arg) if key in ("value", "grad") else arg
            for key, arg in extra_args.items()
        }
        wide_params = None if params is None else compute(params)
        if statistics_dtype is None:  # kept narrow, computed wide
            stored = state
            state = jax.tree.map(
                lambda x: compute(x) if jnp.issubdtype(x.dtype, jnp.floating) else x, state
            )
        new_updates, state = inner.update(compute(updates), state, wide_params, **wide)
        if statistics_dtype is None:
            state = jax.tree.map(lambda new, old: cast(new, old.dtype), state, stored)
        like = params if cast_like_params and params is not None else updates
        return jax.tree.map(lambda new, old: cast(new, old.dtype), new_updates, like), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_rms(
    alpha: float = 0.99,
    eps: float = 1e-8,
    centered: bool = False,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
    quotients: bool = False,
) -> optax.GradientTransformation:
    """RMSprop's scaling (torch.optim.RMSprop), without momentum and learning rate.

    ::

        v_t = alpha * v_{t-1} + (1 - alpha) * g_t**2          (v_0 = 0)
        a_t = alpha * a_{t-1} + (1 - alpha) * g_t             (centered only)
        u_t = g_t / (sqrt(v_t - a_t**2) + eps)                (centered)
        u_t = g_t / (sqrt(v_t) + eps)                         (not centered)

    With float32-or-wider statistics this is the arithmetic of ``optax.scale_by_rms`` /
    ``optax.scale_by_stddev`` with ``initial_scale=0`` and ``eps_in_sqrt=False`` (torch adds
    ``eps`` outside the root; ``optax.rmsprop``'s default puts it inside, which drifts from
    torch by ~1e-5 relative in 40 steps), and their states; bf16/fp16 parameters get float32
    statistics by default. With ``statistics_dtype=None`` on bf16/fp16 parameters it is
    torch's sequence of in-place ops instead, each result rounded to the parameters' dtype
    as torch rounds it: ``v.mul_(alpha).addcmul_(g, g, value=1-alpha)``,
    ``a.lerp_(g, 1-alpha)``, ``v.addcmul(a, a, value=-1).sqrt_()`` (or ``v.sqrt()``),
    ``.add_(eps)`` (``eps`` rounded too), and the update ``g / avg`` comes back in float32
    for the next op to round (torch's ``p.addcdiv_(g, avg, value=-lr)`` or
    ``buf.mul_(momentum).addcdiv_(g, avg)``); with ``quotients`` it is the operands of
    torch's ``p.addcdiv_(g, avg, value=-lr)``, ``((None, g, avg),)``, for
    ``torch_parameter_step(..., quotients=True)`` (the ``rmsprop`` optimizer's chain without
    momentum). Follow with ``trace_momentum(momentum)`` for torch's ``momentum`` and
    ``apply_learning_rate(lr)``.

    Args:
      alpha: smoothing constant, in [0, 1].
      eps: added to the denominator (>= 0).
      centered: normalise by the estimated variance instead of the second moment.
      statistics_dtype: dtype of the averages (at least this wide; None: the parameters'
        dtype, as torch).
      quotients: return a narrow leaf's update as the operands of torch's ``addcdiv_``.

    Returns:
      An ``optax.GradientTransformation`` (state ``optax.ScaleByRmsState``, or
      ``optax.ScaleByRStdDevState`` when centered).
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    alpha = check_interval("alpha", alpha, 0.0, 1.0)
    eps = check_non_negative("eps", eps)
    centered = check_bool("centered", centered)
    quotients = check_bool("quotients", quotients)

    def init_fn(params):
        nu = statistics_like(params, 0.0, statistics_dtype)
        if centered:
            mu = statistics_like(params, 0.0, statistics_dtype)
            return optax.ScaleByRStdDevState(mu=mu, nu=nu)
        return optax.ScaleByRmsState(nu=nu)

    def leaf(r, g, *averages):
        grad_avg, square_avg = averages if centered else (None, averages[0])
        dtype = square_avg.dtype
        g32 = cast(g, dtype)
        if not r.narrow:  # optax.scale_by_rms / scale_by_stddev, op for op
            square_avg = (1 - alpha) * (g32**2) + alpha * square_avg
            if centered:
                grad_avg = (1 - alpha) * g32 + alpha * grad_avg
                avg = jnp.sqrt(square_avg - grad_avg * grad_avg) + eps
            else:
                avg = jnp.sqrt(square_avg) + eps
            u = r.update((1 / avg) * g32, g)
        else:  # torch's in-place ops, each rounded to the stored dtype
            square_avg = decay_add_square(square_avg, g32, alpha, r)
            if centered:
                weight = first_moment_weight(alpha, jnp.asarray(alpha, dtype), dtype)
                grad_avg = r.keep(lerp(grad_avg, g32, weight))
                root = r.keep(jnp.sqrt(r.keep(square_avg - grad_avg * grad_avg)))
            else:
                root = r.keep(jnp.sqrt(square_avg))
            avg = r.add_scalar(root, eps)
            u = ((None, g32, avg),) if quotients else r.update(g32 / avg, g)
        return (u, grad_avg, square_avg) if centered else (u, square_avg)

    def update_fn(updates, state, params=None):
        del params
        if centered:
            updates, mu, nu = map_statistics(leaf, updates, state.mu, state.nu, rounding=True)
            return updates, optax.ScaleByRStdDevState(mu=mu, nu=nu)
        updates, nu = map_statistics(leaf, updates, state.nu, rounding=True)
        return updates, optax.ScaleByRmsState(nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adadelta(
    rho: float = 0.9, eps: float = 1e-6, *, statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE
) -> optax.GradientTransformation:
    """Adadelta's scaling (torch.optim.Adadelta), without the learning rate.

    ::

        v_t     = rho * v_{t-1} + (1 - rho) * g_t**2
        delta_t = sqrt(d_{t-1} + eps) / sqrt(v_t + eps) * g_t
        d_t     = rho * d_{t-1} + (1 - rho) * delta_t**2
        u_t     = delta_t

    The state is ``optax.ScaleByAdaDeltaState``, float32 for bf16/fp16 params by default.
    torch multiplies ``delta`` by ``lr`` (default 1.0): ``apply_learning_rate(lr)`` does.
    With ``statistics_dtype=None`` on bf16/fp16 parameters each of torch's ops
    (``v.mul_(rho).addcmul_(g, g, value=1-rho)``, ``v.add(eps).sqrt_()``,
    ``d.add(eps).sqrt_().div_(std).mul_(g)``, ``d.mul_(rho).addcmul_(delta, delta,
    value=1-rho)``) is rounded to the parameters' dtype as torch rounds it (``eps`` too, as
    ``add`` rounds its scalar); the update is the rounded ``delta``, which torch's
    ``p.add_(delta, alpha=-lr)`` adds with ``lr`` rounded to the parameters' dtype
    (``torch_parameter_step(..., rate_rounded=True)``).

    Why not ``optax.scale_by_adadelta``: on CPU, XLA rewrites its ``a / sqrt(b)`` into
    ``a * rsqrt(b)`` and writes that ``rsqrt`` to memory as an extra array; XLA:CPU's rsqrt is
    not correctly rounded (~0.7% of the entries differ from torch after one step) and ~3x
    slower than sqrt. Here ``sqrt(v_t + eps)`` is materialized behind an optimization barrier
    on CPU, so the division stays a division, as in torch (1.4x faster on a 4096x4096
    matrix). Other backends fuse the whole update; there the barrier is left out.

    Args:
      rho: coefficient of the running averages, in [0, 1].
      eps: added inside both square roots (>= 0).
      statistics_dtype: dtype of the averages (at least this wide; None: the parameters'
        dtype, as torch).

    Returns:
      An ``optax.GradientTransformation`` (state ``optax.ScaleByAdaDeltaState``).
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    rho = check_interval("rho", rho, 0.0, 1.0)
    eps = check_non_negative("eps", eps)

    def init_fn(params):
        return optax.ScaleByAdaDeltaState(
            e_g=statistics_like(params, 0.0, statistics_dtype),
            e_x=statistics_like(params, 0.0, statistics_dtype),
        )

    def update_fn(updates, state, params=None):
        del params
        keep_division = jax.default_backend() == "cpu"

        def leaf(r, g, square_avg, acc_delta):
            g32 = cast(g, square_avg.dtype)
            square_avg = decay_add_square(square_avg, g32, rho, r)
            std = r.keep(jnp.sqrt(r.add_scalar(square_avg, eps)))
            if keep_division:
                std = jax.lax.optimization_barrier(std)
            root = r.keep(jnp.sqrt(r.add_scalar(acc_delta, eps)))
            delta = r.keep(r.keep(root / std) * g32)
            return r.update(delta, g), square_avg, decay_add_square(acc_delta, delta, rho, r)

        updates, e_g, e_x = map_statistics(leaf, updates, state.e_g, state.e_x, rounding=True)
        return updates, optax.ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Adam (and AdamW: the same statistics, decay elsewhere in the chain).


class ScaleByAdamState(NamedTuple):
    """State of ``scale_by_adam``.

    Attributes:
      count: int32 updates so far (saturating).
      exp_avg: first moment.
      exp_avg_sq: second moment.
      max_exp_avg_sq: running maximum of ``exp_avg_sq`` (``amsgrad=True``), else ``None``.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    max_exp_avg_sq: optax.Updates | None


def scale_by_adam(
    betas: tuple[float | optax.Schedule, float] = (0.9, 0.999),
    eps: float = 1e-8,
    amsgrad: bool = False,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """Adam's scaling (torch.optim.Adam / AdamW), without weight decay and learning rate.

    With ``b1 = betas[0](count)`` (a float or a schedule, torch's ``cycle_momentum``)::

        m_t   = lerp(m_{t-1}, g_t, 1 - b1);   v_t = b2 * v_{t-1} + (1 - b2) * g_t**2
        v'_t  = max(v'_{t-1}, v_t)  if amsgrad else v_t
        denom = sqrt(v'_t) / sqrt(1 - b2**t) + eps
        u_t   = m_t / denom / (1 - b1**t)

    torch's order exactly: the bias corrections use the *current* ``b1`` raised to ``t``
    (what torch does when a scheduler changes ``betas[0]``), and AMSGrad takes the maximum of
    the raw second moments before the bias correction. ``optax.scale_by_amsgrad`` takes the
    maximum of the bias-corrected moments instead, and ``optax.scale_by_adam`` cannot take a
    ``b1`` schedule; hence this transform.

    Args:
      betas: ``(beta1, beta2)``, each in [0, 1); ``beta1`` may be a schedule of the count.
      eps: added to the denominator (>= 0).
      amsgrad: use the running maximum of the second moment (AMSGrad).
      statistics_dtype: dtype of the moments (at least this wide; None: the parameters'
        dtype, as torch).

    Returns:
      An ``optax.GradientTransformation``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    beta1, beta2 = check_betas(betas)
    eps = check_non_negative("eps", eps)
    amsgrad = check_bool("amsgrad", amsgrad)
    # statistics that may be bf16/fp16: torch's Python-double bias corrections, exactly
    exact_bias_corrections = rounds_like_torch(statistics_dtype)

    def init_fn(params):
        return ScaleByAdamState(
            jnp.zeros([], jnp.int32),
            statistics_like(params, 0.0, statistics_dtype),
            statistics_like(params, 0.0, statistics_dtype),
            statistics_like(params, 0.0, statistics_dtype) if amsgrad else None,
        )

    def update_fn(updates, state, params=None):
        del params
        t = update_number(state.count)
        b1 = learning_rate_at(beta1, state.count)
        if exact_bias_corrections:
            step = safe_increment(state.count)
            bias_correction1, bias_correction2_sqrt = torch_bias_corrections(
                b1 if callable(beta1) else beta1, beta2, step
            )
        else:
            bias_correction1 = one_minus_power(b1 if callable(beta1) else beta1, t)
            bias_correction2_sqrt = jnp.sqrt(one_minus_power(beta2, t))

        def leaf(r, g, exp_avg, exp_avg_sq, max_exp_avg_sq=None):
            dtype = exp_avg.dtype
            g32 = cast(g, dtype)
            exp_avg = r.keep(lerp(exp_avg, g32, first_moment_weight(beta1, b1, dtype)))
            exp_avg_sq = decay_add_square(exp_avg_sq, g32, beta2, r)
            if amsgrad:
                max_exp_avg_sq = jnp.maximum(max_exp_avg_sq, exp_avg_sq)
                second = max_exp_avg_sq
            else:
                second = exp_avg_sq
            # torch: (sqrt(v).div(bias_correction2_sqrt)).add_(eps), each op rounded
            if r.narrow:  # true divisions by the scalars, as torch's bf16/fp16 ops divide
                root = r.keep(r.divide(r.keep(jnp.sqrt(second)), bias_correction2_sqrt))
                denom = r.add_scalar(root, eps)
                u = r.divide(exp_avg / denom, bias_correction1)
            else:
                root = jnp.sqrt(second) / cast(bias_correction2_sqrt, dtype)
                u = exp_avg / (root + r.alpha(eps)) / cast(bias_correction1, dtype)
            return (r.update(u, g), exp_avg, exp_avg_sq) + ((max_exp_avg_sq,) if amsgrad else ())

        moments = (state.exp_avg, state.exp_avg_sq)
        moments += (state.max_exp_avg_sq,) if amsgrad else ()
        updates, exp_avg, exp_avg_sq, *maximum = map_statistics(
            leaf, updates, *moments, rounding=True
        )
        new_state = ScaleByAdamState(
            safe_increment(state.count), exp_avg, exp_avg_sq, maximum[0] if amsgrad else None
        )
        return updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# NAdam.


class ScaleByNadamState(NamedTuple):
    """State of ``scale_by_nadam``.

    Attributes:
      count: int32 updates so far (saturating).
      mu_product: scalar, the product of the momentum cache ``mu_1 ... mu_t``, in the
        statistics dtype (float64 for float64 parameters, else float32), rounded after each
        multiplication as torch rounds its ``state["mu_product"]`` (a tensor of torch's
        default dtype: float64 parameters match torch run with float64 as default dtype).
      exp_avg: first moment.
      exp_avg_sq: second moment.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    mu_product: jax.Array
    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates


def _product_dtype(params: Any, minimum: Any = DEFAULT_STATISTICS_DTYPE) -> jnp.dtype:
    """The statistics dtype of a whole tree (the widest leaf's; float32 for no leaves)."""
    return jnp.result_type(
        jnp.float32, *(statistics_dtype_of(p.dtype, minimum) for p in jax.tree.leaves(params))
    )


def scale_by_nadam(
    betas: tuple[float | optax.Schedule, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum_decay: float = 4e-3,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
    quotients: bool = False,
) -> optax.GradientTransformation:
    """NAdam's scaling (torch.optim.NAdam), without weight decay and learning rate.

    With ``b1 = betas[0](count)`` and ``psi = momentum_decay``::

        mu_t  = b1 * (1 - 0.5 * 0.96**(t * psi));  mu_{t+1} = b1 * (1 - 0.5 * 0.96**((t+1) * psi))
        P_t   = P_{t-1} * mu_t                      (torch's ``mu_product``, see below)
        m_t   = lerp(m_{t-1}, g_t, 1 - b1);  v_t = b2 * v_{t-1} + (1 - b2) * g_t**2
        denom = sqrt(v_t / (1 - b2**t)) + eps
        u_t   = (1 - mu_t) / (1 - P_t) * g_t / denom + mu_{t+1} / (1 - P_t * mu_{t+1}) * m_t / denom

    ``optax.nadam`` is a different algorithm (a constant ``b1`` Nesterov look-ahead, no
    momentum-decay schedule), hence this transform.

    ``P_t`` is rounded to the statistics dtype after each multiplication: float32 for
    float32 (and bf16/fp16) parameters, float64 for float64 ones. torch keeps it in its
    default dtype whatever the parameters' dtype; float64 parameters therefore match torch
    run with ``torch.set_default_dtype(torch.float64)`` (with float32 as torch's default,
    torch rounds ``P_t`` to float32 and the two differ by ~1e-7 relative).

    With ``statistics_dtype=None`` on bf16/fp16 parameters each of torch's ops is rounded to
    the parameters' dtype as torch rounds it: ``m.lerp_(g, 1-b1)``,
    ``v.mul_(b2).addcmul_(g, g, value=1-b2)``, ``v.div(1 - b2**t).sqrt()`` (the bias
    correction torch's double rounded to float32, and a true division) and ``.add_(eps)``
    (``eps`` rounded too). torch then adds the two terms to the parameter by two
    ``addcdiv_``, each rounded: with ``quotients`` such a leaf's update is the tuple of their
    operands,
    ``((c_g, g, denom), (c_m, m, denom))`` in float32 (``c_g``, ``c_m`` the scalar
    coefficients above, which torch multiplies into ``value=-lr * c``), for
    ``torch_parameter_step(..., quotients=True)`` to apply one after the other; without, the
    update is the float32 sum ``c_g * g / denom + c_m * m / denom``. Leaves whose statistics
    are float32 or wider always get the usual update. The one difference left: torch
    computes each step's ``value=-lr * c`` in Python doubles, optlib ``mu_t``, ``c`` and
    ``-lr * c`` in float32, now and then one float32 unit apart, which moves a parameter
    entry by one unit where its exact step lands next to a rounding boundary (see the
    README's deviations).

    Args:
      betas: ``(beta1, beta2)``, each in [0, 1); ``beta1`` may be a schedule of the count.
      eps: added to the denominator (>= 0).
      momentum_decay: ``psi`` (>= 0).
      statistics_dtype: dtype of the moments (at least this wide; None: the parameters'
        dtype, as torch; ``P_t`` stays in float32 or wider, as torch's default dtype).
      quotients: return a narrow leaf's update as the operands of torch's two ``addcdiv_``
        (see above; the ``nadam`` optimizer's chain with ``statistics_dtype=None``).

    Returns:
      An ``optax.GradientTransformation``.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    beta1, beta2 = check_betas(betas)
    eps = check_non_negative("eps", eps)
    momentum_decay = check_non_negative("momentum_decay", momentum_decay)
    quotients = check_bool("quotients", quotients)

    def momentum_cache(b1, step):
        return b1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))

    def init_fn(params):
        return ScaleByNadamState(
            jnp.zeros([], jnp.int32),
            jnp.ones([], _product_dtype(params)),
            statistics_like(params, 0.0, statistics_dtype),
            statistics_like(params, 0.0, statistics_dtype),
        )

    def update_fn(updates, state, params=None):
        del params
        t = update_number(state.count)
        b1 = learning_rate_at(beta1, state.count)
        mu = momentum_cache(b1, t)
        mu_next = momentum_cache(b1, t + 1)
        mu_product = state.mu_product * cast(mu, state.mu_product.dtype)
        product = cast(mu_product, float_dtype())
        grad_coefficient = (1.0 - mu) / (1.0 - product)
        average_coefficient = mu_next / (1.0 - product * mu_next)
        bias_correction2 = 1 - beta2**t
        torch_bias_correction2 = []  # torch's float32 value, traced once if a leaf needs it

        def leaf(r, g, exp_avg, exp_avg_sq):
            dtype = exp_avg.dtype
            g32 = cast(g, dtype)
            exp_avg = r.keep(lerp(exp_avg, g32, first_moment_weight(beta1, b1, dtype)))
            exp_avg_sq = decay_add_square(exp_avg_sq, g32, beta2, r)
            if not r.narrow:
                denom = jnp.sqrt(exp_avg_sq / cast(bias_correction2, dtype)) + eps
                # torch's two addcdiv_ steps, c_g g / d and c_m m / d, over one division
                numerator = (
                    cast(grad_coefficient, dtype) * g32 + cast(average_coefficient, dtype) * exp_avg
                )
                return r.update(numerator / denom, g), exp_avg, exp_avg_sq
            # torch: denom = v.div(1 - b2**t).sqrt().add_(eps), each op rounded; then
            # p.addcdiv_(g, denom, value=-lr c_g) and p.addcdiv_(m, denom, value=-lr c_m)
            if not torch_bias_correction2:
                step = safe_increment(state.count)
                torch_bias_correction2.append(torch_one_minus_power(beta2, step))
            second_moment = r.keep(r.divide(exp_avg_sq, torch_bias_correction2[0]))
            denom = r.add_scalar(r.keep(jnp.sqrt(second_moment)), eps)
            c_g, c_m = cast(grad_coefficient, dtype), cast(average_coefficient, dtype)
            if quotients:
                return ((c_g, g32, denom), (c_m, exp_avg, denom)), exp_avg, exp_avg_sq
            return r.update(c_g * g32 / denom + c_m * exp_avg / denom, g), exp_avg, exp_avg_sq

        updates, exp_avg, exp_avg_sq = map_statistics(
            leaf, updates, state.exp_avg, state.exp_avg_sq, rounding=True
        )
        new_state = ScaleByNadamState(safe_increment(state.count), mu_product, exp_avg, exp_avg_sq)
        return updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# Muon's momentum: an exponential moving average of the gradients, like Adam's first moment.


class TraceEmaMomentumState(NamedTuple):
    """State of ``trace_ema_momentum``.

    Attributes:
      count: int32 updates so far (saturating); indexes a momentum schedule.
      momentum_buffer: the moving average, float32 or wider, same tree as the params; it
        starts at zero (torch's ``zeros_like``).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    momentum_buffer: optax.Updates


def trace_ema_momentum(
    momentum: float | optax.Schedule = 0.95,
    nesterov: bool = True,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformation:
    """torch.optim.Muon's momentum: an exponential moving average of the gradients.

    With ``mu = momentum(count)`` and ``B_0 = 0``::

        B_t = lerp(B_{t-1}, g_t, 1 - mu)         = mu * B_{t-1} + (1 - mu) * g_t
        u_t = lerp(g_t, B_t, mu) if nesterov else B_t

    Both with torch's two-branch ``lerp`` (the first moment of ``scale_by_adam``). This is
    ``(1 - mu)`` times SGD's heavy-ball buffer (``trace_momentum``), with no bias correction;
    the factor cancels in Muon's normalisation except against ``eps`` and in its bfloat16
    rounding, so the EMA form is kept as torch writes it. ``optax.contrib.scale_by_muon``
    bias-corrects the same average.

    Args:
      momentum: momentum factor in [0, 1), or a schedule of the update count (a
        ``MomentumSchedule``'s ``.momentum``, torch's ``cycle_momentum``).
      nesterov: return the Nesterov look-ahead ``lerp(g_t, B_t, mu)`` instead of ``B_t``.
      statistics_dtype: dtype of the buffer (at least this wide; None: the parameters'
        dtype, as torch: with bf16/fp16 parameters the buffer and the Nesterov look-ahead
        are then rounded to that dtype after each ``lerp``, as torch rounds them).

    Returns:
      An ``optax.GradientTransformation``; updates keep the gradients' dtype.

    Raises:
      ValueError: ``momentum`` outside [0, 1) (torch only rejects a negative one; at 1 the
        average never moves and at > 1 it diverges).
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    if not callable(momentum):
        momentum = check_interval("momentum", momentum, 0.0, 1.0, high_closed=False)
    nesterov = check_bool("nesterov", nesterov)

    def init_fn(params):
        buffer = statistics_like(params, 0.0, statistics_dtype)
        return TraceEmaMomentumState(jnp.zeros([], jnp.int32), buffer)

    def update_fn(updates, state, params=None):
        del params
        mu = learning_rate_at(momentum, state.count)

        def leaf(r, g, buf):
            dtype = r.compute
            g32 = cast(g, dtype)
            # torch: buf.lerp_(grad, 1 - momentum); grad.lerp(buf, momentum), each rounded
            buf = r.keep(lerp(buf, g32, first_moment_weight(momentum, mu, dtype)))
            if nesterov:
                weight = (
                    np.asarray(np.asarray(momentum, mu.dtype), dtype)
                    if isinstance(momentum, float)
                    else mu.astype(dtype)
                )
                u = r.keep(lerp(g32, buf, weight))
            else:
                u = buf
            return cast(u, g.dtype), buf

        updates, buffer = map_statistics(leaf, updates, state.momentum_buffer, rounding=True)
        return updates, TraceEmaMomentumState(safe_increment(state.count), buffer)

    return optax.GradientTransformation(init_fn, update_fn)
