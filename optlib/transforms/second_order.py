"""Second-order preconditioners: Newton's method and dense BFGS.

Both work on the flattened parameter tree (``jax.flatten_util.ravel_pytree``) and return the
*preconditioned gradient* ``P g`` with the gradient's sign, like ``optax.scale_by_lbfgs``:
chain them with ``-learning_rate`` and a line search to get a descent step (see
``optlib.newton`` and ``optlib.bfgs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from optlib._numerics import safe_increment, statistics_dtype
from optlib._objective import flat_objective
from optlib._validation import check_choice, check_int, check_non_negative, check_positive

__all__ = [
    "ScaleByBfgsState",
    "ScaleByNewtonState",
    "scale_by_bfgs",
    "scale_by_newton",
]

HESSIAN_MODES = ("auto", "dense", "cg")


def _is_finite(x: jax.Array) -> jax.Array:
    return jnp.all(jnp.isfinite(x))


class ScaleByNewtonState(NamedTuple):
    """State of ``scale_by_newton``.

    Attributes:
      count: int32 number of updates so far (saturates at 2**31 - 1).
      fallbacks: int32 number of updates where the modified Newton system gave no descent
        direction (CG met negative curvature at once, or values were not finite) and the
        gradient itself was returned instead (saturates).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    fallbacks: jax.Array


def _modified_newton_dense(
    hessian: jax.Array, gradient: jax.Array, min_curvature: float, damping: float
) -> jax.Array:
    """``(|H| + damping I)^{-1} g`` with every eigenvalue of ``|H|`` at least ``min_curvature``.

    ``H = Q diag(lam) Q^T``  ->  ``d = Q diag(1 / (max(|lam|, min_curvature) + damping)) Q^T g``.
    """
    symmetric = 0.5 * (hessian + hessian.T)
    eigenvalues, eigenvectors = jnp.linalg.eigh(symmetric)
    curvature = jnp.maximum(jnp.abs(eigenvalues), min_curvature) + damping
    return eigenvectors @ ((eigenvectors.T @ gradient) / curvature)


class _CgState(NamedTuple):
    iteration: jax.Array
    solution: jax.Array
    residual: jax.Array
    direction: jax.Array
    done: jax.Array


def _truncated_cg(
    hvp: Callable[[jax.Array], jax.Array],
    gradient: jax.Array,
    damping: float,
    tol: float,
    maxiter: int,
) -> jax.Array:
    """Solves ``(H + damping I) u = g`` by CG, stopping early at negative curvature.

    Nocedal & Wright Algorithm 7.1 (line-search Newton-CG), with the sign of ``g``: from
    ``u = 0``, stop when ``||r|| <= tol ||g||``, after ``maxiter`` iterations, or when a
    search direction ``p`` has ``p^T (H + damping I) p <= 0``; then return the iterate so far.
    Every iterate after the first has ``g^T u > 0``, so the answer is a descent direction
    even for an indefinite ``H``, unless the very first direction (``g``) has negative
    curvature: then it is ``0`` and the caller falls back to ``g``.
    """
    threshold = tol * jnp.linalg.norm(gradient)

    def damped_hvp(vector: jax.Array) -> jax.Array:
        return hvp(vector) + damping * vector

    def keep_going(state: _CgState) -> jax.Array:
        return (state.iteration < maxiter) & ~state.done

    def cg_step(state: _CgState) -> _CgState:
        curved = damped_hvp(state.direction)
        curvature = jnp.vdot(state.direction, curved)
        negative = curvature <= 0
        squared_residual = jnp.vdot(state.residual, state.residual)
        step = squared_residual / jnp.where(negative, 1.0, curvature)
        solution = state.solution + step * state.direction
        residual = state.residual - step * curved
        beta = jnp.vdot(residual, residual) / squared_residual
        return _CgState(
            iteration=state.iteration + 1,
            solution=jnp.where(negative, state.solution, solution),
            residual=residual,
            direction=residual + beta * state.direction,
            done=negative | (jnp.linalg.norm(residual) <= threshold),
        )

    start = _CgState(
        iteration=jnp.zeros([], jnp.int32),
        solution=jnp.zeros_like(gradient),
        residual=gradient,
        direction=gradient,
        done=jnp.linalg.norm(gradient) <= threshold,
    )
    return jax.lax.while_loop(keep_going, cg_step, start).solution


def scale_by_newton(
    hessian: str = "auto",
    *,
    dense_max_size: int = 1000,
    min_curvature: float = 1e-6,
    damping: float = 0.0,
    cg_tol: float = 1e-5,
    cg_maxiter: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Preconditions the gradient by the (modified) inverse Hessian of the objective.

    ``u = H~^{-1} g`` with ``H = \nabla^2 f(w)`` built from the objective passed to
    ``update(..., value_fn=f)`` (optax's line-search convention) on the flattened parameters;
    ``g`` is the incoming update (the gradient). ``H~`` is ``H`` made positive definite:

    * ``hessian="dense"``: ``H`` by ``jax.hessian``, then eigenvalue modification
      ``H = Q diag(lam) Q^T``, ``H~ = Q diag(max(|lam|, min_curvature) + damping) Q^T``
      (Nocedal & Wright, *Numerical Optimization*, §3.4; flipping negative curvature as in
      saddle-free Newton, Dauphin et al. 2014). For a positive-definite ``H`` with eigenvalues
      above ``min_curvature`` and ``damping=0`` this is the exact Newton step.
      Costs O(n^2) memory and an O(n^3) eigendecomposition.
    * ``hessian="cg"``: matrix-free truncated Newton-CG (N&W Algorithm 7.1).
      Hessian-vector products (``jax.linearize`` of ``jax.grad``: forward-over-reverse)
      feed conjugate gradients on the Levenberg system ``(H + damping I) u = g``, stopped at
      relative residual ``cg_tol``, after ``cg_maxiter`` iterations, or as soon as a search
      direction has non-positive curvature, keeping the iterate so far, which is a
      descent direction. This early exit is why CG is written here rather than taken from
      ``jax.scipy.sparse.linalg.cg``: that one runs on through negative curvature and, on
      10-D Rosenbrock, returned a non-descent direction in most iterations.
    * ``hessian="auto"``: dense when the parameters have at most ``dense_max_size`` entries.

    Either way, an answer that is not a descent direction (``g^T u <= 0``) or not finite
    is replaced by ``g`` itself (a steepest-descent step), counted in ``state.fallbacks``.

    For bf16/fp16 parameters everything is computed in float32 and the direction is returned
    in float32 (a Newton step may exceed their range before a line search shortens it);
    ``optlib.newton`` casts the final step to the parameters' dtype.

    Args:
      hessian: ``"auto"``, ``"dense"`` or ``"cg"``.
      dense_max_size: the largest parameter count for which ``"auto"`` picks dense.
      min_curvature: floor on the absolute eigenvalues in dense mode (> 0).
      damping: Levenberg term ``lambda`` added to every curvature (>= 0).
      cg_tol: relative residual tolerance of CG (> 0).
      cg_maxiter: maximum CG iterations (``None``: ``10 * n``).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` takes
      ``value_fn`` (and passes it the extra keyword arguments its signature names).
    """
    check_choice("hessian", hessian, HESSIAN_MODES)
    check_int("dense_max_size", dense_max_size, minimum=1)
    check_positive("min_curvature", min_curvature)
    check_non_negative("damping", damping)
    check_positive("cg_tol", cg_tol)
    if cg_maxiter is not None:
        check_int("cg_maxiter", cg_maxiter, minimum=1)

    def init_fn(params):
        del params
        zero = jnp.zeros([], jnp.int32)
        return ScaleByNewtonState(count=zero, fallbacks=zero)

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        objective, flat_params, unravel = flat_objective(
            value_fn, params, extra_args, "scale_by_newton"
        )
        # float32 for bf16/fp16 parameters: eigh has no bf16/fp16 kernel, and the objective
        # is then differentiated at float32 copies of the parameters.
        flat_params = flat_params.astype(statistics_dtype(flat_params.dtype))
        gradient, _ = ravel_pytree(updates)
        gradient = gradient.astype(flat_params.dtype)
        use_dense = hessian == "dense" or (hessian == "auto" and flat_params.size <= dense_max_size)
        if use_dense:
            direction = _modified_newton_dense(
                jax.hessian(objective)(flat_params), gradient, min_curvature, damping
            )
        else:
            _, hvp = jax.linearize(jax.grad(objective), flat_params)
            maxiter = cg_maxiter if cg_maxiter is not None else 10 * flat_params.size
            direction = _truncated_cg(hvp, gradient, damping, cg_tol, maxiter)
        is_descent = (jnp.vdot(gradient, direction) > 0) & _is_finite(direction)
        direction = jnp.where(is_descent, direction, gradient)
        new_state = ScaleByNewtonState(
            count=safe_increment(state.count),
            fallbacks=jnp.where(is_descent, state.fallbacks, safe_increment(state.fallbacks)),
        )
        return unravel(direction.astype(flat_params.dtype)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByBfgsState(NamedTuple):
    """State of ``scale_by_bfgs`` (all arrays; ``n`` = number of parameters).

    Attributes:
      count: int32 number of updates so far (saturates).
      curvature_pairs: int32 number of accepted ``(s, y)`` pairs, i.e. inverse-Hessian
        updates made; ``count - 1 - curvature_pairs`` were skipped by the curvature
        safeguard (saturates).
      inverse_hessian: ``(n, n)`` inverse-Hessian estimate, float32 (float64 for float64
        parameters).
      last_params: ``(n,)`` flattened parameters of the previous update.
      last_gradient: ``(n,)`` flattened gradient of the previous update.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    curvature_pairs: jax.Array
    inverse_hessian: jax.Array
    last_params: jax.Array
    last_gradient: jax.Array


def _bfgs_inverse_update(inverse_hessian: jax.Array, s: jax.Array, y: jax.Array) -> jax.Array:
    """``(I - rho s y^T) H (I - rho y s^T) + rho s s^T`` with ``rho = 1 / y^T s``, in O(n^2).

    Expanded for a symmetric ``H``: ``H - rho (s (Hy)^T + (Hy) s^T) + (rho^2 y^T H y + rho) s s^T``.
    """
    rho = 1.0 / jnp.vdot(y, s)
    hy = inverse_hessian @ y
    return (
        inverse_hessian
        - rho * (jnp.outer(s, hy) + jnp.outer(hy, s))
        + (rho * rho * jnp.vdot(y, hy) + rho) * jnp.outer(s, s)
    )


def scale_by_bfgs(
    *, max_size: int = 10_000, scale_init_hess: bool = False
) -> optax.GradientTransformation:
    r"""Preconditions the gradient by a dense BFGS estimate of the inverse Hessian.

    With ``s = w_k - w_{k-1}``, ``y = g_k - g_{k-1}`` and ``rho = 1 / y^T s``:

    ``H_k = (I - rho s y^T) H_{k-1} (I - rho y s^T) + rho s s^T``,   ``u_k = H_k g_k``

    (Nocedal & Wright, *Numerical Optimization*, eq. 6.17; ``scipy.optimize.minimize(
    method="BFGS")``). ``H_0 = I``. Details:

    * Curvature safeguard: the update is skipped (``H_k = H_{k-1}``) when ``y^T s <= 0``,
      where BFGS would lose positive definiteness; a strong-Wolfe line search (as in
      ``optlib.bfgs``) guarantees ``y^T s > 0`` so this only guards against failed searches
      or round-off.
    * First step: the very first direction is ``min(1, 1 / ||g_0||) g_0``, so a unit step
      moves by at most 1: scipy's first step guess ("dx ~ 1") and ``optax.lbfgs``' capped
      initial scaling.
    * ``scale_init_hess=True``: before the first accepted update ``H_0`` is rescaled to
      ``(y^T s / y^T y) I`` (N&W eq. 6.20). Off by default, as in scipy: on Rosenbrock
      (2 to 20 dimensions) the unscaled ``H_0`` tracks scipy's iteration counts more
      closely.
    * Memory: the state holds the dense ``n x n`` inverse Hessian (O(n^2): 10_000 float32
      parameters take 400 MB) and each update costs O(n^2). Construction succeeds, but
      ``init`` raises ``ValueError`` above ``max_size`` parameters: use ``optax.lbfgs``
      (O(m n) memory) for large problems.
    * bf16/fp16 parameters: the estimate is float32 and so is the returned direction (a
      BFGS step may exceed their range before a line search shortens it); ``optlib.bfgs``
      casts the final step to the parameters' dtype.

    Args:
      max_size: the largest number of parameters ``init`` accepts.
      scale_init_hess: rescale ``H_0`` by ``y^T s / y^T y`` before the first update.

    Returns:
      An ``optax.GradientTransformation`` (it needs ``params``).
    """
    check_int("max_size", max_size, minimum=1)
    if not isinstance(scale_init_hess, bool):
        raise TypeError(f"scale_init_hess must be a bool, got {scale_init_hess!r}")

    def init_fn(params):
        flat_params, _ = ravel_pytree(params)
        size = flat_params.size
        if size > max_size:
            raise ValueError(
                f"bfgs stores a dense {size} x {size} inverse Hessian for {size} parameters, "
                f"above max_size={max_size}; use optax.lbfgs (limited memory, O(m n)) for "
                "problems this large, or raise max_size if the memory is really available."
            )
        dtype = statistics_dtype(flat_params.dtype)
        zero = jnp.zeros([], jnp.int32)
        return ScaleByBfgsState(
            count=zero,
            curvature_pairs=zero,
            inverse_hessian=jnp.eye(size, dtype=dtype),
            last_params=jnp.zeros(size, dtype),
            last_gradient=jnp.zeros(size, dtype),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_bfgs.update needs params (to form s = w_k - w_{k-1})")
        dtype = state.inverse_hessian.dtype
        flat_params, _ = ravel_pytree(params)
        gradient, unravel = ravel_pytree(updates)
        flat_params, gradient_stats = flat_params.astype(dtype), gradient.astype(dtype)
        s = flat_params - state.last_params
        y = gradient_stats - state.last_gradient
        accept = (state.count > 0) & (jnp.vdot(y, s) > 0)

        inverse_hessian = state.inverse_hessian
        if scale_init_hess:
            first_pair = accept & (state.curvature_pairs == 0)
            gamma = jnp.vdot(y, s) / jnp.vdot(y, y)
            inverse_hessian = jnp.where(first_pair, gamma * inverse_hessian, inverse_hessian)
        inverse_hessian = jnp.where(
            accept, _bfgs_inverse_update(inverse_hessian, s, y), inverse_hessian
        )

        direction = inverse_hessian @ gradient_stats
        first_scale = jnp.minimum(1.0, 1.0 / jnp.linalg.norm(gradient_stats))
        direction = jnp.where(state.count == 0, first_scale * gradient_stats, direction)

        new_state = ScaleByBfgsState(
            count=safe_increment(state.count),
            curvature_pairs=jnp.where(
                accept, safe_increment(state.curvature_pairs), state.curvature_pairs
            ),
            inverse_hessian=inverse_hessian,
            last_params=flat_params,
            last_gradient=gradient_stats,
        )
        # float32 for bf16/fp16 parameters (a BFGS step may exceed their range before the
        # line search shortens it); optlib.bfgs casts the final step to their dtype.
        return unravel(direction), new_state

    return optax.GradientTransformation(init_fn, update_fn)
