"""The objective that line-search-like transforms take in ``update(..., value_fn=f)``.

One convention for all of them (``optlib.newton``, ``optlib.bfgs``, ``optlib.lbfgs``), the
same as optax's line searches: ``value_fn(params, **kwargs)`` where ``kwargs`` are the extra
keyword arguments of ``update`` that ``value_fn``'s signature names (e.g. a batch).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import optax
from jax.flatten_util import ravel_pytree

__all__ = ["flat_objective", "value_fn_kwargs"]


def value_fn_kwargs(value_fn: Callable[..., Any], extra_args: dict[str, Any]) -> dict[str, Any]:
    """The extra ``update`` keyword arguments that ``value_fn`` accepts (e.g. a batch).

    The same rule as optax's line searches: an argument goes to the objective when the
    objective's signature names it; ``value`` and ``grad`` are the line search's own.
    """
    names = inspect.signature(value_fn).parameters
    return {key: arg for key, arg in extra_args.items() if key in names}


def flat_objective(
    value_fn: Callable[..., Any] | None, params: optax.Params, extra_args: dict[str, Any], who: str
) -> tuple[Callable[[jax.Array], jax.Array], jax.Array, Callable[[jax.Array], optax.Params]]:
    """``x -> value_fn(unravel(x), **kwargs)``, the flat parameters and ``unravel``.

    Raises:
      TypeError: if ``value_fn`` is missing; ``ValueError`` if ``params`` is.
    """
    if value_fn is None:
        raise TypeError(
            f"{who}.update needs the objective: call "
            "update(grads, state, params, value=f(params), grad=grads, value_fn=f)"
        )
    if params is None:
        raise ValueError(f"{who}.update needs params (the point where the objective is taken)")
    kwargs = value_fn_kwargs(value_fn, extra_args)
    flat_params, unravel = ravel_pytree(params)

    def objective(flat: jax.Array) -> jax.Array:
        return value_fn(unravel(flat), **kwargs)

    return objective, flat_params, unravel
