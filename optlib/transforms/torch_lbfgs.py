"""torch.optim.LBFGS as one transform: one ``update`` is one torch ``step(closure)``.

torch's L-BFGS runs a whole inner optimisation per ``step``: up to ``max_iter`` quasi-Newton
iterations, each with a fixed step or a strong-Wolfe line search that re-evaluates the
closure. Here the closure is the objective ``value_fn`` given to ``update`` (the convention
of ``optlib.newton`` / ``optlib.bfgs``), and the inner loop, the line search and the
two-loop recursion are ``lax.while_loop``s: the whole step runs on the device under ``jit``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from optlib._numerics import (
    DEFAULT_STATISTICS_DTYPE,
    cast,
    check_statistics_dtype,
    safe_increment,
)
from optlib._numerics import statistics_dtype as statistics_dtype_of
from optlib._objective import flat_objective
from optlib._partition import replicated_placement
from optlib._state_tree import register_learning_rate_state
from optlib._validation import check_int, check_learning_rate, check_non_negative
from optlib.transforms.learning_rate import learning_rate_at

__all__ = ["LINE_SEARCH_FNS", "ScaleByTorchLbfgsState", "scale_by_torch_lbfgs"]

LINE_SEARCH_FNS = ("strong_wolfe",)
"""torch's ``line_search_fn`` values besides ``None``."""

# Constants of torch.optim.lbfgs: the curvature threshold of a history update, and
# ``_strong_wolfe``'s defaults (LBFGS.step never overrides them; in particular the line
# search's bracket tolerance is its own 1e-9, not the optimizer's ``tolerance_change``).
_CURVATURE_THRESHOLD = 1e-10
_WOLFE_C1 = 1e-4
_WOLFE_C2 = 0.9
_WOLFE_TOLERANCE_CHANGE = 1e-9


@register_learning_rate_state
class ScaleByTorchLbfgsState(NamedTuple):
    """State of ``scale_by_torch_lbfgs``: what torch keeps in ``optimizer.state`` between steps.

    ``n`` is the number of parameters, ``m`` the ``history_size``. Floating leaves are in
    the ``statistics_dtype`` of the (concatenated) parameters: by default float32 for
    bf16/fp16 parameters, else the parameters' dtype.

    Attributes:
      count: int32 number of ``update`` calls (torch ``step`` calls; saturates).
      learning_rate: the rate the next update uses (``learning_rate(count)``).
      func_evals: int32 total objective evaluations, the initial one of each step included
        (torch's ``state["func_evals"]``; saturates).
      n_iter: int32 total inner iterations (torch's ``state["n_iter"]``; saturates).
      d: ``(n,)`` the last search direction.
      t: the last step length.
      old_dirs: ``(m, n)`` ring buffer of gradient differences ``y``.
      old_stps: ``(m, n)`` ring buffer of steps ``s``.
      ro: ``(m,)`` ring buffer of ``1 / (y^T s)``.
      history_start: int32 slot of the oldest pair in the ring buffers.
      history_len: int32 number of pairs stored (at most ``m``).
      H_diag: the scale ``y^T s / y^T y`` of the initial inverse Hessian.
      prev_flat_grad: ``(n,)`` the gradient at the start of the last inner iteration.
      prev_loss: the objective at the start of the last inner iteration.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    learning_rate: jax.Array
    func_evals: jax.Array
    n_iter: jax.Array
    d: jax.Array
    t: jax.Array
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    history_start: jax.Array
    history_len: jax.Array
    H_diag: jax.Array  # torch's name
    prev_flat_grad: jax.Array
    prev_loss: jax.Array


# ------------------------------------------------------------------ Python's min and max


def _py_max(a, b):
    """Python's ``max(a, b)``: ``a`` unless ``b > a`` (so NaN handling matches torch's code)."""
    return jnp.where(b > a, b, a)


def _py_min(a, b):
    """Python's ``min(a, b)``: ``a`` unless ``b < a``."""
    return jnp.where(b < a, b, a)


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None) -> jax.Array:
    """The minimiser of the cubic through two points with values and slopes, clipped.

    torch.optim.lbfgs ``_cubic_interpolate``: with ``d1 = g1 + g2 - 3 (f1 - f2) / (x1 - x2)``
    and ``d2 = sqrt(d1^2 - g1 g2)``, the minimiser ``x2 - (x2 - x1) (g2 + d2 - d1) /
    (g2 - g1 + 2 d2)`` (written from the point farther right), clipped to ``bounds``
    (default: between ``x1`` and ``x2``); the bounds' midpoint where ``d1^2 < g1 g2``.
    """
    if bounds is None:
        ordered = x1 <= x2
        low, high = jnp.where(ordered, x1, x2), jnp.where(ordered, x2, x1)
    else:
        low, high = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    real = d2_square >= 0
    d2 = jnp.sqrt(jnp.where(real, d2_square, 0))
    min_pos = jnp.where(
        x1 <= x2,
        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)),
    )
    return jnp.where(real, _py_min(_py_max(min_pos, low), high), (low + high) / 2.0)


# ----------------------------------------------------------------- strong-Wolfe line search

_SEARCHING, _BRACKETED, _SATISFIED = 0, 1, 2


class _Bracketing(NamedTuple):
    t_prev: jax.Array
    f_prev: jax.Array
    g_prev: jax.Array
    gtd_prev: jax.Array
    t: jax.Array
    f_new: jax.Array
    g_new: jax.Array
    gtd_new: jax.Array
    ls_iter: jax.Array


class _Zoom(NamedTuple):
    bracket: jax.Array  # (2,) step lengths
    bracket_f: jax.Array  # (2,)
    bracket_g: jax.Array  # (2, n)
    bracket_gtd: jax.Array  # (2,)
    low_pos: jax.Array
    done: jax.Array
    insuf_progress: jax.Array
    ls_iter: jax.Array


def strong_wolfe(
    value_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    x: jax.Array,
    t: jax.Array,
    d: jax.Array,
    f: jax.Array,
    g: jax.Array,
    gtd: jax.Array,
    max_ls: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """torch.optim.lbfgs ``_strong_wolfe`` (``c1 = 1e-4``, ``c2 = 0.9``), under ``jit``.

    Brackets a step satisfying the strong Wolfe conditions along ``d`` from ``x`` (trying
    ``t`` first, then cubic extrapolation within ``[t + 0.01 (t - t_prev), 10 t]``), then
    zooms into the bracket by cubic interpolation, moved to 10% of the bracket from an end
    when it makes insufficient progress, until the conditions hold, the bracket is shorter
    than ``1e-9 / max|d|``, or ``max_ls`` evaluations after the first are spent.

    Returns:
      ``(f_new, g_new, t, evaluations)``: the value and gradient at the lowest bracket
      point ``x + t d`` (``t`` may be 0), and the number of objective evaluations.
    """
    d_norm = jnp.max(jnp.abs(d))

    def evaluate(step):
        f_new, g_new = value_and_grad(x + step * d)
        return f_new, g_new, jnp.vdot(g_new, d)

    f_new, g_new, gtd_new = evaluate(t)
    zero = jnp.zeros_like(t)
    start = _Bracketing(zero, f, g, gtd, t, f_new, g_new, gtd_new, jnp.zeros([], jnp.int32))

    def verdict(s: _Bracketing) -> jax.Array:
        armijo_fails = (s.f_new > f + _WOLFE_C1 * s.t * gtd) | (
            (s.ls_iter > 1) & (s.f_new >= s.f_prev)
        )
        curvature_holds = jnp.abs(s.gtd_new) <= -_WOLFE_C2 * gtd
        return jnp.where(
            armijo_fails,
            _BRACKETED,
            jnp.where(
                curvature_holds, _SATISFIED, jnp.where(s.gtd_new >= 0, _BRACKETED, _SEARCHING)
            ),
        )

    def extrapolate(s: _Bracketing) -> _Bracketing:
        min_step = s.t + 0.01 * (s.t - s.t_prev)
        max_step = s.t * 10
        t_next = cubic_interpolate(
            s.t_prev, s.f_prev, s.gtd_prev, s.t, s.f_new, s.gtd_new, bounds=(min_step, max_step)
        )
        f_next, g_next, gtd_next = evaluate(t_next)
        return _Bracketing(
            s.t, s.f_new, s.g_new, s.gtd_new, t_next, f_next, g_next, gtd_next, s.ls_iter + 1
        )

    s = jax.lax.while_loop(
        lambda s: (s.ls_iter < max_ls) & (verdict(s) == _SEARCHING), extrapolate, start
    )
    # The loop ran out (ls_iter == max_ls) without a verdict: the bracket is [0, t].
    exhausted = s.ls_iter >= max_ls
    status = jnp.where(exhausted, _BRACKETED, verdict(s))
    bracket = jnp.stack([jnp.where(exhausted, zero, s.t_prev), s.t])
    bracket_f = jnp.stack([jnp.where(exhausted, f, s.f_prev), s.f_new])
    bracket_g = jnp.stack([jnp.where(exhausted, g, s.g_prev), s.g_new])
    bracket_gtd = jnp.stack([jnp.where(exhausted, gtd, s.gtd_prev), s.gtd_new])
    satisfied = status == _SATISFIED
    # torch's one-point bracket [t] when the conditions hold: here the second entry.
    low_pos = jnp.where(satisfied | ~(bracket_f[0] <= bracket_f[1]), 1, 0)

    def zoom_continues(z: _Zoom) -> jax.Array:
        wide = jnp.abs(z.bracket[1] - z.bracket[0]) * d_norm >= _WOLFE_TOLERANCE_CHANGE
        return ~z.done & (z.ls_iter < max_ls) & wide

    def zoom(z: _Zoom) -> _Zoom:
        high_pos = 1 - z.low_pos
        t_new = cubic_interpolate(
            z.bracket[0],
            z.bracket_f[0],
            z.bracket_gtd[0],
            z.bracket[1],
            z.bracket_f[1],
            z.bracket_gtd[1],
        )
        top, bottom = _py_max(z.bracket[0], z.bracket[1]), _py_min(z.bracket[0], z.bracket[1])
        eps = 0.1 * (top - bottom)
        near_end = _py_min(top - t_new, t_new - bottom) < eps
        move = near_end & (z.insuf_progress | (t_new >= top) | (t_new <= bottom))
        moved = jnp.where(jnp.abs(t_new - top) < jnp.abs(t_new - bottom), top - eps, bottom + eps)
        t_new = jnp.where(move, moved, t_new)
        insuf_progress = near_end & ~move

        f_new, g_new, gtd_new = evaluate(t_new)
        new_high = (f_new > f + _WOLFE_C1 * t_new * gtd) | (f_new >= z.bracket_f[z.low_pos])
        satisfied = jnp.abs(gtd_new) <= -_WOLFE_C2 * gtd
        low_to_high = (
            ~new_high & ~satisfied & (gtd_new * (z.bracket[high_pos] - z.bracket[z.low_pos]) >= 0)
        )
        # Where the new point goes, and the old low point where it becomes the high one.
        slot = jnp.where(new_high, high_pos, z.low_pos)

        def place(values, new):
            values = values.at[high_pos].set(
                jnp.where(low_to_high, values[z.low_pos], values[high_pos])
            )
            return values.at[slot].set(new)

        bracket_f = place(z.bracket_f, f_new)
        low_pos = jnp.where(new_high, jnp.where(bracket_f[0] <= bracket_f[1], 0, 1), z.low_pos)
        return _Zoom(
            bracket=place(z.bracket, t_new),
            bracket_f=bracket_f,
            bracket_g=place(z.bracket_g, g_new),
            bracket_gtd=place(z.bracket_gtd, gtd_new),
            low_pos=low_pos,
            done=~new_high & satisfied,
            insuf_progress=insuf_progress,
            ls_iter=z.ls_iter + 1,
        )

    z = jax.lax.while_loop(
        zoom_continues,
        zoom,
        _Zoom(
            bracket,
            bracket_f,
            bracket_g,
            bracket_gtd,
            low_pos,
            satisfied,
            jnp.zeros([], bool),
            s.ls_iter,
        ),
    )
    return (
        z.bracket_f[z.low_pos],
        z.bracket_g[z.low_pos],
        z.bracket[z.low_pos],
        z.ls_iter + 1,
    )


# ----------------------------------------------------------------------------- the step


class _History(NamedTuple):
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    start: jax.Array
    length: jax.Array


def _push(history: _History, y: jax.Array, s: jax.Array, ro: jax.Array) -> _History:
    """Appends ``(y, s, ro)``, dropping the oldest pair when the buffers are full."""
    size = history.ro.shape[0]
    full = history.length == size
    slot = (history.start + history.length) % size
    return _History(
        old_dirs=history.old_dirs.at[slot].set(y),
        old_stps=history.old_stps.at[slot].set(s),
        ro=history.ro.at[slot].set(ro),
        start=jnp.where(full, (history.start + 1) % size, history.start),
        length=jnp.where(full, history.length, history.length + 1),
    )


def _two_loop(history: _History, flat_grad: jax.Array, h_diag: jax.Array) -> jax.Array:
    """``-H g`` by the L-BFGS two-loop recursion, oldest pair first as in torch."""
    size = history.ro.shape[0]

    def slot(i):
        return (history.start + i) % size

    def backward(k, carry):
        q, al = carry
        i = history.length - 1 - k
        j = slot(i)
        al_i = jnp.vdot(history.old_stps[j], q) * history.ro[j]
        return q + (-al_i) * history.old_dirs[j], al.at[i].set(al_i)

    q, al = jax.lax.fori_loop(0, history.length, backward, (-flat_grad, jnp.zeros_like(history.ro)))

    def forward(i, r):
        j = slot(i)
        be_i = jnp.vdot(history.old_dirs[j], r) * history.ro[j]
        return r + (al[i] - be_i) * history.old_stps[j]

    return jax.lax.fori_loop(0, history.length, forward, q * h_diag)


class _Inner(NamedTuple):
    x: jax.Array
    loss: jax.Array
    flat_grad: jax.Array
    d: jax.Array
    t: jax.Array
    history: _History
    h_diag: jax.Array
    prev_flat_grad: jax.Array
    prev_loss: jax.Array
    n_iter: jax.Array  # this step's iterations
    total_iter: jax.Array  # torch's state["n_iter"]
    current_evals: jax.Array
    func_evals: jax.Array
    done: jax.Array


def scale_by_torch_lbfgs(
    learning_rate: float | optax.Schedule = 1.0,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformationExtraArgs:
    r"""One torch.optim.LBFGS ``step(closure)`` per ``update``; returns ``new_params - params``.

    On the flattened parameters ``x`` (``jax.flatten_util.ravel_pytree``, as torch
    concatenates its parameters), with ``g = \nabla f(x)``, each inner iteration:

    * ``d = -H g`` by the two-loop recursion over the last ``history_size`` pairs
      ``(s, y) = (t d_prev, g - g_prev)``, a pair stored only when ``y^T s > 1e-10``, with
      ``H_0 = (y^T s / y^T y) I`` from the latest stored pair (``d = -g`` at the very first);
    * ``t = lr`` (``min(1, 1 / ||g||_1) lr`` at the very first iteration), then either
      ``x <- x + t d`` (``line_search_fn=None``: torch's fixed step, the objective
      re-evaluated except after the last iteration) or a strong-Wolfe line search from
      ``t`` (torch's ``_strong_wolfe`` with its ``_cubic_interpolate``, see
      ``strong_wolfe``);
    * stop after ``max_iter`` iterations or ``max_eval`` evaluations, when
      ``max|g| <= tolerance_grad``, ``g^T d > -tolerance_change``,
      ``max|t d| <= tolerance_change`` or ``|f - f_prev| < tolerance_change``; a step whose
      initial ``max|g| <= tolerance_grad`` does nothing, as in torch.

    The direction, step length, history, ``H_diag`` and previous gradient persist across
    updates as in torch's ``optimizer.state`` (``ScaleByTorchLbfgsState``), so a sequence of
    updates is a sequence of torch steps. Everything runs in ``lax.while_loop``\ s.

    Calling convention (the one of ``optlib.newton`` / ``optlib.bfgs``)::

        updates, state = tx.update(grads, state, params, value=f(params), grad=grads, value_fn=f)

    ``grads`` (the ``updates`` argument) is the gradient at ``params`` and ``value`` the
    objective there (the closure call torch makes first; ``value_fn`` is called for it when
    ``value`` is omitted); ``grad`` is accepted and not used. ``value_fn(params, **kwargs)``
    gets the extra keyword arguments of ``update`` that its signature names (e.g. a batch).
    The transform owns the learning rate (it sets the line search's first trial step): the
    update is the finished step, not a direction.

    bf16/fp16 parameters: the iterate, history and line search are float32 (torch would
    compute in the parameters' dtype) and the objective is evaluated at float32 copies; the
    update is returned in the parameters' dtype. ``statistics_dtype=None`` stores the state
    (the ``(m, n)`` history above all) in the parameters' dtype as torch does, half the
    memory for bf16; each update still computes in float32 and rounds the new state once,
    so it is not torch's bf16 run, which rounds every operation of the recursion and the
    line search (and the iterate after each inner iteration).

    The state is flat (torch concatenates its parameters), not a tree like the parameters:
    ``optlib.state_shardings`` replicates it.

    Args:
      learning_rate: torch's ``lr``, a float or a schedule of the update count (torch reads
        ``group["lr"]`` at each step).
      max_iter: maximal number of inner iterations per update (>= 1).
      max_eval: maximal number of objective evaluations per update (>= 1; default
        ``max_iter * 5 // 4``, as torch).
      tolerance_grad: termination tolerance on ``max|g|`` (>= 0).
      tolerance_change: termination tolerance on function value / parameter changes (>= 0).
      history_size: number of ``(s, y)`` pairs kept (>= 1).
      line_search_fn: ``None`` or ``"strong_wolfe"``.
      statistics_dtype: dtype of the state (at least this wide; None: the parameters'
        dtype, as torch).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError / TypeError: for an invalid argument, naming it.
    """
    statistics_dtype = check_statistics_dtype(statistics_dtype)
    check_learning_rate(learning_rate)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    max_eval = max_iter * 5 // 4 if max_eval is None else check_int("max_eval", max_eval, minimum=1)
    check_non_negative("tolerance_grad", tolerance_grad)
    check_non_negative("tolerance_change", tolerance_change)
    history_size = check_int("history_size", history_size, minimum=1)
    check_line_search_fn(line_search_fn)

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        dtype = statistics_dtype_of(flat.dtype, statistics_dtype)
        n = flat.size
        device = replicated_placement(params)  # replicated on the parameters' mesh

        def zeros(shape):
            return jnp.zeros(shape, dtype, device=device)

        def counter():  # a buffer of its own for each leaf (donated states)
            return jnp.zeros([], jnp.int32)

        return ScaleByTorchLbfgsState(
            count=counter(),
            learning_rate=learning_rate_at(learning_rate, counter()),
            func_evals=counter(),
            n_iter=counter(),
            d=zeros(n),
            t=zeros([]),
            old_dirs=zeros((history_size, n)),
            old_stps=zeros((history_size, n)),
            ro=zeros(history_size),
            history_start=counter(),
            history_len=counter(),
            H_diag=jnp.ones([], dtype, device=device),
            prev_flat_grad=zeros(n),
            prev_loss=zeros([]),
        )

    def update_fn(updates, state, params=None, *, value=None, value_fn=None, **extra_args):
        extra_args.pop("grad", None)
        objective, flat_params, unravel = flat_objective(
            value_fn, params, extra_args, "scale_by_torch_lbfgs"
        )
        stored = state
        dtype = statistics_dtype_of(state.d.dtype)  # computed in float32 or wider
        state = jax.tree.map(
            lambda x: cast(x, dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state
        )
        x0 = flat_params.astype(dtype)

        def value_and_grad(x):
            loss, grad = jax.value_and_grad(objective)(x)
            return loss.astype(dtype), grad.astype(dtype)

        flat_grad = ravel_pytree(updates)[0].astype(dtype)
        loss = (objective(x0) if value is None else jnp.asarray(value)).astype(dtype)
        lr = learning_rate_at(learning_rate, state.count).astype(dtype)

        def optimal(grad):
            return jnp.max(jnp.abs(grad)) <= tolerance_grad

        def iteration(c: _Inner) -> _Inner:
            n_iter = c.n_iter + 1
            total_iter = safe_increment(c.total_iter)
            first = total_iter == 1
            y = c.flat_grad - c.prev_flat_grad
            s = c.d * c.t
            ys = jnp.vdot(y, s)
            store = ~first & (ys > _CURVATURE_THRESHOLD)
            history = jax.lax.cond(
                store, lambda h: _push(h, y, s, 1.0 / ys), lambda h: h, c.history
            )
            history = history._replace(
                start=jnp.where(first, 0, history.start),
                length=jnp.where(first, 0, history.length),
            )
            h_diag = jnp.where(first, 1.0, jnp.where(store, ys / jnp.vdot(y, y), c.h_diag))
            h_diag = h_diag.astype(dtype)
            d = _two_loop(history, c.flat_grad, h_diag)
            prev_flat_grad, prev_loss = c.flat_grad, c.loss
            t = jnp.where(first, _py_min(1.0, 1.0 / jnp.sum(jnp.abs(c.flat_grad))) * lr, lr)
            t = t.astype(dtype)
            gtd = jnp.vdot(c.flat_grad, d)
            no_descent = gtd > -tolerance_change

            def advance(_):
                if line_search_fn is None:
                    x = c.x + t * d

                    def reevaluate(x):
                        loss, grad = value_and_grad(x)
                        return loss, grad, jnp.ones([], jnp.int32)

                    def keep(x):
                        return c.loss, c.flat_grad, jnp.zeros([], jnp.int32)

                    loss, grad, evals = jax.lax.cond(n_iter != max_iter, reevaluate, keep, x)
                    return x, loss, grad, t, evals
                loss, grad, step, evals = strong_wolfe(
                    value_and_grad, c.x, t, d, c.loss, c.flat_grad, gtd, max_eval - c.current_evals
                )
                return c.x + step * d, loss, grad, step, evals

            def stay(_):
                return c.x, c.loss, c.flat_grad, t, jnp.zeros([], jnp.int32)

            x, loss, grad, t, evals = jax.lax.cond(no_descent, stay, advance, None)
            current_evals = c.current_evals + evals
            stop = (
                no_descent
                | (n_iter == max_iter)
                | (current_evals >= max_eval)
                | optimal(grad)
                | (jnp.max(jnp.abs(d * t)) <= tolerance_change)
                | (jnp.abs(loss - prev_loss) < tolerance_change)
            )
            return _Inner(
                x=x,
                loss=loss,
                flat_grad=grad,
                d=d,
                t=t,
                history=history,
                h_diag=h_diag,
                prev_flat_grad=prev_flat_grad,
                prev_loss=prev_loss,
                n_iter=n_iter,
                total_iter=total_iter,
                current_evals=current_evals,
                func_evals=safe_increment(c.func_evals, evals),
                done=stop,
            )

        start = _Inner(
            x=x0,
            loss=loss,
            flat_grad=flat_grad,
            d=state.d,
            t=state.t,
            history=_History(
                state.old_dirs, state.old_stps, state.ro, state.history_start, state.history_len
            ),
            h_diag=state.H_diag,
            prev_flat_grad=state.prev_flat_grad,
            prev_loss=state.prev_loss,
            n_iter=jnp.zeros([], jnp.int32),
            total_iter=state.n_iter,
            current_evals=jnp.ones([], jnp.int32),
            func_evals=safe_increment(state.func_evals),
            done=optimal(flat_grad),
        )
        end = jax.lax.while_loop(lambda c: ~c.done, iteration, start)
        count = safe_increment(state.count)
        new_state = ScaleByTorchLbfgsState(
            count=count,
            learning_rate=learning_rate_at(learning_rate, count),
            func_evals=end.func_evals,
            n_iter=end.total_iter,
            d=end.d,
            t=end.t,
            old_dirs=end.history.old_dirs,
            old_stps=end.history.old_stps,
            ro=end.history.ro,
            history_start=end.history.start,
            history_len=end.history.length,
            H_diag=end.h_diag,
            prev_flat_grad=end.prev_flat_grad,
            prev_loss=end.prev_loss,
        )
        new_state = jax.tree.map(lambda new, old: cast(new, old.dtype), new_state, stored)
        step = unravel(end.x - x0)
        step = jax.tree.map(lambda u, p: u.astype(p.dtype), step, params)
        return step, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def check_line_search_fn(line_search_fn: Any) -> str | None:
    """``None`` or ``"strong_wolfe"`` (torch: "only 'strong_wolfe' is supported")."""
    if line_search_fn is None or (
        isinstance(line_search_fn, str) and line_search_fn in LINE_SEARCH_FNS
    ):
        return line_search_fn
    raise ValueError(
        f"line_search_fn must be None or 'strong_wolfe' (torch: only 'strong_wolfe' is "
        f"supported), got {line_search_fn!r}"
    )
