"""Gradient clipping with torch.nn.utils' semantics: ``clip_grad_norm_`` and ``clip_grad_value_``.

Put a clipping transform first in a chain (torch clips ``p.grad`` before ``optimizer.step()``):
``optax.chain(optlib.clip_grad_norm(1.0), optlib.adamw(1e-3))``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optlib._numerics import statistics_dtype
from optlib._validation import check_bool, check_non_negative, check_real

__all__ = ["ClipGradNormState", "clip_grad_norm", "clip_grad_value", "global_grad_norm"]

# torch adds this to the total norm before dividing (``max_norm / (total_norm + 1e-6)``).
_NORM_EPS = 1e-6


def _check_norm_type(norm_type: Any) -> float:
    """torch's ``float(norm_type)``: a p > 0, or ``inf`` (also the string ``"inf"``)."""
    if isinstance(norm_type, str):
        try:
            norm_type = float(norm_type)
        except ValueError:
            raise ValueError(f"norm_type must be a number or 'inf', got {norm_type!r}") from None
    norm_type = check_real("norm_type", norm_type, allow_inf=True)
    if not norm_type > 0:
        raise ValueError(f"norm_type must be > 0 (or inf), got {norm_type!r}")
    return norm_type


def _vector_norm(x: jax.Array, norm_type: float) -> jax.Array:
    """``torch.linalg.vector_norm(x, norm_type)`` of a flattened array (0 for an empty one)."""
    magnitude = jnp.abs(x).ravel()
    if math.isinf(norm_type):
        return jnp.max(magnitude, initial=0)
    if norm_type == 2:
        return jnp.sqrt(jnp.sum(magnitude * magnitude))
    if norm_type == 1:
        return jnp.sum(magnitude)
    return jnp.sum(magnitude**norm_type) ** (1.0 / norm_type)


def _norm_dtype(tree: Any) -> jnp.dtype:
    """float32, or float64 if any leaf is float64 (or complex128): the real dtype the norm is
    computed in (a complex leaf's norm is that of its real and imaginary parts, as torch's)."""
    return jnp.result_type(
        jnp.float32, *(jnp.finfo(statistics_dtype(x.dtype)).dtype for x in jax.tree.leaves(tree))
    )


def _real_magnitude(g: jax.Array, dtype) -> jax.Array:
    """``g`` in the norm's dtype; a complex leaf as its magnitudes ``|z|`` (torch's norm)."""
    if jnp.issubdtype(g.dtype, jnp.complexfloating):
        return jnp.abs(g).astype(dtype)
    return g.astype(dtype)


def global_grad_norm(grads: Any, norm_type: float = 2.0) -> jax.Array:
    """torch's total norm: the ``norm_type``-norm of the per-tensor norms.

    ``torch.nn.utils.get_total_norm``: the norm of each leaf, then the norm of those norms (as
    if all gradients were one vector). Computed in float32 or wider.

    Args:
      grads: a pytree of arrays.
      norm_type: p of the p-norm (> 0), or ``inf`` / ``"inf"`` for the max-norm.

    Returns:
      A scalar array.
    """
    norm_type = _check_norm_type(norm_type)
    dtype = _norm_dtype(grads)
    norms = [_vector_norm(_real_magnitude(g, dtype), norm_type) for g in jax.tree.leaves(grads)]
    return _vector_norm(jnp.stack(norms) if norms else jnp.zeros([0], dtype), norm_type)


class ClipGradNormState(NamedTuple):
    """State of ``clip_grad_norm``: the total norm of the last gradients, before clipping
    (what torch's ``clip_grad_norm_`` returns, for logging)."""

    total_norm: jax.Array


def _raise_if_nonfinite(total_norm: jax.Array, norm_type: float) -> None:
    if isinstance(total_norm, jax.core.Tracer):
        raise RuntimeError(
            "clip_grad_norm(error_if_nonfinite=True) cannot raise from inside jit: a compiled "
            "step cannot stop on a value without a host callback, which fails with an internal "
            "error far from here. Run the update eagerly (outside jit), or leave "
            "error_if_nonfinite=False and check the norm it records after the step, "
            "jnp.isfinite(state.total_norm) (or skip such steps with optax.apply_if_finite)."
        )
    if not bool(jnp.isfinite(total_norm)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients is non-finite "
            f"({float(total_norm)}), so it cannot be clipped. Set error_if_nonfinite=False to "
            "scale the gradients by the non-finite norm anyway."
        )


def clip_grad_norm(
    max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> optax.GradientTransformation:
    """Rescales gradients whose total norm exceeds ``max_norm`` (torch ``clip_grad_norm_``).

    ::

        n     = || (||g_1||_p, ..., ||g_k||_p) ||_p          (global_grad_norm)
        coef  = min(max_norm / (n + 1e-6), 1)
        g_i  <- g_i * coef

    torch multiplies by ``coef`` always (1 when not clipping). ``optax.clip_by_global_norm``
    differs: it scales by ``max_norm / n`` without the ``1e-6`` and only when ``n >= max_norm``
    (relative difference ``1e-6 / n`` in the clipped gradients), and has no other norms.

    With ``error_if_nonfinite=True`` a non-finite norm raises ``RuntimeError`` as in torch,
    in an eager update; under ``jit`` the option raises ``RuntimeError`` when the step is
    traced (a compiled step can only stop on a value through a host callback): there, keep it
    off and check ``jnp.isfinite(state.total_norm)``, or skip such steps with
    ``optax.apply_if_finite``.

    Args:
      max_norm: largest total norm kept (>= 0).
      norm_type: p of the p-norm (> 0), or ``inf`` / ``"inf"``.
      error_if_nonfinite: raise if the total norm is nan or inf.

    Returns:
      An ``optax.GradientTransformation``; the state records the total norm.
    """
    max_norm = check_non_negative("max_norm", max_norm)
    norm_type = _check_norm_type(norm_type)
    error_if_nonfinite = check_bool("error_if_nonfinite", error_if_nonfinite)

    def init_fn(params):
        return ClipGradNormState(jnp.zeros([], _norm_dtype(params)))

    def update_fn(updates, state, params=None):
        del params
        total_norm = global_grad_norm(updates, norm_type).astype(state.total_norm.dtype)
        if error_if_nonfinite:
            _raise_if_nonfinite(total_norm, norm_type)
        coef = jnp.minimum(max_norm / (total_norm + _NORM_EPS), 1.0)
        updates = jax.tree.map(
            lambda g: (g.astype(jnp.promote_types(g.dtype, coef.dtype)) * coef).astype(g.dtype),
            updates,
        )
        return updates, ClipGradNormState(total_norm)

    return optax.GradientTransformation(init_fn, update_fn)


def clip_grad_value(clip_value: float) -> optax.GradientTransformation:
    """Clamps every gradient element to ``[-clip_value, clip_value]`` (torch ``clip_grad_value_``).

    This is ``optax.clip``: the same ``min(max(g, -c), c)``, NaN passing through, so it is
    reused; only torch's argument handling is added (a negative ``clip_value``, which torch
    silently turns into "every element becomes ``clip_value``", is an error here).

    Args:
      clip_value: the largest absolute value kept (>= 0).

    Returns:
      A stateless ``optax.GradientTransformation``.
    """
    clip_value = check_non_negative("clip_value", clip_value)
    return optax.clip(clip_value)
