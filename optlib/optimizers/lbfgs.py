"""torch.optim.LBFGS: one ``update(..., value=, grad=, value_fn=)`` is one ``step(closure)``."""

from __future__ import annotations

from typing import Any

import optax

from optlib._numerics import DEFAULT_STATISTICS_DTYPE
from optlib.optimizers._links import named_chain, recorded_optimizer, reject_momentum_schedule
from optlib.transforms.learning_rate import LearningRate
from optlib.transforms.torch_lbfgs import scale_by_torch_lbfgs

__all__ = ["lbfgs"]


@recorded_optimizer
def lbfgs(
    learning_rate: LearningRate = 1.0,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
    *,
    statistics_dtype: Any = DEFAULT_STATISTICS_DTYPE,
) -> optax.GradientTransformationExtraArgs:
    r"""L-BFGS with torch's inner loop: torch.optim.LBFGS, ``learning_rate`` for ``lr``.

    Each ``update`` runs what one torch ``optimizer.step(closure)`` runs: up to ``max_iter``
    L-BFGS iterations ``x <- x + t d``, ``d = -H g`` from the last ``history_size`` curvature
    pairs, ``t = lr`` (``min(1, 1 / ||g||_1) lr`` at the very first iteration) or a
    strong-Wolfe line search (``line_search_fn="strong_wolfe"``), within ``max_eval``
    objective evaluations and torch's tolerances. The history persists across updates as in
    torch; ``opt_state["lbfgs"].func_evals`` and ``.n_iter`` count evaluations and
    iterations as torch's ``state["func_evals"]`` / ``state["n_iter"]``. See
    ``optlib.scale_by_torch_lbfgs`` for the details; parameters and evaluation counts
    equal torch's (float64) step by step.

    Call it with the objective, like ``optlib.newton`` / ``optlib.bfgs``::

        value, grads = jax.value_and_grad(f)(params, batch)
        updates, state = tx.update(
            grads, state, params, value=value, grad=grads, value_fn=f, batch=batch
        )
        params = optax.apply_updates(params, updates)

    Args:
      learning_rate: torch's ``lr``: a float or a schedule of the update count. A
        metric-driven rate (``optlib.reduce_lr_on_plateau``) is rejected: L-BFGS's rate is
        the line search's first trial step, not a factor on a finished update.
      max_iter: maximal number of iterations per update.
      max_eval: maximal number of objective evaluations per update (default
        ``max_iter * 5 // 4``).
      tolerance_grad: termination tolerance on first-order optimality (``max|g|``).
      tolerance_change: termination tolerance on function value / parameter changes.
      history_size: update history size.
      line_search_fn: ``None`` (fixed step) or ``"strong_wolfe"``.
      statistics_dtype: dtype of the optimizer's state, at least this wide (default float32:
        bf16/fp16 parameters get a float32 history); None keeps the parameters' dtype, as
        torch does (computed in float32 and rounded once per update, see
        ``optlib.scale_by_torch_lbfgs``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call
      ``update(grads, state, params, value=f(params), grad=grads, value_fn=f)``.
    """
    reject_momentum_schedule(learning_rate, "lbfgs")
    if isinstance(learning_rate, optax.GradientTransformation):
        raise TypeError(
            "lbfgs: learning_rate must be a float or a schedule, got the metric-driven "
            f"{learning_rate!r}: L-BFGS's rate is the first trial step of its inner "
            "iterations, not a factor on the finished update; step a schedule yourself or "
            "rebuild the optimizer with the new rate."
        )
    return named_chain(
        (
            "lbfgs",
            scale_by_torch_lbfgs(
                learning_rate,
                max_iter=max_iter,
                max_eval=max_eval,
                tolerance_grad=tolerance_grad,
                tolerance_change=tolerance_change,
                history_size=history_size,
                line_search_fn=line_search_fn,
                statistics_dtype=statistics_dtype,
            ),
        ),
        complex_unsupported=(
            "optlib.lbfgs calls value_fn on the parameters as they are, so it does not take "
            "torch's view_as_real pairs of a complex parameter"
        ),
    )
