"""How optimizer-state leaves shard relative to their parameters: the rules' registry.

A transform whose state has leaves not shaped like their parameter (Adafactor's factored
row/column statistics) declares, next to its state class, how each such field is laid out
relative to the parameter's partition spec. ``optlib.state_shardings`` reads the rules; any
other parameter-shaped leaf takes its parameter's sharding.

``state_leaf`` is where every transform creates a state leaf that belongs to a parameter:
in the statistics dtype, and already laid out like the parameter (the same rules), so that
a plain ``tx.init(params)`` on sharded parameters gives sharded statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from optlib._numerics import DEFAULT_STATISTICS_DTYPE, statistics_dtype

__all__ = [
    "SpecRule",
    "field_rule",
    "full_spec",
    "register_state_partition",
    "replicated_placement",
    "ruled_state_types",
    "state_leaf",
    "without_axis",
]

SpecRule = Callable[[tuple, int], tuple]
"""``(param_spec, param_ndim) -> leaf_spec``, specs as tuples with one entry per array axis."""

_FIELD_RULES: dict[tuple[type, str], SpecRule] = {}


def register_state_partition(state_cls: type, field: str, rule: SpecRule) -> None:
    """Declares how a state field's leaves shard relative to their parameter.

    Args:
      state_cls: the transform's state ``NamedTuple`` class.
      field: the field whose leaves (a tree shaped like the params) the rule covers.
      rule: ``(param_spec, param_ndim) -> leaf_spec``, both as tuples of mesh axis names (or
        ``None``) with one entry per array axis.
    """
    _FIELD_RULES[(state_cls, field)] = rule


def field_rule(state_cls: type, field: str) -> SpecRule | None:
    """The rule declared for ``state_cls.field``, or ``None``."""
    return _FIELD_RULES.get((state_cls, field))


def ruled_state_types() -> tuple[type, ...]:
    """The state classes that declared at least one field rule."""
    return tuple({cls for cls, _ in _FIELD_RULES})


def without_axis(axis: int) -> SpecRule:
    """The rule of a statistic that reduces its parameter over ``axis`` (parameters of rank
    >= 2; a lower-rank parameter's leaf is a scalar, replicated)."""

    def rule(spec: tuple, ndim: int) -> tuple:
        if ndim < 2:
            return ()
        kept = list(spec)
        del kept[axis]
        return tuple(kept)

    return rule


def full_spec(spec: Any, ndim: int) -> tuple:
    """A partition spec as a tuple with one entry per array axis (trailing ``None``s added)."""
    entries = tuple(spec)
    return entries + (None,) * (ndim - len(entries))


def _leaf_sharding(param: Any, drop_axis: int | None, scalar: bool) -> Any:
    """The sharding a state leaf of the concrete, committed array ``param`` takes, or None.

    The parameter's own sharding for a leaf of its shape; for a leaf reduced over
    ``drop_axis`` (or a scalar), its ``NamedSharding`` without that axis (replicated). None
    (the default placement) for an uncommitted array, as ``jnp.zeros_like`` does.
    """
    if isinstance(param, jax.core.Tracer) or not isinstance(param, jax.Array):
        return None
    if not getattr(param, "_committed", True):
        return None
    sharding = param.sharding
    if drop_axis is None and not scalar:
        return sharding
    if isinstance(sharding, NamedSharding):
        spec: tuple = ()
        if not scalar and drop_axis is not None:
            kept = list(full_spec(sharding.spec, param.ndim))
            del kept[drop_axis]
            spec = tuple(kept)
        return NamedSharding(sharding.mesh, PartitionSpec(*spec), memory_kind=sharding.memory_kind)
    if sharding.is_fully_replicated:  # one device, or replicated: any shape keeps it
        return sharding
    return None


def replicated_placement(params: Any) -> Any:
    """Where state that belongs to no one parameter goes (L-BFGS's flat history): replicated
    over the mesh of the first parameter when it is a committed sharded array (what
    ``optlib.state_shardings`` gives such leaves), else None (the default placement)."""
    leaves = jax.tree.leaves(params)
    return _leaf_sharding(leaves[0], None, scalar=True) if leaves else None


def state_leaf(
    param: Any,
    fill: Any = 0.0,
    dtype: Any = DEFAULT_STATISTICS_DTYPE,
    *,
    drop_axis: int | None = None,
    scalar: bool = False,
) -> jax.Array:
    """A state leaf belonging to ``param``, filled with ``fill``, laid out like ``param``.

    The one place optlib creates per-parameter optimizer state. The leaf has the parameter's
    shape (without ``drop_axis``, or ``()`` for a ``scalar`` placeholder) and the dtype
    ``statistics_dtype(param.dtype, dtype)`` (``dtype`` is the transforms' ``statistics_dtype``
    option: float32 by default, None for the parameter's dtype). ``fill`` is a scalar, or an
    array of the leaf's shape for state that starts as a copy (an average that starts at the
    parameters, schedule-free's ``z``). On a concrete committed
    ``jax.Array`` it is created directly with the parameter's sharding (minus the reduced axis,
    replicated for a scalar), as ``jnp.zeros_like`` places a like-shaped array; under ``jit``
    a like-shaped leaf is ``jnp.full_like`` of the parameter (what optax's ``zeros_like``
    does), and ``out_shardings=optlib.state_shardings(...)`` lays it out.

    Args:
      param: the parameter (array, tracer or ``jax.ShapeDtypeStruct``).
      fill: the initial value: a scalar, or an array of the leaf's shape (copied).
      dtype: the ``statistics_dtype`` option (a minimum dtype, or None).
      drop_axis: the axis a reduced statistic averages out (Adafactor's factored moments).
      scalar: a scalar placeholder (replicated).

    Returns:
      The new leaf.
    """
    if not hasattr(param, "dtype"):  # a Python scalar leaf
        param = jnp.asarray(param)
    leaf_dtype = statistics_dtype(param.dtype, dtype)
    if scalar:
        shape: tuple = ()
    else:
        shape = tuple(param.shape)
        if drop_axis is not None:
            shape = shape[: drop_axis % len(shape)] + shape[drop_axis % len(shape) + 1 :]
    sharding = _leaf_sharding(param, drop_axis, scalar)
    if jnp.ndim(fill):  # a copy (never the caller's buffer: params may be donated)
        leaf = jnp.array(fill, leaf_dtype)
        return leaf if sharding is None else jax.device_put(leaf, sharding)
    if isinstance(param, jax.core.Tracer) and drop_axis is None and not scalar:
        return jnp.full_like(param, fill, leaf_dtype)
    return jnp.full(shape, fill, leaf_dtype, device=sharding)
