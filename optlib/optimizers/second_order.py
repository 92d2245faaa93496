"""Newton's method and BFGS as optax optimizers driven by a line search.

Both follow optax's line-search convention (``optax.lbfgs``): the objective comes with each
update, and the line search's state keeps the value and gradient at the new point so that
``optax.value_and_grad_from_state`` can reuse them::

    solver = optlib.bfgs()
    state = solver.init(params)
    value_and_grad = optax.value_and_grad_from_state(f)
    for _ in range(100):
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=f)
        params = optax.apply_updates(params, updates)

Extra keyword arguments of ``update`` that ``f``'s signature names (e.g. a batch) are passed
on to ``f``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from optlib._validation import is_traced
from optlib.optimizers._links import learning_rate_link, named_chain, recorded_optimizer
from optlib.transforms.learning_rate import LearningRate
from optlib.transforms.moments import in_statistics_dtype
from optlib.transforms.second_order import scale_by_bfgs, scale_by_newton

__all__ = ["bfgs", "newton"]

_COMPLEX_UNSUPPORTED = "the line searches and the Hessian (scipy.optimize's BFGS) work on reals"
_NEWTON_STATIC = ("dense_max_size", "cg_maxiter")
_BFGS_STATIC = ("max_size",)


def _check_static_ints(factory: str, static_args: tuple[str, ...], **values) -> None:
    """The integer arguments fix shapes and modes, so they cannot be traced hyperparameters
    (``optax.inject_hyperparams`` turns every number into one unless told otherwise)."""
    for name, value in values.items():
        if is_traced(value):
            raise TypeError(
                f"{name} must be a concrete integer, got a traced value ({value!r}): it fixes "
                "the algorithm's shapes, so it cannot be an injected hyperparameter; use "
                f"optax.inject_hyperparams(optlib.{factory}, static_args={static_args!r})"
            )


def _check_linesearch(linesearch) -> optax.GradientTransformation:
    """The line search, or ``optax.identity()`` for ``None`` (fixed steps)."""
    if linesearch is None:
        return in_statistics_dtype(optax.identity(), cast_like_params=True)
    if not isinstance(linesearch, optax.GradientTransformation):
        raise TypeError(
            "linesearch must be an optax.GradientTransformationExtraArgs (e.g. "
            f"optax.scale_by_backtracking_linesearch(...)) or None, got {linesearch!r}"
        )
    return _strongly_typed_init(in_statistics_dtype(linesearch, cast_like_params=True))


def _strongly_typed_init(transform: optax.GradientTransformation) -> optax.GradientTransformation:
    """``transform`` whose ``init`` state has no weakly typed leaves.

    optax's line searches start some ``info`` fields as weakly typed scalars (``0``, ``0.0``)
    that ``update`` returns strongly typed; a jitted training step would then compile twice,
    once for the state from ``init`` and once for the state from ``update``.
    """

    def strong(leaf):
        return jnp.asarray(leaf, dtype=leaf.dtype) if isinstance(leaf, jax.Array) else leaf

    def init_fn(params):
        return jax.tree.map(strong, transform.init(params))

    return optax.GradientTransformationExtraArgs(init_fn, transform.update)


@recorded_optimizer
def newton(
    learning_rate: LearningRate = 1.0,
    *,
    hessian: str = "auto",
    dense_max_size: int = 1000,
    min_curvature: float = 1e-6,
    damping: float = 0.0,
    cg_tol: float = 1e-5,
    cg_maxiter: int | None = None,
    linesearch: optax.GradientTransformationExtraArgs | None = (
        optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=40,
            decrease_factor=0.5,
            increase_factor=math.inf,
            max_learning_rate=1.0,
            store_grad=True,
        )
    ),
) -> optax.GradientTransformationExtraArgs:
    r"""Newton's method: ``w_{k+1} = w_k - eta_k H~(w_k)^{-1} \nabla f(w_k)``.

    ``H~`` is the Hessian of the objective made positive definite (see
    ``optlib.scale_by_newton``: dense eigenvalue modification, or Hessian-vector products
    solved by conjugate gradients with Levenberg damping ``H + damping I``), built from the
    ``value_fn`` given to ``update``. ``eta_k = learning_rate * t_k``, where ``t_k`` comes
    from the line search. The default is ``optax.scale_by_backtracking_linesearch``
    (Armijo sufficient decrease, ``c = 1e-4``) that tries the full Newton step ``t = 1``
    first at every iteration and halves it (up to 40 times): it keeps Newton's quadratic
    convergence near a minimum and makes it globally convergent on smooth problems. optax's
    line search is used as is since it already does exactly this; ``store_grad=True`` lets
    ``optax.value_and_grad_from_state`` reuse the value and gradient at the new point.

    Reference: the Newton-Raphson update ``w_1 = w_0 - H(w_0)^{-1} \nabla L``;
    Nocedal & Wright, *Numerical Optimization*, §3.3-3.4. Deviation: none for a
    positive-definite Hessian; an indefinite one is modified as documented.

    Args:
      learning_rate: a float or schedule multiplying the Newton step (1.0: pure Newton).
      hessian: ``"auto"`` (dense up to ``dense_max_size`` parameters), ``"dense"`` or ``"cg"``.
      dense_max_size: the largest parameter count for which ``"auto"`` picks dense.
      min_curvature: floor on absolute eigenvalues in dense mode.
      damping: Levenberg term added to the Hessian (both modes).
      cg_tol: relative residual tolerance of CG.
      cg_maxiter: maximum CG iterations (``None``: ``10 * n``).
      linesearch: a line-search ``GradientTransformationExtraArgs`` applied last, or
        ``None`` for fixed steps ``learning_rate * H~^{-1} g``.

    ``optax.inject_hyperparams`` makes every number a hyperparameter, integers too; the
    integers here fix shapes, so name them static (the floats may then be injected)::

        optax.inject_hyperparams(optlib.newton, static_args=("dense_max_size", "cg_maxiter"))(
            learning_rate=0.5, damping=1e-3
        )

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call
      ``update(grads, state, params, value=f(params), grad=grads, value_fn=f)``.
    """
    _check_static_ints(
        "newton", _NEWTON_STATIC, dense_max_size=dense_max_size, cg_maxiter=cg_maxiter
    )
    newton_step = scale_by_newton(
        hessian,
        dense_max_size=dense_max_size,
        min_curvature=min_curvature,
        damping=damping,
        cg_tol=cg_tol,
        cg_maxiter=cg_maxiter,
    )
    return named_chain(
        ("newton", newton_step),
        learning_rate_link(learning_rate),
        ("linesearch", _check_linesearch(linesearch)),
        complex_unsupported=_COMPLEX_UNSUPPORTED,
    )


@recorded_optimizer
def bfgs(
    learning_rate: LearningRate = 1.0,
    *,
    max_size: int = 10_000,
    scale_init_hess: bool = False,
    linesearch: optax.GradientTransformationExtraArgs | None = (
        optax.scale_by_zoom_linesearch(max_linesearch_steps=30, initial_guess_strategy="one")
    ),
) -> optax.GradientTransformationExtraArgs:
    r"""BFGS with a dense inverse Hessian: ``w_{k+1} = w_k - eta_k H_k \nabla f(w_k)``.

    ``H_k`` is the BFGS inverse-Hessian estimate of ``optlib.scale_by_bfgs`` (update skipped
    when ``y^T s <= 0``), ``eta_k = learning_rate * t_k`` with ``t_k`` from the line search.
    The default is ``optax.scale_by_zoom_linesearch`` (strong Wolfe conditions,
    ``c1 = 1e-4``, ``c2 = 0.9``, trying ``t = 1`` first), the search scipy's BFGS uses
    (N&W Algorithms 3.5-3.6); it is used as is, chained after the preconditioner as
    ``optax.lbfgs`` does. Its state keeps the value and gradient at the new point for
    ``optax.value_and_grad_from_state``.

    Reference: ``scipy.optimize.minimize(method="BFGS")``; Nocedal & Wright §6.1. Deviations:
    the line search tries ``t = 1`` at every iteration (scipy extrapolates its first guess
    from the last decrease), and the curvature safeguard skips the update where scipy would
    force it. Iteration counts stay close to scipy's (tests/test_second_order.py compares
    them on Rosenbrock).

    Memory: O(n^2) for n parameters (the state holds the ``n x n`` inverse Hessian); ``init``
    raises ``ValueError`` above ``max_size`` parameters and points to ``optax.lbfgs``.

    Args:
      learning_rate: a float or schedule multiplying the step (1.0: plain BFGS).
      max_size: the largest number of parameters ``init`` accepts.
      scale_init_hess: rescale the initial inverse Hessian (see ``scale_by_bfgs``).
      linesearch: a line-search ``GradientTransformationExtraArgs`` applied last, or
        ``None`` for fixed steps.

    Under ``optax.inject_hyperparams`` name ``max_size`` static (it bounds the state's
    shape): ``optax.inject_hyperparams(optlib.bfgs, static_args=("max_size",))(
    learning_rate=0.5)``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call
      ``update(grads, state, params, value=f(params), grad=grads, value_fn=f)``.
    """
    _check_static_ints("bfgs", _BFGS_STATIC, max_size=max_size)
    return named_chain(
        ("bfgs", scale_by_bfgs(max_size=max_size, scale_init_hess=scale_init_hess)),
        learning_rate_link(learning_rate),
        ("linesearch", _check_linesearch(linesearch)),
        complex_unsupported=_COMPLEX_UNSUPPORTED,
    )
