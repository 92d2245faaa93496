"""Muon's orthogonalisation: Newton–Schulz iterations and torch's shape-dependent lr ratio.

Both transforms act on 2-D updates only (torch.optim.Muon rejects any other parameter);
put other leaves in another group with ``optlib.param_groups``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optlib._numerics import cast, statistics_dtype
from optlib._validation import (
    check_bool,
    check_choice,
    check_float_dtype,
    check_int,
    check_non_negative,
    check_real,
    is_traced,
)

__all__ = [
    "ADJUST_LR_FNS",
    "NS_COEFFICIENTS",
    "adjusted_lr_ratio",
    "newton_schulz",
    "scale_by_newton_schulz",
    "scale_by_shape",
]

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)
"""torch.optim.Muon's default ``(a, b, c)`` of the quintic Newton–Schulz step."""

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
"""torch.optim.Muon's ``adjust_lr_fn`` values (``None`` is ``"original"``)."""

_MAX_NS_STEPS = 100  # torch: "Number of steps must be less than 100 ..."


def _check_ns_coefficients(ns_coefficients) -> tuple[float, float, float]:
    """Three real numbers ``(a, b, c)``, as torch requires."""
    if isinstance(ns_coefficients, (str, bytes)) or not isinstance(ns_coefficients, Sequence):
        raise TypeError(f"ns_coefficients must be a tuple (a, b, c), got {ns_coefficients!r}")
    if len(ns_coefficients) != 3:
        raise ValueError(
            "ns_coefficients must be a tuple of exactly 3 values (torch: 'Coefficients must be "
            f"a tuple of exactly 3 values'), got {ns_coefficients!r}"
        )
    a, b, c = (check_real(f"ns_coefficients[{i}]", c) for i, c in enumerate(ns_coefficients))
    return a, b, c


def _check_ns_steps(ns_steps) -> int:
    """An integer in [1, 100) (torch: "Number of steps must be less than 100")."""
    if is_traced(ns_steps):
        raise TypeError(
            f"ns_steps must be a concrete integer (it sets how many products are traced), got "
            f"{ns_steps!r}; with optax.inject_hyperparams pass static_args=('ns_steps',)"
        )
    ns_steps = check_int("ns_steps", ns_steps, minimum=1)
    if ns_steps >= _MAX_NS_STEPS:
        raise ValueError(
            f"ns_steps must be less than {_MAX_NS_STEPS} (torch: 'Number of steps must be less "
            f"than 100 for computational efficiency'), got {ns_steps!r}"
        )
    return ns_steps


def _check_ns_dtype(ns_dtype):
    """``None`` or a floating dtype (a name such as ``"bfloat16"``, or a dtype)."""
    return check_float_dtype("ns_dtype", ns_dtype, none_means="the update's own dtype")


def _check_matrix(path, leaf) -> None:
    if jnp.ndim(leaf) != 2:
        raise ValueError(
            "Muon only supports 2D parameters whereas we found a parameter with size: "
            f"{tuple(jnp.shape(leaf))} at {jax.tree_util.keystr(path) or 'the root'}; "
            "optimize it with another optimizer (optlib.param_groups)"
        )


def _check_matrices(tree) -> None:
    jax.tree_util.tree_map_with_path(_check_matrix, tree)


def newton_schulz(
    x: jax.Array,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    ns_steps: int = 5,
    eps: float = 1e-7,
    dtype: Any = "bfloat16",
) -> jax.Array:
    """Approximately orthogonalises a matrix, as torch.optim.Muon's Newton–Schulz helper.

    With ``X_0 = x / max(||x||_F, eps)`` (transposed first when ``x`` has more rows than
    columns, so the Gram matrix is the smaller one) and ``(a, b, c) = ns_coefficients``::

        A_k = X_k X_k^T;  B_k = b A_k + c A_k A_k;  X_{k+1} = a X_k + B_k X_k

    ``ns_steps`` times, then transposed back. The result is close to ``U V^T`` of the SVD
    ``x = U S V^T`` (torch's default coefficients trade exactness for speed: its singular
    values land roughly in [0.7, 1.2]).

    In ``dtype`` (bfloat16 by default, as torch): the input is rounded to ``dtype``, and each
    of torch's operations is rounded once: the norm and the division are computed in float32
    (or wider), and each of the three products per step (``torch.addmm``: ``beta * C + alpha *
    A @ B``) multiplies ``dtype`` operands with float32 (or wider) accumulation and rounds the
    sum to ``dtype``. Matrix products use ``Precision.HIGHEST``, so float32 / float64 runs are
    not silently done in bf16 passes on accelerators.

    Args:
      x: a 2-D array.
      ns_coefficients: ``(a, b, c)``.
      ns_steps: number of iterations (>= 1).
      eps: lower bound of the norm that ``x`` is divided by.
      dtype: the dtype of the iteration.

    Returns:
      A ``dtype`` array of ``x``'s shape.

    Raises:
      ValueError: if ``x`` is not 2-D.
    """
    if jnp.ndim(x) != 2:
        raise ValueError(f"newton_schulz needs a 2-D matrix, got shape {jnp.shape(x)}")
    a, b, c = ns_coefficients
    dtype = jnp.dtype(dtype)
    wide = statistics_dtype(dtype)  # where the sums are accumulated
    tall = x.shape[0] > x.shape[1]

    def addmm(bias, bias_scale, left, right, product_scale=1.0):
        product = jnp.matmul(
            left, right, precision=jax.lax.Precision.HIGHEST, preferred_element_type=wide
        )
        return (bias_scale * cast(bias, wide) + product_scale * product).astype(dtype)

    o = cast(x, dtype)
    if tall:
        o = o.T
    norm = jnp.sqrt(jnp.sum(jnp.square(cast(o, wide)))).astype(dtype)
    norm = jnp.maximum(norm, jnp.asarray(eps, dtype))
    o = (cast(o, wide) / cast(norm, wide)).astype(dtype)
    for _ in range(ns_steps):
        gram = jnp.matmul(
            o, o.T, precision=jax.lax.Precision.HIGHEST, preferred_element_type=wide
        ).astype(dtype)
        update = addmm(gram, b, gram, gram, c)
        o = addmm(o, a, update, o)
    return o.T if tall else o


def scale_by_newton_schulz(
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    ns_steps: int = 5,
    eps: float = 1e-7,
    ns_dtype: Any = "bfloat16",
    *,
    keep_ns_dtype: bool = False,
) -> optax.GradientTransformation:
    """Replaces each 2-D update by its Newton–Schulz orthogonalisation (torch.optim.Muon).

    ``u <- newton_schulz(u, ns_coefficients, ns_steps, eps, ns_dtype)``, returned in the
    update's dtype (in ``ns_dtype`` with ``keep_ns_dtype``). Stateless.

    Args:
      ns_coefficients: ``(a, b, c)`` of the quintic iteration.
      ns_steps: number of iterations, in [1, 100).
      eps: lower bound of the Frobenius norm the update is divided by (>= 0).
      ns_dtype: dtype of the iteration: ``"bfloat16"`` as in torch, ``"float32"`` /
        ``"float64"`` (or a dtype) for a more exact one, ``None`` for the update's own dtype.
      keep_ns_dtype: return the result in ``ns_dtype``, as torch's update tensor is the
        bf16 result that its parameter step adds to the parameter (converting it to a fp16
        update first would round its smallest entries again).

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: at ``init`` (or ``update``) for a leaf that is not 2-D, with torch's
        message ("Muon only supports 2D parameters ...") and the leaf's path; at
        construction for bad arguments.
    """
    ns_coefficients = _check_ns_coefficients(ns_coefficients)
    ns_steps = _check_ns_steps(ns_steps)
    eps = check_non_negative("eps", eps)
    ns_dtype = _check_ns_dtype(ns_dtype)
    keep_ns_dtype = check_bool("keep_ns_dtype", keep_ns_dtype)

    def init_fn(params):
        _check_matrices(params)
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        _check_matrices(updates)

        def orthogonalize(u):
            dtype = u.dtype if ns_dtype is None else ns_dtype
            result = newton_schulz(u, ns_coefficients, ns_steps, eps, dtype)
            return result if keep_ns_dtype else cast(result, u.dtype)

        return jax.tree.map(orthogonalize, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def adjusted_lr_ratio(shape: tuple[int, ...], adjust_lr_fn: str | None = None) -> float:
    """torch.optim.Muon's factor on the lr of a ``(rows, cols)`` matrix.

    ``"original"`` (or ``None``, Keller Jordan's Muon): ``sqrt(max(1, rows / cols))``;
    ``"match_rms_adamw"`` (Moonshot, "Muon is Scalable for LLM Training"):
    ``0.2 * sqrt(max(rows, cols))``, which gives the update AdamW's typical RMS.

    Args:
      shape: the parameter's shape (its first two sizes are used).
      adjust_lr_fn: one of ``ADJUST_LR_FNS``.

    Returns:
      The factor, a Python float.
    """
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def scale_by_shape(adjust_lr_fn: str | None = None) -> optax.GradientTransformation:
    """Multiplies each 2-D update by torch.optim.Muon's ``adjusted_lr_ratio`` of its shape.

    Placed after ``scale_by_newton_schulz`` and before the decoupled weight decay, it gives
    torch's ``p <- p * (1 - lr * wd) - lr * ratio * O``: the weight decay uses the plain lr,
    only the orthogonalised update the adjusted one. ``optax.contrib.scale_by_shape``'s
    default ratio is ``sqrt(max(1, cols / rows))``, the reverse of torch's ``"original"``.

    Args:
      adjust_lr_fn: ``None`` / ``"original"`` or ``"match_rms_adamw"``.

    Returns:
      A stateless ``optax.GradientTransformation``.

    Raises:
      ValueError: for an unknown ``adjust_lr_fn`` (torch: "Adjust learning rate function ...
        is not supported"), or at ``init`` / ``update`` for a leaf that is not 2-D.
    """
    check_choice("adjust_lr_fn", adjust_lr_fn, ADJUST_LR_FNS)

    def init_fn(params):
        _check_matrices(params)
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        _check_matrices(updates)

        def scale(u):
            ratio = adjusted_lr_ratio(u.shape, adjust_lr_fn)
            return cast(ratio * cast(u, statistics_dtype(u.dtype)), u.dtype)

        return jax.tree.map(scale, updates), state

    return optax.GradientTransformation(init_fn, update_fn)
